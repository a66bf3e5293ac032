//! CPU and memory of a plugin's whole process tree, read from `/proc` (Linux), and the limit rule.
//!
//! [`ProcessSampler`] walks `/proc/*/stat` for the plugin's tree: the process it was made for, every
//! descendant (children by parent pid), every process of its process group, and every descendant it
//! saw before whose parent has died (remembered by pid and start time). CPU % is the tree's share of
//! one core used between two samples (100 % = one full core; a tree can use several); the first
//! sample of a sampler reports each process's average since it started. Memory is the sum of the
//! tree's resident set sizes in MB, where 1 MB = 1 048 576 bytes (pages shared between the processes
//! count once per process, so a forking plugin reads high rather than low). [`LimitWatch`] flags a process over a limit on two samples in a row
//! (DESIGN §5).
//!
//! Sampling is Linux only. Elsewhere every sample is [`SampleError::Unsupported`] (logged once as a
//! warning), so no plugin is ever killed for its limits there.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::time::Instant;

use super::tree::{self, TreeRecord};

/// One measurement of a process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResourceSample {
    /// CPU use since the previous sample, in percent of one core.
    pub cpu_percent: f64,
    /// Resident memory, MB (MiB).
    pub memory_mb: f64,
    /// When it was taken.
    pub at: Instant,
}

/// Why a sample could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// The process no longer exists.
    #[error("process is gone")]
    Gone,
    /// This operating system has no `/proc` to sample (only Linux is supported).
    #[error("resource sampling is only supported on Linux")]
    Unsupported,
    /// A `/proc` file could not be read (or the read could not run); the cause says why.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// `/proc` said something unexpected.
    #[error("cannot parse /proc: {0}")]
    Parse(String),
}

/// CPU ticks of each process of a tree at one sample: pid → (start time, ticks).
type CpuTicks = HashMap<u32, (u64, u64)>;

/// Samples one plugin instance's process tree (see the module docs): the process `pid` and all
/// its descendants, its process group, and descendants seen before whose parent died. Keeps each
/// process's previous CPU reading to compute CPU use between samples.
#[derive(Debug, Clone)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub struct ProcessSampler {
    pid: u32,
    previous: Option<(CpuTicks, Instant)>,
    record: TreeRecord,
    ticks_per_second: f64,
    page_size: f64,
}

impl ProcessSampler {
    /// A sampler for the tree rooted at process `pid`. For an instance started by
    /// [`ProcessRuntime`](super::ProcessRuntime), `pid` is its launcher, which is not counted itself
    /// (it shares the host's pages) and whose tree record the runtime shares with the sampler.
    pub fn new(pid: u32) -> Self {
        let (ticks_per_second, page_size) = sys::clock_and_page();
        Self { pid, previous: None, record: tree::record_for(pid), ticks_per_second, page_size }
    }

    /// Takes a sample on the blocking thread pool, so that reading `/proc` never holds up an async
    /// worker thread. Use this from async code; [`sample`](Self::sample) is the same, synchronously.
    pub async fn sample_async(&mut self) -> Result<ResourceSample, SampleError> {
        let mut sampler = self.clone();
        let pid = self.pid;
        let (sampler, result) = tokio::task::spawn_blocking(move || {
            let result = sampler.sample();
            (sampler, result)
        })
        .await
        .map_err(|join| SampleError::Read {
            path: PathBuf::from(format!("/proc/{pid}")),
            source: io::Error::other(join),
        })?;
        *self = sampler;
        result
    }

    /// Takes a sample of the whole tree, reading `/proc` (this blocks; async code uses
    /// [`sample_async`](Self::sample_async)). [`SampleError::Gone`] once the root process is gone.
    ///
    /// CPU is the sum over the tree's processes of the CPU time used since the previous sample (all
    /// of it for a process new since then; a process that ended between two samples loses its last
    /// share); memory is the sum of their resident sets.
    #[cfg(target_os = "linux")]
    pub fn sample(&mut self) -> Result<ResourceSample, SampleError> {
        if tree::read_stat(self.pid)?.is_dead() {
            return Err(SampleError::Gone);
        }
        let walked = tree::walk(self.pid, &mut self.record.lock());
        let members: Vec<tree::Stat> = match walked {
            Some(members) => members,
            None => {
                let table = tree::snapshot()?;
                let mut tracked = self.record.lock();
                tree::members(&table, self.pid, &mut tracked).into_iter().copied().collect()
            }
        };
        let now = Instant::now();
        let resident_pages: u64 = members.iter().map(|s| s.rss_pages).sum();
        let cpu_percent = match &self.previous {
            Some((before, at)) => {
                let wall = now.saturating_duration_since(*at).as_secs_f64();
                let ticks: u64 = members
                    .iter()
                    .map(|s| match before.get(&s.pid) {
                        Some((start, ticks)) if *start == s.start_ticks => {
                            s.cpu_ticks.saturating_sub(*ticks)
                        }
                        _ => s.cpu_ticks,
                    })
                    .sum();
                if wall > 0.0 { ticks as f64 / self.ticks_per_second / wall * 100.0 } else { 0.0 }
            }
            None => members.iter().map(|s| self.average_since_start(s)).sum(),
        };
        self.previous =
            Some((members.iter().map(|s| (s.pid, (s.start_ticks, s.cpu_ticks))).collect(), now));
        Ok(ResourceSample {
            cpu_percent,
            memory_mb: resident_pages as f64 * self.page_size / 1_048_576.0,
            at: now,
        })
    }

    /// Takes a sample: on this operating system, always [`SampleError::Unsupported`]. The first call
    /// in the process logs a warning that resource limits are not enforced.
    #[cfg(not(target_os = "linux"))]
    pub fn sample(&mut self) -> Result<ResourceSample, SampleError> {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!(
                message = "plugin CPU and memory cannot be measured on this operating system \
                           (Linux only): limits are not enforced and no usage is reported",
                os = std::env::consts::OS,
            );
        });
        Err(SampleError::Unsupported)
    }

    #[cfg(target_os = "linux")]
    fn average_since_start(&self, stat: &tree::Stat) -> f64 {
        let uptime = std::fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|u| u.split_whitespace().next().and_then(|s| s.parse::<f64>().ok()));
        let Some(uptime) = uptime else { return 0.0 };
        let age = uptime - stat.start_ticks as f64 / self.ticks_per_second;
        if age > 0.0 { stat.cpu_ticks as f64 / self.ticks_per_second / age * 100.0 } else { 0.0 }
    }
}

/// The verdict of a [`LimitWatch`] on a sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Within limits, or over for the first time.
    Ok,
    /// Over a limit on two samples in a row; says which, e.g. `memory 260 MB over limit 200 MB`.
    Over {
        /// The measurement and the limit.
        reason: String,
    },
}

/// Applies a plugin's limits to its samples: over a limit twice in a row is a verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitWatch {
    memory_mb: Option<f64>,
    cpu_percent: Option<f64>,
    memory_streak: u32,
    cpu_streak: u32,
}

impl LimitWatch {
    /// Watches for `memory_mb` and `cpu_percent` (either may be absent).
    pub fn new(memory_mb: Option<f64>, cpu_percent: Option<f64>) -> Self {
        Self { memory_mb, cpu_percent, memory_streak: 0, cpu_streak: 0 }
    }

    /// Takes one sample into account.
    pub fn check(&mut self, sample: &ResourceSample) -> Verdict {
        let over = |value: f64, limit: Option<f64>, streak: &mut u32| match limit {
            Some(limit) if value > limit => {
                *streak += 1;
                *streak >= 2
            }
            _ => {
                *streak = 0;
                false
            }
        };
        let memory_over = over(sample.memory_mb, self.memory_mb, &mut self.memory_streak);
        let cpu_over = over(sample.cpu_percent, self.cpu_percent, &mut self.cpu_streak);
        if memory_over {
            let limit = self.memory_mb.unwrap_or_default();
            return Verdict::Over {
                reason: format!("memory {:.0} MB over limit {limit:.0} MB", sample.memory_mb),
            };
        }
        if cpu_over {
            let limit = self.cpu_percent.unwrap_or_default();
            return Verdict::Over {
                reason: format!("cpu {:.0}% over limit {limit:.0}%", sample.cpu_percent),
            };
        }
        Verdict::Ok
    }
}

/// What the kernel says about the host process itself (`/proc/self`), for the `process_*` metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostUsage {
    /// User plus system CPU time used so far, seconds.
    pub cpu_seconds: f64,
    /// Resident memory, bytes.
    pub resident_bytes: f64,
    /// Virtual memory, bytes.
    pub virtual_bytes: f64,
    /// When the process started, seconds since the Unix epoch (`None` if the boot time is unknown).
    pub start_time_seconds: Option<f64>,
    /// Open file descriptors (`None` if `/proc/self/fd` cannot be read).
    pub open_fds: Option<f64>,
}

impl HostUsage {
    /// Reads `/proc/self` with the same parser as the plugin sampler (blocks briefly on `/proc`).
    /// [`SampleError::Unsupported`] on an operating system other than Linux.
    #[cfg(target_os = "linux")]
    pub fn read() -> Result<Self, SampleError> {
        let stat = tree::read_stat(std::process::id())?;
        let (ticks, page) = sys::clock_and_page();
        let boot_time = std::fs::read_to_string("/proc/stat").ok().and_then(|stat| {
            stat.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
        });
        Ok(Self {
            cpu_seconds: stat.cpu_ticks as f64 / ticks,
            resident_bytes: stat.rss_pages as f64 * page,
            virtual_bytes: stat.vsize_bytes as f64,
            start_time_seconds: boot_time.map(|boot: f64| boot + stat.start_ticks as f64 / ticks),
            open_fds: std::fs::read_dir("/proc/self/fd").ok().map(|dir| dir.count() as f64),
        })
    }

    /// Reads `/proc/self`: on this operating system, always [`SampleError::Unsupported`].
    #[cfg(not(target_os = "linux"))]
    pub fn read() -> Result<Self, SampleError> {
        Err(SampleError::Unsupported)
    }
}

#[allow(unsafe_code)]
mod sys {
    /// Clock ticks per second and page size in bytes, with Linux's usual values as fallback.
    pub(super) fn clock_and_page() -> (f64, f64) {
        // SAFETY: sysconf only reads system constants.
        let (ticks, page) =
            unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
        (if ticks > 0 { ticks as f64 } else { 100.0 }, if page > 0 { page as f64 } else { 4096.0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    use std::time::Duration;

    fn sample(cpu: f64, mem: f64) -> ResourceSample {
        ResourceSample { cpu_percent: cpu, memory_mb: mem, at: Instant::now() }
    }

    #[test]
    fn a_limit_counts_only_when_exceeded_twice_in_a_row() {
        let mut w = LimitWatch::new(Some(200.0), Some(50.0));
        assert_eq!(w.check(&sample(10.0, 260.0)), Verdict::Ok);
        assert_eq!(w.check(&sample(10.0, 150.0)), Verdict::Ok, "a dip resets the streak");
        assert_eq!(w.check(&sample(10.0, 260.0)), Verdict::Ok);
        assert_eq!(
            w.check(&sample(10.0, 260.4)),
            Verdict::Over { reason: "memory 260 MB over limit 200 MB".into() }
        );
        let mut w = LimitWatch::new(None, Some(50.0));
        w.check(&sample(97.0, 1.0));
        assert_eq!(
            w.check(&sample(97.2, 1.0)),
            Verdict::Over { reason: "cpu 97% over limit 50%".into() }
        );
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn this_process_has_memory() {
        let s = ProcessSampler::new(std::process::id()).sample().unwrap();
        assert!(s.memory_mb > 0.0);
    }

    #[tokio::test]
    #[cfg(target_os = "linux")]
    async fn async_sampling_reads_on_the_blocking_pool_and_keeps_the_cpu_baseline() {
        let mut sampler = ProcessSampler::new(std::process::id());
        let first = sampler.sample_async().await.unwrap();
        assert!(first.memory_mb > 0.0);
        let second = sampler.sample_async().await.unwrap();
        assert!(
            second.at >= first.at
                && sampler.previous.as_ref().is_some_and(|(_, at)| *at == second.at)
        );
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_spinning_child_shows_cpu_and_a_reaped_one_is_gone() {
        let mut child = Command::new("sh").args(["-c", "while :; do :; done"]).spawn().unwrap();
        let mut sampler = ProcessSampler::new(child.id());
        sampler.sample().unwrap();
        // The measurement window is the point here, not synchronisation.
        std::thread::sleep(Duration::from_millis(300));
        let s = sampler.sample();
        // Reap the child before asserting, so a failure leaves no spinning process behind.
        child.kill().unwrap();
        child.wait().unwrap();
        // A loaded machine (2 cores, several builds) gives the spinner a small share; any clear
        // reading shows the measurement works.
        let s = s.unwrap();
        assert!(s.cpu_percent > 5.0, "{s:?}");
        assert!(matches!(sampler.sample(), Err(SampleError::Gone)));
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_child_holding_64_mb_shows_it() {
        let mut child = Command::new("python3")
            .args(["-c", "b = b'x' * (64*1024*1024); import sys; sys.stdout.write('ok\\n'); sys.stdout.flush(); sys.stdin.read()"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line, "ok\n");
        let s = ProcessSampler::new(child.id()).sample().unwrap();
        assert!(s.memory_mb >= 60.0, "{s:?}");
        drop(child.stdin.take());
        child.wait().unwrap();
    }
}
