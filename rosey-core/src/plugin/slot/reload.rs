//! Blue-green reload: the swap's report, the rollback, and the old instance's drain. The candidate itself
//! starts and passes its health steps on the common start path ([`Slot::begin_start`]).

use futures_util::FutureExt;
use rosey_plugin::protocol::{HostMessage, PluginMessage};

use super::*;
use crate::event::{LifecycleEvent, now_millis};
use crate::metrics::ReloadOutcome;
use crate::plugin::status::ReloadFailure;
use crate::subject::LifecycleKind;

impl Slot {
    /// The new version serves: report success to everyone waiting.
    pub(super) async fn reloaded(
        &mut self,
        waiters: Vec<Done<ReloadReport>>,
        from_version: String,
        version: String,
        pid: Option<u32>,
        began: Instant,
    ) {
        let duration = began.elapsed();
        tracing::info!(message = "plugin reloaded", plugin = %self.manifest.name, from = %from_version, to = %version, pid, duration = ?duration);
        self.sink.plugin_reloaded(&self.manifest.name, ReloadOutcome::Success, duration);
        let event = LifecycleEvent {
            name: self.manifest.name.clone(),
            version: Some(version.clone()),
            from_version: Some(from_version.clone()),
            pid,
            reason: None,
            duration_seconds: Some(duration.as_secs_f64()),
            time: now_millis(),
        };
        self.publish_lifecycle(LifecycleKind::Reloaded, &event).await;
        let report = ReloadReport {
            name: self.manifest.name.clone(),
            from_version,
            to_version: version,
            duration,
            outcome: ReloadOutcome::Success,
            failed_step: None,
            reason: None,
        };
        for done in waiters {
            let _ = done.send(Ok(report.clone()));
        }
    }

    /// The reload's candidate failed `step`: the old version (if any) keeps serving, untouched; with
    /// nothing serving the plugin is FAILED, as a failed start would leave it.
    pub(super) async fn reload_failed(&mut self, step: StartStep, reason: String) {
        let Some(Op::Reload { waiters, from_version, to_version, began, .. }) = self.op.take()
        else {
            return;
        };
        let duration = began.elapsed();
        tracing::warn!(message = "reload rolled back", plugin = %self.manifest.name, to = %to_version, step = %step, reason = %reason);
        let serving = matches!(self.state, State::Running { .. });
        if !serving {
            self.subscription = None;
            self.update(|s| s.last_error = Some(reason.clone()));
            self.enter(State::Failed);
            self.refuse_queue("plugin failed").await;
            let failed =
                format!("reload to {to_version} failed at {step}: {reason}; nothing serving");
            self.announce(LifecycleKind::Failed, Some(to_version.clone()), None, Some(failed))
                .await;
        }
        self.sink.plugin_reloaded(&self.manifest.name, ReloadOutcome::RolledBack, duration);
        let pid = self.serving_mut().and_then(|s| s.live.pid);
        let event = LifecycleEvent {
            name: self.manifest.name.clone(),
            version: Some(to_version.clone()),
            from_version: Some(from_version.clone()),
            pid,
            reason: Some(format!("{step}: {reason}")),
            duration_seconds: Some(duration.as_secs_f64()),
            time: now_millis(),
        };
        self.publish_lifecycle(LifecycleKind::ReloadFailed, &event).await;
        let failure = ReloadFailure {
            name: self.manifest.name.clone(),
            from_version,
            to_version,
            step,
            reason,
            duration,
        };
        for done in waiters {
            let _ = done.send(Err(ControlError::ReloadFailed(failure.clone())));
        }
    }

    /// Subscribes to the new manifest's subjects, then hands whatever the old subscription had already
    /// received to the queue before dropping it, so nothing falls between the two.
    pub(super) async fn swap_subscription(&mut self) {
        let old = self.subscription.take();
        if let Err(err) = self.subscribe().await {
            tracing::error!(message = "cannot subscribe to the new version's subjects; keeping the old ones", plugin = %self.manifest.name, %err);
            self.subscription = old;
            return;
        }
        if let Some(mut old) = old {
            while let Some(Some(message)) = old.next().now_or_never() {
                self.on_bus_message(message).await;
            }
        }
    }

    /// The instance a swap replaced finishes what it holds (up to the drain time), then shuts down.
    pub(super) fn retire(&mut self, serving: Serving) {
        let generation = serving.live.generation;
        tracing::info!(message = "old version draining", plugin = %self.manifest.name, pid = serving.live.pid);
        self.timers.insert(Timer::Drain { generation }, self.manifest.timeouts.drain);
        self.old.push(Old { serving, shutdown_sent: false });
        self.shut_down_drained();
    }

    /// Sends `shutdown` to each old instance that has nothing left in hand.
    fn shut_down_drained(&mut self) {
        let grace = self.manifest.timeouts.shutdown_grace;
        for old in &mut self.old {
            if !old.shutdown_sent && old.serving.in_flight.is_empty() {
                old.serving.live.input.send(HostMessage::Shutdown {});
                old.shutdown_sent = true;
                let generation = old.serving.live.generation;
                self.timers.insert(Timer::DrainGrace { generation }, grace);
            }
        }
    }

    pub(super) async fn on_old_output(&mut self, index: usize, output: InstanceOutput) {
        match output {
            InstanceOutput::Message(PluginMessage::Reply { id, message }) => {
                let generation = self.old[index].serving.live.generation;
                self.reply(generation, id, message).await;
            }
            InstanceOutput::Message(PluginMessage::Done { id, error }) => {
                if let Some(event) = self.old[index].serving.in_flight.remove(&id) {
                    self.timers.try_remove(&event.timer);
                    self.finish(event, error).await;
                }
                self.shut_down_drained();
            }
            InstanceOutput::Message(PluginMessage::Log { level, message }) => {
                self.log_from_plugin(&level, &message);
            }
            InstanceOutput::Message(_) | InstanceOutput::Unknown(_) => {}
            InstanceOutput::Malformed(reason) => self.note_malformed(&reason),
            InstanceOutput::Exited(how) => {
                let mut old = self.old.remove(index);
                tracing::info!(message = "old version exited", plugin = %self.manifest.name, pid = old.serving.live.pid, how = %how);
                let text = format!("❌ {} stopped while handling this", self.manifest.name);
                let left: Vec<InFlight> = old.serving.in_flight.drain().map(|(_, e)| e).collect();
                for event in left {
                    self.timers.try_remove(&event.timer);
                    self.abandon(event, "old version exited while draining", &text).await;
                }
            }
        }
    }

    /// An old instance ran out of drain time: fail what it still holds and shut it down.
    pub(super) async fn on_drain_timeout(&mut self, generation: u64) {
        let Some(index) = self
            .old
            .iter()
            .position(|o| o.serving.live.generation == generation && !o.shutdown_sent)
        else {
            return;
        };
        let stuck: Vec<InFlight> =
            self.old[index].serving.in_flight.drain().map(|(_, e)| e).collect();
        tracing::warn!(message = "drain timeout; failing what the old version still holds", plugin = %self.manifest.name, step = %StartStep::Drain, events = stuck.len());
        self.counts(|c| c.timed_out += stuck.len() as u64);
        let text = format!("❌ {} did not answer in time", self.manifest.name);
        for event in stuck {
            self.timers.try_remove(&event.timer);
            self.abandon(event, "drain timeout", &text).await;
        }
        self.shut_down_drained();
    }

    /// An old instance did not exit after `shutdown`: kill it (its exit still arrives as output).
    pub(super) fn on_drain_grace(&mut self, generation: u64) {
        if let Some(old) = self.old.iter_mut().find(|o| o.serving.live.generation == generation) {
            tracing::warn!(message = "old version did not exit after shutdown; killing it", plugin = %self.manifest.name, pid = old.serving.live.pid);
            old.serving.live.kill.kill();
        }
    }
}
