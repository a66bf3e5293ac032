//! The control API on the bus: `rosey.control.<list|status|reload|restart>` answered through a
//! [`PluginControl`], so an operator can script a deployment from any machine that reaches the bus
//! (`nats req rosey.control.reload '{"name":"dice-roller"}'`).
//!
//! | subject | request | reply |
//! |---|---|---|
//! | `rosey.control.list` | anything | `[PluginStatus, …]` |
//! | `rosey.control.status` | `{"name": "x"}` or `{}` | `PluginStatus`, or the list |
//! | `rosey.control.reload` | `{"name": "x"}` or `{"all": true}` | `ReloadReport`, or `[ReloadReport, …]` |
//! | `rosey.control.restart` | `{"name": "x"}` | `PluginStatus` |
//!
//! A request that cannot be served is answered `{"error": "…"}`. Anyone who can publish on the bus can
//! use this API: with NATS, the server's credentials and permissions are what protect it.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bus::{BusError, EventBus, EventBusExt, Message};
use crate::plugin::PluginControl;
use crate::subject::CONTROL_PREFIX;

/// The queue group of control services, so one node answers each request.
pub const CONTROL_GROUP: &str = "rosey-control";

#[derive(Debug, Default, Deserialize)]
struct Request {
    name: Option<String>,
    #[serde(default)]
    all: bool,
}

/// Answers control requests on the bus; see the [module docs](self).
pub struct ControlService {
    bus: Arc<dyn EventBus>,
    control: Arc<dyn PluginControl>,
}

impl std::fmt::Debug for ControlService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlService").finish_non_exhaustive()
    }
}

impl ControlService {
    /// A service answering through `control`.
    pub fn new(bus: Arc<dyn EventBus>, control: Arc<dyn PluginControl>) -> Self {
        Self { bus, control }
    }

    /// Subscribes and answers in a spawned task until `shutdown` is cancelled; each request is
    /// handled in its own task, so a long reload does not hold up a status request.
    pub async fn start(self, shutdown: CancellationToken) -> Result<JoinHandle<()>, BusError> {
        let mut requests =
            self.bus.queue_subscribe(&format!("{CONTROL_PREFIX}.*"), CONTROL_GROUP).await?;
        let service = Arc::new(self);
        Ok(tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    request = requests.next() => match request {
                        Some(request) => {
                            let service = service.clone();
                            tokio::spawn(async move { service.answer(request).await });
                        }
                        None => break,
                    },
                }
            }
        }))
    }

    async fn answer(&self, request: Message) {
        let action = request.subject().rsplit('.').next().unwrap_or_default().to_owned();
        let body: Result<Request, _> = if request.payload().iter().all(u8::is_ascii_whitespace) {
            Ok(Request::default())
        } else {
            serde_json::from_slice(request.payload())
        };
        let reply = match body {
            Err(err) => json!({ "error": format!("bad request: {err}") }),
            Ok(body) => self.run(&action, body).await,
        };
        tracing::info!(message = "control request", action = %action, ok = reply.get("error").is_none());
        let payload = Bytes::from(reply.to_string());
        if let Err(err) = self.bus.respond(&request, payload).await {
            tracing::warn!(message = "cannot answer control request", %err);
        }
    }

    async fn run(&self, action: &str, body: Request) -> Value {
        let to_json =
            |v: Result<Value, String>| v.unwrap_or_else(|error| json!({ "error": error }));
        match (action, body.name, body.all) {
            ("list", _, _) | ("status", None, _) => value(&self.control.list().await),
            ("status", Some(name), _) => to_json(
                self.control.status(&name).await.map(|s| value(&s)).map_err(|e| e.to_string()),
            ),
            ("reload", _, true) => value(&self.control.reload_all().await),
            ("reload", Some(name), false) => to_json(
                self.control.reload(&name).await.map(|r| value(&r)).map_err(|e| e.to_string()),
            ),
            ("restart", Some(name), _) => to_json(
                self.control.restart(&name).await.map(|s| value(&s)).map_err(|e| e.to_string()),
            ),
            ("reload" | "restart", None, _) => {
                json!({ "error": "say which plugin: {\"name\": \"…\"}" })
            }
            (other, _, _) => json!({ "error": format!("unknown control action {other:?}") }),
        }
    }
}

/// A reply value as JSON; serializing these types does not fail, but say so if it ever does.
fn value<T: serde::Serialize>(reply: &T) -> Value {
    serde_json::to_value(reply).unwrap_or_else(|e| json!({ "error": e.to_string() }))
}
