//! [`AdminPlugin`]: the in-process plugin that owns `!admin`, and its [`AdminOptions`].

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use parking_lot::Mutex;
use rosey_core::event::{CommandEvent, EpochMillis, now_millis};
use rosey_core::metrics::MetricsSink;
use rosey_core::plugin::{
    CommandSpec, InProcessPlugin, InProcessRuntime, Manifest, PluginContext, PluginControl,
    PluginReply,
};
use rosey_core::storage::StorageSink;
use rosey_core::subject;
use serde_json::Value;
use tokio::time::Instant;

use crate::answers;
use crate::audit::{Auditor, Entry, Outcome, REFUSED_USER};
use crate::command::{self, Command};
use crate::confirm::{Action, Answer, Confirmations, Origin, Request};
use crate::limits::Limits;
use crate::permission::{Admins, RankLookup, Verdict, fold};

/// The admin plugin's name, and its command word.
pub const ADMIN_PLUGIN: &str = "admin";

/// The version the admin plugin reports (this crate's).
pub const ADMIN_VERSION: &str = env!("CARGO_PKG_VERSION");

/// How long one event of the admin plugin may take: a confirmed `reload --all` reloads every plugin
/// inside one handler, each bounded by its health-check timeouts.
pub const ADMIN_EVENT_TIMEOUT: Duration = Duration::from_secs(600);

/// Who may use `!admin` and how it behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminOptions {
    /// The bot's owner (config `owner`); may use every command.
    pub owner: Option<String>,
    /// The other admins (config `admins`).
    pub admins: Vec<String>,
    /// Where the dashboard is (`dashboard.public_url`, or its local address), for `!admin metrics`;
    /// empty when there is none.
    pub dashboard_url: String,
    /// This node's name (`node.name`), stamped on audit records.
    pub node: String,
    /// How long a reload or restart waits for its `yes` (default 30 s).
    pub confirm_timeout: Duration,
    /// Shortest time between two admin commands of one user (default 5 s; zero turns it off).
    pub user_cooldown: Duration,
    /// Admin commands a minute, all users together (default 10; zero turns it off).
    pub per_minute: u32,
}

impl Default for AdminOptions {
    fn default() -> Self {
        Self {
            owner: None,
            admins: Vec::new(),
            dashboard_url: String::new(),
            node: "rosey".to_owned(),
            confirm_timeout: Duration::from_secs(30),
            user_cooldown: Duration::from_secs(5),
            per_minute: 10,
        }
    }
}

impl AdminOptions {
    /// Whether anyone may use admin commands (an owner or an admin is configured): the admin plugin
    /// is loaded only then.
    pub fn enabled(&self) -> bool {
        self.owner.as_deref().is_some_and(|o| !o.trim().is_empty())
            || self.admins.iter().any(|a| !a.trim().is_empty())
    }
}

/// State shared by every instance of the plugin (a supervisor restart keeps it).
#[derive(Debug)]
struct Shared {
    confirmations: Mutex<Confirmations>,
    limits: Limits,
    /// `yes` lines that found no request: the command they confirm may still be on its way (it
    /// goes through the router, the `yes` comes straight from the chat).
    early: Mutex<Vec<EarlyYes>>,
}

/// A `yes` that came before any request of its sender.
#[derive(Debug)]
struct EarlyYes {
    user: String,
    origin: Origin,
    /// When it was said (the chat line's time).
    said: EpochMillis,
    rank: Option<f64>,
    heard: Instant,
}

/// How long a `yes` waits for the command it may confirm. Only a command said *before* the `yes`
/// (by the chat's own times) is confirmed by it: a `yes` said first never confirms a later request.
const EARLY_YES_WAIT: Duration = Duration::from_secs(5);

/// Most `yes` lines kept waiting at once (a flood of them cannot grow memory).
const EARLY_YES_MAX: usize = 64;

/// The `!admin` chat plugin: `help`, `list`, `status [plugin]`, `reload <plugin>`, `reload --all`,
/// `restart <plugin>` and `metrics`, for the owner and admins only, acting through a
/// [`PluginControl`]. reload and restart wait for the same user's `yes`; every command is rate
/// limited, audited and counted. See the [crate docs](crate) for wiring it up. Cheap to clone: clones
/// share their confirmations and limits.
#[derive(Clone)]
pub struct AdminPlugin {
    options: Arc<AdminOptions>,
    admins: Arc<Admins>,
    control: Arc<dyn PluginControl>,
    ranks: Option<Arc<dyn RankLookup>>,
    auditor: Auditor,
    started_at: SystemTime,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AdminPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminPlugin")
            .field("options", &self.options)
            .field("ranks", &self.ranks.is_some())
            .field("auditor", &self.auditor)
            .finish_non_exhaustive()
    }
}

impl AdminPlugin {
    /// An admin plugin acting on `control`, trusting names alone (the console) until
    /// [`ranks`](Self::ranks) is given, auditing to the log only until [`audit`](Self::audit) is.
    pub fn new(options: AdminOptions, control: Arc<dyn PluginControl>) -> Self {
        let admins = Admins::new(options.owner.as_deref(), &options.admins);
        let limits = Limits::new(options.user_cooldown, options.per_minute);
        let auditor = Auditor { node: options.node.clone(), ..Auditor::default() };
        Self {
            options: Arc::new(options),
            admins: Arc::new(admins),
            control,
            ranks: None,
            auditor,
            started_at: SystemTime::now(),
            shared: Arc::new(Shared {
                confirmations: Mutex::default(),
                limits,
                early: Mutex::default(),
            }),
        }
    }

    /// Checks ranks in `ranks` (on CyTube, the channel's user table): an admin must be there with a
    /// rank of at least 1. Without it every name is trusted, as on the console.
    pub fn ranks(mut self, ranks: Arc<dyn RankLookup>) -> Self {
        self.ranks = Some(ranks);
        self
    }

    /// Writes every admin command to the `audit_log` through `sink`.
    pub fn audit(mut self, sink: StorageSink) -> Self {
        self.auditor.storage = Some(sink);
        self
    }

    /// Counts every admin command in `sink` ([`MetricsSink::admin_command`]).
    pub fn metrics_sink(mut self, sink: Arc<dyn MetricsSink>) -> Self {
        self.auditor.metrics = Some(sink);
        self
    }

    /// When the bot started, for the uptime in `!admin metrics` (default: when this was built).
    pub fn started_at(mut self, at: SystemTime) -> Self {
        self.started_at = at;
        self
    }

    /// The manifest to add to the [`PluginManager`](rosey_core::plugin::PluginManager): plugin and
    /// command `admin` with sub-commands, subscribed to chat and private messages (to hear `yes`),
    /// with a long event timeout ([`ADMIN_EVENT_TIMEOUT`]) and no redelivery after a crash (an
    /// admin action is not repeated behind the admin's back).
    pub fn manifest() -> Manifest {
        let admin = CommandSpec::new(ADMIN_PLUGIN)
            .with_subcommands()
            .with_description("Operator commands (owner and admins only)")
            .with_usage("!admin help | list | status [plugin] | reload <plugin> | reload --all | restart <plugin> | metrics");
        let mut manifest = Manifest::in_process(ADMIN_PLUGIN, ADMIN_VERSION, [admin]);
        manifest.description =
            "Operator commands: list, status, reload, restart, metrics".to_owned();
        manifest.subscribe = vec![subject::CHAT_MESSAGE.to_owned(), subject::PM_MESSAGE.to_owned()];
        // Each node keeps its own pending confirmations: every node's instance hears each `yes`.
        manifest.subscribe_every_node = true;
        manifest.timeouts.event = ADMIN_EVENT_TIMEOUT;
        manifest.redeliver_on_crash = false;
        // Every chat line comes here (to hear `yes`): room for a busy channel during a long reload.
        manifest.queue_capacity = 10_000;
        // A rolling reload says a line per plugin.
        manifest.limits.replies_per_event = 100;
        manifest
    }

    /// Registers the plugin in `runtime` under [`ADMIN_PLUGIN`]; each start gets a clone sharing
    /// this plugin's state.
    pub fn register(&self, runtime: &InProcessRuntime) {
        let plugin = self.clone();
        runtime.register(ADMIN_PLUGIN, ADMIN_VERSION, move || Box::new(plugin.clone()));
    }

    fn rank_lookup(&self) -> Option<&dyn RankLookup> {
        self.ranks.as_deref()
    }

    /// Answers one `!admin …` command.
    async fn handle(&self, event: &CommandEvent) -> Vec<String> {
        let began = Instant::now();
        let (sub, rest) = command::split(&event.args);
        let prefix = command::prefix(&event.message, &event.command).to_owned();
        let label = command::label(&sub);
        let audited_sub = crate::text::truncate(&sub, 40);
        let entry = |rank, outcome, detail: Option<String>| Entry {
            actor: &event.user,
            rank,
            command: if label == crate::audit::UNKNOWN_COMMAND { &audited_sub } else { label },
            arguments: rest,
            outcome,
            detail,
            duration: began.elapsed(),
        };
        let (admin, rank) = match self.admins.check(self.rank_lookup(), &event.user, event.rank) {
            Verdict::Allowed { admin, rank } => (admin, rank),
            Verdict::Denied { rank, reason } => {
                self.auditor.count(label, REFUSED_USER);
                self.auditor.record(entry(rank, Outcome::Denied, Some(reason.to_owned())));
                return vec![answers::DENIED.to_owned()];
            }
        };
        self.auditor.count(label, &admin);
        if let Err(wait) = self.shared.limits.check(&fold(&admin)) {
            let answer = answers::slow_down(wait);
            self.auditor.record(entry(rank, Outcome::RateLimited, Some(answer.clone())));
            return vec![answer];
        }
        let command = match command::parse(&sub, rest) {
            Ok(command) => command,
            Err(usage) => {
                let answer = usage.text(&prefix);
                self.auditor.record(entry(rank, Outcome::Invalid, Some(answer.clone())));
                return vec![answer];
            }
        };
        let origin = Origin { channel: event.channel.clone(), private: came_by_pm(event) };
        let (outcome, mut lines) =
            self.answer(command, &prefix, rank, origin.clone(), &event.user, rest).await;
        self.auditor.record(entry(rank, outcome, Some(lines.join(" | "))));
        // The `yes` may have overtaken its command (piped input, a busy router): one said after
        // the command confirms it now.
        if outcome == Outcome::Pending
            && let Some(yes) = self.take_early_yes(&event.user, &origin, event.time)
        {
            lines.extend(self.hear(&event.user, origin, "yes", yes.rank, yes.said).await);
        }
        lines
    }

    /// Takes the `yes` of `user` at `origin` said at or after `asked` that waited for its command.
    fn take_early_yes(&self, user: &str, origin: &Origin, asked: EpochMillis) -> Option<EarlyYes> {
        let user = fold(user);
        let mut early = self.shared.early.lock();
        early.retain(|yes| yes.heard.elapsed() < EARLY_YES_WAIT);
        let i = early
            .iter()
            .position(|yes| yes.user == user && yes.origin == *origin && yes.said >= asked)?;
        Some(early.remove(i))
    }

    /// What a well-formed command from an admin says, and how it ended.
    async fn answer(
        &self,
        command: Command,
        prefix: &str,
        rank: Option<f64>,
        origin: Origin,
        actor: &str,
        arguments: &str,
    ) -> (Outcome, Vec<String>) {
        let timeout = self.options.confirm_timeout;
        match command {
            Command::Help => (Outcome::Ok, command::help(prefix, timeout.as_secs())),
            Command::List => (Outcome::Ok, answers::list(&self.control.list().await)),
            Command::Status(None) => (Outcome::Ok, answers::status_all(&self.control.list().await)),
            Command::Status(Some(name)) => {
                let plugins = self.control.list().await;
                match answers::resolve(&plugins, &name) {
                    Some(status) => (Outcome::Ok, answers::status_one(status)),
                    None => (Outcome::Invalid, vec![answers::unknown_plugin(&name, prefix)]),
                }
            }
            Command::Metrics => {
                let uptime = SystemTime::now().duration_since(self.started_at).unwrap_or_default();
                let plugins = self.control.list().await;
                (Outcome::Ok, vec![answers::metrics(&plugins, uptime, &self.options.dashboard_url)])
            }
            Command::Reload(name) if name.eq_ignore_ascii_case(ADMIN_PLUGIN) => {
                (Outcome::Invalid, vec![answers::SELF_RELOAD.to_owned()])
            }
            Command::Restart(name) if name.eq_ignore_ascii_case(ADMIN_PLUGIN) => {
                (Outcome::Invalid, vec![answers::SELF_RESTART.to_owned()])
            }
            Command::Reload(name) => {
                let plugins = self.control.list().await;
                let Some(status) = answers::resolve(&plugins, &name) else {
                    return (Outcome::Invalid, vec![answers::unknown_plugin(&name, prefix)]);
                };
                let to = self.control.pending_version(&status.name).await;
                let prompt =
                    answers::reload_prompt(&status.name, &status.version, to.as_deref(), timeout);
                let action = Action::Reload(status.name.clone());
                self.ask(actor, rank, "reload", arguments, origin, action);
                (Outcome::Pending, vec![prompt])
            }
            Command::Restart(name) => {
                let plugins = self.control.list().await;
                let Some(status) = answers::resolve(&plugins, &name) else {
                    return (Outcome::Invalid, vec![answers::unknown_plugin(&name, prefix)]);
                };
                let prompt = answers::restart_prompt(&status.name, &status.version, timeout);
                let action = Action::Restart(status.name.clone());
                self.ask(actor, rank, "restart", arguments, origin, action);
                (Outcome::Pending, vec![prompt])
            }
            Command::ReloadAll => {
                let names: Vec<String> = self
                    .control
                    .list()
                    .await
                    .into_iter()
                    .map(|p| p.name)
                    .filter(|name| name != ADMIN_PLUGIN)
                    .collect();
                if names.is_empty() {
                    return (Outcome::Ok, vec!["No plugins to reload".to_owned()]);
                }
                let prompt = answers::reload_all_prompt(names.len(), timeout);
                self.ask(actor, rank, "reload", arguments, origin, Action::ReloadAll(names));
                (Outcome::Pending, vec![prompt])
            }
        }
    }

    /// Files a request awaiting `actor`'s `yes`, replacing (and auditing as cancelled) the one
    /// they had, and starts its expiry timer.
    fn ask(
        &self,
        actor: &str,
        rank: Option<f64>,
        command: &'static str,
        arguments: &str,
        origin: Origin,
        action: Action,
    ) {
        let user = fold(actor);
        let mut confirmations = self.shared.confirmations.lock();
        let id = confirmations.next_id();
        let timer = tokio::spawn(expire_later(
            Arc::downgrade(&self.shared),
            self.auditor.clone(),
            user.clone(),
            id,
            self.options.confirm_timeout,
        ));
        let request = Request {
            id,
            action,
            origin,
            actor: actor.to_owned(),
            rank,
            command,
            arguments: arguments.to_owned(),
            timer: Some(timer.abort_handle()),
        };
        let replaced = confirmations.ask(&user, request);
        drop(confirmations);
        if let Some(old) = replaced {
            let detail = "replaced by a newer request".to_owned();
            self.auditor.record(audit_entry(&old, Outcome::Cancelled, detail, Duration::ZERO));
        }
    }

    /// A chat or private line from `user` at `origin`: a `yes` goes ahead with their request.
    async fn hear(
        &self,
        user: &str,
        origin: Origin,
        line: &str,
        rank: Option<f64>,
        said: EpochMillis,
    ) -> Vec<String> {
        if !line.trim().eq_ignore_ascii_case("yes") {
            return Vec::new();
        }
        let answer = self.shared.confirmations.lock().answer(&fold(user), &origin);
        let request = match answer {
            Answer::Nothing => {
                let mut early = self.shared.early.lock();
                early.retain(|yes| yes.heard.elapsed() < EARLY_YES_WAIT);
                if early.len() < EARLY_YES_MAX {
                    let heard = Instant::now();
                    early.push(EarlyYes { user: fold(user), origin, said, rank, heard });
                }
                return Vec::new();
            }
            Answer::Expired => {
                tracing::info!(message = "a yes came after the request expired", actor = user);
                return vec![answers::EXPIRED.to_owned()];
            }
            Answer::Go(request) => request,
        };
        // The name may have changed hands since the request (a guest taking it after the admin left).
        if let Verdict::Denied { rank, reason } = self.admins.check(self.rank_lookup(), user, rank)
        {
            self.auditor.record(Entry {
                actor: user,
                rank,
                command: request.command,
                arguments: &request.arguments,
                outcome: Outcome::Denied,
                detail: Some(format!("at the yes: {reason}")),
                duration: Duration::ZERO,
            });
            return vec![answers::DENIED.to_owned()];
        }
        self.run(request).await
    }

    /// Carries out a confirmed request and audits how it went.
    async fn run(&self, request: Request) -> Vec<String> {
        let began = Instant::now();
        let (ok, lines) = match &request.action {
            Action::Reload(name) => {
                let (ok, line) = answers::reload_result(&self.control.reload(name).await);
                (ok, vec![line])
            }
            Action::Restart(name) => {
                let result = self.control.restart(name).await;
                let (ok, line) = answers::restart_result(name, &result, began.elapsed());
                (ok, vec![line])
            }
            Action::ReloadAll(names) => self.reload_all(names).await,
        };
        let outcome = if ok { Outcome::Ok } else { Outcome::Failed };
        self.auditor.record(audit_entry(&request, outcome, lines.join(" | "), began.elapsed()));
        lines
    }

    /// Reloads `names` one at a time, a line each, stopping at the first that does not succeed.
    async fn reload_all(&self, names: &[String]) -> (bool, Vec<String>) {
        let mut lines = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let (ok, line) = answers::rolling_result(name, &self.control.reload(name).await);
            lines.push(line);
            if !ok {
                lines.push(answers::rolling_stopped(name, &names[i + 1..]));
                return (false, lines);
            }
        }
        (true, lines)
    }
}

/// The audit entry of a step of `request`.
fn audit_entry(
    request: &Request,
    outcome: Outcome,
    detail: String,
    duration: Duration,
) -> Entry<'_> {
    Entry {
        actor: &request.actor,
        rank: request.rank,
        command: request.command,
        arguments: &request.arguments,
        outcome,
        detail: Some(detail),
        duration,
    }
}

/// Whether the command came by private message (the router sets `"via": "pm"` on such commands).
fn came_by_pm(event: &CommandEvent) -> bool {
    event.via.is_pm()
}

/// Waits out a request's time, then ends it as expired if it still waits.
async fn expire_later(
    shared: Weak<Shared>,
    auditor: Auditor,
    user: String,
    id: u64,
    timeout: Duration,
) {
    tokio::time::sleep(timeout).await;
    let Some(shared) = shared.upgrade() else { return };
    let expired = shared.confirmations.lock().expire(&user, id);
    if let Some(request) = expired {
        let detail = format!("no yes within {}s", timeout.as_secs());
        auditor.record(audit_entry(&request, Outcome::Expired, detail, timeout));
    }
}

#[async_trait]
impl InProcessPlugin for AdminPlugin {
    async fn command(&mut self, _ctx: &PluginContext, command: &CommandEvent) -> PluginReply {
        Ok(self.handle(command).await)
    }

    async fn event(&mut self, _ctx: &PluginContext, subject: &str, data: &Value) -> PluginReply {
        let private = match subject {
            subject::CHAT_MESSAGE => false,
            subject::PM_MESSAGE => true,
            _ => return Ok(Vec::new()),
        };
        let field = |key: &str| data.get(key).and_then(Value::as_str);
        let (Some(channel), Some(user), Some(line)) =
            (field("channel"), field("user"), field("message"))
        else {
            return Ok(Vec::new());
        };
        let origin = Origin { channel: channel.to_owned(), private };
        let rank = data.get("rank").and_then(Value::as_f64);
        let said = data.get("time").and_then(Value::as_i64).unwrap_or_else(now_millis);
        Ok(self.hear(user, origin, line, rank, said).await)
    }
}
