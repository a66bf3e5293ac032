//! The socket.io listener and one task per websocket: Engine.IO open packet,
//! heartbeat, and the bridge between the socket and the shared state.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::Message;

use crate::ServerEvent;
use crate::state::{Conn, Inner, Namespace, Out};
use crate::wire::{self, js};

/// How long a client may take for the websocket handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts websockets until shutdown.
pub(crate) async fn serve(
    inner: Arc<Inner>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<()>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracing::debug!(%peer, "fake cytube: socket.io connection");
                    tokio::spawn(handle(inner.clone(), stream, shutdown.clone()));
                }
                Err(e) => tracing::warn!(error = %e, "fake cytube: socket.io accept failed"),
            },
            _ = shutdown.changed() => break,
        }
    }
}

async fn handle(inner: Arc<Inner>, stream: TcpStream, mut shutdown: watch::Receiver<()>) {
    let ws = tokio::select! {
        ws = tokio::time::timeout(HANDSHAKE_TIMEOUT, tokio_tungstenite::accept_async(stream)) => ws,
        _ = shutdown.changed() => return,
    };
    let ws = match ws {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "fake cytube: websocket handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!("fake cytube: websocket handshake timed out");
            return;
        }
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (id, ping_interval, ping_timeout) = {
        let mut st = inner.state.lock();
        st.next_conn += 1;
        let id = st.next_conn;
        st.conns.insert(
            id,
            Conn {
                tx,
                ns: Namespace::Pending,
                channel: None,
                pending_password: None,
                early_login: None,
                limiter: Default::default(),
            },
        );
        st.emit(ServerEvent::Connected { conn: id });
        (id, st.options.ping_interval, st.options.ping_timeout)
    };
    let (mut sink, mut source) = ws.split();
    let open = format!(
        r#"0{{"sid":{},"upgrades":[],"pingInterval":{},"pingTimeout":{},"maxPayload":1048576}}"#,
        js(&wire::sid()),
        ping_interval.as_millis(),
        ping_timeout.as_millis()
    );
    let mut alive = sink.send(Message::text(open)).await.is_ok();
    let mut next_ping = Instant::now() + ping_interval;
    let mut pong_deadline: Option<Instant> = None;
    let mut stalled = false;
    while alive {
        let wake = pong_deadline.unwrap_or(next_ping);
        tokio::select! {
            _ = shutdown.changed() => alive = false,
            out = rx.recv() => match out {
                Some(Out::Text(frame)) => alive = sink.send(Message::text(frame)).await.is_ok(),
                Some(Out::Close) => {
                    let _ = sink.send(Message::Close(None)).await;
                    alive = false;
                }
                Some(Out::Stall) => {
                    tracing::debug!(conn = id, "fake cytube: stalling until the ping timeout");
                    tokio::select! {
                        _ = shutdown.changed() => {}
                        () = tokio::time::sleep(ping_timeout) => {}
                    }
                    stalled = true;
                    alive = false;
                }
                Some(Out::Abort) | None => alive = false,
            },
            msg = source.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let text = text.as_str();
                    tracing::trace!(conn = id, frame = text, "fake cytube <-");
                    let mut st = inner.state.lock();
                    st.emit(ServerEvent::Received { conn: id, frame: text.to_owned() });
                    if text == "3" {
                        pong_deadline = None;
                        next_ping = Instant::now() + ping_interval;
                        st.emit(ServerEvent::Pong { conn: id });
                    } else {
                        st.handle_frame(id, text);
                    }
                }
                Some(Ok(Message::Close(_))) => {
                    // Let tungstenite send its close reply.
                    let _ = sink.flush().await;
                    alive = false;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(conn = id, error = %e, "fake cytube: websocket error");
                    alive = false;
                }
                None => alive = false,
            },
            () = sleep_until(wake) => {
                if pong_deadline.is_some() {
                    tracing::debug!(conn = id, "fake cytube: ping timeout, closing");
                    let _ = sink.send(Message::Close(None)).await;
                    alive = false;
                } else {
                    alive = sink.send(Message::text("2")).await.is_ok();
                    pong_deadline = Some(Instant::now() + ping_timeout);
                }
            }
        }
    }
    {
        let mut st = inner.state.lock();
        st.leave_channel(id);
        st.conns.remove(&id);
        st.emit(ServerEvent::Disconnected { conn: id });
    }
    if stalled {
        // The server has given the connection up, but its close never reaches the client across a
        // dark network: the socket stays open and silent, and the client must notice by itself.
        let _ = shutdown.changed().await;
    }
    // Dropping both halves closes the TCP connection.
    drop((sink, source));
}
