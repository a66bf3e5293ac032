//! [`FaultProxy`]: a TCP proxy on loopback that breaks the connection to a real server on demand,
//! so tests can see how a client copes with a lost, hung or slow peer without touching the server.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::time::Duration;
//! use rosey_testkit::FaultProxy;
//!
//! let url = "postgres://postgres@127.0.0.1:5432/postgres";
//! let proxy = FaultProxy::start_for_url(url).await?;
//! let through_proxy = proxy.proxied_url(url); // postgres://postgres@127.0.0.1:<proxy port>/postgres
//! // ... connect the client under test to `through_proxy` ...
//! proxy.cut(); // every open connection is closed, new ones are refused
//! proxy.resume(); // new connections work again
//! proxy.stall(); // connections stay open, nothing moves
//! proxy.delay(Duration::from_millis(50)); // and then moves slowly
//! # let _ = through_proxy; Ok(()) }
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs, lookup_host};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Bytes read from one side in one go.
const CHUNK_BYTES: usize = 16 * 1024;
/// Chunks read but not yet written, per direction (what a stalled or delayed connection buffers).
const CHUNKS_IN_FLIGHT: usize = 64;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forward both ways.
    Forward,
    /// Hold every byte; new connections are accepted and left waiting.
    Stall,
    /// Close new connections as soon as they are accepted.
    Refuse,
}

#[derive(Debug, Clone, Copy)]
struct Control {
    mode: Mode,
    /// Latency added to each chunk, in each direction.
    delay: Duration,
    /// How many times [`FaultProxy::cut`] was called; a connection ends when it changes.
    cuts: u64,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
    open: AtomicU64,
    to_upstream: AtomicU64,
    to_client: AtomicU64,
}

/// What a [`FaultProxy`] has done so far (see [`FaultProxy::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProxyStats {
    /// Connections accepted from clients, including the refused ones.
    pub accepted: u64,
    /// Connections closed at once because the proxy was cut.
    pub refused: u64,
    /// Client connections open now.
    pub open: u64,
    /// Bytes written to the upstream server.
    pub bytes_to_upstream: u64,
    /// Bytes written back to clients.
    pub bytes_to_client: u64,
}

impl ProxyStats {
    /// Bytes forwarded in both directions.
    pub fn bytes_forwarded(&self) -> u64 {
        self.bytes_to_upstream + self.bytes_to_client
    }
}

/// A TCP proxy on `127.0.0.1:<free port>` forwarding to one upstream server, with faults on demand:
/// [`cut`](Self::cut), [`stall`](Self::stall), [`delay`](Self::delay), [`resume`](Self::resume).
///
/// Each fault applies at once to every connection, open or new. Dropping the proxy closes its port
/// and every connection through it.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    control: watch::Sender<Control>,
    counters: Arc<Counters>,
    accept_task: JoinHandle<()>,
}

impl FaultProxy {
    /// Resolves `upstream` (e.g. `"127.0.0.1:5432"`, `("localhost", 5432)` or a `SocketAddr`), binds
    /// a free port on 127.0.0.1 and starts forwarding on the current tokio runtime. Each new
    /// connection connects to the upstream when it arrives; one that cannot is closed.
    ///
    /// # Errors
    /// When `upstream` does not resolve, or the port cannot be bound.
    pub async fn start(upstream: impl ToSocketAddrs) -> io::Result<Self> {
        let upstream: Arc<[SocketAddr]> = lookup_host(upstream).await?.collect();
        if upstream.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "upstream resolves to no address",
            ));
        }
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (control, control_rx) =
            watch::channel(Control { mode: Mode::Forward, delay: Duration::ZERO, cuts: 0 });
        let counters = Arc::new(Counters::default());
        let accept_task =
            tokio::spawn(accept_loop(listener, upstream.clone(), control_rx, counters.clone()));
        tracing::debug!(%addr, upstream = ?upstream, "fault proxy started");
        Ok(FaultProxy { addr, control, counters, accept_task })
    }

    /// [`start`](Self::start) in front of the server of `url` (`scheme://[user[:password]@]host[:port]/…`;
    /// without a port, the scheme's: 5432 for `postgres`/`postgresql`, 4222 for `nats`, 80 for
    /// `http`, 443 for `https`).
    ///
    /// # Errors
    /// When `url` names no host and port, or as [`start`](Self::start).
    pub async fn start_for_url(url: &str) -> io::Result<Self> {
        let upstream = url_host_port(url).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "the URL names no host and port")
        })?;
        Self::start(upstream).await
    }

    /// The proxy's address: `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `url` with its host and port replaced by the proxy's (user, password, path and query kept):
    /// `postgres://u:pw@db.example:5432/rosey?sslmode=disable` becomes
    /// `postgres://u:pw@127.0.0.1:<port>/rosey?sslmode=disable`. A string without `://` is returned
    /// unchanged.
    pub fn proxied_url(&self, url: &str) -> String {
        match split_url(url) {
            Some((head, _, tail)) => format!("{head}{}{tail}", self.addr),
            None => url.to_owned(),
        }
    }

    /// Closes every open connection now (both sides see the connection end) and closes each new one
    /// as soon as it is accepted, until [`resume`](Self::resume) or [`stall`](Self::stall).
    pub fn cut(&self) {
        tracing::debug!(addr = %self.addr, "fault proxy: cut");
        self.control.send_modify(|c| {
            c.mode = Mode::Refuse;
            c.cuts += 1;
        });
    }

    /// Makes the peer hang: connections stay open but nothing is forwarded either way; new
    /// connections are accepted but not forwarded (not even connected upstream). What was sent
    /// meanwhile is delivered after [`resume`](Self::resume).
    pub fn stall(&self) {
        tracing::debug!(addr = %self.addr, "fault proxy: stall");
        self.control.send_modify(|c| c.mode = Mode::Stall);
    }

    /// Adds `latency` to every chunk forwarded from now on, in each direction (so a request and
    /// its answer take at least twice `latency` more). `Duration::ZERO` removes it. Independent of
    /// [`stall`](Self::stall) and [`cut`](Self::cut).
    pub fn delay(&self, latency: Duration) {
        tracing::debug!(addr = %self.addr, ?latency, "fault proxy: delay");
        self.control.send_modify(|c| c.delay = latency);
    }

    /// Back to plain forwarding: no stall, no delay, new connections work. Connections closed by
    /// [`cut`](Self::cut) stay closed; stalled ones deliver what they held.
    pub fn resume(&self) {
        tracing::debug!(addr = %self.addr, "fault proxy: resume");
        self.control.send_modify(|c| {
            c.mode = Mode::Forward;
            c.delay = Duration::ZERO;
        });
    }

    /// Connections and bytes so far.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.counters;
        ProxyStats {
            accepted: c.accepted.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            open: c.open.load(Ordering::Relaxed),
            bytes_to_upstream: c.to_upstream.load(Ordering::Relaxed),
            bytes_to_client: c.to_client.load(Ordering::Relaxed),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // The accept task owns the listener and the JoinSet of connections: aborting it closes all.
        self.accept_task.abort();
    }
}

/// `host:port` of `url` (see [`FaultProxy::start_for_url`] for the default ports), or `None` when
/// it has no `scheme://` or no host, or no port and a scheme without a known default.
pub fn url_host_port(url: &str) -> Option<String> {
    let (head, host_port, _) = split_url(url)?;
    if host_port.is_empty() || host_port.starts_with(':') {
        return None;
    }
    // A port follows the last ':' unless that colon is inside an IPv6 literal `[…]`.
    let has_port = host_port.rfind(':').is_some_and(|i| !host_port[i..].contains(']'));
    if has_port {
        return Some(host_port.to_owned());
    }
    let scheme = head.split("://").next().unwrap_or_default().to_ascii_lowercase();
    let port = match scheme.as_str() {
        "postgres" | "postgresql" => 5432,
        "nats" => 4222,
        "http" | "ws" => 80,
        "https" | "wss" => 443,
        _ => return None,
    };
    Some(format!("{host_port}:{port}"))
}

/// Splits `url` into (`scheme://user@`, `host:port`, `/path?query#fragment`).
fn split_url(url: &str) -> Option<(&str, &str, &str)> {
    let start = url.find("://")? + 3;
    let end = url[start..].find(['/', '?', '#']).map_or(url.len(), |i| start + i);
    let host_start = url[start..end].rfind('@').map_or(start, |i| start + i + 1);
    Some((&url[..host_start], &url[host_start..end], &url[end..]))
}

async fn accept_loop(
    listener: TcpListener,
    upstream: Arc<[SocketAddr]>,
    control: watch::Receiver<Control>,
    counters: Arc<Counters>,
) {
    // Dropping this loop (abort) drops the set, which aborts every connection task.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    counters.accepted.fetch_add(1, Ordering::Relaxed);
                    if control.borrow().mode == Mode::Refuse {
                        counters.refused.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, "fault proxy: connection refused (cut)");
                        drop(client);
                        continue;
                    }
                    connections.spawn(connection(
                        client,
                        upstream.clone(),
                        control.clone(),
                        counters.clone(),
                    ));
                }
                Err(error) => {
                    // Out of file descriptors and the like: wait a little instead of spinning.
                    tracing::warn!(%error, "fault proxy: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Decrements the open-connection count however the connection task ends (also when aborted).
struct OpenGuard(Arc<Counters>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn connection(
    client: TcpStream,
    upstream: Arc<[SocketAddr]>,
    mut control: watch::Receiver<Control>,
    counters: Arc<Counters>,
) {
    counters.open.fetch_add(1, Ordering::Relaxed);
    let _open = OpenGuard(counters.clone());
    let cuts = control.borrow_and_update().cuts;
    let forward = forward(client, upstream, control.clone(), counters);
    tokio::select! {
        result = forward => {
            if let Err(error) = result {
                tracing::debug!(%error, "fault proxy: connection ended");
            }
        }
        // Also ends when the proxy is gone (the sender dropped).
        _ = control.wait_for(|c| c.cuts != cuts) => {
            tracing::debug!("fault proxy: connection cut");
        }
    }
}

async fn forward(
    client: TcpStream,
    upstream: Arc<[SocketAddr]>,
    control: watch::Receiver<Control>,
    counters: Arc<Counters>,
) -> io::Result<()> {
    flowing(&mut control.clone()).await?;
    let server = TcpStream::connect(&upstream[..]).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::try_join!(
        pipe(client_read, server_write, control.clone(), &counters.to_upstream),
        pipe(server_read, client_write, control, &counters.to_client),
    )?;
    Ok(())
}

/// Waits until the proxy is not stalled.
async fn flowing(control: &mut watch::Receiver<Control>) -> io::Result<()> {
    match control.wait_for(|c| c.mode != Mode::Stall).await {
        Ok(_) => Ok(()),
        Err(_) => Err(io::Error::new(io::ErrorKind::ConnectionAborted, "the proxy is gone")),
    }
}

/// Copies one direction, chunk by chunk, each held until the proxy flows and its delay has passed;
/// an end of stream is passed on as a half close.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    control: watch::Receiver<Control>,
    bytes: &AtomicU64,
) -> io::Result<()> {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(CHUNKS_IN_FLIGHT);
    let read_control = control.clone();
    // Reading goes on while a chunk waits, so latency does not cut throughput.
    let read = async move {
        loop {
            let mut chunk = vec![0; CHUNK_BYTES];
            let n = from.read(&mut chunk).await?;
            if n == 0 {
                return Ok::<_, io::Error>(());
            }
            chunk.truncate(n);
            let due = Instant::now() + read_control.borrow().delay;
            if tx.send((due, chunk)).await.is_err() {
                return Ok(());
            }
        }
    };
    let write = async move {
        let mut control = control;
        while let Some((due, chunk)) = rx.recv().await {
            loop {
                flowing(&mut control).await?;
                tokio::time::sleep_until(due).await;
                // A stall that began during the delay holds the chunk too.
                if control.borrow().mode != Mode::Stall {
                    break;
                }
            }
            to.write_all(&chunk).await?;
            bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        flowing(&mut control).await?;
        to.shutdown().await
    };
    tokio::try_join!(read, write)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{split_url, url_host_port};

    #[test]
    fn url_parts() {
        assert_eq!(
            split_url("postgres://u:p@w@db:5432/x?a=b"),
            Some(("postgres://u:p@w@", "db:5432", "/x?a=b"))
        );
        assert_eq!(split_url("nats://127.0.0.1:4222"), Some(("nats://", "127.0.0.1:4222", "")));
        assert_eq!(split_url("127.0.0.1:4222"), None);
    }

    #[test]
    fn host_port_with_default_ports() {
        assert_eq!(url_host_port("postgres://u@db/x").as_deref(), Some("db:5432"));
        assert_eq!(url_host_port("postgresql://db:6000").as_deref(), Some("db:6000"));
        assert_eq!(url_host_port("nats://[::1]").as_deref(), Some("[::1]:4222"));
        assert_eq!(url_host_port("nats://[::1]:5000").as_deref(), Some("[::1]:5000"));
        assert_eq!(url_host_port("sqlite://rosey.db").as_deref(), None);
        assert_eq!(url_host_port("postgres:///db?host=/tmp"), None);
    }
}
