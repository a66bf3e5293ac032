//! Starting an instance: one code path for first start, crash restart and operator restart.

use super::*;

impl Slot {
    pub(super) async fn begin_start(&mut self, purpose: Purpose) {
        let manifest = match &purpose {
            Purpose::Reload { manifest, .. } => (**manifest).clone(),
            _ => self.manifest.clone(),
        };
        // A reload beside a serving instance keeps the subscription and the RUNNING state.
        if self.active.is_none() {
            if self.subscription.is_none()
                && let Err(reason) = self.subscribe().await
            {
                self.start_failed(purpose, format!("subscribe failed: {reason}")).await;
                return;
            }
            self.set_state(PluginState::Starting);
        }
        let instance = match self.runtime.start(&manifest).await {
            Ok(instance) => instance,
            Err(err) => {
                self.start_failed(purpose, err.to_string()).await;
                return;
            }
        };
        let generation = self.next_generation;
        self.next_generation += 1;
        let parts = instance.into_parts();
        self.outputs.push(Tagged { generation, output: parts.output });
        let sent = parts.input.send(HostMessage::Init {
            protocol: PROTOCOL_VERSION,
            name: manifest.name.clone(),
            config: manifest.config.clone(),
        });
        if !sent {
            tracing::debug!(message = "plugin gone before init", plugin = %self.name());
        }
        let deadline = Instant::now() + manifest.timeouts.ready;
        self.starting = Some(Starting {
            manifest,
            generation,
            pid: parts.pid,
            input: parts.input,
            kill: parts.kill,
            phase: Phase::Ready,
            deadline,
            version: None,
            purpose,
        });
    }

    pub(super) async fn subscribe(&mut self) -> Result<(), String> {
        let mut all = SelectAll::new();
        for subject in self.manifest.subjects() {
            let sub = self
                .bus
                .queue_subscribe(&subject, &self.manifest.name)
                .await
                .map_err(|e| e.to_string())?;
            all.push(sub);
        }
        self.subscription = Some(all);
        Ok(())
    }

    pub(super) async fn on_start_output(&mut self, output: InstanceOutput) {
        let Some(starting) = self.starting.as_mut() else { return };
        match output {
            InstanceOutput::Message(PluginMessage::Ready { name, version, .. })
                if matches!(starting.phase, Phase::Ready) =>
            {
                let expected = &starting.manifest;
                if name != expected.name {
                    tracing::warn!(message = "plugin reports another name", plugin = %expected.name, reported = %name);
                }
                if version != expected.version {
                    tracing::warn!(message = "plugin version differs from its manifest", plugin = %expected.name, manifest = %expected.version, reported = %version);
                }
                starting.version = Some(version);
                let id = self.next_ping;
                self.next_ping += 1;
                starting.input.send(HostMessage::Ping { id });
                starting.phase = Phase::Pong(id);
                starting.deadline = Instant::now() + starting.manifest.timeouts.health;
            }
            InstanceOutput::Message(PluginMessage::Pong { id }) if matches!(starting.phase, Phase::Pong(expected) if expected == id) => {
                if matches!(starting.purpose, Purpose::Reload { .. }) {
                    self.after_reload_pong().await;
                } else {
                    self.promote().await;
                }
            }
            InstanceOutput::Message(PluginMessage::Reply { id, .. }) if matches!(starting.phase, Phase::Probe { id: probe, .. } if probe == id) =>
            {
                starting.phase = Phase::Probe { id, replied: true };
            }
            InstanceOutput::Message(PluginMessage::Done { id, error }) if matches!(starting.phase, Phase::Probe { id: probe, .. } if probe == id) =>
            {
                let replied = matches!(starting.phase, Phase::Probe { replied: true, .. });
                self.after_probe(replied, error).await;
            }
            InstanceOutput::Message(PluginMessage::Log { level, message }) => {
                self.log_from_plugin(&level, &message);
            }
            InstanceOutput::Exited(reason) => {
                let phase = match starting.phase {
                    Phase::Ready => "before ready",
                    Phase::Pong(_) => "before pong",
                    Phase::Probe { .. } => "during the probe",
                };
                let reason = format!("exited {phase}: {reason}");
                if let Some(starting) = self.starting.take() {
                    self.start_failed(starting.purpose, reason).await;
                }
            }
            InstanceOutput::Malformed(reason) => self.note_malformed(&reason),
            other => {
                tracing::debug!(message = "plugin output ignored during start", plugin = %self.manifest.name, output = ?other);
            }
        }
    }

    pub(super) async fn on_start_timeout(&mut self) {
        let Some(mut starting) = self.starting.take() else { return };
        let secs = |d: Duration| format!("{}s", d.as_secs_f64());
        let timeouts = starting.manifest.timeouts;
        let reason = match starting.phase {
            Phase::Ready => format!("no ready within {}", secs(timeouts.ready)),
            Phase::Pong(_) => format!("no pong within {}", secs(timeouts.health)),
            Phase::Probe { .. } => format!(
                "probe {:?} got no reply within {}",
                starting.manifest.probe.as_deref().unwrap_or_default(),
                secs(timeouts.health)
            ),
        };
        starting.kill.kill();
        self.start_failed(starting.purpose, reason).await;
    }

    /// The started instance passed its checks: it serves from now on.
    pub(super) async fn promote(&mut self) {
        if self.starting.as_ref().is_some_and(|s| matches!(s.purpose, Purpose::Reload { .. })) {
            self.promote_reload().await;
            return;
        }
        let Some(starting) = self.starting.take() else { return };
        let (running, purpose) = starting.into_running();
        let (pid, version) = (running.pid, running.version.clone());
        self.serve_with(running);
        // The status is complete before the lifecycle events go out, so listeners read it as new.
        if let Purpose::CrashRestart = purpose {
            self.update(|s| s.restart_count += 1);
        }
        tracing::info!(message = "plugin started", plugin = %self.manifest.name, version = %version, pid);
        self.announce(LifecycleKind::Started, Some(version), pid, None).await;
        match purpose {
            Purpose::CrashRestart => {
                self.sink.plugin_restarted(&self.manifest.name);
                let version = self.shared.lock().status.version.clone();
                self.announce(LifecycleKind::Restarted, Some(version), pid, None).await;
            }
            Purpose::Start(Some(done)) => {
                let _ = done.send(Ok(()));
            }
            Purpose::Start(None) | Purpose::Reload { .. } => {}
        }
        self.pump().await;
    }

    /// Makes `running` the serving instance and publishes it in the status; returns the instance it
    /// replaces, if any.
    pub(super) fn serve_with(&mut self, running: Running) -> Option<Running> {
        let now = running.started_at;
        let (pid, version) = (running.pid, running.version.clone());
        let previous = self.active.replace(running);
        self.consecutive_timeouts = 0;
        let mut cell = self.shared.lock();
        cell.serving_since = Some(now);
        cell.state.send_replace(PluginState::Running);
        let status = &mut cell.status;
        status.state = PluginState::Running;
        status.pid = pid;
        status.version = version;
        status.loaded_at = Some(now_millis());
        previous
    }

    /// A start failed: like a crash, it counts against the restart budget.
    pub(super) async fn start_failed(&mut self, purpose: Purpose, reason: String) {
        if let Purpose::Reload { .. } = purpose {
            self.reload_failed(purpose, reason).await;
            return;
        }
        tracing::warn!(message = "plugin failed to start", plugin = %self.manifest.name, reason = %reason);
        if let Purpose::Start(Some(done)) = purpose {
            let _ = done.send(Err(reason.clone()));
        }
        let now = Instant::now();
        self.after_crash(reason, now, None).await;
    }
}

impl Starting {
    /// The instance as it serves from now on, and why it was started.
    pub(super) fn into_running(self) -> (Running, Purpose) {
        let version = self.version.unwrap_or_else(|| self.manifest.version.clone());
        let running = Running {
            generation: self.generation,
            pid: self.pid,
            version,
            input: self.input,
            kill: self.kill,
            started_at: Instant::now(),
            in_flight: HashMap::new(),
            kill_reason: None,
            sampler: self.pid.map(ProcessSampler::new),
            limits: LimitWatch::new(
                self.manifest.limits.memory_mb,
                self.manifest.limits.cpu_percent,
            ),
        };
        (running, self.purpose)
    }
}
