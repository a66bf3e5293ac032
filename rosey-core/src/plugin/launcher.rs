//! The launcher: the small process between the host and a plugin that holds the plugin's whole
//! process tree, and the kernel-enforced memory cap.
//!
//! [`ProcessRuntime`](super::ProcessRuntime) spawns every plugin through a launcher. The launcher is
//! the host's forked child (no `exec`, so no extra program to ship); it leads the plugin's process
//! group, is a *child subreaper* (`PR_SET_CHILD_SUBREAPER`), so every descendant of the plugin whose
//! parent dies is reparented to it rather than to PID 1, `setsid()` double-fork escapees included,
//! and gets `SIGTERM` when the host dies (`PR_SET_PDEATHSIG`). It forks the plugin, which gets
//! `SIGKILL` if the launcher dies and then `exec`s the plugin's program with the pipes untouched.
//!
//! The launcher then waits. When the plugin exits, or on `SIGTERM`/`SIGINT`/`SIGHUP` (the host's
//! stop, or the host's death), it SIGKILLs its children in rounds (orphans come back to it as
//! children) until it has none left, and exits the way the plugin did: the same exit code, or
//! killed by the same signal, so the host reports the plugin's own status.
//!
//! Everything the launcher does runs between `fork` and `exit` of a copy of a multi-threaded
//! process, so it allocates nothing, takes no lock and only makes system calls: buffers are on the
//! stack and `/proc` is read with `getdents64`.

use std::ffi::CString;
use std::fmt;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use tokio::process::Command;

/// How a plugin instance's memory limit is enforced beyond sampling (the sampler always checks the
/// whole tree against `limits.memory_mb` too, and kills it when over twice in a row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemoryEnforcement {
    /// The manifest sets no memory limit.
    Unlimited,
    /// Sampling only, no kernel cap (the in-process runtime, or a system without either kind).
    SampledOnly,
    /// cgroup v2 `memory.max` on a cgroup of the instance's own: the kernel caps the whole tree.
    CgroupMemoryMax {
        /// The cap, bytes.
        max_bytes: u64,
    },
    /// `RLIMIT_DATA` on the plugin process, inherited by each process it starts: the kernel refuses
    /// heap growth past the cap in any one process (the tree as a whole is left to sampling).
    DataRlimit {
        /// The cap, bytes per process.
        max_bytes: u64,
    },
}

impl fmt::Display for MemoryEnforcement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mb = |bytes: u64| bytes / (1024 * 1024);
        match self {
            Self::Unlimited => f.write_str("no memory limit"),
            Self::SampledOnly => f.write_str("sampled only"),
            Self::CgroupMemoryMax { max_bytes } => {
                write!(f, "cgroup memory.max {} MB for the tree", mb(*max_bytes))
            }
            Self::DataRlimit { max_bytes } => {
                write!(f, "RLIMIT_DATA {} MB per process", mb(*max_bytes))
            }
        }
    }
}

/// The kernel cap for a limit of `limit_mb`: the limit plus half of it, at least plus 32 MB. The
/// headroom lets the sampler see the tree over its limit and kill it with a reason first; the cap
/// only stops what grows faster than two samples, well before twice the limit for limits of 64 MB
/// and more. (`RLIMIT_DATA` counts reserved, untouched heap as well, hence a floor.)
pub(crate) fn cap_bytes(limit_mb: f64) -> u64 {
    let limit = limit_mb.max(0.0);
    ((limit + (limit / 2.0).max(32.0)) * 1024.0 * 1024.0) as u64
}

/// A cgroup v2 directory under which the host may create plugin cgroups with the memory
/// controller: the parent of the host's own cgroup, when its `cgroup.subtree_control` enables
/// `memory` and the host may write there (a delegated subtree where the host runs in a leaf of its
/// own, e.g. systemd `Delegate=yes` with the host moved to `<service>/host`). `None` otherwise.
/// Blocks briefly on `/proc` and `/sys`.
pub(crate) fn delegated_cgroup_parent() -> Option<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    delegated_parent_in(&own, &mounts, |path| {
        let controls = std::fs::read_to_string(path.join("cgroup.subtree_control")).ok()?;
        let writable = access_writable(path);
        Some(controls.split_whitespace().any(|c| c == "memory") && writable)
    })
}

/// [`delegated_cgroup_parent`] on given `/proc/self/cgroup` and `mountinfo` texts; `usable` says
/// whether a directory has the memory controller for its children and is writable.
fn delegated_parent_in(
    own_cgroups: &str,
    mountinfo: &str,
    usable: impl Fn(&Path) -> Option<bool>,
) -> Option<PathBuf> {
    let own = own_cgroups.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
    // mountinfo: id parent major:minor root mount-point options... - fstype source options
    let mount = mountinfo.lines().find_map(|line| {
        let (fields, fs) = line.split_once(" - ")?;
        let fields: Vec<&str> = fields.split(' ').collect();
        (fs.split(' ').next() == Some("cgroup2") && fields.get(3) == Some(&"/"))
            .then(|| fields.get(4).map(PathBuf::from))
            .flatten()
    })?;
    let own_dir = mount.join(own.trim_start_matches('/'));
    let parent = own_dir.parent()?.to_path_buf();
    if !parent.starts_with(&mount) || parent == mount {
        // The root cgroup is the system's, not a delegated one.
        return None;
    }
    usable(&parent).filter(|ok| *ok).map(|_| parent)
}

#[allow(unsafe_code)]
fn access_writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else { return false };
    // SAFETY: access(2) reads a NUL-terminated path we own.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// A cgroup made for one instance; removed (after `cgroup.kill`) by [`PluginCgroup::remove`].
#[derive(Debug)]
pub(crate) struct PluginCgroup {
    dir: PathBuf,
}

impl PluginCgroup {
    /// Creates `<parent>/rosey-<name>-<n>` with `memory.max = max_bytes` (and swap off when the
    /// kernel offers it). Blocks on `/sys`.
    pub(crate) fn create(parent: &Path, name: &str, max_bytes: u64) -> io::Result<Self> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let safe: String =
            name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        let dir = parent.join(format!(
            "rosey-{}-{safe}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir)?;
        let cgroup = Self { dir };
        std::fs::write(cgroup.dir.join("memory.max"), max_bytes.to_string())?;
        // Swap would let the tree run past the cap on disk; absent without swap accounting.
        let _ = std::fs::write(cgroup.dir.join("memory.swap.max"), "0");
        Ok(cgroup)
    }

    /// `cgroup.procs` of this cgroup, for the launcher to join before it forks the plugin.
    fn procs(&self) -> io::Result<CString> {
        use std::os::unix::ffi::OsStrExt;
        CString::new(self.dir.join("cgroup.procs").as_os_str().as_bytes()).map_err(io::Error::other)
    }

    /// Kills whatever is still in the cgroup and removes it. Blocks on `/sys`.
    pub(crate) fn remove(&self) {
        if let Ok(mut kill) =
            std::fs::OpenOptions::new().write(true).open(self.dir.join("cgroup.kill"))
        {
            let _ = kill.write_all(b"1");
        }
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        tracing::warn!(message = "cannot remove plugin cgroup", cgroup = %self.dir.display());
    }
}

/// What the launcher sets up for the plugin.
#[derive(Debug, Default)]
pub(crate) struct LaunchPlan {
    /// `RLIMIT_DATA` for the plugin, bytes.
    pub(crate) data_limit: Option<u64>,
    /// The cgroup the launcher (and so the whole tree) joins.
    pub(crate) cgroup: Option<PluginCgroup>,
}

impl LaunchPlan {
    /// Makes `command` spawn through a launcher (see the module docs). The command must also be
    /// put in a new process group (`process_group(0)`), which the launcher then leads. The
    /// launcher tells the plugin's pid through the returned [`PidReceiver`].
    pub(crate) fn install(&self, command: &mut Command) -> io::Result<PidReceiver> {
        let procs = self.cgroup.as_ref().map(PluginCgroup::procs).transpose()?;
        let (read, write) = sys::pipe()?;
        sys::install(command, std::process::id(), self.data_limit, procs, write.as_raw_fd());
        Ok(PidReceiver { read, write: Some(write) })
    }
}

/// Where the launcher writes the pid of the plugin it forked.
#[derive(Debug)]
pub(crate) struct PidReceiver {
    read: OwnedFd,
    write: Option<OwnedFd>,
}

impl PidReceiver {
    /// The plugin's pid, once the command was spawned: blocks until the launcher writes it (right
    /// after its fork) or exits without doing so (an error).
    pub(crate) fn receive(mut self) -> io::Result<u32> {
        use std::io::Read;
        drop(self.write.take());
        let mut bytes = [0u8; 4];
        std::fs::File::from(self.read).read_exact(&mut bytes)?;
        Ok(u32::from_ne_bytes(bytes))
    }
}

#[allow(unsafe_code)]
mod sys {
    use std::ffi::CString;
    use std::io;
    use std::os::fd::{OwnedFd, RawFd};

    use tokio::process::Command;

    /// Signals that make the launcher stop the plugin and clean up.
    const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

    fn errno() -> io::Error {
        io::Error::last_os_error()
    }

    /// A close-on-exec pipe: (read end, write end).
    pub(super) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
        use std::os::fd::FromRawFd;
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 fills the two-int array; the fds are new and owned by nobody else.
        unsafe {
            if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
                return Err(errno());
            }
            Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
        }
    }

    pub(super) fn install(
        command: &mut Command,
        host: u32,
        data_limit: Option<u64>,
        procs: Option<CString>,
        pid_out: RawFd,
    ) {
        // SAFETY: the closure runs in the forked child before exec. It allocates nothing and takes
        // no lock, on every path (io::Error from an errno does not allocate): it only makes system
        // calls on data prepared before the fork (`procs`, `host`, `data_limit`, `pid_out`).
        unsafe {
            command.pre_exec(move || {
                if let Some(procs) = &procs {
                    join_cgroup(procs)?;
                }
                if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0 {
                    return Err(errno());
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) != 0 {
                    return Err(errno());
                }
                // The host may have died between fork and prctl: then the signal never comes.
                if libc::getppid() as u32 != host {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                // The host's signal handlers are no use here (and write to the host's fds).
                for signal in 1..libc::SIGRTMIN() {
                    if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                        libc::signal(signal, libc::SIG_DFL);
                    }
                }
                let mut waited: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut waited);
                libc::sigaddset(&mut waited, libc::SIGCHLD);
                for signal in STOP_SIGNALS {
                    libc::sigaddset(&mut waited, signal);
                }
                // Blocked before the fork, so no exit or stop of the plugin goes unnoticed.
                libc::sigprocmask(libc::SIG_BLOCK, &waited, std::ptr::null_mut());
                let launcher = libc::getpid();
                match libc::fork() {
                    -1 => Err(errno()),
                    0 => {
                        // The plugin: dies with its launcher, starts with no signal blocked.
                        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                            return Err(errno());
                        }
                        if libc::getppid() != launcher {
                            return Err(io::Error::from_raw_os_error(libc::ESRCH));
                        }
                        libc::sigprocmask(libc::SIG_UNBLOCK, &waited, std::ptr::null_mut());
                        if let Some(bytes) = data_limit {
                            let limit = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
                            if libc::setrlimit(libc::RLIMIT_DATA, &limit) != 0 {
                                return Err(errno());
                            }
                        }
                        Ok(())
                    }
                    plugin => {
                        libc::write(pid_out, plugin.to_ne_bytes().as_ptr().cast(), 4);
                        launch(plugin, &waited)
                    }
                }
            });
        }
    }

    /// Writes `0` (this process) to a cgroup's `cgroup.procs`.
    unsafe fn join_cgroup(procs: &CString) -> io::Result<()> {
        // SAFETY (caller): runs in the forked child; open/write/close on a path prepared before.
        unsafe {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(errno());
            }
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            let error = errno();
            libc::close(fd);
            if written != 1 { Err(error) } else { Ok(()) }
        }
    }

    /// The launcher's life: wait for the plugin or a stop signal, clean up, exit like the plugin.
    unsafe fn launch(plugin: libc::pid_t, waited: &libc::sigset_t) -> ! {
        // SAFETY (caller): runs in a forked child of a multi-threaded process and never returns.
        unsafe {
            // Every inherited fd goes, the pipes too (the plugin has them) and the pipe through
            // which the host's spawn learns that exec happened.
            if libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) != 0 {
                for fd in 0..4096 {
                    libc::close(fd);
                }
            }
            let mut status: Option<libc::c_int> = None;
            while status.is_none() {
                let signal = libc::sigwaitinfo(waited, std::ptr::null_mut());
                if signal == libc::SIGCHLD {
                    status = reap(plugin, libc::WNOHANG);
                } else if STOP_SIGNALS.contains(&signal) {
                    libc::kill(plugin, libc::SIGKILL);
                    status = reap(plugin, 0);
                }
            }
            kill_children();
            let status = status.unwrap_or(0);
            if libc::WIFSIGNALED(status) {
                let signal = libc::WTERMSIG(status);
                let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                libc::setrlimit(libc::RLIMIT_CORE, &no_core);
                libc::signal(signal, libc::SIG_DFL);
                let mut only: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut only);
                libc::sigaddset(&mut only, signal);
                libc::kill(libc::getpid(), signal);
                libc::sigprocmask(libc::SIG_UNBLOCK, &only, std::ptr::null_mut());
                libc::_exit(128 + signal);
            }
            libc::_exit(if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 1 })
        }
    }

    /// Reaps children (blocking for `plugin` when `flags` is 0) and returns the plugin's wait
    /// status once it has exited.
    unsafe fn reap(plugin: libc::pid_t, flags: libc::c_int) -> Option<libc::c_int> {
        let mut found = None;
        loop {
            let mut status = 0;
            // SAFETY (caller): waitpid writes to a local.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid == plugin {
                found = Some(status);
            }
            if pid > 0 {
                continue;
            }
            if found.is_some() || flags & libc::WNOHANG != 0 {
                return found;
            }
            // Blocking: wait for the plugin itself.
            let pid = unsafe { libc::waitpid(plugin, &mut status, 0) };
            if pid == plugin {
                return Some(status);
            }
            if pid < 0 && errno().raw_os_error() != Some(libc::EINTR) {
                return None;
            }
        }
    }

    /// SIGKILLs the launcher's children in rounds, reaping them, until it has none: as a subreaper
    /// it inherits each killed process's children, so when it has none the whole tree is gone.
    unsafe fn kill_children() {
        // SAFETY (caller): system calls on local buffers only.
        unsafe {
            let me = libc::getpid();
            loop {
                for_each_child(me, |child| {
                    libc::kill(child, libc::SIGKILL);
                });
                let mut status = 0;
                let pid = libc::waitpid(-1, &mut status, 0);
                if pid < 0 {
                    match errno().raw_os_error() {
                        Some(libc::EINTR) => continue,
                        _ => return, // ECHILD: no child left.
                    }
                }
                while libc::waitpid(-1, &mut status, libc::WNOHANG) > 0 {}
            }
        }
    }

    /// Calls `f` with each live process whose parent is `parent`, reading `/proc` without
    /// allocating.
    unsafe fn for_each_child(parent: libc::pid_t, mut f: impl FnMut(libc::pid_t)) {
        // SAFETY (caller): open/getdents64/read/close on stack buffers.
        unsafe {
            let dir =
                libc::open(c"/proc".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC);
            if dir < 0 {
                return;
            }
            let mut entries = [0u8; 8192];
            loop {
                let n =
                    libc::syscall(libc::SYS_getdents64, dir, entries.as_mut_ptr(), entries.len());
                if n <= 0 {
                    break;
                }
                let mut at = 0usize;
                while at + 19 < n as usize {
                    // struct linux_dirent64: ino u64, off i64, reclen u16, type u8, name.
                    let reclen = u16::from_ne_bytes([entries[at + 16], entries[at + 17]]) as usize;
                    if reclen == 0 {
                        break;
                    }
                    let name = &entries[at + 19..(at + reclen).min(n as usize)];
                    if let Some(pid) = parse_pid(name)
                        && pid != parent
                        && parent_of(pid) == Some(parent)
                    {
                        f(pid);
                    }
                    at += reclen;
                }
            }
            libc::close(dir);
        }
    }

    /// A NUL-terminated decimal name as a pid.
    fn parse_pid(name: &[u8]) -> Option<libc::pid_t> {
        let mut pid: libc::pid_t = 0;
        let mut digits = 0;
        for &b in name.iter().take_while(|b| **b != 0) {
            if !b.is_ascii_digit() || digits >= 9 {
                return None;
            }
            pid = pid * 10 + libc::pid_t::from(b - b'0');
            digits += 1;
        }
        (digits > 0).then_some(pid)
    }

    /// The parent pid of a live (not zombie) process, from `/proc/<pid>/stat`.
    unsafe fn parent_of(pid: libc::pid_t) -> Option<libc::pid_t> {
        let mut path = [0u8; 32];
        let mut len = 0;
        for &b in b"/proc/" {
            path[len] = b;
            len += 1;
        }
        let mut digits = [0u8; 10];
        let (mut n, mut count) = (pid, 0);
        loop {
            digits[count] = b'0' + (n % 10) as u8;
            count += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for i in (0..count).rev() {
            path[len] = digits[i];
            len += 1;
        }
        for &b in b"/stat\0" {
            path[len] = b;
            len += 1;
        }
        let mut text = [0u8; 1024];
        // SAFETY (caller): open/read/close on stack buffers; the path is NUL-terminated above.
        let read = unsafe {
            let fd = libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return None;
            }
            let read = libc::read(fd, text.as_mut_ptr().cast(), text.len());
            libc::close(fd);
            read
        };
        let text = text.get(..usize::try_from(read).ok()?)?;
        let close = text.iter().rposition(|b| *b == b')')?;
        // After ") ": the state letter, a space, then the parent pid.
        let rest = text.get(close + 2..)?;
        let (&state, rest) = rest.split_first()?;
        if state == b'Z' || state == b'X' {
            return None;
        }
        let mut ppid: libc::pid_t = 0;
        for &b in rest.get(1..)?.iter().take_while(|b| b.is_ascii_digit()) {
            ppid = ppid.checked_mul(10)?.checked_add(libc::pid_t::from(b - b'0'))?;
        }
        Some(ppid)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn proc_names_are_pids_or_nothing() {
            assert_eq!(super::parse_pid(b"1234\0"), Some(1234));
            assert_eq!(super::parse_pid(b"self\0"), None);
            assert_eq!(super::parse_pid(b"\0"), None);
            assert_eq!(super::parse_pid(b"12345678901\0"), None);
        }

        #[test]
        fn the_parent_of_this_process_is_read_without_allocating() {
            let me = std::process::id() as libc::pid_t;
            // SAFETY: reads /proc into stack buffers.
            let parent = unsafe { super::parent_of(me) };
            assert_eq!(parent, Some(std::os::unix::process::parent_id() as libc::pid_t));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS: &str = "25 1 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n\
                          26 1 0:24 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";

    #[test]
    fn a_delegated_parent_is_the_parent_of_the_hosts_own_cgroup() {
        let own = "9:memory:/x\n0::/system.slice/rosey.service/host\n";
        let parent = delegated_parent_in(own, MOUNTS, |_| Some(true));
        assert_eq!(
            parent,
            Some(PathBuf::from("/sys/fs/cgroup/unified/system.slice/rosey.service"))
        );
        assert_eq!(delegated_parent_in(own, MOUNTS, |_| Some(false)), None, "no memory controller");
        assert_eq!(delegated_parent_in("0::/\n", MOUNTS, |_| Some(true)), None, "the root cgroup");
        assert_eq!(
            delegated_parent_in("0::/a\n", MOUNTS, |_| Some(true)),
            None,
            "the root's child"
        );
        assert_eq!(
            delegated_parent_in("9:memory:/x\n", MOUNTS, |_| Some(true)),
            None,
            "no cgroup2"
        );
    }

    #[test]
    fn the_cap_leaves_headroom_under_twice_the_limit() {
        assert_eq!(cap_bytes(64.0), 96 * 1024 * 1024);
        assert_eq!(cap_bytes(256.0), 384 * 1024 * 1024);
        assert_eq!(cap_bytes(16.0), 48 * 1024 * 1024);
        assert_eq!(
            MemoryEnforcement::DataRlimit { max_bytes: cap_bytes(64.0) }.to_string(),
            "RLIMIT_DATA 96 MB per process"
        );
    }
}
