//! Containing a plugin's whole process tree (issue 10): limits count every descendant, the kernel
//! caps memory, no descendant outlives its plugin or the host, and long stderr lines keep their
//! start. The plugins are the hostile programs under `tests/plugins/hostile/`.

use std::fmt::Write as _;
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rosey_core::bus::MemoryBus;
use rosey_core::plugin::{
    ManagerOptions, Manifest, MemoryEnforcement, PluginManager, PluginRuntime, ProcessRuntime,
};

use crate::plugins::Bed;
use crate::support::unique_prefix;

/// A copy of the hostile plugin `name` in a fresh temp dir (some write files where they run).
fn hostile(name: &str) -> Manifest {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plugins/hostile").join(name);
    let dir = std::env::temp_dir().join(format!("rosey-hostile-{}", unique_prefix())).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["plugin.toml", "plugin.py"] {
        std::fs::copy(from.join(file), dir.join(file)).unwrap();
    }
    Manifest::load(&dir).unwrap()
}

fn pids(reply: &serde_json::Value) -> Vec<u32> {
    let text = reply["replies"][0].as_str().unwrap_or_else(|| panic!("no reply: {reply}"));
    text.split_whitespace().map(|p| p.parse().unwrap()).collect()
}

/// Whether `pid` runs (a zombie waiting for its reaper does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()))
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// The parent of `pid` (for a plugin: its launcher).
fn parent_of(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(')').unwrap();
    rest.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Waits up to 10 s for every pid to be gone; returns the survivors.
fn survivors(pids: &[u32]) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grandchild_holding_300_mb_is_counted_and_killed_with_the_plugin() {
    let mut bed = Bed::memory().await;
    bed.start(hostile("tree-hog")).await;
    let spawned = pids(&bed.ask("tree-hog", "spawn 300").await);
    let crashed = bed.lifecycle("tree-hog", "crashed").await;
    let reason = crashed.reason.unwrap();
    let counted: f64 = reason
        .strip_prefix("memory ")
        .and_then(|r| r.strip_suffix(" MB over limit 256 MB"))
        .unwrap_or_else(|| panic!("{reason}"))
        .parse()
        .unwrap();
    // The plugin itself holds ~10 MB: over 256 MB, the grandchild counts.
    assert!(counted > 256.0, "{reason}");
    assert_eq!(survivors(&spawned), Vec::<u32>::new(), "child and grandchild die with the plugin");
    bed.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_allocating_fast_is_stopped_by_the_kernel_cap_below_twice_its_limit() {
    let manifest = hostile("fast-hog");
    let runtime = ProcessRuntime::new();
    let expected = MemoryEnforcement::DataRlimit { max_bytes: 96 * 1024 * 1024 };
    let enforcement = runtime.memory_enforcement(&manifest);
    assert!(
        enforcement == expected || matches!(enforcement, MemoryEnforcement::CgroupMemoryMax { .. }),
        "{enforcement}"
    );
    // Sampling too slow to matter: the kernel alone stops it.
    let bus = Arc::new(MemoryBus::new());
    let manager = PluginManager::builder(bus.clone(), Arc::new(runtime))
        .options(ManagerOptions {
            sample_interval: Duration::from_secs(3600),
            ..ManagerOptions::default()
        })
        .build();
    let mut lifecycle = {
        use rosey_core::bus::EventBus;
        bus.subscribe("rosey.plugin.fast-hog.crashed").await.unwrap()
    };
    manager.add(manifest.clone()).await.unwrap();
    manager.wait_running("fast-hog", Duration::from_secs(20)).await.unwrap();
    let event = serde_json::json!({"channel": "c", "user": "u", "command": "fast-hog",
        "args": "alloc", "message": "!fast-hog alloc", "time": 1});
    {
        use rosey_core::bus::EventBusExt;
        bus.publish_json("rosey.command.fast-hog", &event).await.unwrap();
    }
    let crashed = {
        use futures_util::StreamExt;
        tokio::time::timeout(Duration::from_secs(20), lifecycle.next()).await.unwrap().unwrap()
    };
    assert!(String::from_utf8_lossy(crashed.payload()).contains("exited with code 1"));
    let notes = std::fs::read_to_string(manifest.dir.join("peak")).unwrap();
    let last = notes.lines().last().unwrap();
    let peak_kb: f64 =
        last.strip_prefix("refused ").unwrap_or_else(|| panic!("{notes}")).parse().unwrap();
    assert!(peak_kb / 1024.0 < 128.0, "peak {:.0} MB against a 64 MB limit", peak_kb / 1024.0);
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_descendant_survives_a_normal_stop_not_even_a_setsid_escapee() {
    let bed = Bed::memory().await;
    bed.start(hostile("escapees")).await;
    let plugin = bed.manager.status("escapees").unwrap().pid.unwrap();
    let launcher = parent_of(plugin);
    let spawned = pids(&bed.ask("escapees", "spawn").await);
    assert_eq!(spawned.len(), 3);
    assert_eq!(spawned[0], plugin, "the status shows the plugin's own pid");
    assert!(spawned.iter().all(|p| alive(*p)), "{spawned:?}");
    bed.manager.stop("escapees").await.unwrap();
    let mut all = spawned.clone();
    all.push(launcher);
    assert_eq!(survivors(&all), Vec::<u32>::new(), "plugin, group child, escapee, launcher");
    bed.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_reports_how_its_memory_is_capped() {
    let runtime = ProcessRuntime::new();
    let instance = runtime.start(&hostile("fast-hog")).await.unwrap();
    assert!(matches!(
        instance.memory_enforcement(),
        MemoryEnforcement::DataRlimit { max_bytes: 100_663_296 }
            | MemoryEnforcement::CgroupMemoryMax { max_bytes: 100_663_296 }
    ));
    let instance = runtime.start(&hostile("escapees")).await.unwrap();
    assert_eq!(instance.memory_enforcement(), MemoryEnforcement::Unlimited);
}

/// Not a test on its own: the host process that
/// [`no_descendant_survives_a_sigkill_of_the_host`] starts (this test binary again) and kills.
/// Runs the escapees plugin, prints `pids: <launcher> <plugin> <group child> <escapee>` and waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_process_for_the_sigkill_test() {
    if std::env::var_os("ROSEY_TREE_TEST_HOST").is_none() {
        return;
    }
    let bed = Bed::memory().await;
    bed.start(hostile("escapees")).await;
    let launcher = parent_of(bed.manager.status("escapees").unwrap().pid.unwrap());
    let spawned = pids(&bed.ask("escapees", "spawn").await);
    println!(
        "pids: {launcher} {}",
        spawned.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
    );
    std::future::pending::<()>().await;
}

#[test]
fn no_descendant_survives_a_sigkill_of_the_host() {
    let exe = std::env::current_exe().unwrap();
    let mut host = std::process::Command::new(exe)
        .args(["--exact", "containment_tree::host_process_for_the_sigkill_test", "--nocapture"])
        .env("ROSEY_TREE_TEST_HOST", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let host_pid = host.id();
    // A watchdog, so a host that never prints cannot hang the suite.
    let done = Arc::new(AtomicBool::new(false));
    let watched = done.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(60));
        if !watched.load(Ordering::SeqCst) {
            let _ = std::process::Command::new("kill").args(["-9", &host_pid.to_string()]).status();
        }
    });
    let stdout = std::io::BufReader::new(host.stdout.take().unwrap());
    let line = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("pids: ").map(str::to_owned))
        .expect("the host printed its plugin's pids");
    let pids: Vec<u32> = line.split_whitespace().map(|p| p.parse().unwrap()).collect();
    assert_eq!(pids.len(), 4, "{line}");
    assert!(pids.iter().all(|p| alive(*p)), "{pids:?}");
    host.kill().unwrap(); // SIGKILL
    host.wait().unwrap();
    done.store(true, Ordering::SeqCst);
    assert_eq!(survivors(&pids), Vec::<u32>::new(), "launcher, plugin, group child, escapee");
}

/// Records every tracing event on this thread as `target: field=value …`.
#[derive(Clone, Default)]
struct Capture(Arc<parking_lot::Mutex<Vec<String>>>);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(format!("{}: ", event.metadata().target()));
        event.record(&mut fields);
        self.0.lock().push(fields.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

// One thread, so the stderr task logs where the capturing subscriber is the default.
#[tokio::test(flavor = "current_thread")]
async fn a_40_kib_stderr_line_logs_its_first_16_kib() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let bed = Bed::memory().await;
    bed.start(hostile("long-stderr")).await;
    assert_eq!(bed.ask("long-stderr", "shout").await["replies"][0], "shouted");
    let expected = format!("{} <24576 more bytes cut>", "a".repeat(16384));
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let found = capture
            .0
            .lock()
            .iter()
            .find(|l| l.starts_with("rosey::plugin::stderr") && l.contains("long-stderr"))
            .cloned();
        if let Some(line) = found {
            break line;
        }
        assert!(Instant::now() < deadline, "no stderr line logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(line.contains(&expected), "{}", &line[..line.len().min(200)]);
    assert!(line.contains("cut_bytes=24576"));
    assert!(!line.contains("bb"), "nothing past the first 16 KiB");
    bed.manager.shutdown().await;
}
