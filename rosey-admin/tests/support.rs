//! A node in miniature for the admin tests: a bus, a `PluginManager` on a `MixedRuntime` running the
//! admin plugin (and whatever else a test adds), and the traffic a chat user would see.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use rosey_admin::{AdminOptions, AdminPlugin, RankLookup};
use rosey_core::bus::{EventBus, MemoryBus, Subscription};
use rosey_core::event::{ChatSend, CommandEvent};
use rosey_core::metrics::MetricsSink;
use rosey_core::plugin::{
    InProcessPlugin, ManagerOptions, Manifest, MixedRuntime, PluginContext, PluginControl,
    PluginManager, PluginReply,
};
use rosey_core::storage::{
    AuditQuery, AuditRecord, MemoryStorage, RecordWriter, Storage, WriterHandle, WriterOptions,
};
use serde_json::{Value, json};

/// Generous bound for anything that starts a process.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

/// A name no other test uses (channels, plugin folders).
pub(crate) fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}{}x{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// An in-process plugin that answers its command with `echo <args>`.
pub(crate) struct Echo;

#[async_trait]
impl InProcessPlugin for Echo {
    async fn command(&mut self, _ctx: &PluginContext, command: &CommandEvent) -> PluginReply {
        Ok(vec![format!("echo {}", command.args)])
    }
}

/// A user table standing in for the CyTube connector's: names folded to lower case.
#[derive(Default)]
pub(crate) struct Ranks(Mutex<HashMap<String, f64>>);

impl Ranks {
    pub(crate) fn with(users: &[(&str, f64)]) -> Arc<Self> {
        let table = users.iter().map(|(u, r)| (u.to_lowercase(), *r)).collect();
        Arc::new(Self(Mutex::new(table)))
    }

    pub(crate) fn set(&self, user: &str, rank: Option<f64>) {
        let mut table = self.0.lock();
        match rank {
            Some(rank) => table.insert(user.to_lowercase(), rank),
            None => table.remove(&user.to_lowercase()),
        };
    }
}

impl RankLookup for Ranks {
    fn rank(&self, user: &str) -> Option<f64> {
        self.0.lock().get(&user.to_lowercase()).copied()
    }
}

/// A metrics sink that remembers `admin_command` calls.
#[derive(Default)]
pub(crate) struct Counted(pub(crate) Mutex<Vec<(String, String)>>);

impl MetricsSink for Counted {
    fn admin_command(&self, command: &str, user: &str) {
        self.0.lock().push((command.to_owned(), user.to_owned()));
    }
}

/// How to build a [`Bed`].
pub(crate) struct Setup {
    pub(crate) options: AdminOptions,
    pub(crate) ranks: Option<Arc<dyn RankLookup>>,
    pub(crate) storage: Option<Arc<dyn Storage>>,
    pub(crate) metrics: Option<Arc<dyn MetricsSink>>,
    /// In-process plugins besides the admin plugin: (name, version), each an [`Echo`] owning the
    /// command of its name.
    pub(crate) echoes: Vec<(String, String)>,
    /// When the bot started, for `!admin metrics`.
    pub(crate) started_at: Option<std::time::SystemTime>,
}

impl Setup {
    /// Owner `alice`, admins `bob` and `carol`, on the console (no ranks), one echo plugin.
    pub(crate) fn console() -> Self {
        Self {
            options: AdminOptions {
                owner: Some("alice".to_owned()),
                admins: vec!["bob".to_owned(), "carol".to_owned()],
                dashboard_url: "http://127.0.0.1:8080".to_owned(),
                node: "node-a".to_owned(),
                ..AdminOptions::default()
            },
            ranks: None,
            storage: None,
            metrics: None,
            echoes: vec![("echo".to_owned(), "1.0.0".to_owned())],
            started_at: None,
        }
    }

    pub(crate) fn ranks(mut self, ranks: Arc<dyn RankLookup>) -> Self {
        self.ranks = Some(ranks);
        self
    }

    pub(crate) fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = Some(storage);
        self
    }

    pub(crate) fn metrics(mut self, metrics: Arc<dyn MetricsSink>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub(crate) async fn start(self) -> Bed {
        Bed::start(self).await
    }
}

/// The admin plugin running under a real manager, driven as the router and the chat would.
pub(crate) struct Bed {
    pub(crate) bus: Arc<dyn EventBus>,
    pub(crate) manager: Arc<PluginManager>,
    pub(crate) channel: String,
    pub(crate) writer: Option<WriterHandle>,
    storage: Option<Arc<dyn Storage>>,
    chat: Subscription,
}

impl Bed {
    async fn start(setup: Setup) -> Self {
        let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
        let runtime = MixedRuntime::default();
        let manager = Arc::new(
            PluginManager::builder(bus.clone(), Arc::new(runtime.clone()))
                .options(ManagerOptions {
                    sample_interval: Duration::from_millis(200),
                    ..ManagerOptions::default()
                })
                .build(),
        );
        let control: Arc<dyn PluginControl> = manager.clone();
        let mut admin = AdminPlugin::new(setup.options, control);
        if let Some(ranks) = setup.ranks {
            admin = admin.ranks(ranks);
        }
        let writer = setup.storage.clone().map(|storage| {
            let options = WriterOptions { node: "node-a".to_owned(), ..WriterOptions::default() };
            RecordWriter::new(storage, options).start()
        });
        if let Some(writer) = &writer {
            admin = admin.audit(writer.sink());
        }
        if let Some(at) = setup.started_at {
            admin = admin.started_at(at);
        }
        if let Some(metrics) = setup.metrics {
            admin = admin.metrics_sink(metrics);
        }
        admin.register(runtime.in_process());
        let chat = bus.subscribe("cytube.chat.send").await.unwrap();
        manager.add(AdminPlugin::manifest()).await.unwrap();
        for (name, version) in &setup.echoes {
            runtime.in_process().register(name, version, || Box::new(Echo));
            manager
                .add(Manifest::in_process(name.as_str(), version.as_str(), [name.as_str()]))
                .await
                .unwrap();
        }
        manager.wait_running("admin", PATIENCE).await.unwrap();
        for (name, _) in &setup.echoes {
            manager.wait_running(name, PATIENCE).await.unwrap();
        }
        Self { bus, manager, channel: unique("lobby"), writer, storage: setup.storage, chat }
    }

    /// The JSON of a command event as the router publishes it for `!admin <args>` by `user`.
    pub(crate) fn command_event(&self, user: &str, args: &str) -> Value {
        json!({
            "channel": self.channel, "user": user, "command": "admin", "args": args,
            "message": format!("!admin {args}"), "time": 1,
        })
    }

    /// Sends `!admin <args>` as `user` (as the router would) and returns what the plugin answered.
    pub(crate) async fn admin(&self, user: &str, args: &str) -> Vec<String> {
        self.admin_event(self.command_event(user, args)).await
    }

    /// Sends a command event (see [`command_event`](Self::command_event)) and returns the answer.
    pub(crate) async fn admin_event(&self, event: Value) -> Vec<String> {
        let args = event["args"].as_str().unwrap_or_default();
        let sub = args.split_whitespace().next().map(str::to_lowercase);
        let subject = match sub {
            Some(sub) => format!("rosey.command.admin.{sub}"),
            None => "rosey.command.admin".to_owned(),
        };
        self.ask(&subject, event).await
    }

    /// Says `line` in the channel as `user` (a chat message) and returns what the plugin answered.
    pub(crate) async fn say(&self, user: &str, line: &str) -> Vec<String> {
        self.say_in(&self.channel.clone(), user, line).await
    }

    /// Says `line` in `channel` as `user`.
    pub(crate) async fn say_in(&self, channel: &str, user: &str, line: &str) -> Vec<String> {
        self.say_at(channel, user, line, 2).await
    }

    /// Says `line` in `channel` as `user`, with the chat's time `time` (epoch milliseconds).
    pub(crate) async fn say_at(
        &self,
        channel: &str,
        user: &str,
        line: &str,
        time: i64,
    ) -> Vec<String> {
        let message = json!({"channel": channel, "user": user, "message": line, "time": time});
        self.ask("cytube.chat.message", message).await
    }

    /// Sends `line` to the bot by private message as `user`.
    pub(crate) async fn pm(&self, user: &str, line: &str) -> Vec<String> {
        let message = json!({"channel": self.channel, "user": user, "message": line});
        self.ask("cytube.pm.message", message).await
    }

    /// Publishes `data` on `subject` as a request, so the test knows when the plugin is done with
    /// it; returns the replies it said.
    async fn ask(&self, subject: &str, data: Value) -> Vec<String> {
        let payload = Bytes::from(serde_json::to_vec(&data).unwrap());
        let reply = self.bus.request(subject, payload, PATIENCE * 10).await.unwrap();
        let answer: Value = serde_json::from_slice(reply.payload()).unwrap();
        assert!(answer["error"].is_null(), "the admin plugin failed: {answer}");
        answer["replies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    }

    /// The next line said in the test channel.
    pub(crate) async fn said(&mut self) -> String {
        loop {
            let msg = tokio::time::timeout(PATIENCE, self.chat.next()).await.unwrap().unwrap();
            let send: ChatSend = msg.decode().unwrap();
            if send.channel == self.channel {
                return send.message;
            }
        }
    }

    /// The audit log, oldest first, once everything recorded so far is written.
    pub(crate) async fn audit(&self) -> Vec<AuditRecord> {
        let writer = self.writer.as_ref().expect("a bed with storage");
        assert!(writer.flush(PATIENCE).await, "the audit rows are written");
        let storage = self.storage.as_ref().unwrap();
        let mut rows =
            storage.audit_log(&AuditQuery { limit: 1000, ..AuditQuery::default() }).await.unwrap();
        rows.reverse();
        rows
    }

    /// `(actor, command, arguments, outcome)` of each audit row, oldest first.
    pub(crate) async fn audit_outcomes(&self) -> Vec<(String, String, String, String)> {
        self.audit()
            .await
            .into_iter()
            .map(|r| (r.actor, r.command, r.arguments, r.outcome))
            .collect()
    }

    pub(crate) async fn stop(self) {
        self.manager.shutdown().await;
        if let Some(writer) = self.writer {
            writer.shutdown().await.unwrap();
        }
    }
}

/// A memory storage for the audit log.
pub(crate) fn memory_storage() -> Arc<dyn Storage> {
    Arc::new(MemoryStorage::new())
}

/// `(actor, command, arguments, outcome)` written as string slices, for comparisons.
pub(crate) fn row(
    actor: &str,
    command: &str,
    arguments: &str,
    outcome: &str,
) -> (String, String, String, String) {
    (actor.to_owned(), command.to_owned(), arguments.to_owned(), outcome.to_owned())
}

/// The test plugin script.
fn plugin_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plugin/plugin.py")
}

/// Writes (or rewrites) a process plugin's `plugin.toml` in `dir`: the test plugin at `version`, or,
/// with `exec` given, that program instead.
pub(crate) fn write_manifest(dir: &Path, name: &str, version: &str, exec: Option<&str>) {
    let exec = match exec {
        Some(program) => format!("[{program:?}]"),
        None => format!(
            "[\"python3\", {:?}, \"--version\", {version:?}]",
            plugin_script().display().to_string()
        ),
    };
    let toml =
        format!("name = {name:?}\nversion = {version:?}\nexec = {exec}\ncommands = [{name:?}]\n");
    std::fs::write(dir.join("plugin.toml"), toml).unwrap();
}

/// A fresh folder with a process plugin `name` at version 1.0.0; returns the folder.
pub(crate) fn process_plugin(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique("rosey-admin-")).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    write_manifest(&dir, name, "1.0.0", None);
    dir
}

impl Bed {
    /// Adds the process plugin in `dir` and waits until it serves.
    pub(crate) async fn add_process(&self, dir: &Path) {
        let manifest = Manifest::load(dir).unwrap();
        let name = manifest.name.clone();
        self.manager.add(manifest).await.unwrap();
        self.manager.wait_running(&name, PATIENCE).await.unwrap();
    }
}
