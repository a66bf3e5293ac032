//! What the bot has to say, kept until CyTube has taken it.
//!
//! Long messages are split at the channel's limit; the [`RateLimiter`] spaces them out below CyTube's
//! flood limit, so the server's `cooldown` is a safety net rather than the pacing. CyTube answers every
//! `chatMsg` and `pm` of a logged-in user, in order (one flood limiter serves both): a chat line with
//! its echo, a PM with its echo to the sender or an `errorMsg` (`PM failed: …`), either with `cooldown`
//! when the limiter dropped it. So what was sent and not yet answered waits in one in-flight list: an
//! answer settles the oldest message of its kind (and anything older, which was answered already or
//! never will be), a `cooldown` puts the oldest back at the front of the queue to be sent again after
//! the pause. When the connection is lost, what is still in flight goes back to the queue and is sent
//! again after the reconnect: delivery is at least once, never lost.
//!
//! The queue is bounded in lines (pieces): once over its capacity, the *oldest* lines are dropped,
//! counted in [`OutboxStats`] and logged as an error (the first drop, then at most once every 10 s
//! with the number dropped since). Old lines go first because in a chat the newest answer is the one
//! still worth saying.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::ratelimit::{FloodLimit, RateLimiter};
use super::text::split_message;
use crate::connector::ConnectorStats;

/// How long a sent chat message waits for its echo before it is taken as delivered. CyTube answers
/// within milliseconds; a message that gets no echo at all (a `/command`, a muted bot) must not stay
/// in flight and be sent twice after a reconnect.
const IN_FLIGHT_TTL: Duration = Duration::from_secs(10);

/// Least time between two error logs about dropped lines.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Cuts `text` to what [`Outbox::push`] could keep of it anyway (`max_pieces` pieces of `max_length`
/// UTF-16 units, at most 3 bytes of UTF-8 each, plus line ends), so a huge message does not sit whole
/// in the queues before the outbox.
pub(super) fn clip(mut text: String, max_length: usize, max_pieces: usize) -> String {
    let limit = max_pieces.saturating_mul(max_length.saturating_mul(3).saturating_add(2));
    if text.len() > limit {
        let mut cut = limit;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// How many times CyTube's flood limiter counts `message`: twice for a chat line that is one of
/// CyTube's chat commands sending a message of its own (`/me`, `/sp`, `/say`, `/rcv`, `/shout`,
/// `/a`: the command and then its message), once otherwise. PMs run no commands.
fn limiter_slots(message: &Outgoing) -> u32 {
    let Outgoing::Chat(text) = message else { return 1 };
    let command = text.strip_prefix('/').map(|rest| rest.split(' ').next().unwrap_or(rest));
    match command {
        Some("me" | "sp" | "say" | "rcv" | "shout" | "a") => 2,
        _ => 1,
    }
}

/// Told once when a message is settled: its last piece delivered (echoed, or for a PM answered), or
/// given up (dropped when the outbox is full, never answered). A source that must know before it
/// lets a message go (the cluster's chat queue, which acknowledges it then) passes one with the
/// message; the others pass [`Settled::none`]. Dropping every clone unfired tells the receiver the
/// connector stopped first.
#[derive(Debug, Clone, Default)]
pub(crate) struct Settled(Option<Arc<Mutex<Option<oneshot::Sender<()>>>>>);

impl Settled {
    /// Nobody waits.
    pub(crate) fn none() -> Self {
        Self(None)
    }

    /// A token and the receiver that hears when it fires.
    pub(crate) fn new() -> (Self, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (Self(Some(Arc::new(Mutex::new(Some(tx))))), rx)
    }

    fn fire(&self) {
        if let Some(sender) = self.0.as_ref().and_then(|slot| slot.lock().take()) {
            let _ = sender.send(());
        }
    }
}

/// What the bus side hands to the connection: a message and who waits for it to be settled.
pub(crate) type Handoff = (Outgoing, Settled);

/// One message to send, already cut to the channel's limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outgoing {
    /// A chat line (`chatMsg`).
    Chat(String),
    /// A private message (`pm`).
    Pm {
        /// Recipient.
        to: String,
        /// Text.
        text: String,
    },
}

/// The queue of messages to send, the chat messages in flight and the rate limit; see the
/// [module docs](self).
#[derive(Debug)]
pub(super) struct Outbox {
    queue: VecDeque<(Outgoing, Settled)>,
    in_flight: VecDeque<(Outgoing, Instant, Settled)>,
    /// The token of the message [`next`](Self::next) handed out, until [`sent`](Self::sent).
    taken: Settled,
    limiter: RateLimiter,
    max_length: usize,
    max_pieces: usize,
    /// Messages put back by the current cooldown, kept in their original order at the front.
    requeued: usize,
    /// Most lines waiting to be sent; beyond it the oldest are dropped.
    capacity: usize,
    stats: ConnectorStats,
    /// When drops were last logged, and how many happened since.
    last_drop_log: Option<Instant>,
    dropped_since_log: u64,
}

impl Outbox {
    /// An empty outbox that splits messages at `max_length` characters.
    pub(super) fn new(limiter: RateLimiter, max_length: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            in_flight: VecDeque::new(),
            taken: Settled::none(),
            limiter,
            max_length,
            max_pieces: usize::MAX,
            requeued: 0,
            capacity: usize::MAX,
            stats: ConnectorStats::default(),
            last_drop_log: None,
            dropped_since_log: 0,
        }
    }

    /// Keeps at most `capacity` lines waiting (at least 1), dropping the oldest beyond it, and counts
    /// into `stats`.
    pub(super) fn with_capacity(mut self, capacity: usize, stats: ConnectorStats) -> Self {
        self.capacity = capacity.max(1);
        self.stats = stats;
        self
    }

    /// Drops the oldest waiting lines beyond the capacity, and publishes the queue's length.
    fn settle(&mut self) {
        let over = self.queue.len().saturating_sub(self.capacity);
        if over > 0 {
            for (_, settled) in self.queue.drain(..over) {
                settled.fire();
            }
            self.requeued = self.requeued.saturating_sub(over);
            let over = over as u64;
            self.stats.dropped(over);
            self.dropped_since_log += over;
            let now = Instant::now();
            if self.last_drop_log.is_none_or(|at| now.duration_since(at) >= DROP_LOG_INTERVAL) {
                tracing::error!(
                    message = "CyTube outbox full: oldest lines dropped",
                    dropped = self.dropped_since_log,
                    dropped_total = self.stats.outbox_dropped(),
                    capacity = self.capacity,
                );
                self.last_drop_log = Some(now);
                self.dropped_since_log = 0;
            }
        }
        self.stats.set_queued(self.queue.len());
    }

    /// Keeps at most `max_pieces` pieces of one long message (the rest is dropped with a warning),
    /// so one runaway reply cannot flood the channel for minutes.
    pub(super) fn with_max_pieces(mut self, max_pieces: usize) -> Self {
        self.max_pieces = max_pieces.max(1);
        self
    }

    fn pieces(&self, text: &str) -> Vec<String> {
        // A chat message is one line: each line of a multi-line reply becomes its own message.
        let mut pieces: Vec<String> =
            text.lines().flat_map(|line| split_message(line, self.max_length)).collect();
        if pieces.len() > self.max_pieces {
            tracing::warn!(
                message = "a long message was cut",
                pieces = pieces.len(),
                kept = self.max_pieces
            );
            pieces.truncate(self.max_pieces);
        }
        pieces
    }

    /// Queues a message, one piece per line, each split at the channel's limit (at most the number of
    /// pieces set by [`Outbox::with_max_pieces`] in all); blank lines and empty messages are dropped.
    /// Beyond the capacity set by [`Outbox::with_capacity`], the oldest lines waiting are dropped.
    #[cfg(test)]
    pub(super) fn push(&mut self, message: Outgoing) {
        self.push_settled(message, Settled::none());
    }

    /// [`push`](Self::push), with the token told when the message's last piece is settled (at once
    /// when it has no piece to send).
    pub(crate) fn push_settled(&mut self, message: Outgoing, settled: Settled) {
        let pieces: Vec<Outgoing> = match message {
            Outgoing::Chat(text) => self.pieces(&text).into_iter().map(Outgoing::Chat).collect(),
            Outgoing::Pm { to, text } => self
                .pieces(&text)
                .into_iter()
                .map(|text| Outgoing::Pm { to: to.clone(), text })
                .collect(),
        };
        let last = pieces.len().checked_sub(1);
        if last.is_none() {
            settled.fire();
        }
        for (i, piece) in pieces.into_iter().enumerate() {
            let token = if Some(i) == last { settled.clone() } else { Settled::none() };
            self.queue.push_back((piece, token));
        }
        self.settle();
    }

    /// Messages waiting to be sent (not counting those in flight).
    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing waits to be sent.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Changes the flood limit, e.g. to a channel's stricter `chat_antiflood`, keeping count of what
    /// was sent under the old one (as CyTube does).
    pub(super) fn set_limit(&mut self, limit: FloodLimit) {
        self.limiter.set_limit(limit);
    }

    /// The next message if the rate limit allows one now, `Ok(None)` when the queue is empty, or how
    /// long to wait. A message taken must be reported with [`Outbox::sent`] once written.
    pub(super) fn next(&mut self, now: Instant) -> Result<Option<Outgoing>, Duration> {
        if self.queue.is_empty() {
            return Ok(None);
        }
        let slots = self.queue.front().map_or(1, |(message, _)| limiter_slots(message));
        self.limiter.acquire_slots(now, slots)?;
        self.requeued = 0;
        let next = self.queue.pop_front().map(|(message, settled)| {
            self.taken = settled;
            message
        });
        self.settle();
        Ok(next)
    }

    /// Records a message as written to the server; it now waits for its answer.
    pub(super) fn sent(&mut self, message: &Outgoing, now: Instant) {
        self.expire(now);
        let settled = std::mem::take(&mut self.taken);
        self.in_flight.push_back((message.clone(), now, settled));
    }

    /// The server echoed one of the bot's chat messages: the oldest chat line in flight was
    /// delivered.
    pub(super) fn echoed(&mut self) {
        self.settle_oldest(|message| matches!(message, Outgoing::Chat(_)));
    }

    /// The server answered one of the bot's PMs, with its echo (delivered) or an `errorMsg` (refused
    /// for good, e.g. the recipient left): the oldest PM in flight is settled either way.
    pub(super) fn pm_answered(&mut self) {
        self.settle_oldest(|message| matches!(message, Outgoing::Pm { .. }));
    }

    /// Takes the oldest message in flight of a kind out, with everything sent before it: answers come
    /// in order, so those had theirs already (or, like a muted line, never get one).
    fn settle_oldest(&mut self, kind: impl Fn(&Outgoing) -> bool) {
        if let Some(i) = self.in_flight.iter().position(|(message, ..)| kind(message)) {
            for (.., settled) in self.in_flight.drain(..=i) {
                settled.fire();
            }
        }
    }

    /// The server answered `cooldown <millis>`: the oldest message in flight was dropped and goes
    /// back to the front of the queue; nothing is sent during the pause.
    pub(super) fn cooldown(&mut self, now: Instant, millis: u64) {
        self.limiter.cooldown(now, millis);
        if let Some((message, _, settled)) = self.in_flight.pop_front() {
            self.queue.insert(self.requeued.min(self.queue.len()), (message, settled));
            self.requeued += 1;
            self.settle();
        }
    }

    /// The connection was lost: what is still in flight may not have arrived, so it is queued again,
    /// in order, ahead of everything else.
    pub(super) fn connection_lost(&mut self, now: Instant) {
        self.expire(now);
        for (message, _, settled) in self.in_flight.drain(..).rev() {
            self.queue.push_front((message, settled));
        }
        self.requeued = 0;
        self.settle();
    }

    fn expire(&mut self, now: Instant) {
        while self
            .in_flight
            .front()
            .is_some_and(|(_, sent, _)| now.saturating_duration_since(*sent) > IN_FLIGHT_TTL)
        {
            if let Some((.., settled)) = self.in_flight.pop_front() {
                settled.fire();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_module_example_holds() {
        use super::{Outbox, Outgoing};
        use crate::connector::cytube::ratelimit::{FloodLimit, RateLimiter};
        use std::time::Instant;

        let now = Instant::now();
        let mut outbox = Outbox::new(RateLimiter::new(FloodLimit::CYTUBE_PER_USER), 320);
        outbox.push(Outgoing::Chat("hello".into()));
        let next = outbox.next(now).unwrap().unwrap();
        outbox.sent(&next, now);
        outbox.cooldown(now, 100); // CyTube dropped it: it is queued again
        assert_eq!(outbox.len(), 1);
    }

    fn chat(text: &str) -> Outgoing {
        Outgoing::Chat(text.to_owned())
    }

    fn outbox(_now: Instant) -> Outbox {
        Outbox::new(RateLimiter::new(FloodLimit::CYTUBE_PER_USER), 10)
    }

    fn drain(outbox: &mut Outbox, now: Instant) -> Vec<Outgoing> {
        let mut sent = Vec::new();
        while let Ok(Some(message)) = outbox.next(now) {
            outbox.sent(&message, now);
            sent.push(message);
        }
        sent
    }

    #[test]
    fn long_and_multi_line_messages_are_split_and_pms_keep_their_recipient() {
        let now = Instant::now();
        let mut outbox = outbox(now);
        outbox.push(chat("one two three four"));
        outbox.push(Outgoing::Pm { to: "alice".into(), text: "hello there you".into() });
        outbox.push(chat("   "));
        outbox.push(chat("line one\n\nline two\r\n"));
        assert_eq!(
            drain(&mut outbox, now),
            [
                chat("one two"),
                chat("three four"),
                Outgoing::Pm { to: "alice".into(), text: "hello".into() },
                Outgoing::Pm { to: "alice".into(), text: "there you".into() },
                chat("line one"),
                chat("line two"),
            ]
        );
    }

    #[test]
    fn a_runaway_message_is_cut_to_the_allowed_number_of_pieces() {
        let now = Instant::now();
        let mut outbox = outbox(now).with_max_pieces(2);
        outbox.push(chat("aaaa bbbb cccc dddd"));
        assert_eq!(drain(&mut outbox, now), [chat("aaaa bbbb"), chat("cccc dddd")]);
        outbox.push(chat("aaaa bbbb cccc dddd eeee"));
        assert_eq!(drain(&mut outbox, now), [chat("aaaa bbbb"), chat("cccc dddd")]);
    }

    #[test]
    fn cooled_down_messages_are_resent_in_their_order_after_the_pause() {
        let now = Instant::now();
        let mut outbox = outbox(now);
        for text in ["a", "b", "c", "d"] {
            outbox.push(chat(text));
        }
        assert_eq!(drain(&mut outbox, now).len(), 4);
        outbox.push(chat("e"));
        // CyTube echoes a and b, then drops c and d.
        outbox.echoed();
        outbox.echoed();
        outbox.cooldown(now, 100);
        outbox.cooldown(now, 100);
        assert_eq!(outbox.next(now), Err(Duration::from_millis(100)), "paused");
        // The server is past its burst now: the lines come again one interval apart.
        let later = now + Duration::from_secs(1);
        let mut resent = drain(&mut outbox, later);
        assert_eq!(resent, [chat("c")]);
        resent.extend(drain(&mut outbox, later + Duration::from_millis(110)));
        resent.extend(drain(&mut outbox, later + Duration::from_millis(220)));
        assert_eq!(resent, [chat("c"), chat("d"), chat("e")]);
    }

    #[test]
    fn what_is_in_flight_when_the_connection_drops_is_sent_again_first() {
        let now = Instant::now();
        let mut outbox = outbox(now);
        for text in ["a", "b", "c"] {
            outbox.push(chat(text));
        }
        assert_eq!(drain(&mut outbox, now).len(), 3);
        outbox.echoed();
        outbox.push(chat("d"));
        outbox.connection_lost(now);
        assert_eq!(drain(&mut outbox, now), [chat("b"), chat("c"), chat("d")]);
    }

    #[test]
    fn pms_are_answered_in_line_with_chat_and_a_dropped_pm_is_the_one_sent_again() {
        let now = Instant::now();
        let mut outbox = outbox(now);
        let pm = |text: &str| Outgoing::Pm { to: "alice".into(), text: text.into() };
        for message in [chat("a"), pm("p1"), chat("b"), pm("p2"), chat("c"), pm("p3")] {
            outbox.push(message);
        }
        assert_eq!(drain(&mut outbox, now).len(), 6);
        // CyTube answers in order: a's echo, p1's echo, b's echo, p2 refused (`PM failed`), then
        // drops c and p3 with a cooldown each.
        outbox.echoed();
        outbox.pm_answered();
        outbox.echoed();
        outbox.pm_answered();
        outbox.cooldown(now, 100);
        outbox.cooldown(now, 100);
        let later = now + Duration::from_secs(1);
        let mut resent = drain(&mut outbox, later);
        resent.extend(drain(&mut outbox, later + Duration::from_millis(110)));
        assert_eq!(resent, [chat("c"), pm("p3")], "each dropped message, of its own kind");
        // A lost connection sends again whatever was not answered, PMs included.
        outbox.echoed();
        outbox.connection_lost(later);
        assert_eq!(drain(&mut outbox, later + Duration::from_secs(3)), [pm("p3")]);
        // An answer settles what was sent before it too (a muted line gets none).
        outbox.push(chat("muted"));
        outbox.push(pm("p4"));
        let again = later + Duration::from_secs(6);
        assert_eq!(drain(&mut outbox, again), [chat("muted"), pm("p4")]);
        // In flight: p3, muted, p4. p3 is echoed, muted gets no answer, p4 is echoed.
        outbox.pm_answered();
        outbox.pm_answered();
        outbox.connection_lost(again);
        assert!(drain(&mut outbox, again + Duration::from_secs(3)).is_empty(), "nothing in flight");
    }

    #[test]
    fn messages_never_echoed_are_not_resent_forever() {
        let now = Instant::now();
        let mut outbox = outbox(now);
        outbox.push(chat("/afk"));
        drain(&mut outbox, now);
        outbox.connection_lost(now + IN_FLIGHT_TTL + Duration::from_secs(1));
        assert!(outbox.is_empty());
    }

    #[test]
    fn over_capacity_the_oldest_lines_are_dropped_and_counted() {
        let now = Instant::now();
        let stats = ConnectorStats::default();
        let mut outbox = outbox(now).with_capacity(3, stats.clone());
        for text in ["a", "b", "c", "d"] {
            outbox.push(chat(text));
        }
        outbox.push(chat("eeee ffff gggg")); // two pieces
        assert_eq!((stats.outbox_dropped(), stats.outbox_queued()), (3, 3));
        assert_eq!(drain(&mut outbox, now), [chat("d"), chat("eeee ffff"), chat("gggg")]);
        assert_eq!(stats.outbox_queued(), 0);
    }

    #[test]
    fn lines_put_back_after_a_lost_connection_count_against_the_capacity() {
        let now = Instant::now();
        let stats = ConnectorStats::default();
        let mut outbox = outbox(now).with_capacity(2, stats.clone());
        outbox.push(chat("a"));
        outbox.push(chat("b"));
        assert_eq!(drain(&mut outbox, now).len(), 2);
        outbox.push(chat("c"));
        outbox.connection_lost(now);
        assert_eq!(stats.outbox_dropped(), 1);
        assert_eq!(drain(&mut outbox, now), [chat("b"), chat("c")]);
    }

    #[test]
    fn clipping_keeps_what_the_outbox_could_send_and_cuts_on_a_char_boundary() {
        assert_eq!(clip("short".into(), 320, 10), "short");
        let long = "é".repeat(10_000);
        assert_eq!(clip(long, 4, 2), "é".repeat(14), "2 × (4 × 3 + 2) = 28 bytes");
        let text = "word ".repeat(1_000);
        let outbox = outbox(Instant::now()).with_max_pieces(3);
        assert_eq!(
            outbox.pieces(&clip(text.clone(), 10, 3)),
            outbox.pieces(&text),
            "clipping before the outbox loses nothing it would send"
        );
    }

    #[test]
    fn the_rate_limit_spaces_messages_out() {
        let now = Instant::now();
        let mut outbox = Outbox::new(RateLimiter::new(FloodLimit::new(2, 10.0, None)), 320);
        for text in ["a", "b", "c"] {
            outbox.push(chat(text));
        }
        assert_eq!(drain(&mut outbox, now).len(), 2);
        // CyTube's 100 ms after the burst, and a margin for network jitter.
        assert_eq!(outbox.next(now), Err(Duration::from_millis(110)));
        assert_eq!(drain(&mut outbox, now + Duration::from_millis(110)), [chat("c")]);
    }
}
