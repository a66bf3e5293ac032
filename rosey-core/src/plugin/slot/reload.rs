//! Blue-green reload: start the new version beside the serving one, check its health (ready, pong,
//! probe, resources), swap atomically, and drain the old one; or roll back, leaving the old one serving.

use futures_util::FutureExt;

use super::*;
use crate::event::CommandEvent;
use crate::metrics::ReloadOutcome;

impl Slot {
    pub(super) fn reload_in_progress(&self) -> bool {
        self.starting.as_ref().is_some_and(|s| matches!(s.purpose, Purpose::Reload { .. }))
    }

    pub(super) fn busy_reason(&self) -> String {
        if self.stopping.is_some() {
            format!("{} is stopping", self.manifest.name)
        } else {
            format!("a reload of {} is already in progress", self.manifest.name)
        }
    }

    /// Step 1: start the new version beside the serving one. A plugin that is not serving (stopped,
    /// crashed, FAILED) is simply started from the new manifest.
    pub(super) async fn begin_reload(
        &mut self,
        manifest: Box<Manifest>,
        done: oneshot::Sender<Result<ReloadReport, String>>,
    ) {
        let from_version = self.shared.lock().status.version.clone();
        if self.active.is_none() {
            // Whatever was pending (a scheduled restart, a start) gives way to the new version.
            self.abort_start();
            self.restarts.reset();
        }
        tracing::info!(message = "reload started", plugin = %self.manifest.name, from = %from_version, to = %manifest.version);
        let purpose = Purpose::Reload { manifest, from_version, began: Instant::now(), done };
        self.begin_start(purpose).await;
    }

    /// Step 2 (after ready and pong): the probe command, when the manifest has one.
    pub(super) async fn after_reload_pong(&mut self) {
        let Some(starting) = self.starting.as_mut() else { return };
        let Some(probe) = starting.manifest.probe.clone() else {
            self.check_resources_then_promote().await;
            return;
        };
        let body = probe.strip_prefix('!').unwrap_or(&probe);
        let (command, args) = body.split_once(' ').unwrap_or((body, ""));
        let event = CommandEvent {
            channel: String::new(),
            user: PROBE_USER.to_owned(),
            rank: None,
            command: command.to_owned(),
            args: args.to_owned(),
            message: probe.clone(),
            time: now_millis(),
        };
        let id = self.next_event_id;
        self.next_event_id += 1;
        let data = serde_json::to_value(&event).unwrap_or_default();
        let subject = format!("{}.{command}", subject::COMMAND_PREFIX);
        starting.input.send(HostMessage::Event { id, subject, data });
        starting.phase = Phase::Probe { id, replied: false };
        starting.deadline = Instant::now() + starting.manifest.timeouts.health;
    }

    /// The probe ended: it must have replied at least once and not failed.
    pub(super) async fn after_probe(&mut self, replied: bool, error: Option<String>) {
        let Some(starting) = self.starting.as_ref() else { return };
        let probe = starting.manifest.probe.clone().unwrap_or_default();
        match (replied, error) {
            (_, Some(error)) => {
                self.fail_starting(format!("probe {probe:?} failed: {error}")).await
            }
            (false, None) => self.fail_starting(format!("probe {probe:?} got no reply")).await,
            (true, None) => self.check_resources_then_promote().await,
        }
    }

    /// Step 2, last check: the new instance's memory is under its limit right now.
    async fn check_resources_then_promote(&mut self) {
        let Some(starting) = self.starting.as_ref() else { return };
        let limit = starting.manifest.limits.memory_mb;
        if let (Some(limit), Some(pid)) = (limit, starting.pid)
            && let Ok(sample) = ProcessSampler::new(pid).sample()
            && sample.memory_mb > limit
        {
            let reason = format!("memory {:.0} MB over limit {limit:.0} MB", sample.memory_mb);
            self.fail_starting(reason).await;
            return;
        }
        self.promote().await;
    }

    async fn fail_starting(&mut self, reason: String) {
        if let Some(mut starting) = self.starting.take() {
            starting.kill.kill();
            self.start_failed(starting.purpose, reason).await;
        }
    }

    /// Steps 4 and 5: swap (every event from now on goes to the new instance) and drain the old one.
    pub(super) async fn promote_reload(&mut self) {
        let Some(starting) = self.starting.take() else { return };
        let (running, purpose) = starting.into_running();
        let Purpose::Reload { manifest, from_version, began, done } = purpose else { return };
        let (pid, version, now) = (running.pid, running.version.clone(), running.started_at);
        let resubscribe = manifest.subjects() != self.manifest.subjects();
        let old = self.serve_with(running);
        self.manifest = *manifest;
        if resubscribe {
            self.swap_subscription().await;
        }
        if let Some(old) = old {
            let old_pid = old.pid;
            let draining = Draining {
                deadline: now + self.manifest.timeouts.drain,
                shutdown_sent: false,
                running: old,
            };
            self.draining.push(draining);
            self.shut_down_drained();
            tracing::info!(message = "old version draining", plugin = %self.manifest.name, pid = old_pid);
        }
        let duration = began.elapsed();
        tracing::info!(message = "plugin reloaded", plugin = %self.manifest.name, from = %from_version, to = %version, pid, duration = ?duration);
        self.sink.plugin_reloaded(&self.manifest.name, ReloadOutcome::Success, duration);
        self.announce_reload(LifecycleKind::Reloaded, &from_version, &version, pid, None, duration)
            .await;
        let _ = done.send(Ok(ReloadReport {
            name: self.manifest.name.clone(),
            from_version,
            to_version: version,
            duration,
            outcome: ReloadOutcome::Success,
            reason: None,
        }));
        self.pump().await;
    }

    /// Step 3: the new version failed a check; the old one (if any) keeps serving, untouched.
    pub(super) async fn reload_failed(&mut self, purpose: Purpose, reason: String) {
        let Purpose::Reload { manifest, from_version, began, done } = purpose else { return };
        let duration = began.elapsed();
        tracing::warn!(message = "reload rolled back", plugin = %self.manifest.name, to = %manifest.version, reason = %reason);
        if self.active.is_none() {
            // Nothing was serving: the plugin stays down, as a failed start would leave it.
            self.subscription = None;
            self.set_state(PluginState::Failed);
            self.update(|s| s.last_error = Some(reason.clone()));
        }
        self.sink.plugin_reloaded(&self.manifest.name, ReloadOutcome::RolledBack, duration);
        let pid = self.active.as_ref().and_then(|a| a.pid);
        self.announce_reload(
            LifecycleKind::ReloadFailed,
            &from_version,
            &from_version,
            pid,
            Some(reason.clone()),
            duration,
        )
        .await;
        let _ = done.send(Ok(ReloadReport {
            name: self.manifest.name.clone(),
            from_version,
            to_version: manifest.version.clone(),
            duration,
            outcome: ReloadOutcome::RolledBack,
            reason: Some(reason),
        }));
    }

    /// Subscribes to the new manifest's subjects, then hands whatever the old subscription had already
    /// received to the queue before dropping it, so nothing falls between the two.
    async fn swap_subscription(&mut self) {
        let old = self.subscription.take();
        if let Err(reason) = self.subscribe().await {
            tracing::error!(message = "cannot subscribe to the new version's subjects; keeping the old ones", plugin = %self.manifest.name, reason = %reason);
            self.subscription = old;
            return;
        }
        if let Some(mut old) = old {
            while let Some(Some(message)) = old.next().now_or_never() {
                self.on_bus_message(message).await;
            }
        }
    }

    /// Sends `shutdown` to each draining instance that has nothing left in hand.
    fn shut_down_drained(&mut self) {
        let grace = self.manifest.timeouts.shutdown_grace;
        for draining in &mut self.draining {
            if !draining.shutdown_sent && draining.running.in_flight.is_empty() {
                draining.running.input.send(HostMessage::Shutdown {});
                draining.shutdown_sent = true;
                draining.deadline = Instant::now() + grace;
            }
        }
    }

    pub(super) async fn on_draining_output(&mut self, index: usize, output: InstanceOutput) {
        match output {
            InstanceOutput::Message(PluginMessage::Reply { id, message }) => {
                let channel =
                    self.draining[index].running.in_flight.get_mut(&id).and_then(|event| {
                        event.replies.push(message.clone());
                        event.channel.clone()
                    });
                if let Some(channel) = channel {
                    self.say(&channel, &message).await;
                }
            }
            InstanceOutput::Message(PluginMessage::Done { id, error }) => {
                if let Some(event) = self.draining[index].running.in_flight.remove(&id) {
                    self.finish(event, error).await;
                }
                self.shut_down_drained();
            }
            InstanceOutput::Message(PluginMessage::Log { level, message }) => {
                self.log_from_plugin(&level, &message);
            }
            InstanceOutput::Message(_) | InstanceOutput::Unknown(_) => {}
            InstanceOutput::Malformed(reason) => self.note_malformed(&reason),
            InstanceOutput::Exited(reason) => {
                let mut old = self.draining.remove(index);
                tracing::info!(message = "old version exited", plugin = %self.manifest.name, pid = old.running.pid, how = %reason);
                let text = format!("❌ {} stopped while handling this", self.manifest.name);
                let left: Vec<InFlight> = old.running.in_flight.drain().map(|(_, e)| e).collect();
                for event in left {
                    self.abandon(event, "old version exited while draining", &text).await;
                }
            }
        }
    }

    /// A drain ran out of time: fail what the old instance still holds and shut it down; a shutdown
    /// that ran out of time: kill it.
    pub(super) async fn on_drain_timeout(&mut self) {
        let now = Instant::now();
        let grace = self.manifest.timeouts.shutdown_grace;
        let text = format!("❌ {} did not answer in time", self.manifest.name);
        for index in 0..self.draining.len() {
            if self.draining[index].deadline > now {
                continue;
            }
            if self.draining[index].shutdown_sent {
                self.draining[index].running.kill.kill();
                // The exit arrives as output; check again later in case it does not.
                self.draining[index].deadline = now + grace;
                continue;
            }
            let stuck: Vec<InFlight> =
                self.draining[index].running.in_flight.drain().map(|(_, e)| e).collect();
            tracing::warn!(message = "drain timeout; failing what the old version still holds", plugin = %self.manifest.name, events = stuck.len());
            self.counts(|c| c.timed_out += stuck.len() as u64);
            for event in stuck {
                self.abandon(event, "drain timeout", &text).await;
            }
            self.shut_down_drained();
        }
    }

    async fn announce_reload(
        &self,
        kind: LifecycleKind,
        from_version: &str,
        version: &str,
        pid: Option<u32>,
        reason: Option<String>,
        duration: Duration,
    ) {
        let Ok(subject) = subject::plugin_lifecycle(&self.manifest.name, kind) else { return };
        let event = LifecycleEvent {
            name: self.manifest.name.clone(),
            version: Some(version.to_owned()),
            from_version: Some(from_version.to_owned()),
            pid,
            reason,
            duration_ms: Some(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)),
            time: now_millis(),
        };
        if let Err(err) = self.bus.publish_json(&subject, &event).await {
            tracing::warn!(message = "cannot publish lifecycle event", plugin = %self.manifest.name, %err);
        }
    }
}
