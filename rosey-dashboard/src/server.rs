//! The server: options, the builder that takes the node's parts, the router and its layers, and the
//! running handle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::routing::{get, post};
use rosey_core::config::Secret;
use rosey_core::health::HealthRegistry;
use rosey_core::metrics::MetricsSink;
use rosey_core::plugin::PluginControl;
use rosey_core::service::{ServiceHandle, Stopper, TaskFailed};
use rosey_core::storage::{Storage, StorageSink};
use rosey_metrics::{MetricsHistory, PrometheusMetrics};
use tokio::net::TcpListener;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::compression::CompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;

use crate::api;
use crate::snapshot::{Snapshots, Sources};

/// What every answer carries: nothing but the dashboard itself may be loaded, framed or posted to.
const CSP: &str = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
/// Largest request body (the actions take none).
const BODY_LIMIT: usize = 16 * 1024;
/// Requests handled at once, beyond which they wait their turn.
const CONCURRENCY: usize = 1024;
/// Longest a read request may take (a reload or restart has its own, longer bound).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a reload or restart from the dashboard may take.
const ACTION_TIMEOUT: Duration = Duration::from_secs(120);

/// How the dashboard is served.
#[derive(Debug, Clone)]
pub struct DashboardOptions {
    /// Address to bind (a name such as `localhost` is resolved). Default `127.0.0.1`: loopback only.
    pub host: String,
    /// TCP port; `0` picks a free one (see [`DashboardHandle::local_addr`]). Default 8080.
    pub port: u16,
    /// Bearer token that enables the reload and restart actions; `None` leaves the dashboard
    /// read-only.
    pub token: Option<Secret>,
    /// Oldest a snapshot of the node may be when served (the metrics poll interval or less).
    /// Default 1 s.
    pub max_age: Duration,
    /// Rosey's version, shown in the header.
    pub version: String,
    /// The bus kind shown in the header (`memory`, `nats`).
    pub bus: String,
    /// The node's name (`node.name`): on the page's header, and in audit records of the actions.
    pub node: String,
}

impl Default for DashboardOptions {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port: 8080,
            token: None,
            max_age: Duration::from_secs(1),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            bus: "memory".to_owned(),
            node: "rosey".to_owned(),
        }
    }
}

/// What the header says of the connector.
#[derive(Clone)]
pub struct ConnectorView {
    /// `console`, `cytube`…
    pub name: String,
    /// The channel it joins.
    pub channel: Option<String>,
    /// How many users are in the channel now, when the connector knows.
    pub users: Option<Arc<dyn Fn() -> usize + Send + Sync>>,
}

impl std::fmt::Debug for ConnectorView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorView")
            .field("name", &self.name)
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

/// Why the dashboard could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The address could not be bound (in use, not permitted, not an address of this machine).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// `host:port` as configured.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("dashboard server failed: {0}")]
    Serve(#[source] std::io::Error),
    /// The server's task panicked.
    #[error(transparent)]
    Task(#[from] TaskFailed),
}

/// The dashboard, configured and not yet serving; see the [crate docs](crate).
pub struct Dashboard {
    options: DashboardOptions,
    sources: Sources,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard").field("options", &self.options).finish_non_exhaustive()
    }
}

impl Dashboard {
    /// A dashboard of the plugins `control` manages, with the node's `health` (for the header and
    /// `/readyz`). The other sources are optional; what is missing is shown as unknown.
    pub fn new(
        options: DashboardOptions,
        control: Arc<dyn PluginControl>,
        health: HealthRegistry,
    ) -> Self {
        let sources = Sources {
            control,
            health,
            history: None,
            prometheus: None,
            storage: None,
            audit: None,
            sink: None,
            connector: None,
            members: None,
            version: options.version.clone(),
            bus: options.bus.clone(),
            node: options.node.clone(),
            actions: options.token.is_some(),
        };
        Self { options, sources }
    }

    /// The metrics collector's history: sparklines, p95, aggregates and `/api/plugin` history.
    pub fn history(mut self, history: MetricsHistory) -> Self {
        self.sources.history = Some(history);
        self
    }

    /// The Prometheus registry served on `/metrics` (an empty body without one).
    pub fn prometheus(mut self, prometheus: PrometheusMetrics) -> Self {
        self.sources.prometheus = Some(prometheus);
        self
    }

    /// Storage: the timeline, `/api/events`, and storage's share of `/readyz` (through `health`).
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.sources.storage = Some(storage);
        self
    }

    /// Where the actions are audited, as `!admin` commands are.
    pub fn audit(mut self, audit: StorageSink) -> Self {
        self.sources.audit = Some(audit);
        self
    }

    /// Where the actions are counted (`rosey_admin_commands_total{user="dashboard"}`).
    pub fn metrics_sink(mut self, sink: Arc<dyn MetricsSink>) -> Self {
        self.sources.sink = Some(sink);
        self
    }

    /// The connector, for the header.
    pub fn connector(mut self, connector: ConnectorView) -> Self {
        self.sources.connector = Some(connector);
        self
    }

    /// The nodes sharing the bus, as this node's control API knows them, for the header (a node
    /// alone shows only itself).
    pub fn members(mut self, members: rosey_core::control::Members) -> Self {
        self.sources.members = Some(members);
        self
    }

    /// Binds the address and serves until the handle stops it. A busy port is
    /// [`DashboardError::Bind`]; a non-loopback address without a token is served read-only with a
    /// warning.
    pub async fn start(self) -> Result<DashboardHandle, DashboardError> {
        let Self { options, sources } = self;
        let addr = display_addr(&options.host, options.port);
        let listener = TcpListener::bind((options.host.as_str(), options.port))
            .await
            .map_err(|source| DashboardError::Bind { addr: addr.clone(), source })?;
        let local_addr =
            listener.local_addr().map_err(|source| DashboardError::Bind { addr, source })?;
        if !local_addr.ip().is_loopback() {
            if options.token.is_none() {
                tracing::warn!(
                    message = "the dashboard listens beyond this machine; it is read-only (no dashboard.token)",
                    addr = %local_addr
                );
            } else {
                tracing::warn!(
                    message = "the dashboard listens beyond this machine; put it behind TLS, the token travels in clear",
                    addr = %local_addr
                );
            }
        }
        tracing::info!(message = "dashboard serving", url = %format!("http://{local_addr}"));
        let max_age = options.max_age.max(Duration::from_millis(50));
        let token = options.token.clone();
        let node = options.node.clone();
        Ok(DashboardHandle {
            local_addr,
            service: ServiceHandle::spawn("dashboard", move |stop| async move {
                let snapshots = Snapshots::start(sources, max_age, stop.clone()).await;
                let app = router(api::App::new(snapshots, token, node, stop.clone()));
                axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
                    .map_err(DashboardError::Serve)
            }),
        })
    }
}

/// `host:port`, with an IPv6 host in brackets.
fn display_addr(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// The routes and their layers.
fn router(app: Arc<api::App>) -> Router {
    let reads = Router::new()
        .route("/", get(api::page))
        .route("/assets/dashboard.css", get(api::css))
        .route("/assets/dashboard.js", get(api::js))
        .route("/favicon.ico", get(api::favicon))
        .route("/api/metrics", get(api::metrics_json))
        .route("/api/plugin/{name}", get(api::plugin_json))
        .route("/api/events", get(api::events_json))
        .route("/api/stream", get(api::stream))
        .route("/metrics", get(api::prometheus))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT));
    let actions = Router::new()
        .route("/api/plugin/{name}/reload", post(api::reload))
        .route("/api/plugin/{name}/restart", post(api::restart))
        .layer(TimeoutLayer::with_status_code(StatusCode::GATEWAY_TIMEOUT, ACTION_TIMEOUT));
    reads
        .merge(actions)
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .with_state(app)
        .layer(CompressionLayer::new())
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(GlobalConcurrencyLimitLayer::new(CONCURRENCY))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("cross-origin-resource-policy"),
            HeaderValue::from_static("same-origin"),
        ))
}

/// A running dashboard.
#[derive(Debug)]
pub struct DashboardHandle {
    local_addr: SocketAddr,
    service: ServiceHandle<DashboardError>,
}

impl DashboardHandle {
    /// The address it listens on (the real port when `0` was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Asks the server to stop: no new connections; open requests and live streams end.
    pub fn stop(&self) {
        self.service.stop();
    }

    /// A handle that can only stop the server.
    pub fn stopper(&self) -> Stopper {
        self.service.stopper()
    }

    /// Waits until the server has stopped.
    pub async fn wait(self) -> Result<(), DashboardError> {
        self.service.wait().await
    }

    /// Stops the server and waits until it has.
    pub async fn shutdown(self) -> Result<(), DashboardError> {
        self.service.shutdown().await
    }
}
