//! Integration tests of rosey-core, linked as one binary.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

mod bus_conformance;
mod cluster;
mod config;
mod console;
mod containment;
mod containment_tree;
mod cytube;
mod cytube_fixtures;
mod errors;
mod kv;
mod nats_auth;
mod outage;
mod plugins;
mod pm_and_help;
mod reload;
mod router;
mod storage;
mod support;
