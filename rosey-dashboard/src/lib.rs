//! Rosey's web dashboard.
//!
//! This crate will hold the axum server: the HTML page (`GET /`), the JSON API (`GET /api/metrics`,
//! `GET /api/plugin/{name}`), the Prometheus exposition (`GET /metrics`) and `GET /healthz`, all fed by
//! `rosey-metrics`. Nothing is implemented yet; see the project's issue tracker.

// Until the server's routes call into them, the model and the page are only reached from tests.
#[allow(dead_code)]
mod model;
#[allow(dead_code)]
mod page;
