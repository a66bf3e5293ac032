//! The handlers. Read answers come from the current [`Snapshot`]; the actions go to the plugin
//! manager through `PluginControl`, are audited like `!admin` commands, and refresh the snapshot.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::Stream;
use parking_lot::Mutex;
use rosey_core::config::Secret;
use rosey_core::control::{error_json, report_json, status_json};
use rosey_core::health;
use rosey_core::plugin::{ControlError, PluginState};
use rosey_core::storage::{AuditQuery, AuditRecord, PluginEventQuery, now_micros};
use rosey_metrics::collector::Series;
use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::page;
use crate::snapshot::{Snapshots, round3};

/// How often an idle SSE stream sends a comment, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Most events `/api/events` answers with.
const MAX_EVENTS: u32 = 500;
/// Events `/api/events` answers with unless asked.
const DEFAULT_EVENTS: u32 = 50;
/// How long `/metrics` answers from the same rendering.
const PROMETHEUS_MAX_AGE: Duration = Duration::from_secs(1);

/// What the handlers share.
pub(crate) struct App {
    snapshots: Snapshots,
    token: Option<Secret>,
    node: String,
    stop: CancellationToken,
    prometheus_cache: Mutex<Option<(Instant, Bytes)>>,
}

impl App {
    pub(crate) fn new(
        snapshots: Snapshots,
        token: Option<Secret>,
        node: String,
        stop: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self { snapshots, token, node, stop, prometheus_cache: Mutex::new(None) })
    }
}

type AppState = State<Arc<App>>;

/// A JSON error answer: `{"error": message, "code": code}`.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into(), "code": code }))).into_response()
}

fn json_bytes(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub(crate) async fn page(State(app): AppState) -> Response {
    let snapshot = app.snapshots.get().await;
    no_store(
        (
            [(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))],
            snapshot.page.clone(),
        )
            .into_response(),
    )
}

pub(crate) async fn css() -> Response {
    asset("text/css; charset=utf-8", page::CSS)
}

pub(crate) async fn js() -> Response {
    asset("text/javascript; charset=utf-8", page::JS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// Browsers ask for it on their own; there is none (a data: icon would break the CSP).
pub(crate) async fn favicon() -> StatusCode {
    StatusCode::NO_CONTENT
}

pub(crate) async fn metrics_json(State(app): AppState, headers: HeaderMap) -> Response {
    let snapshot = app.snapshots.get().await;
    if accepts_gzip(&headers) {
        let body = snapshot.metrics_gzip();
        if !body.is_empty() {
            // Already encoded: the compression layer leaves a response with a Content-Encoding be.
            let mut response = no_store(json_bytes(body));
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
            return response;
        }
    }
    no_store(json_bytes(snapshot.metrics_json.clone()))
}

/// Whether the client takes gzip (`Accept-Encoding: gzip`, not with `q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',').any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused =
                parts.any(|p| p.replace(' ', "") == "q=0" || p.replace(' ', "") == "q=0.0");
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
    })
}

/// The windows `/api/plugin/{name}?window=` takes.
const WINDOWS: [(&str, Duration); 5] = [
    ("1m", Duration::from_secs(60)),
    ("5m", Duration::from_secs(300)),
    ("1h", Duration::from_secs(3600)),
    ("24h", Duration::from_secs(86_400)),
    ("7d", Duration::from_secs(7 * 86_400)),
];

/// The query string's parameters (last one wins); undecodable ones are dropped.
fn query_params(query: Option<&str>) -> HashMap<String, String> {
    let Some(query) = query else { return HashMap::new() };
    url_decode_pairs(query)
}

fn url_decode_pairs(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(key)?, percent_decode(value)?))
        })
        .collect()
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

pub(crate) async fn plugin_json(
    State(app): AppState,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = query_params(query.as_deref());
    let window = params.get("window").map_or("1h", String::as_str);
    let Some(&(window, span)) = WINDOWS.iter().find(|(w, _)| *w == window) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "window must be one of 1m, 5m, 1h, 24h, 7d",
        );
    };
    let snapshot = app.snapshots.get().await;
    let Some(status) = snapshot.statuses.iter().find(|s| s.name == name) else {
        return error(StatusCode::NOT_FOUND, "not_found", format!("unknown plugin {name:?}"));
    };
    let key = (name.clone(), window);
    if let Some(body) = snapshot.plugin_answers.lock().get(&key) {
        return no_store(json_bytes(body.clone()));
    }
    let body = plugin_answer(&app, status, window, span);
    snapshot.plugin_answers.lock().insert(key, body.clone());
    no_store(json_bytes(body))
}

/// `GET /api/plugin/{name}` (docs/METRICS.md).
fn plugin_answer(
    app: &App,
    status: &rosey_core::plugin::PluginStatus,
    window: &str,
    span: Duration,
) -> Bytes {
    let history = app.snapshots.sources.history.as_ref();
    let aggregates = |span| {
        let stat = |series| history.and_then(|h| h.aggregate(&status.name, series, span));
        let (cpu, memory) = (stat(Series::Cpu), stat(Series::Memory));
        let value = |a: Option<rosey_metrics::collector::Aggregate>, f: fn(&_) -> f64| {
            a.as_ref().map(|a| round3(f(a)))
        };
        json!({
            "cpu_avg": value(cpu, |a| a.avg), "cpu_min": value(cpu, |a| a.min),
            "cpu_max": value(cpu, |a| a.max), "cpu_p95": value(cpu, |a| a.p95),
            "memory_avg": value(memory, |a| a.avg), "memory_min": value(memory, |a| a.min),
            "memory_max": value(memory, |a| a.max), "memory_p95": value(memory, |a| a.p95),
        })
    };
    let current = history.and_then(|h| h.current(&status.name));
    let points = history.map(|h| h.history(&status.name, span)).unwrap_or_default();
    #[derive(Serialize)]
    struct HistoryPoint {
        timestamp: f64,
        cpu: Option<f64>,
        memory: Option<f64>,
    }
    let history_points: Vec<HistoryPoint> = points
        .iter()
        .map(|p| HistoryPoint {
            timestamp: p.time as f64 / 1000.0,
            cpu: p.stat(Series::Cpu).map(|s| round3(s.avg)),
            memory: p.stat(Series::Memory).map(|s| round3(s.avg)),
        })
        .collect();
    let mut answer = json!({
        "name": status.name,
        "version": status.version,
        "loaded_at": status.loaded_at.map(|ms| ms as f64 / 1000.0),
        "state": status.state.as_str(),
        "pid": status.pid,
        "metrics": {
            "current": {
                "cpu_percent": current.as_ref().and_then(|s| s.cpu_percent).or(status.cpu_percent).map(round3),
                "memory_mb": current.as_ref().and_then(|s| s.memory_mb).or(status.memory_mb).map(round3),
                "uptime": round3(status.uptime.as_secs_f64()),
            },
            "aggregates_1h": aggregates(Duration::from_secs(3600)),
        },
        "window": window,
        "history": history_points,
    });
    if window != "1h" {
        answer["metrics"]["aggregates"] = aggregates(span);
    }
    Bytes::from(serde_json::to_vec(&answer).unwrap_or_default())
}

pub(crate) async fn events_json(State(app): AppState, RawQuery(query): RawQuery) -> Response {
    let params = query_params(query.as_deref());
    let limit = match params.get("limit").map(|l| l.parse::<u32>()) {
        None => DEFAULT_EVENTS,
        Some(Ok(limit)) if (1..=MAX_EVENTS).contains(&limit) => limit,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("limit must be 1-{MAX_EVENTS}"),
            );
        }
    };
    let before_us = match params.get("before").map(|b| b.parse::<f64>()) {
        None => None,
        Some(Ok(before)) if before.is_finite() && before > 0.0 => Some((before * 1e6) as i64),
        Some(_) => {
            return error(StatusCode::BAD_REQUEST, "bad_request", "before must be Unix seconds");
        }
    };
    let plugin = params.get("plugin").cloned();
    let Some(storage) = app.snapshots.sources.storage.clone() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no_storage", "no storage is configured");
    };
    let plugin_query =
        PluginEventQuery { plugin: plugin.clone(), before_us, limit, ..Default::default() };
    let lifecycle = storage.plugin_events(&plugin_query);
    let audit_query = AuditQuery { actor: None, before_us, limit };
    let audit = storage.audit_log(&audit_query);
    let (lifecycle, audit) = match tokio::join!(lifecycle, audit) {
        (Ok(lifecycle), Ok(audit)) => (lifecycle, audit),
        (Err(error_), _) | (_, Err(error_)) => {
            tracing::warn!(message = "dashboard events unavailable", error = %error_);
            return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "storage unavailable");
        }
    };
    let mut events: Vec<(i64, Value)> = lifecycle
        .into_iter()
        .map(|e| {
            let value = json!({
                "time": e.time_us as f64 / 1e6, "source": "plugin", "kind": e.kind.as_str(),
                "plugin": e.plugin, "version": e.version, "reason": e.reason,
                "duration_seconds": e.duration_seconds, "node": e.node,
            });
            (e.time_us, value)
        })
        .collect();
    // Admin commands concern a plugin when it is their argument (`reload dice-roller`).
    events.extend(
        audit
            .into_iter()
            .filter(|a| {
                plugin.as_ref().is_none_or(|p| a.arguments.split_whitespace().any(|w| w == p))
            })
            .map(|a| {
                let value = json!({
                    "time": a.time_us as f64 / 1e6, "source": "admin", "kind": "admin",
                    "actor": a.actor, "actor_rank": a.actor_rank, "command": a.command,
                    "arguments": a.arguments, "outcome": a.outcome, "detail": a.detail,
                    "node": a.node,
                });
                (a.time_us, value)
            }),
    );
    events.sort_by_key(|e| std::cmp::Reverse(e.0));
    events.truncate(limit as usize);
    let events: Vec<Value> = events.into_iter().map(|(_, v)| v).collect();
    no_store(axum::Json(json!({ "events": events })).into_response())
}

/// The SSE stream of the page: an `overview` event now and whenever the page would change.
pub(crate) async fn stream(
    State(app): AppState,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (mut snapshots, guard) = app.snapshots.follow();
    let stop = app.stop.clone();
    let first = app.snapshots.get().await;
    let stream = futures_util::stream::unfold(
        (Some(first), String::new(), snapshots.clone(), guard, stop),
        |(mut pending, mut last, mut rx, guard, stop)| async move {
            loop {
                let snapshot = match pending.take() {
                    Some(snapshot) => snapshot,
                    None => {
                        tokio::select! {
                            () = stop.cancelled() => return None,
                            changed = rx.changed() => {
                                changed.ok()?;
                                rx.borrow_and_update().clone()
                            }
                        }
                    }
                };
                if snapshot.fragments_json != last {
                    last.clone_from(&snapshot.fragments_json);
                    let event = Event::default().event("overview").data(last.as_str());
                    return Some((Ok(event), (None, last, rx, guard, stop)));
                }
            }
        },
    );
    snapshots.borrow_and_update();
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

pub(crate) async fn prometheus(State(app): AppState) -> Response {
    let body = {
        let mut cache = app.prometheus_cache.lock();
        match &*cache {
            Some((at, body)) if at.elapsed() < PROMETHEUS_MAX_AGE => body.clone(),
            _ => {
                let body = app
                    .snapshots
                    .sources
                    .prometheus
                    .as_ref()
                    .map(|p| Bytes::from(p.render()))
                    .unwrap_or_default();
                *cache = Some((Instant::now(), body.clone()));
                body
            }
        }
    };
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

pub(crate) async fn healthz(State(app): AppState) -> Response {
    let uptime = app.snapshots.sources.health.uptime().as_secs_f64();
    no_store(
        axum::Json(json!({ "status": "ok", "uptime_seconds": round3(uptime) })).into_response(),
    )
}

/// Ready when the bus, the connector and storage report healthy (those the node has) and every
/// plugin runs; otherwise 503 with the reasons.
pub(crate) async fn readyz(State(app): AppState) -> Response {
    let health = app.snapshots.sources.health.snapshot();
    let mut reasons = Vec::new();
    let mut components = Vec::new();
    for component in health.components.iter().filter(|c| c.name != health::PLUGINS) {
        if !component.healthy {
            reasons.push(format!("{}: {}", component.name, component.detail));
        }
        components.push(json!({
            "name": component.name, "healthy": component.healthy, "detail": component.detail,
        }));
    }
    let snapshot = app.snapshots.get().await;
    let not_running: Vec<String> = snapshot
        .statuses
        .iter()
        .filter(|s| s.state != PluginState::Running)
        .map(|s| format!("{} is {}", s.name, s.state))
        .collect();
    let running = snapshot.statuses.len() - not_running.len();
    components.push(json!({
        "name": health::PLUGINS,
        "healthy": not_running.is_empty(),
        "detail": format!("running {running}/{}", snapshot.statuses.len()),
    }));
    if !not_running.is_empty() {
        reasons.push(format!("plugins: {}", not_running.join(", ")));
    }
    let ready = reasons.is_empty();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({ "ready": ready, "reasons": reasons, "components": components });
    no_store((status, axum::Json(body)).into_response())
}

pub(crate) async fn reload(
    State(app): AppState,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    action(&app, peer, &headers, "reload", name).await
}

pub(crate) async fn restart(
    State(app): AppState,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    action(&app, peer, &headers, "restart", name).await
}

/// Checks the bearer token, runs the action through the plugin manager, audits it, counts it, and
/// refreshes the snapshot so the page shows the outcome at once.
async fn action(
    app: &App,
    peer: SocketAddr,
    headers: &HeaderMap,
    command: &'static str,
    name: String,
) -> Response {
    let Some(token) = &app.token else {
        return error(
            StatusCode::FORBIDDEN,
            "read_only",
            "the dashboard is read-only: set dashboard.token to enable reload and restart",
        );
    };
    if !authorized(headers, token) {
        tracing::warn!(message = "dashboard action refused: missing or wrong token", command, plugin = %name, %peer);
        audit(app, command, &name, "denied", Some(format!("wrong or missing token from {peer}")));
        let mut response =
            error(StatusCode::UNAUTHORIZED, "unauthorized", "a valid bearer token is required");
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let sources = &app.snapshots.sources;
    if let Some(sink) = &sources.sink {
        sink.admin_command(command, "dashboard");
    }
    tracing::info!(message = "dashboard action", command, plugin = %name, %peer);
    let control = sources.control.clone();
    let result = match command {
        "reload" => control.reload(&name).await.map(|report| {
            let outcome = report.outcome.as_str();
            let detail = format!(
                "{} {} → {} ({:.1}s)",
                outcome,
                report.from_version,
                report.to_version,
                report.duration.as_secs_f64()
            );
            (report_json(&report), detail)
        }),
        _ => control
            .restart(&name)
            .await
            .map(|status| (status_json(&status), format!("{} v{}", status.state, status.version))),
    };
    app.snapshots.refresh_now().await;
    match result {
        Ok((body, detail)) => {
            audit(app, command, &name, "ok", Some(detail));
            no_store(axum::Json(body).into_response())
        }
        Err(err) => {
            audit(app, command, &name, "failed", Some(err.to_string()));
            let status = match &err {
                ControlError::NotFound(_) => StatusCode::NOT_FOUND,
                ControlError::Busy { .. }
                | ControlError::Superseded { .. }
                | ControlError::AlreadyLoaded(_) => StatusCode::CONFLICT,
                ControlError::ShuttingDown(_) => StatusCode::SERVICE_UNAVAILABLE,
                ControlError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            no_store((status, axum::Json(error_json(&err))).into_response())
        }
    }
}

/// Whether the request carries `Authorization: Bearer <token>`, compared in constant time.
fn authorized(headers: &HeaderMap, token: &Secret) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
    else {
        return false;
    };
    let (given, expected) = (given.trim().as_bytes(), token.expose().as_bytes());
    let mut differ = given.len() ^ expected.len();
    for (i, byte) in expected.iter().enumerate() {
        differ |= usize::from(byte ^ given.get(i).copied().unwrap_or(0));
    }
    differ == 0
}

fn audit(app: &App, command: &str, plugin: &str, outcome: &str, detail: Option<String>) {
    if let Some(audit) = &app.snapshots.sources.audit {
        audit.audit(AuditRecord {
            time_us: now_micros(),
            node: app.node.clone(),
            actor: "dashboard".to_owned(),
            actor_rank: None,
            command: command.to_owned(),
            arguments: plugin.to_owned(),
            outcome: outcome.to_owned(),
            detail,
        });
    }
}

pub(crate) async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such page")
}

pub(crate) async fn method_not_allowed() -> Response {
    error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed here")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_decoded_and_bad_escapes_dropped() {
        let params = url_decode_pairs("window=24h&plugin=dice%2Droller&x=%zz&y=a+b&flag");
        assert_eq!(params.get("window").map(String::as_str), Some("24h"));
        assert_eq!(params.get("plugin").map(String::as_str), Some("dice-roller"));
        assert_eq!(params.get("y").map(String::as_str), Some("a b"));
        assert_eq!(params.get("flag").map(String::as_str), Some(""));
        assert!(!params.contains_key("x"));
    }

    #[test]
    fn gzip_is_taken_unless_refused() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(value).unwrap());
            headers
        };
        assert!(accepts_gzip(&with("gzip, deflate, br")));
        assert!(accepts_gzip(&with("br;q=1.0, gzip;q=0.8")));
        assert!(!accepts_gzip(&with("gzip;q=0")));
        assert!(!accepts_gzip(&with("br")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn only_the_exact_bearer_token_is_authorized() {
        let token = Secret::new("s3cret-token-0123456789".to_owned());
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            headers
        };
        assert!(authorized(&with("Bearer s3cret-token-0123456789"), &token));
        assert!(!authorized(&with("Bearer s3cret-token-012345678"), &token));
        assert!(!authorized(&with("Bearer s3cret-token-01234567890"), &token));
        assert!(!authorized(&with("Basic s3cret-token-0123456789"), &token));
        assert!(!authorized(&HeaderMap::new(), &token));
    }
}
