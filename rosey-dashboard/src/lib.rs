//! Rosey's web dashboard (axum): a live HTML page, a JSON API, the Prometheus endpoint and health
//! checks, for an operator to keep open all day.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | The page: one card per plugin, sparklines, a timeline; refreshes itself without JavaScript and updates in place over `GET /api/stream` (Server-Sent Events) with it. |
//! | `GET /api/metrics` | `{timestamp, plugins[], system{…}}` (docs/METRICS.md). |
//! | `GET /api/plugin/{name}` | One plugin with its current sample, aggregates and history; `?window=1h\|24h\|7d`. |
//! | `GET /api/events` | Recent lifecycle, reload and admin events from storage, newest first. |
//! | `GET /metrics` | The Prometheus text exposition of `rosey-metrics`. |
//! | `GET /healthz`, `GET /readyz` | Alive; ready (bus, connector, storage, plugins) or 503 with the reasons. |
//! | `POST /api/plugin/{name}/reload`, `…/restart` | Only with `dashboard.token`, as `Authorization: Bearer <token>`. |
//!
//! Every error is JSON (`{"error": …, "code": …}`). Answers are built from a snapshot of the node
//! refreshed at most once a second (never more often than the metrics poll), so load on the dashboard
//! does not reach the plugin manager. The page loads nothing from anywhere but the dashboard itself
//! (`Content-Security-Policy: default-src 'self'`).
//!
//! ```no_run
//! use std::sync::Arc;
//! use rosey_core::health::HealthRegistry;
//! use rosey_core::plugin::PluginControl;
//! use rosey_dashboard::{Dashboard, DashboardOptions};
//!
//! # async fn demo(control: Arc<dyn PluginControl>) -> Result<(), rosey_dashboard::DashboardError> {
//! let health = HealthRegistry::new();
//! let dashboard = Dashboard::new(DashboardOptions::default(), control, health).start().await?;
//! println!("dashboard on http://{}", dashboard.local_addr());
//! dashboard.shutdown().await
//! # }
//! ```

#![deny(missing_docs)]

mod api;
mod model;
mod page;
mod server;
mod snapshot;

pub use server::{ConnectorView, Dashboard, DashboardError, DashboardHandle, DashboardOptions};
