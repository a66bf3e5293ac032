//! The process tree of a plugin instance, read from `/proc` (Linux).
//!
//! A plugin's tree is its root process (the plugin), every process whose parent chain leads to it,
//! every process of its process group, every child of its launcher (see `launcher.rs`: orphans of the
//! tree are reparented to it) but the launcher itself, and every process the host saw in the tree
//! before whose parent has since died (remembered by pid and start time, so a reused pid is not
//! mistaken for it). The sampler counts the tree's CPU and memory; the
//! runtime kills what is left of it when the instance ends. Both share one [`TreeRecord`] per
//! instance through a small registry keyed by the root pid, so that the slot's
//! [`ProcessSampler::new(pid)`](super::resources::ProcessSampler::new) finds what the runtime
//! registered without a change of API.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Weak};

use super::resources::SampleError;

/// The fields of `/proc/<pid>/stat` the host uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    /// Process id.
    pub(crate) pid: u32,
    /// State letter (`R`, `S`, `Z`…).
    pub(crate) state: char,
    /// Parent process id.
    pub(crate) ppid: u32,
    /// Process group id.
    pub(crate) pgrp: u32,
    /// User plus system CPU time, clock ticks.
    pub(crate) cpu_ticks: u64,
    /// Start time after boot, clock ticks (with the pid, identifies a process).
    pub(crate) start_ticks: u64,
    /// Resident set size, pages.
    pub(crate) rss_pages: u64,
    /// Virtual memory size, bytes.
    pub(crate) vsize_bytes: u64,
}

impl Stat {
    /// A zombie or dead process: uses no memory and cannot be signalled away.
    pub(crate) fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses `/proc/<pid>/stat`. The command name is in parentheses and may contain anything, `)`
/// included, so fields are counted from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Result<Stat, SampleError> {
    let bad = |what: &str| SampleError::Parse(format!("stat: {what}"));
    let pid = text
        .split_whitespace()
        .next()
        .and_then(|p| p.parse::<u32>().ok())
        .ok_or_else(|| bad("no pid"))?;
    let rest = text.rfind(')').map(|i| &text[i + 1..]).ok_or_else(|| bad("no command name"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Numbered as in proc(5): state is field 3, ppid 4, pgrp 5, utime 14, stime 15, starttime 22,
    // vsize 23, rss 24.
    let field = |n: usize| fields.get(n - 3).copied().ok_or_else(|| bad("too few fields"));
    let number = |n: usize| -> Result<u64, SampleError> {
        field(n)?.parse::<u64>().map_err(|_| bad(&format!("field {n} is not a number")))
    };
    let small = |n: usize| -> Result<u32, SampleError> {
        u32::try_from(number(n)?).map_err(|_| bad(&format!("field {n} is out of range")))
    };
    Ok(Stat {
        pid,
        state: field(3)?.chars().next().ok_or_else(|| bad("empty state"))?,
        ppid: small(4)?,
        pgrp: small(5)?,
        cpu_ticks: number(14)? + number(15)?,
        start_ticks: number(22)?,
        vsize_bytes: number(23)?,
        rss_pages: number(24)?,
    })
}

/// Reads `/proc/<pid>/stat`; [`SampleError::Gone`] when the process does not exist.
pub(crate) fn read_stat(pid: u32) -> Result<Stat, SampleError> {
    let path = PathBuf::from(format!("/proc/{pid}/stat"));
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_stat(&text),
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
            Err(SampleError::Gone)
        }
        Err(source) => Err(SampleError::Read { path, source }),
    }
}

/// Every process of the system, as far as it could be read (processes that vanish or cannot be
/// read during the walk are left out). Blocks on `/proc`.
pub(crate) fn snapshot() -> Result<Vec<Stat>, SampleError> {
    let entries = std::fs::read_dir("/proc")
        .map_err(|source| SampleError::Read { path: PathBuf::from("/proc"), source })?;
    Ok(entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter_map(|pid| read_stat(pid).ok())
        .collect())
}

/// What the host remembers of one instance's tree.
#[derive(Debug, Default)]
pub(crate) struct Tracked {
    /// The launcher, which leads the tree's process group and adopts its orphans. It is not counted:
    /// it is a copy-on-write fork of the host whose resident pages are the host's. `None`: the root
    /// leads its own group.
    pub(crate) launcher: Option<u32>,
    /// Every process seen in the tree: pid → start time.
    pub(crate) seen: HashMap<u32, u64>,
}

/// One instance's tree record, shared by the runtime and the sampler.
pub(crate) type TreeRecord = Arc<parking_lot::Mutex<Tracked>>;

static REGISTRY: parking_lot::Mutex<Vec<(u32, Weak<parking_lot::Mutex<Tracked>>)>> =
    parking_lot::const_mutex(Vec::new());

/// Registers the tree rooted at `root` (the plugin) under `launcher`. The record lives as long as
/// the returned handle (the runtime keeps it until the instance is cleaned up).
pub(crate) fn register(root: u32, launcher: u32) -> TreeRecord {
    let record = Arc::new(parking_lot::Mutex::new(Tracked {
        launcher: Some(launcher),
        seen: HashMap::new(),
    }));
    let mut registry = REGISTRY.lock();
    registry.retain(|(pid, weak)| *pid != root && weak.strong_count() > 0);
    registry.push((root, Arc::downgrade(&record)));
    record
}

/// The record the runtime registered for `root`, or a fresh one without a launcher (a process the
/// host did not start through [`ProcessRuntime`](super::ProcessRuntime)).
pub(crate) fn record_for(root: u32) -> TreeRecord {
    REGISTRY
        .lock()
        .iter()
        .find(|(pid, _)| *pid == root)
        .and_then(|(_, weak)| weak.upgrade())
        .unwrap_or_else(|| {
            Arc::new(parking_lot::Mutex::new(Tracked { launcher: None, seen: HashMap::new() }))
        })
}

/// The processes of the tree rooted at `root` in `table` (see the module docs), zombies and the
/// launcher left out. Remembers every member in `tracked.seen`
/// (forgetting the ones that are gone), so a later call still finds a member whose parent died.
pub(crate) fn members<'a>(table: &'a [Stat], root: u32, tracked: &mut Tracked) -> Vec<&'a Stat> {
    let mut children: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, stat) in table.iter().enumerate() {
        children.entry(stat.ppid).or_default().push(i);
    }
    let group = tracked.launcher.unwrap_or(root);
    let launcher = tracked.launcher;
    let mut queue: Vec<usize> = table
        .iter()
        .enumerate()
        .filter(|(_, s)| Some(s.pid) != launcher)
        .filter(|(_, s)| {
            s.pid == root
                || s.pgrp == group
                || Some(s.ppid) == launcher
                || tracked.seen.get(&s.pid).is_some_and(|start| *start == s.start_ticks)
        })
        .map(|(i, _)| i)
        .collect();
    let mut inside: HashSet<usize> = queue.iter().copied().collect();
    while let Some(i) = queue.pop() {
        for &child in children.get(&table[i].pid).map(Vec::as_slice).unwrap_or_default() {
            if Some(table[child].pid) != launcher && inside.insert(child) {
                queue.push(child);
            }
        }
    }
    let mut found: Vec<&Stat> = inside.into_iter().map(|i| &table[i]).collect();
    found.sort_by_key(|s| s.pid);
    tracked.seen = found.iter().map(|s| (s.pid, s.start_ticks)).collect();
    found.retain(|s| !s.is_dead());
    found
}

/// The tree's processes (as [`members`] finds them) by walking `/proc/<pid>/task/<tid>/children`
/// down from the launcher (whose descendants are the whole tree: it adopts the orphans) plus the
/// processes seen before: a few reads per member instead of the whole of `/proc`. `None` when the
/// kernel has no `children` files (then use [`snapshot`] and [`members`]).
pub(crate) fn walk(root: u32, tracked: &mut Tracked) -> Option<Vec<Stat>> {
    let start = tracked.launcher.unwrap_or(root);
    // (pid, start time it must have: for a process remembered rather than found as a child)
    let mut queue: Vec<(u32, Option<u64>)> = vec![(start, None)];
    queue.extend(tracked.seen.iter().map(|(pid, at)| (*pid, Some(*at))));
    let mut visited: HashSet<u32> = HashSet::new();
    let mut found = Vec::new();
    while let Some((pid, must_start)) = queue.pop() {
        let Ok(stat) = read_stat(pid) else { continue };
        if must_start.is_some_and(|at| at != stat.start_ticks) || !visited.insert(pid) {
            continue; // a reused pid, or one already walked
        }
        match children(pid) {
            Some(more) => queue.extend(more.into_iter().map(|child| (child, None))),
            None if pid == start => return None,
            None => {}
        }
        if Some(pid) != tracked.launcher {
            found.push(stat);
        }
    }
    found.sort_by_key(|s| s.pid);
    tracked.seen = found.iter().map(|s| (s.pid, s.start_ticks)).collect();
    found.retain(|s| !s.is_dead());
    Some(found)
}

/// The children of `pid`, from the `children` file of each of its threads; `None` when the
/// process's first thread has no such file.
fn children(pid: u32) -> Option<Vec<u32>> {
    let first = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"));
    let mut all: Vec<u32> = match first {
        Ok(text) => text.split_whitespace().filter_map(|c| c.parse().ok()).collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound && read_stat(pid).is_ok() => return None,
        Err(_) => return Some(Vec::new()),
    };
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for tid in
            tasks.filter_map(Result::ok).filter_map(|t| t.file_name().to_str()?.parse::<u32>().ok())
        {
            if tid != pid
                && let Ok(text) =
                    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/children"))
            {
                all.extend(text.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
            }
        }
    }
    Some(all)
}

/// SIGKILLs every process left in the tree rooted at `root` (once its launcher has exited), in
/// rounds until none is left alive or `rounds` are used up: killing a parent reparents its children
/// away from the tree, so each round remembers what it saw first. Blocks on `/proc`; returns how
/// many processes it signalled.
pub(crate) fn kill_remains(root: u32, record: &TreeRecord, rounds: usize) -> usize {
    let mut killed = 0;
    for round in 0..rounds {
        let Ok(table) = snapshot() else { return killed };
        let targets: Vec<u32> = {
            let mut tracked = record.lock();
            let found = members(&table, root, &mut tracked);
            found.iter().map(|s| s.pid).filter(|pid| *pid != std::process::id()).collect()
        };
        if targets.is_empty() {
            break;
        }
        for pid in &targets {
            sys::kill(*pid);
        }
        killed += targets.len();
        if round + 1 < rounds {
            // Dying takes the kernel a moment; the next round looks again.
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    killed
}

#[allow(unsafe_code)]
mod sys {
    /// SIGKILL to one process.
    pub(super) fn kill(pid: u32) {
        if let Ok(pid) = i32::try_from(pid)
            && pid > 1
        {
            // SAFETY: kill(2) on a positive pid; no memory is involved.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str =
        "1234 (a) b (c) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 9876 1000 200";

    fn proc(pid: u32, ppid: u32, pgrp: u32) -> Stat {
        Stat {
            pid,
            state: 'S',
            ppid,
            pgrp,
            cpu_ticks: 0,
            start_ticks: pid.into(),
            rss_pages: 1,
            vsize_bytes: 0,
        }
    }

    #[test]
    fn stat_is_parsed_from_the_last_parenthesis() {
        let stat = parse_stat(STAT).unwrap();
        assert_eq!(
            stat,
            Stat {
                pid: 1234,
                state: 'S',
                ppid: 1,
                pgrp: 1234,
                cpu_ticks: 300,
                start_ticks: 9876,
                rss_pages: 200,
                vsize_bytes: 1000,
            }
        );
    }

    #[test]
    fn odd_proc_content_is_an_error_not_a_panic() {
        assert!(parse_stat("").is_err());
        assert!(parse_stat("12 (x) S 1 2").is_err());
        assert!(parse_stat("12 (x) S 1 1 1 0 -1 0 0 0 0 0 ten 5 0 0 0 0 1 0 9 0 0").is_err());
        assert!(parse_stat("x (x) S 1 1 1 0 -1 0 0 0 0 0 1 5 0 0 0 0 1 0 9 0 0").is_err());
    }

    #[test]
    fn the_tree_holds_descendants_the_group_the_launchers_orphans_and_orphans_seen_before() {
        // 9 is the launcher, 10 the plugin; 11 its child, 12 a grandchild; 20 joined 9's group;
        // 21 an orphan the launcher adopted; 30 is unrelated.
        let mut table = vec![proc(9, 1, 9), proc(10, 9, 9), proc(11, 10, 9), proc(12, 11, 12)];
        table.extend([proc(20, 5, 9), proc(21, 9, 21), proc(30, 1, 30)]);
        let mut tracked = Tracked { launcher: Some(9), seen: HashMap::new() };
        let pids = |found: Vec<&Stat>| found.iter().map(|s| s.pid).collect::<Vec<_>>();
        assert_eq!(pids(members(&table, 10, &mut tracked)), [10, 11, 12, 20, 21]);
        table.retain(|s| s.pid != 21 && s.pid != 10 && s.pid != 9);
        // 11 dies: 12 (its own group, a setsid escapee) is reparented to init but still counted.
        table.retain(|s| s.pid != 11);
        table.iter_mut().filter(|s| s.pid == 12).for_each(|s| s.ppid = 1);
        table.push(proc(13, 12, 12));
        assert_eq!(pids(members(&table, 10, &mut tracked)), [12, 13, 20]);
        // A reused pid (another start time) is a stranger; its child seen before is still ours.
        table.iter_mut().filter(|s| s.pid == 12).for_each(|s| s.start_ticks = 99);
        assert_eq!(pids(members(&table, 10, &mut tracked)), [13, 20]);
        // Without a launcher the root leads its group and counts itself.
        let table = [proc(10, 1, 10), proc(11, 10, 10), proc(30, 1, 30)];
        let mut tracked = Tracked::default();
        assert_eq!(pids(members(&table, 10, &mut tracked)), [10, 11]);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn walking_children_finds_a_child_and_its_child() {
        let mut child =
            std::process::Command::new("sh").args(["-c", "sleep 30 & wait"]).spawn().unwrap();
        let root = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut tracked = Tracked::default();
        let found = loop {
            let found = walk(root, &mut tracked).unwrap();
            if found.len() == 2 || std::time::Instant::now() > deadline {
                break found;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let _ =
            std::process::Command::new("kill").arg(found.last().unwrap().pid.to_string()).status();
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found.iter().filter(|s| s.ppid == root).count(), 1);
    }
}
