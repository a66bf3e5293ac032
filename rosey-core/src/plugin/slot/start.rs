//! Starting an instance: one path for first start, crash restart, operator restart and reload. Spawn,
//! then the health steps in order; the first that fails names itself in the failure.

use rosey_plugin::protocol::{HostMessage, PROTOCOL_VERSION, PluginMessage};

use super::*;
use crate::event::{CommandEvent, now_millis};
use crate::subject;

/// The health steps every new instance passes before it serves: `ready`, `pong`, the probe when the
/// manifest has one, and memory under the limit when it has one.
pub(super) fn health_steps(manifest: &Manifest) -> Vec<StartStep> {
    let mut steps = vec![StartStep::Ready, StartStep::Pong];
    if manifest.probe.is_some() {
        steps.push(StartStep::Probe);
    }
    if manifest.limits.memory_mb.is_some() {
        steps.push(StartStep::Memory);
    }
    steps
}

impl Slot {
    /// Starts a candidate from `manifest` (the slot's own when `None`). Beside the serving instance when
    /// one serves (a reload), else as the only instance (STARTING). A failure to subscribe or spawn is
    /// handled like any failed step.
    pub(super) async fn begin_start(&mut self, reason: StartReason, manifest: Option<Manifest>) {
        let manifest = manifest.unwrap_or_else(|| self.manifest.clone());
        let beside = matches!(self.state, State::Running { .. });
        if !beside
            && self.subscription.is_none()
            && let Err(err) = self.subscribe().await
        {
            self.start_failed(StartStep::Spawn, format!("cannot subscribe: {err}"), None).await;
            return;
        }
        let instance = match self.runtime.start(&manifest).await {
            Ok(instance) => instance,
            Err(err) => {
                self.start_failed(StartStep::Spawn, err.to_string(), None).await;
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
        self.timers.insert(Timer::Step { generation, step: 0 }, manifest.timeouts.ready);
        let candidate = Box::new(Candidate {
            live: Live {
                generation,
                pid: parts.pid,
                memory: parts.memory,
                input: parts.input,
                kill: parts.kill,
                version: manifest.version.clone(),
            },
            steps: health_steps(&manifest),
            manifest,
            reason,
            step: 0,
            waiting_for: 0,
            probe_replied: false,
        });
        match &mut self.state {
            State::Running { candidate: slot, .. } => *slot = Some(candidate),
            _ => self.enter(State::Starting(candidate)),
        }
    }

    pub(super) async fn subscribe(&mut self) -> Result<(), crate::bus::BusError> {
        let mut all = SelectAll::new();
        // Commands once across the nodes (a queue group named after the plugin); the extra subjects
        // likewise unless every node's instance must see them.
        for subject in self.manifest.command_subjects() {
            all.push(self.bus.queue_subscribe(&subject, &self.manifest.name).await?);
        }
        for subject in &self.manifest.subscribe {
            all.push(if self.manifest.subscribe_every_node {
                self.bus.subscribe(subject).await?
            } else {
                self.bus.queue_subscribe(subject, &self.manifest.name).await?
            });
        }
        self.subscription = Some(all);
        Ok(())
    }

    /// Output of the candidate `generation`.
    pub(super) async fn on_candidate_output(&mut self, output: InstanceOutput) {
        let Some(candidate) = self.candidate_mut() else { return };
        let step = candidate.current_step();
        match output {
            InstanceOutput::Message(PluginMessage::Ready { name, version, .. })
                if step == StartStep::Ready =>
            {
                let expected = &candidate.manifest;
                if name != expected.name {
                    tracing::warn!(message = "plugin reports another name", plugin = %expected.name, reported = %name);
                }
                // The manifest's version is the one shown and reported (docs/PROTOCOL.md): it is what
                // the operator deployed and what a reload prompt announced.
                if version != expected.version {
                    tracing::warn!(message = "plugin version differs from its manifest; the manifest's is used", plugin = %expected.name, manifest = %expected.version, reported = %version);
                }
                candidate.live.version.clone_from(&expected.version);
                self.next_step().await;
            }
            InstanceOutput::Message(PluginMessage::Pong { id })
                if step == StartStep::Pong && id == candidate.waiting_for =>
            {
                self.next_step().await;
            }
            InstanceOutput::Message(PluginMessage::Reply { id, .. })
                if step == StartStep::Probe && id == candidate.waiting_for =>
            {
                candidate.probe_replied = true;
            }
            InstanceOutput::Message(PluginMessage::Done { id, error })
                if step == StartStep::Probe && id == candidate.waiting_for =>
            {
                let probe = candidate.manifest.probe.clone().unwrap_or_default();
                match (candidate.probe_replied, error) {
                    (_, Some(error)) => {
                        self.fail_candidate(format!("probe {probe:?} failed: {error}")).await;
                    }
                    (false, None) => {
                        self.fail_candidate(format!("probe {probe:?} got no reply")).await;
                    }
                    (true, None) => self.next_step().await,
                }
            }
            InstanceOutput::Message(PluginMessage::Log { level, message }) => {
                self.log_from_plugin(&level, &message);
            }
            InstanceOutput::Exited(how) => {
                let phase = match step {
                    StartStep::Ready => "before ready",
                    StartStep::Pong => "before pong",
                    StartStep::Probe => "during the probe",
                    _ => "while starting",
                };
                self.fail_candidate_exited(format!("exited {phase}: {how}")).await;
            }
            InstanceOutput::Malformed(reason) => self.note_malformed(&reason),
            other => {
                tracing::debug!(message = "plugin output ignored during start", plugin = %self.manifest.name, output = ?other);
            }
        }
    }

    /// The current step passed: runs the next one, or promotes the candidate after the last.
    async fn next_step(&mut self) {
        let Some(candidate) = self.candidate_mut() else { return };
        candidate.step += 1;
        let (generation, step) = (candidate.live.generation, candidate.step);
        let health = candidate.manifest.timeouts.health;
        match candidate.steps.get(step).copied() {
            None => self.promote().await,
            Some(StartStep::Pong) => {
                let id = self.next_event_id;
                self.next_event_id += 1;
                let Some(candidate) = self.candidate_mut() else { return };
                candidate.waiting_for = id;
                candidate.live.input.send(HostMessage::Ping { id });
                self.timers.insert(Timer::Step { generation, step }, health);
            }
            Some(StartStep::Probe) => {
                let id = self.next_event_id;
                self.next_event_id += 1;
                let Some(candidate) = self.candidate_mut() else { return };
                let (subject, data) =
                    probe_event(candidate.manifest.probe.as_deref().unwrap_or(""));
                candidate.waiting_for = id;
                candidate.probe_replied = false;
                candidate.live.input.send(HostMessage::Event { id, subject, data });
                self.timers.insert(Timer::Step { generation, step }, health);
            }
            Some(StartStep::Memory) => {
                let limit = candidate.manifest.limits.memory_mb;
                let pid = candidate.live.pid;
                match (limit, pid) {
                    (Some(limit), Some(pid)) => match sample_once(pid).await {
                        Some(memory) if memory > limit => {
                            let reason = format!("memory {memory:.0} MB over limit {limit:.0} MB");
                            self.fail_candidate(reason).await;
                        }
                        _ => Box::pin(self.next_step()).await,
                    },
                    _ => Box::pin(self.next_step()).await,
                }
            }
            Some(other) => {
                // Ready is always first and the other steps are not health steps: nothing to wait for.
                tracing::debug!(message = "health step skipped", plugin = %self.manifest.name, step = %other);
                Box::pin(self.next_step()).await;
            }
        }
    }

    pub(super) async fn on_step_timeout(&mut self, generation: u64, step: usize) {
        let Some(candidate) = self.candidate_mut() else { return };
        if candidate.live.generation != generation || candidate.step != step {
            return;
        }
        let timeouts = candidate.manifest.timeouts;
        let secs = |d: Duration| format!("{}s", d.as_secs_f64());
        let reason = match candidate.current_step() {
            StartStep::Ready => format!("no ready within {}", secs(timeouts.ready)),
            StartStep::Pong => format!("no pong within {}", secs(timeouts.health)),
            StartStep::Probe => format!(
                "probe {:?} got no reply within {}",
                candidate.manifest.probe.as_deref().unwrap_or_default(),
                secs(timeouts.health)
            ),
            other => format!("{other} step timed out"),
        };
        self.fail_candidate(reason).await;
    }

    /// The candidate failed its current step: kill it and handle the failure.
    async fn fail_candidate(&mut self, reason: String) {
        if let Some(mut candidate) = self.take_candidate() {
            candidate.live.kill.kill();
            let step = candidate.current_step();
            let pid = candidate.live.pid;
            self.start_failed(step, reason, pid).await;
        }
    }

    /// The candidate exited on its own during its health steps.
    async fn fail_candidate_exited(&mut self, reason: String) {
        if let Some(candidate) = self.take_candidate() {
            let step = candidate.current_step();
            let pid = candidate.live.pid;
            self.start_failed(step, reason, pid).await;
        }
    }

    /// Removes the candidate from the state: STARTING becomes (for now) STOPPED; a reload candidate
    /// leaves the serving instance as it was.
    pub(super) fn take_candidate(&mut self) -> Option<Box<Candidate>> {
        match std::mem::replace(&mut self.state, State::Stopped) {
            State::Starting(candidate) => Some(candidate),
            State::Running { serving, candidate } => {
                self.state = State::Running { serving, candidate: None };
                candidate
            }
            other => {
                self.state = other;
                None
            }
        }
    }

    /// Kills and forgets the candidate, if any (a stronger request replaces it).
    pub(super) fn abort_candidate(&mut self) {
        if let Some(mut candidate) = self.take_candidate() {
            candidate.live.kill.kill();
        }
        self.publish_state();
    }

    /// The candidate passed every step: it serves from now on.
    async fn promote(&mut self) {
        let Some(candidate) = self.take_candidate() else { return };
        let Candidate { live, manifest, reason, .. } = *candidate;
        let serving = Box::new(Serving {
            sampler: live.pid.map(ProcessSampler::new),
            limits: LimitWatch::new(manifest.limits.memory_mb, manifest.limits.cpu_percent),
            started_at: Instant::now(),
            in_flight: HashMap::new(),
            kill_reason: None,
            live,
        });
        let (pid, version) = (serving.live.pid, serving.live.version.clone());
        let previous = match std::mem::replace(&mut self.state, State::Stopped) {
            State::Running { serving: old, .. } => Some(old),
            _ => None,
        };
        let resubscribe = manifest.subjects() != self.manifest.subjects();
        let limits = (manifest.limits.memory_mb, manifest.limits.cpu_percent);
        self.manifest = manifest;
        self.consecutive_timeouts = 0;
        {
            let mut cell = self.shared.lock();
            cell.serving_since = Some(serving.started_at);
            cell.status.pid = pid;
            cell.status.memory_cap = Some(serving.live.memory);
            (cell.status.memory_limit_mb, cell.status.cpu_limit_percent) = limits;
            cell.status.version = version.clone();
            cell.status.loaded_at = Some(now_millis());
            cell.status.cpu_percent = None;
            cell.status.memory_mb = None;
            if reason == StartReason::CrashRestart {
                cell.status.restart_count += 1;
            }
        }
        self.enter(State::Running { serving, candidate: None });
        if resubscribe {
            self.swap_subscription().await;
        }
        if let Some(old) = previous {
            self.retire(*old);
        }
        tracing::info!(message = "plugin started", plugin = %self.manifest.name, version = %version, pid);
        // The status is complete before the lifecycle events go out, so listeners read it as new.
        self.announce(subject::LifecycleKind::Started, Some(version.clone()), pid, None).await;
        if reason == StartReason::CrashRestart {
            self.sink.plugin_restarted(&self.manifest.name);
            self.announce(subject::LifecycleKind::Restarted, Some(version.clone()), pid, None)
                .await;
        }
        match self.op.take() {
            Some(Op::Restart { waiters }) => {
                for done in waiters {
                    let _ = done.send(Ok(()));
                }
            }
            Some(Op::Reload { waiters, from_version, began, .. }) => {
                self.reloaded(waiters, from_version, version, pid, began).await;
            }
            other => self.op = other,
        }
        self.pump().await;
    }

    /// A start failed at `step`. A reload rolls back; any other start counts as a crash against the
    /// restart budget (and answers an operator restart with the failure).
    pub(super) async fn start_failed(&mut self, step: StartStep, why: String, pid: Option<u32>) {
        if matches!(self.op, Some(Op::Reload { manifest: None, .. })) {
            self.reload_failed(step, why).await;
            return;
        }
        tracing::warn!(message = "plugin failed to start", plugin = %self.manifest.name, step = %step, reason = %why);
        if let Some(Op::Restart { waiters }) =
            self.op.take_if(|op| matches!(op, Op::Restart { .. }))
        {
            let failure = super::super::status::StartFailure {
                name: self.manifest.name.clone(),
                step,
                reason: why.clone(),
            };
            for done in waiters {
                let _ = done.send(Err(ControlError::StartFailed(failure.clone())));
            }
        }
        self.after_crash(format!("{step}: {why}"), Instant::now(), pid).await;
    }
}

/// The command event a probe line (`!roll 1d20`) becomes, sent as [`PROBE_USER`] with no channel.
fn probe_event(probe: &str) -> (String, serde_json::Value) {
    let body = probe.strip_prefix('!').unwrap_or(probe);
    let (command, args) = body.split_once(' ').unwrap_or((body, ""));
    let event = CommandEvent {
        channel: String::new(),
        user: PROBE_USER.to_owned(),
        rank: None,
        command: command.to_owned(),
        args: args.to_owned(),
        message: probe.to_owned(),
        time: now_millis(),
        via: Default::default(),
    };
    let subject = format!("{}.{command}", subject::COMMAND_PREFIX);
    (subject, serde_json::to_value(&event).unwrap_or_default())
}

/// Resident memory of `pid`'s tree in MB, read off the async threads; `None` when it cannot be read.
async fn sample_once(pid: u32) -> Option<f64> {
    ProcessSampler::new(pid).sample_async().await.ok().map(|sample| sample.memory_mb)
}
