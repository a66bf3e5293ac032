//! `chatMsg` and `pm` from clients: payload checks, flood limits, processing.

use serde_json::Value;

use crate::ServerEvent;
use crate::state::State;
use crate::text::{self, ChatAction, FloodParams};
use crate::wire::{self, event, js, num};

/// The type name CyTube's payload checker prints.
fn type_name(v: Option<&Value>) -> &'static str {
    match v {
        None => "undefined",
        Some(Value::Null) => "null",
        Some(Value::Bool(_)) => "boolean",
        Some(Value::Number(_)) => "number",
        Some(Value::String(_)) => "string",
        Some(Value::Array(_)) => "array",
        Some(Value::Object(_)) => "object",
    }
}

/// Checks an event payload against `{key: string, ..., meta?: object}` the way the
/// recorded errors read; `Err` holds the text after "Unexpected error for message X: ".
fn check_payload<'a>(arg: Option<&'a Value>, strings: &[&str]) -> Result<Vec<&'a str>, String> {
    let Some(obj) = arg.and_then(Value::as_object) else {
        return Err(format!("Expected type object, got {}", type_name(arg)));
    };
    let mut out = Vec::with_capacity(strings.len());
    for key in strings {
        match obj.get(*key) {
            None => return Err(format!("Missing key: string:{key}")),
            Some(Value::String(s)) => out.push(s.as_str()),
            Some(other) => {
                return Err(format!(
                    "Expected key {key} to be of type string, instead got {}",
                    type_name(Some(other))
                ));
            }
        }
    }
    match obj.get("meta") {
        None | Some(Value::Object(_)) => Ok(out),
        Some(other) => Err(format!(
            "Expected key meta to be of type object, instead got {}",
            type_name(Some(other))
        )),
    }
}

impl State {
    pub(crate) fn on_chat(&mut self, conn: u64, arg: Option<&Value>) {
        let Some(key) = self.conns.get(&conn).and_then(|c| c.channel.clone()) else {
            tracing::debug!(conn, "fake cytube: chatMsg outside a channel dropped");
            return;
        };
        let msg = match check_payload(arg, &["msg"]) {
            Ok(v) => v[0],
            Err(e) => {
                let text = format!("Unexpected error for message chatMsg: {e}");
                self.send(conn, wire::error_msg(&text));
                return;
            }
        };
        let Some(ch) = self.channels.get(&key) else { return };
        let Some(idx) = ch.conn_user_index(conn) else {
            tracing::debug!(conn, "fake cytube: chatMsg before login dropped");
            return;
        };
        let (user, rank) = (ch.users[idx].name.clone(), ch.users[idx].rank);
        let (antiflood_on, (burst, sustained, cooldown)) = (ch.antiflood_on, ch.antiflood);
        let (channel, filters) = (ch.name.clone(), ch.registered);
        let msg = text::clean_input(msg);
        if msg.trim().is_empty() {
            return;
        }
        let Some(c) = self.conns.get_mut(&conn) else { return };
        // One limiter per user, called with the parameters in force for this message.
        let params = if antiflood_on && rank < 2.0 {
            FloodParams { burst, sustained, cooldown: Some(f64::from(cooldown)) }
        } else {
            FloodParams::PER_USER
        };
        // `/me` and `/sp` go through the limiter a second time, as the message they send.
        let passes = if text::counts_twice(&msg) { 2 } else { 1 };
        if (0..passes).any(|_| c.limiter.throttle(params)) {
            // As recorded: `cooldown 100` for the built-in limit, `cooldown 1000` for
            // antiflood {burst 4, sustained 1, cooldown 4}, i.e. 1000 / sustained.
            let cooldown_ms = params.cooldown_ms();
            self.send(conn, event("cooldown", Some(&num(cooldown_ms))));
            // Rounded for the event; the frame carries the exact JavaScript number.
            let cooldown_ms = cooldown_ms.round() as u64;
            self.emit(ServerEvent::ChatDropped { channel, user, msg, cooldown_ms });
            return;
        }
        match text::process_chat(&msg, filters) {
            ChatAction::ToggleAfk => {
                let afk = self.channels.get(&key).is_some_and(|c| c.users[idx].afk);
                self.set_afk(&key, idx, !afk);
            }
            ChatAction::Say { msg, meta } => self.broadcast_chat(&key, &user, &msg, &meta),
        }
    }

    pub(crate) fn on_pm(&mut self, conn: u64, arg: Option<&Value>) {
        let Some(key) = self.conns.get(&conn).and_then(|c| c.channel.clone()) else {
            tracing::debug!(conn, "fake cytube: pm outside a channel dropped");
            return;
        };
        let (to, msg) = match check_payload(arg, &["to", "msg"]) {
            Ok(v) => (v[0], v[1]),
            Err(e) => {
                self.send(conn, wire::error_msg(&format!("Unexpected error for message pm: {e}")));
                return;
            }
        };
        let Some(ch) = self.channels.get(&key) else { return };
        let Some(from) = ch.conn_user_index(conn).map(|i| ch.users[i].name.clone()) else {
            self.send(conn, wire::error_msg("You must be signed in to send PMs"));
            return;
        };
        if to.eq_ignore_ascii_case(&from) {
            self.send(conn, wire::error_msg("You can't PM yourself!"));
            return;
        }
        // PMs share the sender's limiter, always with the per-user limit.
        let per_user = FloodParams::PER_USER;
        if self.conns.get_mut(&conn).is_some_and(|c| c.limiter.throttle(per_user)) {
            self.send(conn, event("cooldown", Some(&num(per_user.cooldown_ms()))));
            return;
        }
        let Some(ch) = self.channels.get(&key) else { return };
        let Some(target) = ch.user_index(to).map(|i| ch.users[i].clone()) else {
            let text = format!("PM failed: {to} isn't connected to this channel.");
            self.send(conn, wire::error_msg(&text));
            return;
        };
        let channel = ch.name.clone();
        let msg = text::process_pm(msg, ch.registered);
        let frame = pm_frame(&from, &msg, &target.name);
        if let Some(c) = target.conn {
            self.send(c, frame.clone());
        }
        self.send(conn, frame);
        self.emit(ServerEvent::Pm { channel, from, to: target.name, msg });
    }
}

/// `42["pm",{"username","msg","meta":{},"time","to"}]`.
pub(crate) fn pm_frame(from: &str, msg: &str, to: &str) -> String {
    event(
        "pm",
        Some(&format!(
            r#"{{"username":{},"msg":{},"meta":{{}},"time":{},"to":{}}}"#,
            js(from),
            js(msg),
            wire::now_ms(),
            js(to)
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_errors_read_as_recorded() {
        let v = |s: &str| serde_json::from_str::<Value>(s).expect("test json");
        assert_eq!(
            check_payload(Some(&v(r#""bad""#)), &["msg"]),
            Err("Expected type object, got string".to_owned())
        );
        assert_eq!(
            check_payload(Some(&v(r#"{"msg":12345}"#)), &["msg"]),
            Err("Expected key msg to be of type string, instead got number".to_owned())
        );
        assert_eq!(
            check_payload(Some(&v(r#"{"to":"alice"}"#)), &["to", "msg"]),
            Err("Missing key: string:msg".to_owned())
        );
        assert_eq!(check_payload(Some(&v(r#"{"msg":"hi","meta":{}}"#)), &["msg"]), Ok(vec!["hi"]));
    }
}
