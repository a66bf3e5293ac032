//! Supervision: operator requests and how they merge, exits, crashes and restarts, stops, resource
//! limits, lifecycle events.

use rosey_plugin::protocol::HostMessage;

use super::super::resources::Verdict;
use super::*;
use crate::backoff::RestartDecision;
use crate::bus::EventBusExt;
use crate::event::{LifecycleEvent, now_millis};
use crate::subject::{self, LifecycleKind};

impl Slot {
    // ----- operator requests ----------------------------------------------------------------------

    /// Handles an operator request: joins the one in progress when it is the same action, refuses it
    /// when a stronger one is in progress, supersedes a weaker one.
    pub(super) async fn on_control(&mut self, command: Control) {
        let action = match &command {
            Control::Stop { .. } => Action::Stop,
            Control::Restart { .. } => Action::Restart,
            Control::Reload { .. } => Action::Reload,
            Control::Shutdown { .. } => Action::Shutdown,
        };
        let name = self.manifest.name.clone();
        if let Some(op) = &mut self.op {
            let current = op.action();
            match (op, command) {
                // Stops and shutdowns share one stop: everyone is answered when it is done.
                (
                    Op::Stop { waiters, exit },
                    Control::Stop { done } | Control::Shutdown { done },
                ) => {
                    *exit |= action == Action::Shutdown;
                    waiters.push(done);
                    return;
                }
                (Op::Restart { waiters }, Control::Restart { done }) => {
                    waiters.push(done);
                    return;
                }
                (Op::Reload { waiters, .. }, Control::Reload { done, .. }) => {
                    waiters.push(done);
                    return;
                }
                (_, command) if strength(action) < strength(current) => {
                    refuse(command, ControlError::Busy { name, action: current });
                    return;
                }
                (_, command) => {
                    if let Some(op) = self.op.take() {
                        supersede(op, &name, action);
                    }
                    self.begin_op(command).await;
                    return;
                }
            }
        }
        self.begin_op(command).await;
    }

    /// Starts an operator request; no other is in progress.
    async fn begin_op(&mut self, command: Control) {
        match command {
            Control::Stop { done } => {
                self.op = Some(Op::Stop { waiters: vec![done], exit: false });
                self.begin_stop().await;
            }
            Control::Shutdown { done } => {
                self.op = Some(Op::Stop { waiters: vec![done], exit: true });
                self.begin_stop().await;
            }
            Control::Restart { done } => {
                self.restarts.reset();
                self.op = Some(Op::Restart { waiters: vec![done] });
                match &self.state {
                    State::Running { .. } => {
                        self.abort_candidate();
                        self.begin_stop().await;
                    }
                    // The stop in progress is followed by the start.
                    State::Stopping { .. } => {}
                    _ => {
                        self.abort_candidate();
                        self.begin_start(StartReason::Start, None).await;
                    }
                }
            }
            Control::Reload { manifest, done } => {
                let from_version = self.shared.lock().status.version.clone();
                tracing::info!(message = "reload started", plugin = %self.manifest.name, from = %from_version, to = %manifest.version);
                self.op = Some(Op::Reload {
                    waiters: vec![done],
                    to_version: manifest.version.clone(),
                    manifest: Some(manifest),
                    from_version,
                    began: Instant::now(),
                });
                match &self.state {
                    // Beside the serving instance (blue-green).
                    State::Running { .. } => self.start_reload_candidate().await,
                    // After the stop in progress.
                    State::Stopping { .. } => {}
                    // Nothing serves: whatever was pending gives way to the new version.
                    _ => {
                        self.abort_candidate();
                        self.restarts.reset();
                        self.start_reload_candidate().await;
                    }
                }
            }
        }
    }

    /// Starts the candidate of the reload in progress from its manifest.
    pub(super) async fn start_reload_candidate(&mut self) {
        let manifest = match &mut self.op {
            Some(Op::Reload { manifest, .. }) => manifest.take(),
            _ => None,
        };
        if let Some(manifest) = manifest {
            self.begin_start(StartReason::Start, Some(*manifest)).await;
        }
    }

    /// Unsubscribes, refuses what waits, and asks the serving instance to finish and exit (killed after
    /// the grace period). With nothing serving, the stop is done at once.
    async fn begin_stop(&mut self) {
        self.subscription = None;
        self.abort_candidate();
        self.refuse_queue("plugin stopped").await;
        match std::mem::replace(&mut self.state, State::Stopped) {
            State::Running { serving, .. } => {
                serving.live.input.send(HostMessage::Shutdown {});
                let generation = serving.live.generation;
                self.timers
                    .insert(Timer::StopGrace { generation }, self.manifest.timeouts.shutdown_grace);
                self.enter(State::Stopping { serving });
            }
            stopping @ State::Stopping { .. } => self.state = stopping,
            _ => self.stopped().await,
        }
    }

    pub(super) fn on_stop_grace(&mut self, generation: u64) {
        if let State::Stopping { serving } = &mut self.state
            && serving.live.generation == generation
        {
            tracing::warn!(message = "plugin did not exit after shutdown; killing it", plugin = %self.manifest.name, pid = serving.live.pid);
            serving.live.kill.kill();
        }
    }

    /// Nothing runs any more: STOPPED, then whatever the operator asked for next.
    async fn stopped(&mut self) {
        self.enter(State::Stopped);
        match self.op.take() {
            Some(Op::Stop { waiters, exit }) => {
                for done in waiters {
                    let _ = done.send(Ok(()));
                }
                self.exit = exit;
            }
            Some(op @ Op::Restart { .. }) => {
                self.op = Some(op);
                self.begin_start(StartReason::Start, None).await;
            }
            Some(op @ Op::Reload { .. }) => {
                self.op = Some(op);
                self.start_reload_candidate().await;
            }
            None => {}
        }
    }

    // ----- exits and crashes ----------------------------------------------------------------------

    /// The serving instance exited: the end of a stop, or a crash.
    pub(super) async fn on_serving_exit(&mut self, how: String) {
        let (serving, stopping, candidate) =
            match std::mem::replace(&mut self.state, State::Stopped) {
                State::Running { serving, candidate } => (serving, false, candidate),
                State::Stopping { serving } => (serving, true, None),
                other => {
                    self.state = other;
                    return;
                }
            };
        let mut serving = *serving;
        let text = format!("❌ {} stopped while handling this", self.manifest.name);
        let why = if stopping { "plugin stopped" } else { "plugin crashed" };
        let mut in_hand: Vec<(u64, InFlight)> = serving.in_flight.drain().collect();
        in_hand.sort_by_key(|(id, _)| *id);
        let mut again = Vec::new();
        for (_, event) in in_hand {
            self.timers.try_remove(&event.timer);
            // An event the plugin died on before answering goes to the restarted instance once more;
            // a second death on it (or a reply already said) answers it with the error.
            let redeliver = !stopping
                && self.manifest.redeliver_on_crash
                && event.attempt == 0
                && event.replies_said == 0;
            if redeliver {
                again.push(Queued { message: event.message, attempt: 1 });
            } else {
                self.abandon(event, why, &text).await;
            }
        }
        if !again.is_empty() {
            let count = again.len() as u64;
            tracing::info!(message = "events the plugin died on will be delivered again", plugin = %self.manifest.name, events = count);
            for queued in again.into_iter().rev() {
                self.queue.push_front(queued);
            }
            let queued = self.queue.len() as u64;
            self.counts(|c| {
                c.redelivered += count;
                c.queued = queued;
            });
        }
        self.counts(|c| c.in_flight = 0);
        {
            let mut cell = self.shared.lock();
            cell.serving_since = None;
            cell.status.pid = None;
            cell.status.memory_cap = None;
            cell.status.cpu_percent = None;
            cell.status.memory_mb = None;
        }
        let pid = serving.live.pid;
        if stopping {
            tracing::info!(message = "plugin stopped", plugin = %self.manifest.name, pid);
            // STOPPED before the event goes out, as for `crashed`.
            self.state = State::Stopped;
            self.publish_state();
            self.announce(LifecycleKind::Stopped, Some(serving.live.version), pid, None).await;
            self.stopped().await;
            return;
        }
        let reason = serving.kill_reason.take().unwrap_or(how);
        match candidate {
            // A reload candidate is starting: it carries on alone, and serves if it passes.
            Some(candidate) => {
                self.record_crash(&reason);
                self.enter(State::Starting(candidate));
                self.announce_crash(&reason, pid).await;
            }
            None => self.after_crash(reason, serving.started_at, pid).await,
        }
    }

    /// Counts a crash in the status (before any state change, so whoever wakes on the new state reads
    /// the new count).
    fn record_crash(&self, reason: &str) {
        self.update(|s| {
            s.crash_count += 1;
            s.last_error = Some(reason.to_owned());
        });
    }

    /// Logs and announces a crash already recorded.
    async fn announce_crash(&mut self, reason: &str, pid: Option<u32>) {
        tracing::warn!(message = "plugin crashed", plugin = %self.manifest.name, pid, reason = %reason);
        self.sink.plugin_crashed(&self.manifest.name, reason);
        let version = self.shared.lock().status.version.clone();
        self.announce(LifecycleKind::Crashed, Some(version), pid, Some(reason.to_owned())).await;
    }

    /// An instance crashed or failed to start: restart after the backoff, or give up (FAILED).
    pub(super) async fn after_crash(
        &mut self,
        reason: String,
        started_at: Instant,
        pid: Option<u32>,
    ) {
        let now = Instant::now();
        let decision = self.restarts.on_crash(now.into_std(), started_at.into_std());
        self.record_crash(&reason);
        if decision == RestartDecision::GiveUp {
            self.update(|s| s.last_error = Some(format!("{reason} (gave up restarting)")));
        }
        // The state changes before the `crashed` event goes out, so whoever hears it and asks for the
        // status sees CRASHED (or FAILED), not the RUNNING of the instance that just died.
        match decision {
            RestartDecision::RestartAfter(delay) => {
                let epoch = self.next_epoch;
                self.next_epoch += 1;
                self.timers.insert(Timer::Restart { epoch }, delay);
                self.enter(State::Backoff { epoch });
                tracing::info!(message = "plugin restart scheduled", plugin = %self.manifest.name, delay = ?delay);
            }
            RestartDecision::GiveUp => {
                self.subscription = None;
                self.enter(State::Failed);
                tracing::error!(message = "plugin FAILED: too many crashes; restart it by hand", plugin = %self.manifest.name);
            }
        }
        self.announce_crash(&reason, pid).await;
        if decision == RestartDecision::GiveUp {
            let reason = format!("{reason} (gave up restarting)");
            let version = self.shared.lock().status.version.clone();
            self.announce(LifecycleKind::Failed, Some(version), None, Some(reason)).await;
            self.refuse_queue("plugin failed").await;
        }
    }

    // ----- resources ------------------------------------------------------------------------------

    /// Samples the serving instance's CPU and memory (off the async threads) and kills it when it is
    /// over a limit twice in a row.
    pub(super) async fn sample_resources(&mut self) {
        let Some(serving) = self.serving_mut() else { return };
        let Some(mut sampler) = serving.sampler.clone() else { return };
        let generation = serving.live.generation;
        let name = self.manifest.name.clone();
        // /proc is read on the blocking pool; the instance may be gone (or replaced) by the time the
        // sample comes back, so it is taken on a copy and put back only into the same instance.
        let Ok(sample) = sampler.sample_async().await else { return };
        let Some(serving) = self.serving_mut().filter(|s| s.live.generation == generation) else {
            return;
        };
        serving.sampler = Some(sampler);
        let verdict = serving.limits.check(&sample);
        if let Verdict::Over { reason } = verdict
            && serving.kill_reason.is_none()
        {
            tracing::warn!(message = "plugin over its limit; killing it", plugin = %name, pid = serving.live.pid, reason = %reason);
            serving.kill_reason = Some(reason);
            serving.live.kill.kill();
        }
        let mut cell = self.shared.lock();
        cell.status.cpu_percent = Some(sample.cpu_percent);
        cell.status.memory_mb = Some(sample.memory_mb);
    }

    // ----- lifecycle events -----------------------------------------------------------------------

    pub(super) async fn announce(
        &self,
        kind: LifecycleKind,
        version: Option<String>,
        pid: Option<u32>,
        reason: Option<String>,
    ) {
        let event = LifecycleEvent {
            name: self.manifest.name.clone(),
            version,
            from_version: None,
            pid,
            reason,
            duration_seconds: None,
            time: now_millis(),
        };
        self.publish_lifecycle(kind, &event).await;
    }

    pub(super) async fn publish_lifecycle(&self, kind: LifecycleKind, event: &LifecycleEvent) {
        self.sink.plugin_lifecycle(kind, event);
        let Ok(subject) = subject::plugin_lifecycle(&self.manifest.name, kind) else { return };
        if let Err(err) = self.bus.publish_json(&subject, event).await {
            tracing::warn!(message = "cannot publish lifecycle event", plugin = %self.manifest.name, %err);
        }
    }
}

/// Answers a refused request.
fn refuse(command: Control, error: ControlError) {
    match command {
        Control::Stop { done } | Control::Restart { done } | Control::Shutdown { done } => {
            let _ = done.send(Err(error));
        }
        Control::Reload { done, .. } => {
            let _ = done.send(Err(error));
        }
    }
}

/// Tells everyone waiting for `op` that a stronger request (`by`) replaced it.
fn supersede(op: Op, name: &str, by: Action) {
    let action = op.action();
    let error = ControlError::Superseded { name: name.to_owned(), action, by };
    match op {
        Op::Restart { waiters } | Op::Stop { waiters, .. } => {
            for done in waiters {
                let _ = done.send(Err(error.clone()));
            }
        }
        Op::Reload { waiters, .. } => {
            for done in waiters {
                let _ = done.send(Err(error.clone()));
            }
        }
    }
}
