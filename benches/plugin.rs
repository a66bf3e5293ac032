//! Plugin path benchmarks: chat line in → router → plugin slot → the bundled dice-roller child process →
//! reply out on `cytube.chat.send`, on MemoryBus and on NATS; and spawn-to-ready of the dice-roller.
//!
//! Needs the release plugin binaries next to the bench executable's target dir:
//! `cargo build --release -p rosey-dice-roller -p rosey-8ball && cargo bench -p rosey-benches --bench plugin`.
//! Prints p50/p99 of every timed round trip, commands/s with 64 in flight, spawn-to-ready, and the
//! RSS of idle plugin processes. Results: benches/RESULTS.md.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::StreamExt;
use rosey_core::bus::{EventBus, EventBusExt, MemoryBus, NatsBus, Subscription};
use rosey_core::event::ChatMessage;
use rosey_core::plugin::{Manifest, PluginManager, PluginRuntime, ProcessRuntime};
use rosey_core::router::{Router, RouterHandle, RouterOptions};
use rosey_plugin::protocol::{HostMessage, PluginMessage};
use tokio_util::sync::CancellationToken;

fn plugins_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins"))
}

fn runtime() -> tokio::runtime::Runtime {
    if std::env::var_os("BENCH_CURRENT_THREAD").is_some() {
        return tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A running node: bus, manager with dice-roller and 8ball, router, and a subscription to replies.
struct Node {
    bus: Arc<dyn EventBus>,
    manager: PluginManager,
    router: RouterHandle,
    replies: Subscription,
    channel: String,
}

impl Node {
    async fn start(bus: Arc<dyn EventBus>) -> Self {
        let manager = PluginManager::new(bus.clone(), Arc::new(ProcessRuntime::new()));
        let errors = manager.load_dir(plugins_dir()).await;
        assert!(errors.is_empty(), "{errors:?}");
        for name in ["dice-roller", "8ball"] {
            manager
                .wait_running(name, Duration::from_secs(10))
                .await
                .expect("plugin binaries built with `cargo build --release`?");
        }
        let options = RouterOptions {
            queue_group: format!("bench-router-{}", std::process::id()),
            ..RouterOptions::default()
        };
        let router = Router::new(bus.clone(), manager.command_table(), options)
            .start()
            .await
            .expect("router");
        let replies = bus.subscribe("cytube.chat.send").await.expect("subscribe");
        Self { bus, manager, router, replies, channel: format!("bench{}", std::process::id()) }
    }

    async fn say(&self, line: &str) {
        let msg = ChatMessage::new(&self.channel, "alice", line, 1);
        self.bus.publish_json("cytube.chat.message", &msg).await.expect("publish");
    }

    async fn reply(&mut self) {
        tokio::time::timeout(Duration::from_secs(10), self.replies.next())
            .await
            .expect("reply within 10 s")
            .expect("subscription open");
    }

    async fn stop(self) {
        self.router.shutdown().await.expect("router");
        self.manager.shutdown().await;
    }
}

fn percentiles(name: &str, samples: &mut [Duration]) {
    if samples.is_empty() {
        return;
    }
    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p) as usize];
    eprintln!("{name}: {} samples, p50 {:?}, p99 {:?}", samples.len(), pct(0.5), pct(0.99));
}

/// Runs the chat benches on MemoryBus (`nats_url` None) or on the NATS server at `nats_url`. The bus is
/// made inside the bench's own runtime, which then drives its connection.
fn chat_round_trip(c: &mut Criterion, name: &str, nats_url: Option<&str>) {
    let rt = runtime();
    let mut node = rt.block_on(async {
        let bus: Arc<dyn EventBus> = match nats_url {
            None => Arc::new(MemoryBus::new()),
            Some(url) => Arc::new(NatsBus::connect(url).await.expect("NATS must be running")),
        };
        Node::start(bus).await
    });
    let mut samples = Vec::new();
    c.bench_function(&format!("chat_to_reply/{name}/sequential"), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let t = Instant::now();
                    node.say("!roll 2d6").await;
                    node.reply().await;
                    samples.push(t.elapsed());
                }
                start.elapsed()
            })
        })
    });
    percentiles(&format!("chat_to_reply/{name}/sequential"), &mut samples);

    // Throughput: keep 64 commands in flight for 20 000 commands.
    let total = 20_000u32;
    let elapsed = rt.block_on(async {
        let start = Instant::now();
        for _ in 0..64 {
            node.say("!roll 2d6").await;
        }
        let mut sent = 64;
        for _ in 0..total {
            node.reply().await;
            if sent < total {
                node.say("!roll 2d6").await;
                sent += 1;
            }
        }
        start.elapsed()
    });
    eprintln!(
        "chat_to_reply/{name}/64_in_flight: {total} commands in {elapsed:?} = {:.0} commands/s",
        f64::from(total) / elapsed.as_secs_f64()
    );
    let status = node.manager.status("dice-roller").expect("dice-roller");
    assert_eq!(status.events.failed, 0, "no command may fail under load");
    rt.block_on(node.stop());
}

fn chat_to_reply(c: &mut Criterion) {
    chat_round_trip(c, "memory", None);
    let url =
        std::env::var("ROSEY_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    chat_round_trip(c, "nats", Some(&url));
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn spawn_to_ready(c: &mut Criterion) {
    let rt = runtime();
    let runtime = ProcessRuntime::new();
    let manifest = Manifest::load(&plugins_dir().join("dice-roller")).expect("manifest");
    let mut idle_rss = Vec::new();
    c.bench_function("spawn_to_ready/dice-roller", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let mut instance = runtime.start(&manifest).await.expect("spawn");
                    instance.send(HostMessage::Init {
                        protocol: 1,
                        name: manifest.name.clone(),
                        config: serde_json::json!({}),
                    });
                    loop {
                        match instance.recv().await {
                            Some(rosey_core::plugin::InstanceOutput::Message(
                                PluginMessage::Ready { .. },
                            )) => break,
                            Some(_) => continue,
                            None => panic!("plugin exited before ready"),
                        }
                    }
                    total += start.elapsed();
                    if idle_rss.len() < 10
                        && let Some(pid) = instance.pid()
                    {
                        idle_rss.push(rss_mb(pid));
                    }
                    instance.send(HostMessage::Shutdown {});
                    while instance.recv().await.is_some() {}
                }
                total
            })
        })
    });
    idle_rss.sort_by(f64::total_cmp);
    if let Some(median) = idle_rss.get(idle_rss.len() / 2) {
        eprintln!(
            "dice-roller idle RSS after ready: {median:.2} MB (median of {})",
            idle_rss.len()
        );
    }
}

/// One event straight to a running dice-roller instance and back (`event` → `reply` + `done`): the
/// cost of the process hop alone, without bus, router or slot.
fn instance_round_trip(c: &mut Criterion) {
    let rt = runtime();
    let runtime = ProcessRuntime::new();
    let manifest = Manifest::load(&plugins_dir().join("dice-roller")).expect("manifest");
    let mut instance = rt.block_on(async {
        let mut instance = runtime.start(&manifest).await.expect("spawn");
        instance.send(HostMessage::Init {
            protocol: 1,
            name: "dice-roller".into(),
            config: serde_json::json!({}),
        });
        while !matches!(
            instance.recv().await,
            Some(rosey_core::plugin::InstanceOutput::Message(PluginMessage::Ready { .. }))
        ) {}
        instance
    });
    let data = serde_json::json!({"channel": "c", "user": "alice", "command": "roll", "args": "2d6", "message": "!roll 2d6", "time": 1});
    let mut id = 0u64;
    let mut samples = Vec::new();
    c.bench_function("instance_round_trip/dice-roller", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    id += 1;
                    let t = Instant::now();
                    instance.send(HostMessage::Event {
                        id,
                        subject: "rosey.command.roll".into(),
                        data: data.clone(),
                    });
                    loop {
                        match instance.recv().await {
                            Some(rosey_core::plugin::InstanceOutput::Message(
                                PluginMessage::Done { .. },
                            )) => break,
                            Some(_) => {}
                            None => panic!("plugin exited"),
                        }
                    }
                    samples.push(t.elapsed());
                }
                start.elapsed()
            })
        })
    });
    percentiles("instance_round_trip/dice-roller", &mut samples);
}

/// Hot reload of the dice-roller: reload latency (call → new version serving) over 100 reloads, and
/// the p99 of chat → reply while reloads run back to back, next to the same without reloads.
fn reload(c: &mut Criterion) {
    let rt = runtime();
    let mut node = rt.block_on(Node::start(Arc::new(MemoryBus::new())));
    let manager = Arc::new(std::mem::replace(
        &mut node.manager,
        PluginManager::new(node.bus.clone(), Arc::new(ProcessRuntime::new())),
    ));
    let mut durations = Vec::new();
    c.bench_function("reload/dice-roller", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let report = manager.reload("dice-roller").await.expect("reload");
                    assert_eq!(report.outcome, rosey_core::metrics::ReloadOutcome::Success);
                    durations.push(report.duration);
                    total += report.duration;
                }
                total
            })
        })
    });
    percentiles("reload/dice-roller (reload latency)", &mut durations);

    let mut run_commands = |label: &str, reloading: bool| {
        let mut samples = Vec::new();
        rt.block_on(async {
            let stop = CancellationToken::new();
            let reloader = reloading.then(|| {
                let manager = manager.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut count = 0u32;
                    while !stop.is_cancelled() {
                        manager.reload("dice-roller").await.expect("reload");
                        count += 1;
                    }
                    count
                })
            });
            for _ in 0..5_000 {
                let t = Instant::now();
                node.say("!roll 2d6").await;
                node.reply().await;
                samples.push(t.elapsed());
            }
            stop.cancel();
            if let Some(reloader) = reloader {
                eprintln!("{label}: {} reloads during the run", reloader.await.expect("reloader"));
            }
        });
        percentiles(label, &mut samples);
    };
    run_commands("chat_to_reply/memory without reloads", false);
    run_commands("chat_to_reply/memory during back-to-back reloads", true);
    let status = manager.status("dice-roller").expect("status");
    assert_eq!(status.events.failed, 0, "no command may fail during reloads");
    rt.block_on(async {
        node.router.shutdown().await.expect("router");
        manager.shutdown().await;
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5));
    targets = spawn_to_ready, instance_round_trip, chat_to_reply, reload
}
criterion_main!(benches);
