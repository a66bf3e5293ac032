//! Events: from the bus into the wait queue and the instance, replies and `done` back out.

use super::*;

impl Slot {
    pub(super) async fn on_bus_message(&mut self, message: Message) {
        self.counts(|c| c.received += 1);
        let kind = event_kind(message.subject());
        self.sink.event_received(&self.manifest.name, kind);
        let can_serve = self.stopping.is_none()
            && self
                .active
                .as_ref()
                .is_some_and(|a| a.in_flight.len() < self.manifest.max_in_flight);
        if can_serve && self.queue.is_empty() {
            self.dispatch(message).await;
            return;
        }
        let waiting_is_useful = self.stopping.is_none()
            && (self.active.is_some() || self.starting.is_some() || self.restart_at.is_some());
        if !waiting_is_useful {
            let text = format!("❌ {} is not running", self.manifest.name);
            self.refuse(&message, &text, "not running").await;
        } else if self.queue.len() >= self.manifest.queue_capacity {
            self.counts(|c| c.overflowed += 1);
            let text = format!("❌ {} is busy, try again in a moment", self.manifest.name);
            self.refuse(&message, &text, "queue full").await;
        } else {
            self.queue.push_back(message);
            let queued = self.queue.len() as u64;
            self.counts(|c| c.queued = queued);
        }
    }

    /// Hands queued events to the serving instance while it has room.
    pub(super) async fn pump(&mut self) {
        while self.stopping.is_none()
            && self.active.as_ref().is_some_and(|a| a.in_flight.len() < self.manifest.max_in_flight)
        {
            let Some(message) = self.queue.pop_front() else { break };
            self.dispatch(message).await;
        }
        let queued = self.queue.len() as u64;
        self.counts(|c| c.queued = queued);
    }

    pub(super) async fn dispatch(&mut self, message: Message) {
        let data: Value = match serde_json::from_slice(message.payload()) {
            Ok(data) => data,
            Err(err) => {
                tracing::warn!(message = "event payload is not JSON; dropped", plugin = %self.manifest.name, subject = message.subject(), %err);
                self.refuse(&message, "", "payload is not JSON").await;
                return;
            }
        };
        let Some(active) = self.active.as_mut() else { return };
        let id = self.next_event_id;
        self.next_event_id += 1;
        let channel = data.get("channel").and_then(Value::as_str).map(str::to_owned);
        active.input.send(HostMessage::Event { id, subject: message.subject().to_owned(), data });
        let now = Instant::now();
        active.in_flight.insert(
            id,
            InFlight {
                subject: message.subject().to_owned(),
                channel,
                reply_to: message.reply().map(str::to_owned),
                started: now,
                replies: Vec::new(),
            },
        );
        let in_flight = active.in_flight.len() as u64;
        self.deadlines.push_back((now + self.manifest.timeouts.event, id, active.generation));
        self.counts(|c| {
            c.delivered += 1;
            c.in_flight = in_flight;
        });
    }

    /// Answers an event that will not reach the plugin: an error line in its channel (when `text` is
    /// not empty and the event names one) and an error response when it was a request.
    pub(super) async fn refuse(&mut self, message: &Message, text: &str, error: &str) {
        self.counts(|c| c.failed += 1);
        let channel = serde_json::from_slice::<Value>(message.payload())
            .ok()
            .and_then(|v| v.get("channel").and_then(Value::as_str).map(str::to_owned));
        if let Some(channel) = channel
            && !text.is_empty()
        {
            self.say(&channel, text).await;
        }
        if let Some(reply) = message.reply() {
            let body = serde_json::json!({ "replies": [], "error": error });
            let _ = self.bus.publish(reply, Bytes::from(body.to_string())).await;
        }
    }

    pub(super) async fn say(&self, channel: &str, text: &str) {
        let send = ChatSend { channel: channel.to_owned(), message: text.to_owned() };
        if let Err(err) = self.bus.publish_json(subject::CHAT_SEND, &send).await {
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
            tracing::warn!(message = "plugin event failed", plugin = %self.manifest.name, subject = %event.subject, error = %error);
        }
        if let Some(reply) = &event.reply_to {
            let body = serde_json::json!({ "replies": event.replies, "error": error });
            let _ = self.bus.publish(reply, Bytes::from(body.to_string())).await;
        }
    }

    /// Fails an in-flight event the plugin will never finish, telling the channel.
    pub(super) async fn abandon(&mut self, event: InFlight, error: &str, text: &str) {
        if let Some(channel) = &event.channel {
            self.say(channel, text).await;
        }
        self.finish(event, Some(error.to_owned())).await;
    }

    pub(super) async fn on_event_deadlines(&mut self) {
        let now = Instant::now();
        while let Some(&(deadline, id, generation)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            let Some(active) = self.active.as_mut().filter(|a| a.generation == generation) else {
                continue;
            };
            let Some(event) = active.in_flight.remove(&id) else { continue };
            let in_flight = active.in_flight.len() as u64;
            self.counts(|c| {
                c.timed_out += 1;
                c.in_flight = in_flight;
            });
            let secs = self.manifest.timeouts.event.as_secs_f64();
            let text = format!("❌ {} did not answer in time", self.manifest.name);
            self.abandon(event, &format!("no done within {secs}s"), &text).await;
            self.consecutive_timeouts += 1;
            if self.consecutive_timeouts >= HUNG_AFTER_TIMEOUTS
                && let Some(active) = self.active.as_mut()
                && active.kill_reason.is_none()
            {
                let reason = format!("hung: {HUNG_AFTER_TIMEOUTS} events in a row timed out");
                tracing::warn!(message = "plugin hung; killing it", plugin = %self.manifest.name, pid = active.pid);
                active.kill_reason = Some(reason);
                active.kill.kill();
            }
        }
        self.pump().await;
    }

    // ----- instance output ----------------------------------------------------------------------

    /// Handles one output; `true` when the slot task should end.
    pub(super) async fn on_output(&mut self, generation: u64, output: InstanceOutput) -> bool {
        if self.starting.as_ref().is_some_and(|s| s.generation == generation) {
            self.on_start_output(output).await;
            return false;
        }
        if self.active.as_ref().is_some_and(|a| a.generation == generation) {
            return self.on_active_output(output).await;
        }
        if let Some(index) = self.draining.iter().position(|d| d.running.generation == generation) {
            self.on_draining_output(index, output).await;
            return false;
        }
        // A leftover of an instance we already gave up on (killed during start, for instance).
        false
    }

    pub(super) async fn on_active_output(&mut self, output: InstanceOutput) -> bool {
        match output {
            InstanceOutput::Message(message) => self.on_plugin_message(message).await,
            InstanceOutput::Malformed(reason) => self.note_malformed(&reason),
            InstanceOutput::Unknown(kind) => {
                tracing::debug!(message = "unknown message type ignored", plugin = %self.manifest.name, kind = %kind);
            }
            InstanceOutput::Exited(reason) => return self.on_active_exit(reason.to_string()).await,
        }
        false
    }

    pub(super) async fn on_plugin_message(&mut self, message: PluginMessage) {
        let name = self.manifest.name.clone();
        match message {
            PluginMessage::Reply { id, message } => {
                let channel = match self.active.as_mut().and_then(|a| a.in_flight.get_mut(&id)) {
                    Some(event) => {
                        event.replies.push(message.clone());
                        event.channel.clone()
                    }
                    None => {
                        tracing::debug!(message = "reply for an event not in flight", plugin = %name, id);
                        return;
                    }
                };
                if let Some(channel) = channel {
                    self.say(&channel, &message).await;
                }
            }
            PluginMessage::Done { id, error } => {
                let Some(active) = self.active.as_mut() else { return };
                let Some(event) = active.in_flight.remove(&id) else {
                    tracing::debug!(message = "done for an event not in flight", plugin = %name, id);
                    return;
                };
                let in_flight = active.in_flight.len() as u64;
                self.counts(|c| c.in_flight = in_flight);
                self.consecutive_timeouts = 0;
                self.finish(event, error).await;
                self.pump().await;
            }
            PluginMessage::Pong { .. } | PluginMessage::Ready { .. } => {}
            PluginMessage::Publish { subject, data } => {
                if subject.starts_with("rosey.") || subject.starts_with(subject::INBOX_PREFIX) {
                    tracing::warn!(message = "plugin may not publish on rosey.* subjects", plugin = %name, subject = %subject);
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

    /// Plugins may only ask the key-value store; the host stamps the request with the plugin's name
    /// so a plugin sees only its own keys.
    pub(super) fn forward_request(&self, id: u64, subject: String, mut data: Value) {
        let Some(active) = self.active.as_ref() else { return };
        let input = active.input.clone();
        if !subject.starts_with(&format!("{}.", subject::KV_PREFIX)) {
            input.send(HostMessage::Response {
                id,
                data: None,
                error: Some(format!("plugins may only request {}.*", subject::KV_PREFIX)),
            });
            return;
        }
        if let Value::Object(map) = &mut data {
            map.insert("plugin".to_owned(), Value::String(self.manifest.name.clone()));
        }
        let bus = self.bus.clone();
        let timeout = self.manifest.timeouts.event;
        tokio::spawn(async move {
            let response = match bus.request(&subject, Bytes::from(data.to_string()), timeout).await
            {
                Ok(reply) => match serde_json::from_slice::<Value>(reply.payload()) {
                    Ok(data) => HostMessage::Response { id, data: Some(data), error: None },
                    Err(e) => HostMessage::Response { id, data: None, error: Some(e.to_string()) },
                },
                Err(e) => HostMessage::Response { id, data: None, error: Some(e.to_string()) },
            };
            input.send(response);
        });
    }

    pub(super) fn log_from_plugin(&self, level: &str, message: &str) {
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
