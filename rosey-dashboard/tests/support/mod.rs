//! A node in miniature for the dashboard tests: real plugin processes (a Python plugin whose version
//! comes from a file) under a real `PluginManager` on the in-process bus, the metrics collector and
//! Prometheus registry as its sinks, in-memory storage behind the record writer, and the dashboard
//! on a free loopback port — wired as `rosey run` wires them.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use rosey_core::bus::{EventBus, MemoryBus};
use rosey_core::config::Secret;
use rosey_core::event::CommandEvent;
use rosey_core::health::{self, HealthRegistry};
use rosey_core::metrics::{FanoutSink, MetricsSink};
use rosey_core::plugin::{ManagerOptions, Manifest, PluginManager, ProcessRuntime};
use rosey_core::storage::{MemoryStorage, RecordWriter, Storage, WriterHandle, WriterOptions};
use rosey_dashboard::{ConnectorView, Dashboard, DashboardHandle, DashboardOptions};
use rosey_metrics::{
    CollectorHandle, CollectorOptions, MetricsCollector, PrometheusMetrics, PrometheusOptions,
};

pub const TOKEN: &str = "test-token-0123456789abcdef";
pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct Node {
    pub bus: Arc<dyn EventBus>,
    pub manager: Arc<PluginManager>,
    pub health: HealthRegistry,
    pub storage: Arc<dyn Storage>,
    pub writer: Option<WriterHandle>,
    pub collector: Option<CollectorHandle>,
    pub dashboard: Option<DashboardHandle>,
    pub base: String,
    pub http: reqwest::Client,
    pub dir: PathBuf,
}

/// A fresh directory for one node's plugins.
fn scratch_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "rosey-dashboard-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn plugin_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/versioned.py")
}

impl Node {
    /// A node with `plugins` (name, command) at version 1.0.0, the dashboard with or without the
    /// token.
    pub async fn start(plugins: &[(&str, &str)], token: bool) -> Self {
        let dir = scratch_dir();
        let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
        let health = HealthRegistry::new();
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let writer = RecordWriter::new(storage.clone(), WriterOptions::default()).start();
        let prometheus = PrometheusMetrics::new(PrometheusOptions::default());
        let collector = MetricsCollector::new(CollectorOptions {
            poll_interval: Duration::from_millis(100),
            ..CollectorOptions::default()
        });
        let sink: Arc<dyn MetricsSink> = Arc::new(FanoutSink::new(vec![
            Arc::new(writer.sink()),
            Arc::new(prometheus.clone()),
            Arc::new(collector.sink()),
        ]));
        let options = ManagerOptions {
            sample_interval: Duration::from_millis(100),
            ..ManagerOptions::default()
        };
        let manager = Arc::new(
            PluginManager::builder(bus.clone(), Arc::new(ProcessRuntime::new()))
                .metrics_sink(sink.clone())
                .options(options)
                .build(),
        );
        for (name, command) in plugins {
            let plugin = dir.join(name);
            std::fs::create_dir_all(&plugin).unwrap();
            std::fs::write(plugin.join("version"), "1.0.0").unwrap();
            let toml = format!(
                "name = \"{name}\"\nversion = \"1.0.0\"\nexec = [\"python3\", {:?}, {:?}, \"{command}\"]\ncommands = [\"{command}\"]\n\n[limits]\nmemory_mb = 200\n",
                plugin_script().display().to_string(),
                plugin.join("version").display().to_string(),
            );
            std::fs::write(plugin.join("plugin.toml"), toml).unwrap();
            manager.add(Manifest::load(&plugin).unwrap()).await.unwrap();
        }
        for (name, _) in plugins {
            manager.wait_running(name, PATIENCE).await.unwrap();
        }
        health.report(health::BUS, true, "connected (memory)");
        health.report(health::STORAGE, true, "reachable (memory)");
        health.report(health::CONNECTOR, true, "console: channel console");
        let collector = collector.start(manager.clone()).await;
        let source = manager.clone();
        prometheus.set_plugin_source(move || source.snapshot());
        prometheus.set_started_at(SystemTime::now());
        let options = DashboardOptions {
            port: 0,
            token: token.then(|| Secret::new(TOKEN.to_owned())),
            max_age: Duration::from_millis(200),
            ..DashboardOptions::default()
        };
        let dashboard = Dashboard::new(options, manager.clone(), health.clone())
            .history(collector.reader())
            .prometheus(prometheus)
            .storage(storage.clone())
            .audit(writer.sink())
            .metrics_sink(sink)
            .connector(ConnectorView {
                name: "console".to_owned(),
                channel: Some("console".to_owned()),
                users: Some(Arc::new(|| 3)),
            })
            .start()
            .await
            .unwrap();
        let base = format!("http://{}", dashboard.local_addr());
        let http = rosey_testkit::browser::http_client().unwrap();
        Self {
            bus,
            manager,
            health,
            storage,
            writer: Some(writer),
            collector: Some(collector),
            dashboard: Some(dashboard),
            base,
            http,
            dir,
        }
    }

    /// Sets the version the plugin reports from its next start.
    /// Deploys `version` of the plugin, as an operator would: the program reports it and the
    /// manifest names it (the manifest's version is the one shown).
    pub fn set_version(&self, plugin: &str, version: &str) {
        let dir = self.dir.join(plugin);
        std::fs::write(dir.join("version"), version).unwrap();
        let manifest = std::fs::read_to_string(dir.join("plugin.toml")).unwrap();
        let manifest =
            manifest.replacen("version = \"1.0.0\"", &format!("version = \"{version}\""), 1);
        std::fs::write(dir.join("plugin.toml"), manifest).unwrap();
    }

    /// Waits until the collector has polled `n` more times.
    pub async fn polls(&self, n: u64) {
        let reader = self.collector.as_ref().unwrap().reader();
        tokio::time::timeout(PATIENCE, reader.polled(reader.poll_count() + n)).await.unwrap();
    }

    /// Sends `!<command>` to the plugin through the bus, as the router would, and waits for the answer.
    pub async fn command(&self, command: &str) {
        let event = CommandEvent {
            channel: "console".into(),
            user: "alice".into(),
            rank: Some(1.0),
            command: command.into(),
            args: String::new(),
            message: format!("!{command}"),
            time: 1,
            via: Default::default(),
        };
        let payload = serde_json::to_vec(&event).unwrap();
        let subject = format!("rosey.command.{command}");
        self.bus.request(&subject, payload.into(), PATIENCE).await.unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    /// GET that must answer `status` with JSON; returns the JSON.
    pub async fn get_json(&self, path: &str, status: u16) -> serde_json::Value {
        let response = self.get(path).await;
        assert_eq!(response.status().as_u16(), status, "GET {path}");
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("application/json"), "GET {path}: {content_type}");
        response.json().await.unwrap()
    }

    /// GET `path` (200, JSON) until `done` holds, as a user refreshing the page would; bounded.
    pub async fn get_json_until(
        &self,
        path: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let body = self.get_json(path, 200).await;
            if done(&body) {
                return body;
            }
            assert!(tokio::time::Instant::now() < deadline, "GET {path} never got there: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(dashboard) = self.dashboard.take() {
            tokio::time::timeout(PATIENCE, dashboard.shutdown()).await.unwrap().unwrap();
        }
        if let Some(collector) = self.collector.take() {
            collector.shutdown().await.unwrap();
        }
        self.manager.shutdown().await;
        if let Some(writer) = self.writer.take() {
            writer.shutdown().await.unwrap();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
