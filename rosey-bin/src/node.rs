//! Wiring: starts Rosey's parts in the documented order and stops them in reverse on SIGINT/SIGTERM.
//!
//! Start: EventBus → Database → PluginManager → MetricsCollector → Dashboard → AdminPlugin → Router →
//! Connector (docs/ARCHITECTURE.md), each start logged with its duration (`started part=… duration_ms=…`),
//! an optional part that is off logged once (`not started part=… reason=…`). The started parts live on
//! one stack ([`Parts`]) that every way out (a signal, a failed step, the end) unwinds the same way. Plugins start
//! concurrently and `rosey ready` waits for them at most [`PLUGIN_START_TIMEOUT`] all together. A
//! signal is obeyed at any moment, startup included: what already started is stopped, each step within
//! [`STOP_STEP_TIMEOUT`]. A connector that stops for good (banned, logged in elsewhere) stops the node
//! too, with a non-zero exit. With the console, the end of input ends the node once everything read has
//! been answered (bounded by [`DRAIN_TIMEOUT`]), so `printf '!roll 2d6\n' | rosey run` can be scripted.

use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rosey_admin::{AdminOptions, AdminPlugin, RankLookup};
use rosey_core::bus::{BusError, EventBus, MemoryBus};
use rosey_core::config::Config;
use rosey_core::connector::console::{ConsoleConnector, ConsoleOptions, ConsoleProgress};
use rosey_core::connector::{Connector, ConnectorError, ConnectorHandle};
use rosey_core::control::{ClusterControl, ControlHandle, ControlService, ControlServiceError};
use rosey_core::health::{self, HealthRegistry};
use rosey_core::metrics::{FanoutSink, MetricsSink};
use rosey_core::plugin::{MixedRuntime, PluginControl, PluginManager, PluginState};
use rosey_core::router::{Router, RouterError, RouterHandle, RouterOptions};
use rosey_core::storage::{
    KvHandle, KvLimits, KvService, KvServiceError, RecordWriter, Storage, StorageError,
    WriterHandle, WriterOptions,
};
use rosey_dashboard::{
    ConnectorView, Dashboard, DashboardError, DashboardHandle, DashboardOptions,
};
use rosey_metrics::{
    CollectorHandle, CollectorOptions, ConnectorStats, MetricsCollector, NodeStats,
    PrometheusMetrics, PrometheusOptions,
};
use tokio::task::JoinSet;

/// How long startup waits for the plugins, all of them together, to be RUNNING or FAILED.
const PLUGIN_START_TIMEOUT: Duration = Duration::from_secs(15);

/// How long each shutdown step may take before it is abandoned.
const STOP_STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the whole shutdown may take, every step together.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long, after the console's input ended, the node waits for the answers to what it read.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the metrics collector saves its history to the database.
const HISTORY_SAVE_EVERY: Duration = Duration::from_secs(300);

/// How often the plugins' health is refreshed from the manager.
const HEALTH_REFRESH: Duration = Duration::from_secs(5);

/// How often the end-of-input drain looks at the router's and plugins' counters.
const DRAIN_POLL: Duration = Duration::from_millis(25);

/// Why the node could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NodeError {
    #[error("event bus: {0}")]
    Bus(#[from] BusError),
    #[cfg(not(feature = "nats"))]
    #[error("nats_url is set but this build of rosey has no `nats` feature")]
    NatsNotBuilt,
    #[cfg(not(feature = "cytube"))]
    #[error("the config has a cytube section but this build of rosey has no `cytube` feature")]
    CytubeNotBuilt,
    #[error("database.url: {0}")]
    Database(#[from] StorageError),
    #[cfg(not(any(feature = "sqlite", feature = "postgres")))]
    #[error(
        "database.url: this build of rosey has neither the `sqlite` nor the `postgres` feature"
    )]
    DatabaseNotBuilt,
    #[error("key-value store: {0}")]
    Kv(#[from] KvServiceError),
    #[error("router: {0}")]
    Router(#[from] RouterError),
    #[error("control API: {0}")]
    Control(#[from] ControlServiceError),
    #[error("connector: {0}")]
    Connector(#[from] ConnectorError),
    #[error("the connector stopped on its own")]
    ConnectorStopped,
    #[error("dashboard: {0} (set dashboard.port to a free port, or dashboard.enabled to false)")]
    Dashboard(#[from] DashboardError),
    #[error("cannot listen for signals: {0}")]
    Signals(std::io::Error),
}

/// One started part of the node.
enum Part {
    Bus(Arc<dyn EventBus>),
    Writer(WriterHandle),
    Kv(KvHandle),
    Manager(Arc<PluginManager>),
    Control(ControlHandle),
    Collector(CollectorHandle),
    Dashboard(DashboardHandle),
    Router(RouterHandle),
    Connector(ConnectorHandle),
}

/// What has been started so far, in start order: one stack, so a signal, a failed step and a normal
/// stop all end the node the same way ([`Parts::stop`], in reverse).
#[derive(Default)]
struct Parts {
    stack: Vec<(&'static str, Part)>,
}

impl Parts {
    /// Records a part that has just started and logs how long its start took.
    fn started(&mut self, name: &'static str, part: Part, since: Instant) {
        tracing::info!(message = "started", part = name, duration_ms = millis(since.elapsed()));
        self.stack.push((name, part));
    }

    fn bus(&self) -> Option<&Arc<dyn EventBus>> {
        self.stack.iter().find_map(|(_, part)| match part {
            Part::Bus(bus) => Some(bus),
            _ => None,
        })
    }

    fn writer(&self) -> Option<&WriterHandle> {
        self.stack.iter().find_map(|(_, part)| match part {
            Part::Writer(writer) => Some(writer),
            _ => None,
        })
    }

    fn manager(&self) -> Option<&Arc<PluginManager>> {
        self.stack.iter().find_map(|(_, part)| match part {
            Part::Manager(manager) => Some(manager),
            _ => None,
        })
    }

    fn collector(&self) -> Option<&CollectorHandle> {
        self.stack.iter().find_map(|(_, part)| match part {
            Part::Collector(collector) => Some(collector),
            _ => None,
        })
    }

    fn router(&self) -> Option<&RouterHandle> {
        self.stack.iter().find_map(|(_, part)| match part {
            Part::Router(router) => Some(router),
            _ => None,
        })
    }

    /// Takes the connector off the stack, for the serve loop to watch (it stops it itself).
    fn take_connector(&mut self) -> Option<ConnectorHandle> {
        let at = self.stack.iter().position(|(_, part)| matches!(part, Part::Connector(_)))?;
        match self.stack.remove(at) {
            (_, Part::Connector(connector)) => Some(connector),
            _ => None,
        }
    }
}

/// Logs that an optional part is not started, and why.
fn skipped(part: &'static str, reason: &'static str) {
    tracing::info!(message = "not started", part, reason);
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Runs the node until SIGINT or SIGTERM (or the end of the console's input).
pub(crate) async fn run(config: Config) -> Result<(), NodeError> {
    let mut signal = pin!(shutdown_signal()?);
    tracing::info!(message = "starting rosey", version = env!("CARGO_PKG_VERSION"));
    let health = HealthRegistry::new();
    let mut parts = Parts::default();
    // The whole startup races the signal: Ctrl-C while a plugin or CyTube keeps us waiting is obeyed
    // at once, and what already started is stopped below.
    let started = tokio::select! {
        started = start(&config, &health, &mut parts) => Some(started),
        () = &mut signal => None,
    };
    let outcome = match started {
        None => {
            tracing::info!(message = "stopping during startup");
            Ok(())
        }
        Some(Err(err)) => Err(err),
        Some(Ok(console)) => serve(&mut parts, console, &health, &mut signal).await,
    };
    tracing::info!(message = "shutting down");
    parts.stop().await;
    tracing::info!(message = "rosey stopped");
    outcome
}

/// Starts the parts in order, recording each in `parts` as soon as it runs. Returns the console's
/// progress when the connector is the console.
async fn start(
    config: &Config,
    health: &HealthRegistry,
    parts: &mut Parts,
) -> Result<Option<ConsoleProgress>, NodeError> {
    health.expect(health::BUS);
    health.expect(health::STORAGE);
    health.expect(health::PLUGINS);
    health.expect(health::CONNECTOR);
    // 1. EventBus
    let since = Instant::now();
    let (bus, bus_kind, memory_bus, nats) = start_bus(config).await?;
    parts.started("event bus", Part::Bus(bus.clone()), since);
    health.report(health::BUS, true, format!("connected ({bus_kind})"));
    // 2. Database: opened (and migrated) before anything can write to it; lifecycle records and the
    //    audit log go through the writer, which rides out an outage; plugins reach their keys through
    //    the key-value service.
    let since = Instant::now();
    let storage = open_storage(config).await?;
    let writer = RecordWriter::new(storage.clone(), writer_options(config)).start();
    let records = writer.sink();
    report_storage(&writer, health);
    parts.started("database", Part::Writer(writer), since);
    let since = Instant::now();
    // A SQLite file is this node's alone and the key-value service its only writer of `kv`, so gets
    // may be answered from memory; a shared database (PostgreSQL) is written by other nodes too.
    let kv_cache = (storage.backend() == "sqlite").then_some(rosey_core::storage::KV_CACHE_BYTES);
    let kv = KvService::new(bus.clone(), storage.clone(), kv_limits(config))
        .cache(kv_cache)
        .start()
        .await?;
    let kv_stats = kv.stats_reader();
    parts.started("key-value store", Part::Kv(kv), since);
    // The metrics collector and the Prometheus registry hear the plugins from their first start, so
    // their sinks go into the manager now; the collector starts polling at step 4.
    let prometheus = PrometheusMetrics::new(PrometheusOptions {
        enabled: config.metrics.enabled && config.metrics.prometheus_enabled,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        node: Some(config.node.name()),
    });
    let collector = config.metrics.enabled.then(|| {
        MetricsCollector::new(collector_options(config))
            .storage(storage.clone(), HISTORY_SAVE_EVERY)
    });
    let mut sinks: Vec<Arc<dyn MetricsSink>> =
        vec![Arc::new(records.clone()), Arc::new(prometheus.clone())];
    if let Some(collector) = &collector {
        sinks.push(Arc::new(collector.sink()));
    }
    let sink: Arc<dyn MetricsSink> = Arc::new(FanoutSink::new(sinks));
    // Process plugins from plugin_dir, and in-process ones (the admin plugin) in the same manager.
    let runtime = MixedRuntime::default();
    // 3. PluginManager: every plugin starts at once; chat starts flowing only once they have all had
    //    their chance, bounded by one timeout for all of them together.
    let since = Instant::now();
    let manager = Arc::new(
        PluginManager::builder(bus.clone(), Arc::new(runtime.clone()))
            .metrics_sink(sink.clone())
            .build(),
    );
    for error in manager.load_dir(&config.plugin_dir).await {
        tracing::error!(message = "plugin not loaded", %error);
    }
    parts.started("plugin manager", Part::Manager(manager.clone()), since);
    wait_for_plugins(&manager).await;
    // The control API (rosey.control.*) belongs with the plugin manager it drives.
    let since = Instant::now();
    let control = ControlService::new(bus.clone(), manager.clone()).node(&config.node.name());
    let members = control.members();
    let control = control.start().await?;
    parts.started("control API", Part::Control(control), since);
    // `!admin` and the dashboard's actions reload and restart on every node that runs the plugin,
    // through the control API, like an operator's request.
    let cluster: Arc<dyn PluginControl> =
        Arc::new(ClusterControl::new(bus.clone(), manager.clone()));
    // 4. MetricsCollector (and the Prometheus registry's view of the plugins).
    match collector {
        Some(collector) => {
            let since = Instant::now();
            let collector = collector.start(manager.clone()).await;
            parts.started("metrics collector", Part::Collector(collector), since);
        }
        None => skipped("metrics collector", "metrics.enabled is false"),
    }
    prometheus.set_started_at(health.started_at());
    let plugins_source = manager.clone();
    prometheus.set_plugin_source(move || plugins_source.snapshot());
    // The connector is made (not started) here: its counters and user table feed the metrics and
    // the dashboard from now on.
    let bot_name = config.cytube.as_ref().map_or("rosey", |c| c.username.as_str()).to_owned();
    let made = make_connector(config, bot_name.clone(), health, nats.as_ref())?;
    // 5. Dashboard
    if !config.dashboard.enabled {
        skipped("dashboard", "dashboard.enabled is false");
    } else {
        let since = Instant::now();
        let dashboard =
            Dashboard::new(dashboard_options(config, bus_kind), cluster.clone(), health.clone())
                .prometheus(prometheus.clone())
                .storage(storage.clone())
                .audit(records.clone())
                .metrics_sink(sink.clone())
                .connector(made.view.clone())
                .members(members.clone());
        let dashboard = match parts.collector() {
            Some(collector) => dashboard.history(collector.reader()),
            None => dashboard,
        };
        match dashboard.start().await {
            Ok(dashboard) => parts.started("dashboard", Part::Dashboard(dashboard), since),
            // On the embedded default a busy port costs the dashboard, not the bot.
            Err(error) if !config.is_configured("dashboard") => {
                tracing::warn!(message = "dashboard not started; the bot runs without it", %error);
            }
            Err(error) => return Err(error.into()),
        }
    }
    // 6. AdminPlugin, when someone may use it.
    let admin_options = admin_options(config);
    if !admin_options.enabled() {
        skipped("admin plugin", "no owner or admins in the config");
    } else {
        let since = Instant::now();
        let mut admin = AdminPlugin::new(admin_options, cluster.clone())
            .audit(records.clone())
            .metrics_sink(sink.clone())
            .started_at(health.started_at());
        if let Some(ranks) = made.ranks.clone() {
            admin = admin.ranks(ranks);
        }
        admin.register(runtime.in_process());
        match manager.add(AdminPlugin::manifest()).await {
            Ok(()) => {
                match manager.wait_running(rosey_admin::ADMIN_PLUGIN, PLUGIN_START_TIMEOUT).await {
                    // Stopped with the plugin manager, like every plugin.
                    Ok(_) => tracing::info!(
                        message = "started",
                        part = "admin plugin",
                        duration_ms = millis(since.elapsed())
                    ),
                    Err(err) => tracing::error!(message = "admin plugin not running", %err),
                }
            }
            // A plugin folder may already use the name or the command: it keeps them.
            Err(err) => tracing::error!(message = "admin plugin not loaded", %err),
        }
    }
    // 7. Router
    let router_options =
        RouterOptions { bot_name: Some(bot_name.clone()), ..RouterOptions::default() };
    let since = Instant::now();
    let router = Router::new(bus.clone(), manager.command_table(), router_options).start().await?;
    let router_stats = router.stats_reader();
    parts.started("router", Part::Router(router), since);
    let connector_stats = made.connector.stats();
    let health_source = health.clone();
    prometheus.set_node_stats(move || {
        let counts = connector_stats.snapshot();
        NodeStats {
            bus: memory_bus.as_ref().map(|bus| bus.stats()),
            router: Some(router_stats()),
            connector: Some(ConnectorStats {
                connected: health_source.component(health::CONNECTOR).map(|c| c.healthy),
                reconnects: Some(counts.reconnects),
                chat_in: Some(counts.chat_received),
                chat_out: Some(counts.chat_sent),
                cooldowns: Some(counts.cooldowns),
                outbox_dropped: Some(counts.outbox_dropped),
                outbox_queued: Some(counts.outbox_queued),
            }),
            writer: Some(records.stats()),
            kv: Some(kv_stats()),
        }
    });
    // 8. Connector
    let MadeConnector { connector, console, .. } = made;
    let since = Instant::now();
    let connector = connector.start(bus).await?;
    parts.started("connector", Part::Connector(connector), since);

    let plugins = report_plugins(&manager, health);
    let not_running: Vec<&str> = plugins.not_running.iter().map(String::as_str).collect();
    tracing::info!(
        message = "rosey ready",
        bus = bus_kind,
        running = plugins.running,
        failed = not_running.len(),
        not_running = ?not_running,
        connector = connector_name(config)
    );
    Ok(console)
}

/// Waits until every plugin is RUNNING or FAILED, all of them together within
/// [`PLUGIN_START_TIMEOUT`]. Plugins still starting then keep being supervised (and may run later).
async fn wait_for_plugins(manager: &Arc<PluginManager>) {
    let mut waits = JoinSet::new();
    for plugin in manager.snapshot() {
        let manager = manager.clone();
        waits.spawn(async move {
            let result = manager.wait_running(&plugin.name, PLUGIN_START_TIMEOUT).await;
            (plugin.name, result)
        });
    }
    // Each wait has the same timeout from the same instant; the outer one makes the shared deadline
    // explicit. Dropping the JoinSet (on timeout, or a signal) ends the waits, not the plugins.
    let all = async {
        while let Some(joined) = waits.join_next().await {
            if let Ok((name, Err(err))) = joined {
                tracing::error!(message = "plugin not running at startup", plugin = %name, %err);
            }
        }
    };
    if tokio::time::timeout(PLUGIN_START_TIMEOUT + Duration::from_secs(1), all).await.is_err() {
        tracing::warn!(message = "plugins still starting", timeout = ?PLUGIN_START_TIMEOUT);
    }
}

/// Running and not running plugins, as reported into the health registry.
struct PluginCount {
    running: usize,
    not_running: Vec<String>,
}

/// Reports the plugins' health: healthy when every plugin runs, `running N/M` and the others named.
fn report_plugins(manager: &PluginManager, health: &HealthRegistry) -> PluginCount {
    let plugins = manager.snapshot();
    let total = plugins.len();
    let (running, not_running): (Vec<_>, Vec<_>) =
        plugins.into_iter().partition(|p| p.state == PluginState::Running);
    let not_running: Vec<String> = not_running.into_iter().map(|p| p.name).collect();
    let mut detail = format!("running {}/{total}", running.len());
    if !not_running.is_empty() {
        detail.push_str(&format!("; not running: {}", not_running.join(", ")));
    }
    health.report(health::PLUGINS, not_running.is_empty(), detail);
    PluginCount { running: running.len(), not_running }
}

/// Serves until a signal, the connector's end, or (console) the end of input once it is answered.
async fn serve(
    parts: &mut Parts,
    console: Option<ConsoleProgress>,
    health: &HealthRegistry,
    signal: &mut (impl Future<Output = ()> + Unpin),
) -> Result<(), NodeError> {
    let Some(connector) = parts.take_connector() else { return Ok(()) };
    let stopper = connector.stopper();
    let mut connector_end = pin!(connector.wait());
    let mut refresh = tokio::time::interval(HEALTH_REFRESH);
    let input_ended = async {
        match &console {
            Some(console) => console.input_ended().await,
            None => std::future::pending().await,
        }
    };
    let mut input_ended = pin!(input_ended);
    loop {
        tokio::select! {
            () = &mut *signal => break,
            ended = &mut connector_end => {
                // The connector stopped for good (a ban, a duplicate login…): nothing left to stop.
                return match ended {
                    Ok(()) => Err(NodeError::ConnectorStopped),
                    Err(err) => Err(NodeError::Connector(err)),
                };
            }
            () = &mut input_ended => {
                if let Some(console) = &console {
                    tracing::info!(message = "console input ended; answering what was read, then stopping");
                    let drained = answer_what_was_read(parts, console);
                    tokio::select! {
                        () = &mut *signal => {}
                        finished = tokio::time::timeout(DRAIN_TIMEOUT, drained) => {
                            if finished.is_err() {
                                tracing::warn!(message = "replies still pending at the end of input; stopping anyway", timeout = ?DRAIN_TIMEOUT);
                            }
                        }
                    }
                }
                break;
            }
            _ = refresh.tick() => {
                if let Some(manager) = parts.manager() {
                    report_plugins(manager, health);
                }
                if let Some(writer) = parts.writer() {
                    report_storage(writer, health);
                }
            }
        }
    }
    stopper.stop();
    step("connector", connector_end).await;
    Ok(())
}

/// Waits until everything the console read has been answered: the router has taken in every line,
/// no routed command still waits for its answer (the router makes sure each gets exactly one) and no
/// plugin has an event queued or in flight on two looks in a row, then the console has printed every
/// reply sent so far.
async fn answer_what_was_read(parts: &Parts, console: &ConsoleProgress) {
    let (Some(router), Some(bus)) = (parts.router(), parts.bus()) else {
        return;
    };
    let lines = console.lines_read();
    // Plugins that hear plain chat (the admin plugin waiting for `yes`) may still hold lines the
    // router never routed: they must be idle too, on two looks in a row (a line may be between the
    // bus and a plugin's queue at one look).
    let idle = |manager: Option<&Arc<PluginManager>>| {
        manager.is_none_or(|m| {
            m.snapshot().iter().all(|p| p.events.queued == 0 && p.events.in_flight == 0)
        })
    };
    let mut idle_looks = 0;
    while idle_looks < 2 {
        let stats = router.stats();
        let routed = stats.handled() >= lines && stats.in_flight == 0;
        idle_looks = if routed && idle(parts.manager()) { idle_looks + 1 } else { 0 };
        tokio::time::sleep(DRAIN_POLL).await;
    }
    if let Err(error) = console.flush(bus.as_ref()).await {
        tracing::warn!(message = "cannot flush the console", %error);
    }
}

impl Parts {
    /// Stops what started, in reverse order, each step within [`STOP_STEP_TIMEOUT`] and all of them
    /// within [`STOP_TIMEOUT`]: a step that does not finish in time is abandoned (and logged) and the
    /// next one goes on.
    async fn stop(mut self) {
        let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
        while let Some((name, part)) = self.stack.pop() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let bound = left.min(STOP_STEP_TIMEOUT);
            let since = Instant::now();
            let finished = tokio::time::timeout(bound, stop_part(name, part)).await.is_ok();
            if finished {
                tracing::info!(
                    message = "stopped",
                    part = name,
                    duration_ms = millis(since.elapsed())
                );
            } else {
                tracing::warn!(message = "shutdown step did not finish in time", part = name, timeout = ?bound);
            }
        }
    }
}

/// Stops one part; a part that ends with an error says so in the log. The plugins stop before the
/// key-value service and the writer, so their last lifecycle records are written (the writer writes
/// what is still queued before it stops, within its own bound).
async fn stop_part(name: &str, part: Part) {
    let ended = match part {
        Part::Connector(connector) => connector.shutdown().await.map_err(|e| e.to_string()),
        Part::Router(router) => router.shutdown().await.map_err(|e| e.to_string()),
        Part::Dashboard(dashboard) => dashboard.shutdown().await.map_err(|e| e.to_string()),
        Part::Collector(collector) => collector.shutdown().await.map_err(|e| e.to_string()),
        Part::Control(control) => control.shutdown().await.map_err(|e| e.to_string()),
        Part::Manager(manager) => {
            manager.shutdown().await;
            Ok(())
        }
        Part::Kv(kv) => kv.shutdown().await.map_err(|e| e.to_string()),
        Part::Writer(writer) => writer.shutdown().await.map_err(|e| e.to_string()),
        Part::Bus(bus) => bus.flush().await.map_err(|e| e.to_string()),
    };
    if let Err(error) = ended {
        tracing::warn!(message = "part stopped with an error", part = name, %error);
    }
}

/// A connector made and not started, with what the rest of the node reads from it.
struct MadeConnector {
    connector: Box<dyn Connector>,
    /// The console's progress, when it is the console.
    console: Option<ConsoleProgress>,
    /// What the dashboard's header shows of it.
    view: ConnectorView,
    /// Where the admin plugin looks up ranks (the CyTube user table); `None` trusts names (console).
    ranks: Option<Arc<dyn RankLookup>>,
}

/// The CyTube user table as the admin plugin's [`RankLookup`] (names compared as CyTube does).
#[cfg(feature = "cytube")]
struct UserRanks(rosey_core::connector::cytube::UserDirectory);

#[cfg(feature = "cytube")]
impl RankLookup for UserRanks {
    fn rank(&self, user: &str) -> Option<f64> {
        self.0.rank(user)
    }
}

/// The console connector on embedded defaults, CyTube when the config has a `cytube` section.
fn make_connector(
    config: &Config,
    bot_name: String,
    health: &HealthRegistry,
    nats: Option<&NatsBusOf>,
) -> Result<MadeConnector, NodeError> {
    match &config.cytube {
        None => {
            let options = ConsoleOptions { bot_name, ..ConsoleOptions::default() };
            let view = ConnectorView {
                name: "console".to_owned(),
                channel: Some(options.channel.clone()),
                users: None,
            };
            let console = ConsoleConnector::new(options).with_health(health.clone());
            let progress = console.progress();
            Ok(MadeConnector {
                connector: Box::new(console),
                console: Some(progress),
                view,
                ranks: None,
            })
        }
        #[cfg(feature = "cytube")]
        Some(cytube) => {
            use rosey_core::connector::cytube::{CytubeConnector, CytubeOptions};
            tracing::info!(
                message = "joining CyTube",
                server = %cytube.server,
                channel = %cytube.channel,
                user = %cytube.username,
                guest = cytube.password.is_none()
            );
            let options = CytubeOptions::from_config(cytube);
            // On NATS every node with a `cytube` section competes for the channel: the one holding
            // its lease joins, the others wait in standby (docs/SCALING.md).
            let (connector, users): (Box<dyn Connector>, _) = match nats {
                #[cfg(feature = "nats")]
                Some(nats) => {
                    let connector =
                        rosey_core::cluster::LeasedCytube::new(options, nats, &config.node.name())
                            .with_health(health.clone());
                    let users = connector.users();
                    (Box::new(connector), users)
                }
                _ => {
                    let connector = CytubeConnector::new(options).with_health(health.clone());
                    let users = connector.users();
                    (Box::new(connector), users)
                }
            };
            let ranks: Arc<dyn RankLookup> = Arc::new(UserRanks(users.clone()));
            let view = ConnectorView {
                name: "cytube".to_owned(),
                channel: Some(cytube.channel.clone()),
                users: Some(Arc::new(move || users.len())),
            };
            Ok(MadeConnector { connector, console: None, view, ranks: Some(ranks) })
        }
        #[cfg(not(feature = "cytube"))]
        Some(_) => Err(NodeError::CytubeNotBuilt),
    }
}

/// The admin plugin as the config says: who may, and where the dashboard is for `!admin metrics`.
fn admin_options(config: &Config) -> AdminOptions {
    let dashboard_url =
        if config.dashboard.enabled { config.dashboard.url() } else { String::new() };
    AdminOptions {
        owner: config.owner.clone(),
        admins: config.admins.clone(),
        dashboard_url,
        node: config.node.name(),
        ..AdminOptions::default()
    }
}

/// The dashboard as the config says: address, token, and snapshots no older than half a metrics
/// poll (at most a second).
fn dashboard_options(config: &Config, bus_kind: &str) -> DashboardOptions {
    let poll = Duration::from_secs(config.metrics.poll_interval.max(1));
    DashboardOptions {
        host: config.dashboard.host.clone(),
        port: config.dashboard.port,
        token: config.dashboard.token.clone(),
        max_age: (poll / 2).min(Duration::from_secs(1)),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        bus: bus_kind.to_owned(),
        node: config.node.name(),
    }
}

fn connector_name(config: &Config) -> &'static str {
    if config.cytube.is_some() { "cytube" } else { "console" }
}

/// Runs one shutdown step, abandoning it after [`STOP_STEP_TIMEOUT`].
async fn step<T>(name: &str, work: impl Future<Output = T>) {
    if tokio::time::timeout(STOP_STEP_TIMEOUT, work).await.is_err() {
        tracing::warn!(message = "shutdown step did not finish in time", step = name, timeout = ?STOP_STEP_TIMEOUT);
    }
}

/// The NATS bus itself, when the node is on NATS (the CyTube connector competes for its channel
/// through JetStream there).
#[cfg(feature = "nats")]
type NatsBusOf = rosey_core::bus::NatsBus;
#[cfg(not(feature = "nats"))]
type NatsBusOf = std::convert::Infallible;

/// The bus, its kind, the in-process bus again when it is one (for its statistics), and the NATS bus
/// when it is that.
type StartedBus = (Arc<dyn EventBus>, &'static str, Option<Arc<MemoryBus>>, Option<NatsBusOf>);

async fn start_bus(config: &Config) -> Result<StartedBus, NodeError> {
    match &config.nats_url {
        None => {
            let bus = Arc::new(MemoryBus::new());
            Ok((bus.clone(), "memory", Some(bus), None))
        }
        #[cfg(feature = "nats")]
        Some(url) => {
            use rosey_core::bus::{NatsBus, NatsOptions};
            let credentials = config.nats.credentials();
            // The summary names the kind of credentials (and a user or file), never a secret.
            tracing::info!(message = "connecting to NATS", url = %url, credentials = %credentials.summary());
            let options = NatsOptions { credentials, ..NatsOptions::default() };
            let bus = NatsBus::connect_with(url.expose(), options).await?;
            Ok((Arc::new(bus.clone()), "nats", None, Some(bus)))
        }
        #[cfg(not(feature = "nats"))]
        Some(_) => Err(NodeError::NatsNotBuilt),
    }
}

/// Opens the database of `database.url` (creating a SQLite file on first run) and applies the
/// migrations. The error names the URL with its password as `***`.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
async fn open_storage(config: &Config) -> Result<Arc<dyn Storage>, NodeError> {
    use rosey_core::storage::{SqlOptions, SqlStorage};
    let database = &config.database;
    tracing::info!(message = "opening the database", url = %database.url, pool_size = database.pool_size);
    let options = SqlOptions { pool_size: database.pool_size, ..SqlOptions::default() };
    let storage = SqlStorage::open(database.url.expose(), options).await?;
    Ok(Arc::new(storage))
}

/// A build without any database feature cannot open `database.url`.
#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
async fn open_storage(_config: &Config) -> Result<Arc<dyn Storage>, NodeError> {
    Err(NodeError::DatabaseNotBuilt)
}

fn collector_options(config: &Config) -> CollectorOptions {
    let metrics = &config.metrics;
    CollectorOptions {
        poll_interval: Duration::from_secs(metrics.poll_interval),
        history_duration: Duration::from_secs(metrics.history_duration),
        minute_tier: Duration::from_secs(metrics.retention.minute_tier_hours * 3600),
        quarter_tier: Duration::from_secs(metrics.retention.quarter_tier_days * 86_400),
    }
}

fn writer_options(config: &Config) -> WriterOptions {
    let days = config.database.retention_days;
    WriterOptions {
        node: config.node.name(),
        retention: (days > 0).then(|| Duration::from_secs(days.saturating_mul(86_400))),
        ..WriterOptions::default()
    }
}

fn kv_limits(config: &Config) -> KvLimits {
    KvLimits { max_keys: config.database.kv_max_keys, ..KvLimits::default() }
}

/// Reports whether the database takes the records, and how many wait while it does not.
fn report_storage(writer: &WriterHandle, health: &HealthRegistry) {
    let stats = writer.stats();
    let backend = writer.storage().backend();
    if stats.available {
        health.report(health::STORAGE, true, format!("reachable ({backend})"));
    } else {
        health.report(
            health::STORAGE,
            false,
            format!("{backend} unreachable; {} records waiting", stats.queued),
        );
    }
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM. Listeners are installed before returning, so a
/// signal that arrives during startup is not missed.
fn shutdown_signal() -> Result<impl Future<Output = ()>, NodeError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(NodeError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(NodeError::Signals)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!(message = "SIGTERM received"),
            _ = int.recv() => tracing::info!(message = "SIGINT received"),
        }
    })
}
