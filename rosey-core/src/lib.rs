//! Rosey's core: the pieces every Rosey bot is built from.
//!
//! - [`backoff`]: exponential backoff and the crash-loop rule, shared by supervision and reconnects;
//! - [`subject`]: the subject scheme, validation and NATS-style wildcard matching;
//! - [`event`]: the typed payloads that travel on the bus;
//! - [`bus`]: the [`EventBus`](bus::EventBus) trait with the in-process [`MemoryBus`](bus::MemoryBus)
//!   and, with the `nats` feature, `NatsBus`;
//! - `cluster` (with the `nats` feature): the JetStream leader lease and outgoing chat queue that let
//!   several nodes share one CyTube connection;
//! - [`config`]: the JSON configuration, its embedded defaults and its validation;
//! - [`plugin`]: plugin manifests, the [`PluginRuntime`](plugin::PluginRuntime) trait with child
//!   processes and in-process plugins, supervision, resource limits and blue-green hot reload, all run
//!   by the [`PluginManager`](plugin::PluginManager);
//! - [`control`]: the control API on the bus (`rosey.control.*`);
//! - [`router`]: chat lines → command events by the plugins' manifests;
//! - [`connector`]: the [`Connector`](connector::Connector) trait, the console connector and, with the
//!   `cytube` feature, the CyTube connector;
//! - [`metrics`]: the [`MetricsSink`](metrics::MetricsSink) trait the runtime reports to;
//! - [`service`]: the one lifecycle every service follows (`start` consumes it, a
//!   [`ServiceHandle`](service::ServiceHandle) stops it and says how it ended);
//! - [`health`]: the [`HealthRegistry`](health::HealthRegistry) components report into, with the
//!   node's start time.
//! - [`storage`]: the [`Storage`](storage::Storage) trait (audit log, plugin history, plugin key-value
//!   store) with SQLite and PostgreSQL on sqlx, the record writer that rides out outages and the
//!   key-value service for plugins;
//! - [`error`]: [`Chain`](error::Chain) prints an error with its causes (`a: b: c`) for people, and
//!   [`is_caused_by`](error::is_caused_by) finds a cause for code.
//!
//! The plugin host runs on Linux only: each process plugin runs under a launcher that uses Linux's
//! parent-death signal and child subreaper, so the plugin's whole process tree dies with it and with the
//! host, and the tree's CPU and memory are read from `/proc`. On any other system the crate stops at
//! compile time with an error saying so.
//!
//! `rosey-core` knows nothing of HTTP servers, metrics storage or chat commands beyond routing: the other
//! crates of the workspace meet it through its traits.
#![deny(missing_docs)]

pub mod backoff;
pub mod bus;
#[cfg(feature = "nats")]
pub mod cluster;
pub mod config;
pub mod connector;
pub mod control;
pub mod error;
pub mod event;
pub mod health;
mod lines;
pub mod metrics;
pub mod plugin;
mod quiet;
mod random;
pub mod router;
pub mod service;
pub mod storage;
pub mod subject;
