//! One connection to CyTube: open the websocket, connect the socket.io namespace, join the channel,
//! log in; then serve (events in, chat out, heartbeat) until the connection ends.
//!
//! The order of the handshake follows the recorded frames: `joinChannel` is sent only after the first
//! `rank` (events sent before the server's connect middleware finishes are dropped), the join burst
//! ends with `userlist`, and `login` is answered by a `login` event, success or not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector as TlsConnector, MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use super::channel::ChannelState;
use super::outbox::{Handoff, Outgoing};
use super::packet::Frame;
use super::{CytubeError, CytubeOptions};
use crate::bus::EventBus;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Largest frame accepted from the server: CyTube's own `maxPayload` is 1 MiB.
const MAX_FRAME: usize = 2 * 1024 * 1024;

/// How long closing the websocket may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a bot that logged in on a channel with a password waits to be admitted as a moderator
/// (`cancelNeedPassword`) before giving up.
const ADMISSION_WAIT: Duration = Duration::from_secs(5);

/// How many guest logins in a row may be refused with "restricted to one per … seconds".
const GUEST_DELAY_RETRIES: u32 = 3;

/// How a served connection ended.
#[derive(Debug)]
pub(super) enum SessionEnd {
    /// The connector was asked to stop.
    Shutdown,
    /// The connection ended; what it says decides between reconnecting and giving up.
    Ended(CytubeError),
}

/// A live, joined and logged-in connection.
pub(super) struct Link {
    socket: Socket,
    /// The server's ping interval plus its ping timeout: no ping for that long means the connection
    /// is dead even if TCP has not noticed.
    heartbeat: Duration,
    ping_deadline: tokio::time::Instant,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("heartbeat", &self.heartbeat).finish_non_exhaustive()
    }
}

/// What the handshake waits for next.
struct Step {
    name: &'static str,
    timeout: Duration,
    deadline: tokio::time::Instant,
}

impl Step {
    fn new(name: &'static str, timeout: Duration) -> Self {
        Self { name, timeout, deadline: tokio::time::Instant::now() + timeout }
    }
}

impl Link {
    /// Connects to `url` and goes through the whole handshake; events seen on the way (the join
    /// burst, users, chat) are taken into `state`.
    pub(super) async fn open(
        url: &str,
        options: &CytubeOptions,
        tls: &Arc<rustls::ClientConfig>,
        state: &mut ChannelState,
        bus: &dyn EventBus,
    ) -> Result<Self, CytubeError> {
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_FRAME))
            .max_frame_size(Some(MAX_FRAME));
        let connect = tokio_tungstenite::connect_async_tls_with_config(
            url,
            Some(config),
            true,
            Some(TlsConnector::Rustls(tls.clone())),
        );
        let (socket, _response) = tokio::time::timeout(options.handshake_timeout, connect)
            .await
            .map_err(|_| CytubeError::Timeout("websocket connection", options.handshake_timeout))?
            .map_err(|err| CytubeError::Connect(err.to_string()))?;
        let mut link = Self {
            socket,
            heartbeat: Duration::from_secs(145),
            ping_deadline: tokio::time::Instant::now() + options.handshake_timeout,
        };
        state.new_connection();
        if let Err(err) = link.handshake(options, state, bus).await {
            // A polite close, so the server does not keep a half-joined user until its ping timeout.
            link.close().await;
            return Err(err);
        }
        Ok(link)
    }

    async fn handshake(
        &mut self,
        options: &CytubeOptions,
        state: &mut ChannelState,
        bus: &dyn EventBus,
    ) -> Result<(), CytubeError> {
        let timeout = options.handshake_timeout;
        // Engine.IO open.
        let step = Step::new("Engine.IO open", timeout);
        match self.next_frame(&step).await? {
            Frame::Open(open) => {
                self.heartbeat = Duration::from_millis(open.ping_interval + open.ping_timeout);
                self.ping_deadline = tokio::time::Instant::now() + self.heartbeat;
            }
            other => {
                return Err(CytubeError::Protocol(format!(
                    "expected the open packet, got {other:?}"
                )));
            }
        }
        // socket.io namespace connect, then the first `rank`.
        self.send(&Frame::Connect(None)).await?;
        let step = Step::new("namespace connect", timeout);
        loop {
            match self.next_frame(&step).await? {
                Frame::Connect(_) => break,
                Frame::ConnectError(body) => {
                    let reason = body.get("message").and_then(Value::as_str).unwrap_or("refused");
                    return Err(CytubeError::ConnectRefused(reason.to_owned()));
                }
                Frame::Event { name, arg } => state.observe(bus, &name, arg.as_ref()).await,
                _ => {}
            }
        }
        let step = Step::new("rank", timeout);
        while self.next_event(&step, state, bus).await?.0 != "rank" {}

        // Join.
        let mut join = json!({ "name": state.channel });
        if let Some(pw) = &options.channel_password {
            join["pw"] = Value::String(pw.expose().to_owned());
        }
        self.send(&Frame::event("joinChannel", join)).await?;
        let step = Step::new("join (userlist)", timeout);
        // A password sent with `joinChannel` and answered `needPassword` was rejected: not sent again.
        let mut answered_password = options.channel_password.is_some();
        loop {
            let (name, _) = self.next_event(&step, state, bus).await?;
            match name.as_str() {
                "userlist" => break,
                "needPassword" => match &options.channel_password {
                    Some(pw) if !answered_password => {
                        answered_password = true;
                        let pw = Value::String(pw.expose().to_owned());
                        self.send(&Frame::event("channelPassword", pw)).await?;
                    }
                    configured => {
                        let why = match configured {
                            Some(_) => {
                                "the channel password was rejected (cytube.channel_password)"
                            }
                            None => "the channel has a password; set cytube.channel_password",
                        };
                        return self.login_past_password(options, state, bus, why).await;
                    }
                },
                _ => {}
            }
        }
        self.login(options, state, bus).await
    }

    /// The channel wants a password the bot does not have: CyTube admits a moderator (rank 2 and up)
    /// without it once logged in, with `cancelNeedPassword` and then the join burst. Logs in and waits
    /// [`ADMISSION_WAIT`] for that; `why` is the error if the bot is not admitted.
    async fn login_past_password(
        &mut self,
        options: &CytubeOptions,
        state: &mut ChannelState,
        bus: &dyn EventBus,
        why: &str,
    ) -> Result<(), CytubeError> {
        tracing::info!(
            message = "the channel has a password; logging in first, as CyTube admits moderators without it",
            channel = %state.channel
        );
        self.login(options, state, bus).await?;
        // Admission is `cancelNeedPassword` and the join burst, which ends with `userlist`; either
        // may come first, so the join is complete at `userlist`.
        let mut step = Step::new("cancelNeedPassword", ADMISSION_WAIT);
        loop {
            match self.next_event(&step, state, bus).await {
                Ok((name, _)) if name == "userlist" => return Ok(()),
                Ok((name, _)) if name == "cancelNeedPassword" => {
                    step = Step::new("join (userlist)", options.handshake_timeout);
                }
                Ok(_) => {}
                Err(CytubeError::Timeout("cancelNeedPassword", _)) => {
                    return Err(CytubeError::ChannelPassword(format!(
                        "{why} (logged in as {} with rank {}; only moderators, rank 2 and up, \
                         are let in without it)",
                        state.incoming.bot_name(),
                        state.own_rank()
                    )));
                }
                Err(err) => return Err(err),
            }
        }
    }

    async fn login(
        &mut self,
        options: &CytubeOptions,
        state: &mut ChannelState,
        bus: &dyn EventBus,
    ) -> Result<(), CytubeError> {
        let mut login = json!({ "name": options.username });
        if let Some(pw) = &options.password {
            login["pw"] = Value::String(pw.expose().to_owned());
        }
        let mut retries = 0;
        loop {
            self.send(&Frame::event("login", login.clone())).await?;
            let step = Step::new("login", options.handshake_timeout);
            let reply = loop {
                let (name, arg) = self.next_event(&step, state, bus).await?;
                if name == "login" {
                    break arg.unwrap_or(Value::Null);
                }
            };
            if reply.get("success") == Some(&Value::Bool(true)) {
                let name = reply.get("name").and_then(Value::as_str).unwrap_or(&options.username);
                state.logged_in(name);
                return Ok(());
            }
            let reason = reply.get("error").and_then(Value::as_str).unwrap_or("refused").to_owned();
            match guest_login_delay(&reason) {
                Some(delay) if retries < GUEST_DELAY_RETRIES => {
                    retries += 1;
                    tracing::info!(
                        message = "CyTube delays guest logins; logging in again after the delay",
                        delay = ?delay
                    );
                    // Keep reading (and answering pings) while waiting.
                    let wait = Step::new("guest login delay", delay);
                    loop {
                        match self.next_event(&wait, state, bus).await {
                            Ok(_) => {}
                            Err(CytubeError::Timeout(..)) => break,
                            Err(err) => return Err(err),
                        }
                    }
                }
                _ => return Err(CytubeError::Login { name: options.username.clone(), reason }),
            }
        }
    }

    /// Serves the connection: events in, chat out at the allowed rate, heartbeat, until it ends.
    pub(super) async fn serve(
        mut self,
        state: &mut ChannelState,
        bus: &dyn EventBus,
        outgoing: &mut mpsc::Receiver<Handoff>,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        loop {
            let wait = match self.flush(state).await {
                Ok(wait) => wait,
                Err(err) => return SessionEnd::Ended(err),
            };
            // Not biased: a flood of incoming frames must not starve sending, timers or shutdown.
            tokio::select! {
                () = shutdown.cancelled() => {
                    self.close().await;
                    return SessionEnd::Shutdown;
                }
                frame = self.socket.next() => {
                    let frame = match read(frame) {
                        Ok(Some(frame)) => frame,
                        Ok(None) => continue,
                        Err(err) => return SessionEnd::Ended(err),
                    };
                    if let Err(err) = self.dispatch(frame, state, bus).await {
                        self.close().await;
                        return SessionEnd::Ended(err);
                    }
                }
                // Always taken: the outbox bounds itself, dropping its oldest lines when full.
                message = outgoing.recv() => {
                    match message {
                        Some((message, settled)) => state.outbox.push_settled(message, settled),
                        // The bus side is gone: nothing more to say.
                        None => {
                            self.close().await;
                            return SessionEnd::Shutdown;
                        }
                    }
                }
                () = tokio::time::sleep(wait.unwrap_or_default()), if wait.is_some() => {}
                () = tokio::time::sleep_until(self.ping_deadline) => {
                    self.close().await;
                    return SessionEnd::Ended(CytubeError::Lost(format!(
                        "no heartbeat from the server for {:?}", self.heartbeat
                    )));
                }
            }
        }
    }

    /// Sends what the rate limit allows now; returns how long until the next message may go.
    async fn flush(&mut self, state: &mut ChannelState) -> Result<Option<Duration>, CytubeError> {
        loop {
            let now = Instant::now();
            let message = match state.outbox.next(now) {
                Ok(Some(message)) => message,
                Ok(None) => return Ok(None),
                Err(wait) => return Ok(Some(wait)),
            };
            let frame = match &message {
                Outgoing::Chat(text) => Frame::event("chatMsg", json!({"msg": text, "meta": {}})),
                Outgoing::Pm { to, text } => {
                    Frame::event("pm", json!({"to": to, "msg": text, "meta": {}}))
                }
            };
            // Recorded before writing: what is in flight (this one included, should the write fail)
            // is sent again after a reconnect. Counted as sent once handed to the connection (a
            // line written again after a reconnect or a cooldown counts again).
            state.outbox.sent(&message, now);
            state.stats.chat_sent();
            self.send(&frame).await?;
        }
    }

    /// Takes one frame of a served connection into account.
    async fn dispatch(
        &mut self,
        frame: Frame,
        state: &mut ChannelState,
        bus: &dyn EventBus,
    ) -> Result<(), CytubeError> {
        match frame {
            Frame::Ping => {
                self.ping_deadline = tokio::time::Instant::now() + self.heartbeat;
                self.send(&Frame::Pong).await
            }
            Frame::Event { name, arg } => {
                if name == "kick" {
                    return Err(kicked(arg.as_ref()));
                }
                state.observe(bus, &name, arg.as_ref()).await;
                Ok(())
            }
            Frame::Disconnect => Err(CytubeError::Lost("the server ended the session".into())),
            _ => Ok(()),
        }
    }

    /// The next frame of the handshake, answering pings on the way.
    async fn next_frame(&mut self, step: &Step) -> Result<Frame, CytubeError> {
        loop {
            let frame = tokio::time::timeout_at(step.deadline, self.socket.next())
                .await
                .map_err(|_| CytubeError::Timeout(step.name, step.timeout))?;
            match read(frame)? {
                Some(Frame::Ping) => {
                    self.ping_deadline = tokio::time::Instant::now() + self.heartbeat;
                    self.send(&Frame::Pong).await?;
                }
                Some(Frame::Disconnect) => {
                    return Err(CytubeError::Lost("the server ended the session".into()));
                }
                Some(frame) => return Ok(frame),
                None => {}
            }
        }
    }

    /// The next event of the handshake, taken into `state` first; a `kick` ends the handshake.
    async fn next_event(
        &mut self,
        step: &Step,
        state: &mut ChannelState,
        bus: &dyn EventBus,
    ) -> Result<(String, Option<Value>), CytubeError> {
        loop {
            if let Frame::Event { name, arg } = self.next_frame(step).await? {
                if name == "kick" {
                    return Err(kicked(arg.as_ref()));
                }
                state.observe(bus, &name, arg.as_ref()).await;
                return Ok((name, arg));
            }
        }
    }

    async fn send(&mut self, frame: &Frame) -> Result<(), CytubeError> {
        self.socket
            .send(WsMessage::text(frame.encode()))
            .await
            .map_err(|err| CytubeError::Lost(err.to_string()))
    }

    /// Closes the websocket politely, without waiting long for a dead peer.
    pub(super) async fn close(&mut self) {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.socket.close(None)).await;
    }
}

/// Reads a websocket message: `Ok(None)` for what is not a text frame or not understood (logged),
/// an error when the connection is gone.
fn read(
    message: Option<Result<WsMessage, tokio_tungstenite::tungstenite::Error>>,
) -> Result<Option<Frame>, CytubeError> {
    match message {
        None => Err(CytubeError::Lost("the server closed the connection".into())),
        Some(Err(err)) => Err(CytubeError::Lost(err.to_string())),
        Some(Ok(WsMessage::Close(close))) => Err(CytubeError::Lost(match close {
            Some(close) => format!("the server closed the connection ({})", close.code),
            None => "the server closed the connection".to_owned(),
        })),
        Some(Ok(WsMessage::Text(text))) => match Frame::parse(text.as_str()) {
            Ok(frame) => Ok(Some(frame)),
            Err(error) => {
                tracing::debug!(message = "unreadable CyTube frame ignored", %error);
                Ok(None)
            }
        },
        Some(Ok(_)) => Ok(None),
    }
}

fn kicked(arg: Option<&Value>) -> CytubeError {
    let reason = arg.and_then(|a| a.get("reason")).and_then(Value::as_str).unwrap_or("no reason");
    CytubeError::Kicked(reason.to_owned())
}

/// The delay in "Guest logins are restricted to one per IP address per 60 seconds.", if that is what
/// the login error says.
fn guest_login_delay(reason: &str) -> Option<Duration> {
    if !reason.starts_with("Guest logins are restricted") {
        return None;
    }
    let seconds = reason
        .split(|c: char| !c.is_ascii_digit())
        .find(|part| !part.is_empty())
        .and_then(|n| n.parse::<u64>().ok())?;
    // A little past the server's own limit, so the retry is not refused again.
    Some(Duration::from_secs(seconds) + Duration::from_millis(500))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_login_delay_is_read_from_the_servers_words() {
        assert_eq!(
            guest_login_delay("Guest logins are restricted to one per IP address per 60 seconds."),
            Some(Duration::from_millis(60_500))
        );
        assert_eq!(guest_login_delay("That name is already in use on this channel."), None);
        assert_eq!(guest_login_delay("Guest logins are restricted"), None);
    }
}
