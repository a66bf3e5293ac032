//! Rosey's core: the pieces every Rosey bot is built from.
//!
//! - [`subject`]: the subject scheme, validation and NATS-style wildcard matching;
//! - [`event`]: the typed payloads that travel on the bus;
//! - [`bus`]: the [`EventBus`](bus::EventBus) trait with the in-process [`MemoryBus`](bus::MemoryBus)
//!   and, with the `nats` feature, `NatsBus`;
//! - [`config`]: the JSON configuration, its embedded defaults and its validation.
//!
//! `rosey-core` knows nothing of HTTP, metrics storage or chat commands beyond routing: the other
//! crates of the workspace meet it through its traits.
#![deny(missing_docs)]

pub mod bus;
pub mod config;
pub mod connector;
pub mod control;
pub mod event;
mod lines;
pub mod metrics;
pub mod plugin;
pub mod router;
pub mod subject;
