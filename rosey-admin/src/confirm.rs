//! Requests waiting for their `yes`: at most one per user, tied to where it was asked.

use std::collections::HashMap;

use tokio::task::AbortHandle;

/// What a confirmed request does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Blue-green reload of one plugin.
    Reload(String),
    /// Rolling reload of these plugins, in this order.
    ReloadAll(Vec<String>),
    /// Restart of one plugin.
    Restart(String),
}

/// Where a request was made and where its `yes` must come from: a channel's chat, or private
/// messages through that channel's connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Origin {
    /// The channel.
    pub(crate) channel: String,
    /// Whether by private message.
    pub(crate) private: bool,
}

/// A request waiting for its `yes`.
#[derive(Debug)]
pub(crate) struct Request {
    /// Tells this request from a newer one of the same user.
    pub(crate) id: u64,
    /// What it does.
    pub(crate) action: Action,
    /// Where its `yes` must come from.
    pub(crate) origin: Origin,
    /// The user as the chat named them.
    pub(crate) actor: String,
    /// Their rank when they asked.
    pub(crate) rank: Option<f64>,
    /// The sub-command (`reload`, `restart`), for the audit log.
    pub(crate) command: &'static str,
    /// Its arguments as typed (`dice-roller`, `--all`).
    pub(crate) arguments: String,
    /// Ends the request when no `yes` comes in time; stopped when the request ends otherwise.
    pub(crate) timer: Option<AbortHandle>,
}

impl Drop for Request {
    fn drop(&mut self) {
        if let Some(timer) = self.timer.take() {
            timer.abort();
        }
    }
}

/// What a `yes` found.
#[derive(Debug)]
pub(crate) enum Answer {
    /// The user's request from that place: go ahead.
    Go(Request),
    /// The user's request from that place ran out of time before the `yes`.
    Expired,
    /// Nothing waits for this user there: the `yes` was just chat.
    Nothing,
}

/// The requests of every user, keyed by folded name. Bounded: one request and one expiry note per
/// admin, and only admins make requests.
#[derive(Debug, Default)]
pub(crate) struct Confirmations {
    pending: HashMap<String, Request>,
    /// Where each user's last request expired, so a late `yes` can be told.
    expired: HashMap<String, Origin>,
    next_id: u64,
}

impl Confirmations {
    /// A fresh id for a request.
    pub(crate) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Files `request` for `user`; returns the one it replaces, if any.
    pub(crate) fn ask(&mut self, user: &str, request: Request) -> Option<Request> {
        self.expired.remove(user);
        self.pending.insert(user.to_owned(), request)
    }

    /// A `yes` from `user` at `origin`. A `yes` from elsewhere leaves the request waiting.
    pub(crate) fn answer(&mut self, user: &str, origin: &Origin) -> Answer {
        if self.pending.get(user).is_some_and(|r| &r.origin == origin) {
            return self.pending.remove(user).map_or(Answer::Nothing, Answer::Go);
        }
        if self.expired.get(user) == Some(origin) {
            self.expired.remove(user);
            return Answer::Expired;
        }
        Answer::Nothing
    }

    /// Ends request `id` of `user` for want of a `yes`, when it is still waiting.
    pub(crate) fn expire(&mut self, user: &str, id: u64) -> Option<Request> {
        if self.pending.get(user).is_none_or(|r| r.id != id) {
            return None;
        }
        let mut request = self.pending.remove(user)?;
        // It is this very timer that expires it: nothing to stop.
        request.timer = None;
        self.expired.insert(user.to_owned(), request.origin.clone());
        Some(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(channel: &str, private: bool) -> Origin {
        Origin { channel: channel.to_owned(), private }
    }

    fn request(c: &mut Confirmations, plugin: &str, origin: Origin) -> Request {
        Request {
            id: c.next_id(),
            action: Action::Reload(plugin.to_owned()),
            origin,
            actor: "Alice".to_owned(),
            rank: Some(3.0),
            command: "reload",
            arguments: plugin.to_owned(),
            timer: None,
        }
    }

    #[test]
    fn a_yes_from_the_same_place_goes_ahead_and_from_elsewhere_does_nothing() {
        let mut c = Confirmations::default();
        let r = request(&mut c, "dice", origin("lobby", false));
        assert!(c.ask("alice", r).is_none());
        assert!(matches!(c.answer("alice", &origin("lobby", true)), Answer::Nothing));
        assert!(matches!(c.answer("alice", &origin("other", false)), Answer::Nothing));
        assert!(matches!(c.answer("bob", &origin("lobby", false)), Answer::Nothing));
        let Answer::Go(go) = c.answer("alice", &origin("lobby", false)) else { panic!() };
        assert_eq!(go.action, Action::Reload("dice".to_owned()));
        assert!(matches!(c.answer("alice", &origin("lobby", false)), Answer::Nothing), "once");
    }

    #[test]
    fn a_newer_request_replaces_the_older_and_expiry_is_told_once() {
        let mut c = Confirmations::default();
        let first = request(&mut c, "dice", origin("lobby", false));
        let first_id = first.id;
        c.ask("alice", first);
        let second = request(&mut c, "quotes", origin("lobby", false));
        let second_id = second.id;
        let replaced = c.ask("alice", second).unwrap();
        assert_eq!(replaced.id, first_id);
        assert!(c.expire("alice", first_id).is_none(), "the old timer finds nothing");
        assert_eq!(c.expire("alice", second_id).unwrap().arguments, "quotes");
        assert!(matches!(c.answer("alice", &origin("lobby", true)), Answer::Nothing));
        assert!(matches!(c.answer("alice", &origin("lobby", false)), Answer::Expired));
        assert!(matches!(c.answer("alice", &origin("lobby", false)), Answer::Nothing));
    }
}
