//! Events: from the bus into the wait queue and the serving instance, replies and `done` back out, and
//! the output of every instance routed to the part of the slot that owns it.
//!
//! Where an event's replies go is decided once, when it is dispatched or refused
//! ([`ReplyTarget::for_event`]): the channel it names, or a PM to its sender for a private command
//! and for an event from `cytube.pm.message`.

use bytes::Bytes;
use rosey_plugin::protocol::{HostMessage, PluginMessage};
use serde_json::Value;

use super::*;
use crate::event::ReplyTarget;
use crate::subject;

impl Slot {
    /// Whether the serving instance can take one more event now.
    fn can_dispatch(&self) -> bool {
        match &self.state {
            State::Running { serving, .. } => serving.in_flight.len() < self.manifest.max_in_flight,
            _ => false,
        }
    }

    pub(super) async fn on_bus_message(&mut self, message: Message) {
        self.counts(|c| c.received += 1);
        let kind = event_kind(message.subject());
        self.sink.event_received(&self.manifest.name, kind);
        if self.can_dispatch() && self.queue.is_empty() {
            self.dispatch(Queued { message, attempt: 0 }).await;
            return;
        }
        let waiting_is_useful = matches!(
            self.state,
            State::Running { .. } | State::Starting(_) | State::Backoff { .. }
        );
        if !waiting_is_useful {
            let text = format!("❌ {} is not running", self.manifest.name);
            self.refuse(&message, &text, "not running").await;
        } else if self.queue.len() >= self.manifest.queue_capacity {
            self.counts(|c| c.overflowed += 1);
            let text = format!("❌ {} is busy, try again in a moment", self.manifest.name);
            self.refuse(&message, &text, "queue full").await;
        } else {
            self.queue.push_back(Queued { message, attempt: 0 });
            let queued = self.queue.len() as u64;
            self.counts(|c| c.queued = queued);
        }
    }

    /// Hands queued events to the serving instance while it has room.
    pub(super) async fn pump(&mut self) {
        while self.can_dispatch() {
            let Some(queued) = self.queue.pop_front() else { break };
            self.dispatch(queued).await;
        }
        let queued = self.queue.len() as u64;
        self.counts(|c| c.queued = queued);
    }

    /// Answers every event waiting in the queue with `❌ <name> is not running` (the plugin stopped or
    /// failed): each gets exactly one answer.
    pub(super) async fn refuse_queue(&mut self, error: &str) {
        let text = format!("❌ {} is not running", self.manifest.name);
        while let Some(queued) = self.queue.pop_front() {
            self.refuse(&queued.message, &text, error).await;
        }
        self.counts(|c| c.queued = 0);
    }

    async fn dispatch(&mut self, queued: Queued) {
        let Queued { message, attempt } = queued;
        let data: Value = match serde_json::from_slice(message.payload()) {
            Ok(data) => data,
            Err(err) => {
                tracing::warn!(message = "event payload is not JSON; dropped", plugin = %self.manifest.name, subject = message.subject(), %err);
                self.refuse(&message, "", "payload is not JSON").await;
                return;
            }
        };
        let id = self.next_event_id;
        self.next_event_id += 1;
        let timeout = self.manifest.timeouts.event;
        let State::Running { serving, .. } = &mut self.state else { return };
        let generation = serving.live.generation;
        let target = ReplyTarget::for_event(message.subject(), &data);
        let sent = serving.live.input.send(HostMessage::Event {
            id,
            subject: message.subject().to_owned(),
            data,
        });
        if !sent {
            // The plugin does not read its input (or just died): the event is answered, not lost.
            self.counts(|c| c.overflowed += 1);
            let text = format!("❌ {} is busy, try again in a moment", self.manifest.name);
            self.refuse(&message, &text, "plugin input full").await;
            return;
        }
        let State::Running { serving, .. } = &mut self.state else { return };
        let timer = self.timers.insert(Timer::Event { generation, id }, timeout);
        serving.in_flight.insert(
            id,
            InFlight {
                message,
                attempt,
                target,
                started: Instant::now(),
                replies: Vec::new(),
                replies_said: 0,
                reply_bytes: 0,
                dropped_replies: 0,
                timer,
            },
        );
        let in_flight = serving.in_flight.len() as u64;
        self.counts(|c| {
            c.delivered += 1;
            c.in_flight = in_flight;
        });
    }

    /// Answers an event that will not reach the plugin: an error line to its reply target (when
    /// `text` is not empty and the event has one) and an error response when it was a request.
    pub(super) async fn refuse(&mut self, message: &Message, text: &str, error: &str) {
        self.counts(|c| c.failed += 1);
        let target = serde_json::from_slice::<Value>(message.payload())
            .ok()
            .and_then(|data| ReplyTarget::for_event(message.subject(), &data));
        if let Some(target) = target
            && !text.is_empty()
        {
            self.say(&target, text).await;
        }
        if let Some(reply) = message.reply() {
            let body = serde_json::json!({ "replies": [], "error": error });
            let _ = self.bus.publish(reply, Bytes::from(body.to_string())).await;
        }
    }

    /// Says `text` to `target`: in its channel or by PM.
    pub(super) async fn say(&self, target: &ReplyTarget, text: &str) {
        if let Err(err) = self.bus.publish(target.subject(), target.encode(text)).await {
            tracing::warn!(message = "cannot publish reply", plugin = %self.manifest.name, %err);
        }
    }

    /// [`say`](Self::say) with a message id unique to this reply (this process, the plugin's
    /// instance, the event and the reply's place in it), so that a bus that keeps what is said (the
    /// cluster's JetStream chat queue) stores a reply published twice only once.
    async fn say_once(&self, target: &ReplyTarget, text: &str, id: &str) {
        let published = self.bus.publish_with_id(target.subject(), id, target.encode(text)).await;
        if let Err(err) = published {
            tracing::warn!(message = "cannot publish reply", plugin = %self.manifest.name, %err);
        }
    }

    /// Ends an event: records it and answers a request with the replies.
    pub(super) async fn finish(&mut self, event: InFlight, error: Option<String>) {
        let latency = event.started.elapsed();
        let ok = error.is_none();
        {
            let mut cell = self.shared.lock();
            let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
            let _ = cell.latency.record(micros.min(3_600_000_000));
            let counts = &mut cell.status.events;
            if ok { counts.completed += 1 } else { counts.failed += 1 }
        }
        self.sink.event_processed(&self.manifest.name, latency, ok);
        if let Some(error) = &error {
            tracing::warn!(message = "plugin event failed", plugin = %self.manifest.name, subject = %event.subject(), error = %error);
        }
        if let Some(reply) = event.reply_to() {
            let body = serde_json::json!({ "replies": event.replies, "error": error });
            let _ = self.bus.publish(reply, Bytes::from(body.to_string())).await;
        }
    }

    /// Fails an in-flight event the plugin will never finish, telling its sender (in the channel or
    /// by PM) — unless the plugin already replied to it: then it was answered, and one answer is all
    /// a command gets.
    pub(super) async fn abandon(&mut self, event: InFlight, error: &str, text: &str) {
        if let Some(target) = &event.target
            && event.replies_said == 0
        {
            self.say(target, text).await;
        }
        self.finish(event, Some(error.to_owned())).await;
    }

    /// Says a reply of an in-flight event to its reply target, within the per-event limits (count
    /// and bytes); what is over them is dropped and counted, and the plugin is told once.
    pub(super) async fn reply(&mut self, generation: u64, id: u64, message: String) {
        let limits = self.manifest.limits;
        let name = self.manifest.name.clone();
        let event = match self.serving_mut().filter(|s| s.live.generation == generation) {
            Some(serving) => serving.in_flight.get_mut(&id),
            None => self
                .old
                .iter_mut()
                .find(|o| o.serving.live.generation == generation)
                .and_then(|o| o.serving.in_flight.get_mut(&id)),
        };
        let Some(event) = event else {
            tracing::debug!(message = "reply for an event not in flight", plugin = %name, id);
            return;
        };
        if event.replies_said >= limits.replies_per_event
            || event.reply_bytes.saturating_add(message.len()) > limits.reply_bytes_per_event
        {
            event.dropped_replies += 1;
            let first = event.dropped_replies == 1;
            self.counts(|c| c.dropped_replies += 1);
            if first {
                let why = format!(
                    "replies to event {id} over the limit ({} messages, {} bytes); the rest are dropped",
                    limits.replies_per_event, limits.reply_bytes_per_event
                );
                self.refused(generation, &why);
            }
            return;
        }
        event.replies_said += 1;
        event.reply_bytes += message.len();
        if event.message.reply().is_some() {
            event.replies.push(message.clone());
        }
        let nth = event.replies_said;
        if let Some(target) = event.target.clone() {
            let message_id = format!("{}:{name}:{generation}:{id}:{nth}", process_id_for_replies());
            self.say_once(&target, &message, &message_id).await;
        }
    }

    /// Tells the plugin (instance `generation`) what the host refused, and logs it, rate-limited.
    fn refused(&mut self, generation: u64, why: &str) {
        let input = match self.serving_mut().filter(|s| s.live.generation == generation) {
            Some(serving) => Some(serving.live.input.clone()),
            None => self
                .old
                .iter()
                .find(|o| o.serving.live.generation == generation)
                .map(|o| o.serving.live.input.clone()),
        };
        if let Some(input) = input {
            input.send_if_room(HostMessage::Error { message: why.to_owned() });
        }
        self.sum_up_suppressed_logs();
        if self.refusal_logs.allow() {
            tracing::warn!(message = "refused what the plugin sent", plugin = %self.manifest.name, reason = %why);
        }
    }

    /// Logs how many plugin log lines and refusals were suppressed, once their window is over.
    pub(super) fn sum_up_suppressed_logs(&mut self) {
        if let Some(suppressed) = self.plugin_logs.due_summary() {
            tracing::warn!(message = "plugin log lines suppressed (over the rate limit)", plugin = %self.manifest.name, suppressed);
        }
        if let Some(suppressed) = self.refusal_logs.due_summary() {
            tracing::warn!(message = "refusals not logged", plugin = %self.manifest.name, suppressed);
        }
    }

    /// Event `id` of the serving instance `generation` ran out of time.
    pub(super) async fn on_event_timeout(&mut self, generation: u64, id: u64) {
        let timeout = self.manifest.timeouts.event.as_secs_f64();
        let Some(serving) = self.serving_mut().filter(|s| s.live.generation == generation) else {
            return;
        };
        let Some(event) = serving.in_flight.remove(&id) else { return };
        let in_flight = serving.in_flight.len() as u64;
        self.counts(|c| {
            c.timed_out += 1;
            c.in_flight = in_flight;
        });
        let text = format!("❌ {} did not answer in time", self.manifest.name);
        self.abandon(event, &format!("no done within {timeout}s"), &text).await;
        self.consecutive_timeouts += 1;
        let name = self.manifest.name.clone();
        if self.consecutive_timeouts >= HUNG_AFTER_TIMEOUTS
            && let Some(serving) = self.serving_mut()
            && serving.kill_reason.is_none()
        {
            let reason = format!("hung: {HUNG_AFTER_TIMEOUTS} events in a row timed out");
            tracing::warn!(message = "plugin hung; killing it", plugin = %name, pid = serving.live.pid);
            serving.kill_reason = Some(reason);
            serving.live.kill.kill();
        }
        self.after_event_ended();
        self.pump().await;
    }

    // ----- instance output ------------------------------------------------------------------------

    /// Routes one output to the candidate, the serving instance or an old one.
    pub(super) async fn on_output(&mut self, generation: u64, output: InstanceOutput) {
        if self.candidate_mut().is_some_and(|c| c.live.generation == generation) {
            self.on_candidate_output(output).await;
        } else if self.serving_mut().is_some_and(|s| s.live.generation == generation) {
            match output {
                InstanceOutput::Message(message) => self.on_plugin_message(message).await,
                InstanceOutput::Malformed(reason) => self.note_malformed(&reason),
                InstanceOutput::Unknown(kind) => {
                    tracing::debug!(message = "unknown message type ignored", plugin = %self.manifest.name, kind = %kind);
                }
                InstanceOutput::Exited(how) => self.on_serving_exit(how.to_string()).await,
            }
        } else if let Some(index) =
            self.old.iter().position(|o| o.serving.live.generation == generation)
        {
            self.on_old_output(index, output).await;
        }
        // Otherwise a leftover of an instance already given up on (killed during start, say).
    }

    async fn on_plugin_message(&mut self, message: PluginMessage) {
        let name = self.manifest.name.clone();
        let Some(generation) = self.serving_mut().map(|s| s.live.generation) else { return };
        match message {
            PluginMessage::Reply { id, message } => self.reply(generation, id, message).await,
            PluginMessage::Done { id, error } => {
                let Some(serving) = self.serving_mut() else { return };
                let Some(event) = serving.in_flight.remove(&id) else {
                    tracing::debug!(message = "done for an event not in flight", plugin = %name, id);
                    return;
                };
                let in_flight = serving.in_flight.len() as u64;
                self.timers.try_remove(&event.timer);
                self.counts(|c| c.in_flight = in_flight);
                self.consecutive_timeouts = 0;
                self.finish(event, error).await;
                self.after_event_ended();
                self.pump().await;
            }
            PluginMessage::Pong { .. } | PluginMessage::Ready { .. } => {}
            PluginMessage::Publish { subject, data } => {
                if let Err(refused) = self.publish_rules.check(&subject) {
                    self.counts(|c| c.refused_publishes += 1);
                    self.refused(generation, &format!("publish refused: {refused}"));
                    return;
                }
                if let Err(err) = self.bus.publish(&subject, Bytes::from(data.to_string())).await {
                    tracing::warn!(message = "plugin publish failed", plugin = %name, subject = %subject, %err);
                }
            }
            PluginMessage::Request { id, subject, data } => self.forward_request(id, subject, data),
            PluginMessage::Log { level, message } => self.log_from_plugin(&level, &message),
            PluginMessage::Metric { name: metric, kind, value, labels } => {
                self.sink.plugin_metric(&name, &metric, &kind, value, &labels);
            }
        }
    }

    /// While stopping, the state shows DRAINING until the last event is done, then STOPPING.
    fn after_event_ended(&self) {
        if matches!(self.state, State::Stopping { .. }) {
            self.publish_state();
        }
    }

    /// Plugins may only ask the key-value store; the host stamps the request with the plugin's name
    /// so a plugin sees only its own keys. Each request is answered in a task the slot tracks.
    fn forward_request(&mut self, id: u64, subject: String, mut data: Value) {
        let plugin = self.manifest.name.clone();
        let timeout = self.manifest.timeouts.event;
        let Some(serving) = self.serving_mut() else { return };
        let input = serving.live.input.clone();
        if !subject.starts_with(&format!("{}.", subject::KV_PREFIX)) {
            input.send_if_room(HostMessage::Response {
                id,
                data: None,
                error: Some(format!("plugins may only request {}.*", subject::KV_PREFIX)),
            });
            return;
        }
        let Value::Object(map) = &mut data else {
            input.send_if_room(HostMessage::Response {
                id,
                data: None,
                error: Some("the request's data must be a JSON object".to_owned()),
            });
            return;
        };
        // Whatever the plugin put there, the store sees the name the host knows it by.
        map.insert("plugin".to_owned(), Value::String(plugin));
        let bus = self.bus.clone();
        // Reap the requests already answered, so the set holds only those in progress.
        while self.requests.try_join_next().is_some() {}
        let rate = self.manifest.limits.requests_per_second;
        if !self.request_budget.take(rate, Instant::now()) {
            input.send_if_room(HostMessage::Response {
                id,
                data: None,
                error: Some(format!(
                    "too many requests: at most {rate} a second (limits.requests_per_second); slow down"
                )),
            });
            self.counts(|c| c.refused_requests += 1);
            return;
        }
        if self.requests.len() >= MAX_OUTSTANDING_REQUESTS {
            input.send_if_room(HostMessage::Response {
                id,
                data: None,
                error: Some(format!(
                    "too many requests outstanding (at most {MAX_OUTSTANDING_REQUESTS}); wait for the answers"
                )),
            });
            self.counts(|c| c.refused_requests += 1);
            return;
        }
        self.requests.spawn(async move {
            let response = match bus.request(&subject, Bytes::from(data.to_string()), timeout).await
            {
                Ok(reply) => match serde_json::from_slice::<Value>(reply.payload()) {
                    // A refusal (`{"error": "…", "code": "…"}`) is an `error` response that still
                    // carries the whole answer, so a plugin can tell the codes apart.
                    Ok(data) => match data.get("error").and_then(Value::as_str) {
                        Some(error) => HostMessage::Response {
                            id,
                            error: Some(error.to_owned()),
                            data: Some(data),
                        },
                        None => HostMessage::Response { id, data: Some(data), error: None },
                    },
                    Err(e) => HostMessage::Response { id, data: None, error: Some(e.to_string()) },
                },
                Err(e) => HostMessage::Response { id, data: None, error: Some(e.to_string()) },
            };
            input.send_if_room(response);
        });
    }

    pub(super) fn log_from_plugin(&mut self, level: &str, message: &str) {
        self.sum_up_suppressed_logs();
        if !self.plugin_logs.allow() {
            return;
        }
        let plugin = &self.manifest.name;
        match level {
            "error" => tracing::error!(target: "rosey::plugin::log", plugin = %plugin, "{message}"),
            "warn" => tracing::warn!(target: "rosey::plugin::log", plugin = %plugin, "{message}"),
            "debug" => tracing::debug!(target: "rosey::plugin::log", plugin = %plugin, "{message}"),
            "trace" => tracing::trace!(target: "rosey::plugin::log", plugin = %plugin, "{message}"),
            _ => tracing::info!(target: "rosey::plugin::log", plugin = %plugin, "{message}"),
        }
    }

    pub(super) fn note_malformed(&mut self, reason: &str) {
        self.counts(|c| c.malformed_lines += 1);
        if self.malformed_logged.is_multiple_of(100) {
            tracing::warn!(message = "malformed line from plugin ignored", plugin = %self.manifest.name, reason = %reason, seen = self.malformed_logged + 1);
        }
        self.malformed_logged += 1;
    }
}

/// The kind of event for metrics: the `type` label of `rosey_events_total{plugin,type}` and the
/// `kind` passed to [`MetricsSink::event_received`](crate::metrics::MetricsSink::event_received).
///
/// Defined once, here, from the subject the event arrived on; a fixed set so the label stays small:
///
/// | subject | type |
/// |---|---|
/// | `rosey.command.<command>[.<sub>]` (a routed command, chat or PM) | `command` |
/// | `cytube.chat.message` (any chat line, command or not) | `chat` |
/// | `cytube.pm.message` | `pm` |
/// | `cytube.user.join` | `user_join` |
/// | `cytube.user.leave` | `user_leave` |
/// | `cytube.media.change` | `media_change` |
/// | `rosey.plugin.<name>.<kind>` (lifecycle events) | `lifecycle` |
/// | anything else (subjects a manifest subscribes to) | `other` |
fn event_kind(subject: &str) -> &'static str {
    match subject {
        subject::CHAT_MESSAGE => "chat",
        subject::PM_MESSAGE => "pm",
        subject::USER_JOIN => "user_join",
        subject::USER_LEAVE => "user_leave",
        subject::MEDIA_CHANGE => "media_change",
        _ if has_prefix(subject, subject::COMMAND_PREFIX) => "command",
        _ if has_prefix(subject, subject::PLUGIN_PREFIX) => "lifecycle",
        _ => "other",
    }
}

/// Whether `subject` is `prefix` followed by at least one more token.
fn has_prefix(subject: &str, prefix: &str) -> bool {
    subject.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('.') && rest.len() > 1)
}

/// A random id of this process, which the ids of its replies start with (so that two processes'
/// event numbers never make the same id).
fn process_id_for_replies() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(crate::random::random_hex)
}

#[cfg(test)]
mod kind_tests {
    use super::event_kind;

    #[test]
    fn every_subject_maps_to_one_of_the_documented_types() {
        let cases = [
            ("rosey.command.roll", "command"),
            ("rosey.command.admin.reload", "command"),
            ("cytube.chat.message", "chat"),
            ("cytube.pm.message", "pm"),
            ("cytube.user.join", "user_join"),
            ("cytube.user.leave", "user_leave"),
            ("cytube.media.change", "media_change"),
            ("rosey.plugin.dice-roller.crashed", "lifecycle"),
            ("rosey.commander", "other"),
            ("weather.alert", "other"),
            ("cytube.chat.send", "other"),
        ];
        for (subject, kind) in cases {
            assert_eq!(event_kind(subject), kind, "{subject}");
        }
    }
}
