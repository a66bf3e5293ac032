//! Supervision: exits, crashes and restarts, operator stop/restart, resource limits, lifecycle events.

use super::*;

impl Slot {
    pub(super) async fn on_active_exit(&mut self, reason: String) -> bool {
        let Some(mut running) = self.active.take() else { return false };
        let stopping = self.stopping.take();
        let crash_reason = running.kill_reason.take().unwrap_or_else(|| reason.clone());
        let text = format!("❌ {} stopped while handling this", self.manifest.name);
        let abandoned: Vec<InFlight> = running.in_flight.drain().map(|(_, e)| e).collect();
        for event in abandoned {
            let why = if stopping.is_some() { "plugin stopped" } else { "plugin crashed" };
            self.abandon(event, why, &text).await;
        }
        self.counts(|c| c.in_flight = 0);
        self.shared.lock().serving_since = None;
        self.update(|s| {
            s.pid = None;
            s.cpu_percent = None;
            s.memory_mb = None;
        });
        match stopping {
            Some(stopping) => {
                tracing::info!(message = "plugin stopped", plugin = %self.manifest.name, pid = running.pid);
                // STOPPED before the event goes out, as for `crashed`.
                self.set_state(PluginState::Stopped);
                self.announce(LifecycleKind::Stopped, Some(running.version), running.pid, None)
                    .await;
                self.after_stop(stopping.then).await
            }
            None => {
                self.after_crash(crash_reason, running.started_at, running.pid).await;
                false
            }
        }
    }

    pub(super) async fn after_crash(
        &mut self,
        reason: String,
        started_at: Instant,
        pid: Option<u32>,
    ) {
        let now = Instant::now();
        self.update(|s| {
            s.crash_count += 1;
            s.last_error = Some(reason.clone());
        });
        tracing::warn!(message = "plugin crashed", plugin = %self.manifest.name, pid, reason = %reason);
        self.sink.plugin_crashed(&self.manifest.name, &reason);
        // The state changes before the `crashed` event goes out, so whoever hears it and asks for
        // the status sees CRASHED (or FAILED), not the RUNNING of the instance that just died.
        let decision = self.restarts.on_crash(now, started_at);
        match decision {
            RestartDecision::RestartAfter(delay) => {
                self.set_state(PluginState::Crashed);
                self.restart_at = Some(now + delay);
                tracing::info!(message = "plugin restart scheduled", plugin = %self.manifest.name, delay = ?delay);
            }
            RestartDecision::GiveUp => {
                self.set_state(PluginState::Failed);
                self.update(|s| s.last_error = Some(format!("{reason} (gave up restarting)")));
                tracing::error!(message = "plugin FAILED: too many crashes; restart it by hand", plugin = %self.manifest.name);
                self.subscription = None;
            }
        }
        let version = self.shared.lock().status.version.clone();
        self.announce(LifecycleKind::Crashed, Some(version), pid, Some(reason)).await;
        if decision == RestartDecision::GiveUp {
            let text = format!("❌ {} is not running", self.manifest.name);
            while let Some(message) = self.queue.pop_front() {
                self.refuse(&message, &text, "plugin failed").await;
            }
            self.counts(|c| c.queued = 0);
        }
    }

    // ----- operator control ---------------------------------------------------------------------

    /// Handles an operator command; `true` when the slot task should end.
    pub(super) async fn on_control(&mut self, command: Control) -> bool {
        match command {
            Control::Stop { done } => self.begin_stop(AfterStop::Idle(vec![done])).await,
            Control::Restart { done } if self.reload_in_progress() => {
                let _ = done.send(Err(self.busy_reason()));
                false
            }
            Control::Reload { done, .. }
                if self.reload_in_progress() || self.stopping.is_some() =>
            {
                let _ = done.send(Err(self.busy_reason()));
                false
            }
            Control::Reload { manifest, done } => {
                self.begin_reload(manifest, done).await;
                false
            }
            Control::Restart { done } => {
                self.restarts.reset();
                if self.active.is_some() {
                    self.begin_stop(AfterStop::Start(done)).await
                } else {
                    self.abort_start();
                    self.begin_start(Purpose::Start(Some(done))).await;
                    false
                }
            }
            Control::Shutdown { done } => self.begin_stop(AfterStop::Exit(done)).await,
        }
    }

    pub(super) fn abort_start(&mut self) {
        self.restart_at = None;
        if let Some(mut starting) = self.starting.take() {
            starting.kill.kill();
            match starting.purpose {
                Purpose::Start(Some(done)) => {
                    let _ = done.send(Err("superseded by another start".to_owned()));
                }
                Purpose::Reload { done, .. } => {
                    let _ = done.send(Err("superseded by a stop or restart".to_owned()));
                }
                _ => {}
            }
        }
    }

    /// Unsubscribes and asks the serving instance to finish and exit; kills it after the grace period.
    /// `true` when nothing was running and the follow-up ends the slot task.
    pub(super) async fn begin_stop(&mut self, then: AfterStop) -> bool {
        self.subscription = None;
        self.abort_start();
        let text = format!("❌ {} is not running", self.manifest.name);
        while let Some(message) = self.queue.pop_front() {
            self.refuse(&message, &text, "plugin stopped").await;
        }
        self.counts(|c| c.queued = 0);
        if self.active.is_none() {
            return self.after_stop(then).await;
        }
        self.set_state(PluginState::Stopping);
        if let Some(active) = self.active.as_ref() {
            active.input.send(HostMessage::Shutdown {});
        }
        let deadline = Instant::now() + self.manifest.timeouts.shutdown_grace;
        match &mut self.stopping {
            // Already stopping: only the follow-up changes (the strongest wins).
            Some(stopping) => merge_after_stop(&mut stopping.then, then),
            None => self.stopping = Some(Stopping { deadline, killed: false, then }),
        }
        false
    }

    pub(super) fn on_stop_timeout(&mut self) {
        if let (Some(stopping), Some(active)) = (self.stopping.as_mut(), self.active.as_mut()) {
            tracing::warn!(message = "plugin did not exit after shutdown; killing it", plugin = %self.manifest.name, pid = active.pid);
            stopping.killed = true;
            active.kill.kill();
        }
    }

    /// Runs what was to follow a stop; `true` when the slot task should end.
    pub(super) async fn after_stop(&mut self, then: AfterStop) -> bool {
        self.set_state(PluginState::Stopped);
        match then {
            AfterStop::Idle(waiters) => {
                for done in waiters {
                    let _ = done.send(());
                }
                false
            }
            AfterStop::Start(done) => {
                self.begin_start(Purpose::Start(Some(done))).await;
                false
            }
            AfterStop::Exit(done) => {
                let _ = done.send(());
                true
            }
        }
    }

    // ----- resources ----------------------------------------------------------------------------

    pub(super) fn sample_resources(&mut self) {
        let Some(active) = self.active.as_mut() else { return };
        let Some(sampler) = active.sampler.as_mut() else { return };
        let Ok(sample) = sampler.sample() else { return };
        let verdict = active.limits.check(&sample);
        {
            let mut cell = self.shared.lock();
            cell.status.cpu_percent = Some(sample.cpu_percent);
            cell.status.memory_mb = Some(sample.memory_mb);
        }
        if let Verdict::Over { reason } = verdict
            && active.kill_reason.is_none()
        {
            tracing::warn!(message = "plugin over its limit; killing it", plugin = %self.manifest.name, pid = active.pid, reason = %reason);
            active.kill_reason = Some(reason);
            active.kill.kill();
        }
    }

    pub(super) async fn announce(
        &self,
        kind: LifecycleKind,
        version: Option<String>,
        pid: Option<u32>,
        reason: Option<String>,
    ) {
        let Ok(subject) = subject::plugin_lifecycle(&self.manifest.name, kind) else { return };
        let event = LifecycleEvent {
            name: self.manifest.name.clone(),
            version,
            from_version: None,
            pid,
            reason,
            duration_ms: None,
            time: now_millis(),
        };
        if let Err(err) = self.bus.publish_json(&subject, &event).await {
            tracing::warn!(message = "cannot publish lifecycle event", plugin = %self.manifest.name, %err);
        }
    }
}
