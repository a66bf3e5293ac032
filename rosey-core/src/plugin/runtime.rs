//! [`PluginRuntime`]: how one plugin instance is started, and the [`Instance`] handle it returns.
//!
//! An instance is a duplex of protocol messages: the slot sends [`HostMessage`]s and receives
//! [`InstanceOutput`]s, the last of which is always [`InstanceOutput::Exited`]. The runtime does the
//! transport (a child process over stdio for [`ProcessRuntime`](super::ProcessRuntime), a task for
//! [`InProcessRuntime`](super::InProcessRuntime)); the protocol logic (handshake, events, pings,
//! supervision) lives once, in the plugin slot, whatever the runtime.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use rosey_plugin::protocol::{HostMessage, PluginMessage};
use tokio::sync::{mpsc, oneshot};

use super::launcher::MemoryEnforcement;
use super::manifest::Manifest;

/// Why an instance could not be started.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The manifest names no program (`exec` is empty, as in [`Manifest::in_process`]).
    #[error("plugin {plugin:?} has no program to run (its manifest's exec is empty)")]
    NoProgram {
        /// The plugin.
        plugin: String,
    },
    /// The program is not there. `program` is the path that names no file, for an `exec` with a `/`
    /// (taken relative to the plugin's folder), or else the bare name that was found in none of the
    /// places searched: the plugin's folder `dir`, the runtime's search directories and `PATH`.
    #[error("{}", not_found(program, dir))]
    NotFound {
        /// The program as resolved (a path) or as written (a bare name).
        program: PathBuf,
        /// The plugin's folder.
        dir: PathBuf,
    },
    /// The program is a file without execute permission.
    #[error("{} is not executable (missing `chmod +x`?)", path.display())]
    NotExecutable {
        /// The file found.
        path: PathBuf,
    },
    /// The operating system refused to start the program; the cause says why.
    #[error("cannot start {}", program.display())]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The error of the spawn.
        #[source]
        source: io::Error,
    },
    /// The runtime knows no plugin of that name (in-process runtime).
    #[error("no in-process plugin named {0:?}")]
    UnknownPlugin(String),
}

fn not_found(program: &Path, dir: &Path) -> String {
    if program.components().count() > 1 {
        format!("{} not found", program.display())
    } else {
        format!(
            "{} not found in {}, next to the rosey executable, or on PATH \
             (bundled plugins are built by `cargo build --release`)",
            program.display(),
            dir.display()
        )
    }
}

/// How an instance ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The process exited with this status code.
    Code(i32),
    /// The process was killed by this signal.
    Signal(i32),
    /// The runtime stopped it (kill requested, or the in-process task ended or panicked).
    Stopped(String),
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Code(code) => write!(f, "exited with code {code}"),
            Self::Signal(9) => write!(f, "killed by SIGKILL"),
            Self::Signal(signal) => write!(f, "killed by signal {signal}"),
            Self::Stopped(why) => f.write_str(why),
        }
    }
}

/// What comes out of an instance, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum InstanceOutput {
    /// A well-formed protocol message.
    Message(PluginMessage),
    /// A line that is not a valid message (or is over the line limit); says why.
    Malformed(String),
    /// A well-formed message of a type the host does not know; ignored by the host.
    Unknown(String),
    /// The instance is gone. Always the last output.
    Exited(ExitReason),
}

/// A running plugin instance. Dropping it kills the instance.
#[derive(Debug)]
pub struct Instance {
    pid: Option<u32>,
    input: mpsc::Sender<HostMessage>,
    output: mpsc::Receiver<InstanceOutput>,
    kill: Option<oneshot::Sender<()>>,
    memory: MemoryEnforcement,
}

/// The parts of an [`Instance`], for a slot that polls the outputs of several instances together.
#[derive(Debug)]
pub(crate) struct InstanceParts {
    /// Process id, when the instance is a process.
    pub(crate) pid: Option<u32>,
    /// Where to send messages to the instance.
    pub(crate) input: InstanceInput,
    /// Everything the instance says, ending with [`InstanceOutput::Exited`].
    pub(crate) output: mpsc::Receiver<InstanceOutput>,
    /// Kills the instance when used or dropped.
    pub(crate) kill: KillSwitch,
    /// How its memory limit is enforced beyond sampling.
    #[allow(dead_code)] // for the status, which the slot does not show yet
    pub(crate) memory: MemoryEnforcement,
}

/// How many messages may wait for an instance to read them. Runtimes create an instance's input
/// channel with this capacity (`mpsc::channel(INSTANCE_INPUT_CAPACITY)`).
pub const INSTANCE_INPUT_CAPACITY: usize = 1024;

/// Room kept free for messages the protocol needs (events, pings, `shutdown`): a courtesy message
/// (a response, an `error`) is dropped rather than use it.
const RESERVED_INPUT: usize = 256;

/// Sends messages to an instance. Never blocks and never grows without bound: a plugin that does not
/// read its input loses courtesy messages first, and the slot bounds the rest (events by its in-flight
/// limit, requests by their own).
#[derive(Debug, Clone)]
pub(crate) struct InstanceInput(mpsc::Sender<HostMessage>);

impl InstanceInput {
    /// Queues `message` for the instance; `false` when the instance is gone or its input is full.
    pub(crate) fn send(&self, message: HostMessage) -> bool {
        self.0.try_send(message).is_ok()
    }

    /// Queues a message the plugin can do without (a response, an `error`) only while plenty of room
    /// is left for the protocol's own; `false` when it was dropped.
    pub(crate) fn send_if_room(&self, message: HostMessage) -> bool {
        self.0.capacity() > RESERVED_INPUT && self.send(message)
    }
}

/// Kills an instance (SIGKILL to its process group for a process) when [`KillSwitch::kill`] is called
/// or the switch is dropped.
#[derive(Debug)]
pub(crate) struct KillSwitch(Option<oneshot::Sender<()>>);

impl KillSwitch {
    /// Kills the instance now. Its output still ends with [`InstanceOutput::Exited`].
    pub(crate) fn kill(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

impl Instance {
    /// Assembles an instance from its channels; used by runtimes. `kill` fires (or is dropped) to stop
    /// the instance; the runtime must then still send [`InstanceOutput::Exited`] last.
    pub fn new(
        pid: Option<u32>,
        input: mpsc::Sender<HostMessage>,
        output: mpsc::Receiver<InstanceOutput>,
        kill: oneshot::Sender<()>,
    ) -> Self {
        Self { pid, input, output, kill: Some(kill), memory: MemoryEnforcement::SampledOnly }
    }

    /// Says how the instance's memory limit is enforced beyond sampling (default
    /// [`MemoryEnforcement::SampledOnly`]); used by runtimes that set a kernel cap.
    pub fn with_memory_enforcement(mut self, memory: MemoryEnforcement) -> Self {
        self.memory = memory;
        self
    }

    /// How the instance's memory limit is enforced beyond sampling: a cgroup, an rlimit, or none.
    pub fn memory_enforcement(&self) -> MemoryEnforcement {
        self.memory
    }

    /// Process id, when the instance is a process.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Queues `message` for the instance; `false` when the instance is gone or its input is full.
    pub fn send(&self, message: HostMessage) -> bool {
        self.input.try_send(message).is_ok()
    }

    /// The next output; `None` only after [`InstanceOutput::Exited`] was received.
    pub async fn recv(&mut self) -> Option<InstanceOutput> {
        self.output.recv().await
    }

    /// Kills the instance now.
    pub fn kill(&mut self) {
        if let Some(tx) = self.kill.take() {
            let _ = tx.send(());
        }
    }

    /// Splits the instance into its parts.
    pub(crate) fn into_parts(mut self) -> InstanceParts {
        InstanceParts {
            pid: self.pid,
            input: InstanceInput(self.input.clone()),
            output: std::mem::replace(&mut self.output, mpsc::channel(1).1),
            kill: KillSwitch(self.kill.take()),
            memory: self.memory,
        }
    }
}

/// Starts plugin instances. One runtime serves many plugins; each `start` makes one new instance.
#[async_trait]
pub trait PluginRuntime: Send + Sync + 'static {
    /// Starts an instance of the plugin described by `manifest`. Returns once it runs (for a process:
    /// once spawned); the protocol handshake is the caller's.
    async fn start(&self, manifest: &Manifest) -> Result<Instance, RuntimeError>;
}
