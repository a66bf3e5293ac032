//! The fault-injecting proxy in front of a real upstream: an echo server in this test, and the real
//! PostgreSQL at `ROSEY_TEST_POSTGRES_URL` spoken to raw.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rosey_testkit::FaultProxy;
use rosey_testkit::proxy::url_host_port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

/// How long anything that should happen may take.
const WAIT: Duration = Duration::from_secs(5);
/// How long a read must stay unanswered to count as hanging.
const HANG: Duration = Duration::from_millis(300);

/// A TCP echo server on loopback that reports each connection it closes.
struct Echo {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    closed: mpsc::UnboundedReceiver<()>,
}

impl Echo {
    async fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicU64::new(0));
        let (closed_tx, closed) = mpsc::unbounded_channel();
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let closed_tx = closed_tx.clone();
                tokio::spawn(async move {
                    let mut buf = [0; 4096];
                    while let Ok(n @ 1..) = conn.read(&mut buf).await {
                        if conn.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = closed_tx.send(());
                });
            }
        });
        Echo { addr, accepted, closed }
    }

    async fn wait_closed(&mut self) {
        timeout(WAIT, self.closed.recv())
            .await
            .expect("the upstream connection stays open")
            .unwrap();
    }
}

async fn connect(proxy: &FaultProxy) -> TcpStream {
    let stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Sends `text` and reads it back.
async fn echo(stream: &mut TcpStream, text: &str) {
    stream.write_all(text.as_bytes()).await.unwrap();
    assert_eq!(read_text(stream, text.len()).await, text);
}

async fn read_text(stream: &mut TcpStream, len: usize) -> String {
    let mut buf = vec![0; len];
    timeout(WAIT, stream.read_exact(&mut buf)).await.expect("no answer").unwrap();
    String::from_utf8(buf).unwrap()
}

/// The connection ends (end of stream or reset) without sending anything more.
async fn assert_closed(stream: &mut TcpStream) {
    let mut buf = [0; 64];
    match timeout(WAIT, stream.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => {}
        Ok(Ok(n)) => panic!("expected the connection closed, got {n} bytes"),
        Err(_) => panic!("the connection stays open"),
    }
}

/// Nothing arrives for [`HANG`].
async fn assert_hangs(stream: &mut TcpStream) {
    let mut buf = [0; 64];
    if let Ok(read) = timeout(HANG, stream.read(&mut buf)).await {
        panic!("expected the connection to hang, the read returned {read:?}");
    }
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "not within {WAIT:?}: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn forwards_both_ways_and_counts_connections_and_bytes() {
    let echo_server = Echo::start().await;
    let proxy = FaultProxy::start(echo_server.addr).await.unwrap();
    assert_eq!(proxy.addr().ip().to_string(), "127.0.0.1");
    assert_eq!(proxy.port(), proxy.addr().port());

    let mut a = connect(&proxy).await;
    let mut b = connect(&proxy).await;
    echo(&mut a, "hello").await;
    echo(&mut b, "world!").await;
    eventually("both answers counted", || proxy.stats().bytes_to_client == 11).await;
    let stats = proxy.stats();
    assert_eq!((stats.accepted, stats.open, stats.refused), (2, 2, 0));
    assert_eq!((stats.bytes_to_upstream, stats.bytes_forwarded()), (11, 22));

    drop(a);
    eventually("a closed connection is no longer open", || proxy.stats().open == 1).await;
}

#[tokio::test]
async fn cut_closes_open_connections_and_refuses_new_ones_until_resume() {
    let mut echo_server = Echo::start().await;
    let proxy = FaultProxy::start(echo_server.addr).await.unwrap();
    let mut open = connect(&proxy).await;
    echo(&mut open, "before").await;

    proxy.cut();
    assert_closed(&mut open).await;
    echo_server.wait_closed().await; // the server side is closed too

    let mut refused = connect(&proxy).await; // accepted by the kernel, closed by the proxy
    assert_closed(&mut refused).await;
    eventually("the refusal counted", || proxy.stats().refused == 1).await;
    assert_eq!(
        echo_server.accepted.load(Ordering::SeqCst),
        1,
        "a refused connection reached the server"
    );

    proxy.resume();
    let mut fresh = connect(&proxy).await;
    echo(&mut fresh, "after").await;
    // The connection cut stays closed.
    let _ = open.write_all(b"x").await;
    assert_closed(&mut open).await;
}

#[tokio::test]
async fn stall_hangs_every_connection_until_resume_then_delivers() {
    let echo_server = Echo::start().await;
    let proxy = FaultProxy::start(echo_server.addr).await.unwrap();
    let mut open = connect(&proxy).await;
    echo(&mut open, "warm").await;

    proxy.stall();
    open.write_all(b"held").await.unwrap();
    let mut new = connect(&proxy).await;
    new.write_all(b"waiting").await.unwrap();
    tokio::join!(assert_hangs(&mut open), assert_hangs(&mut new));
    assert_eq!(
        echo_server.accepted.load(Ordering::SeqCst),
        1,
        "a stalled connection reached the server"
    );
    eventually("both connections open", || proxy.stats().open == 2).await;

    proxy.resume();
    assert_eq!(read_text(&mut open, 4).await, "held");
    assert_eq!(read_text(&mut new, 7).await, "waiting");
    echo(&mut open, "flowing").await;
}

#[tokio::test]
async fn cut_also_closes_stalled_connections() {
    let mut echo_server = Echo::start().await;
    let proxy = FaultProxy::start(echo_server.addr).await.unwrap();
    let mut open = connect(&proxy).await;
    echo(&mut open, "warm").await;
    proxy.stall();
    let mut new = connect(&proxy).await;
    eventually("the stalled connection accepted", || proxy.stats().open == 2).await;

    proxy.cut();
    assert_closed(&mut open).await;
    assert_closed(&mut new).await;
    echo_server.wait_closed().await;
}

#[tokio::test]
async fn delay_adds_latency_to_each_direction_and_resume_removes_it() {
    let echo_server = Echo::start().await;
    let proxy = FaultProxy::start(echo_server.addr).await.unwrap();
    let mut conn = connect(&proxy).await;
    echo(&mut conn, "warm").await;

    let latency = Duration::from_millis(150);
    proxy.delay(latency);
    let started = Instant::now();
    echo(&mut conn, "slow").await;
    let round_trip = started.elapsed();
    assert!(round_trip >= 2 * latency, "round trip {round_trip:?} with {latency:?} each way");

    // Latency delays, it does not reorder or lose.
    conn.write_all(b"one").await.unwrap();
    conn.write_all(b"two").await.unwrap();
    assert_eq!(read_text(&mut conn, 6).await, "onetwo");

    proxy.resume();
    echo(&mut conn, "fast").await;
    let mut fresh = connect(&proxy).await;
    echo(&mut fresh, "fresh").await;
}

#[tokio::test]
async fn half_close_is_passed_on() {
    let echo_server = Echo::start().await;
    let proxy = FaultProxy::start(echo_server.addr).await.unwrap();
    let mut conn = connect(&proxy).await;
    conn.write_all(b"last words").await.unwrap();
    conn.shutdown().await.unwrap();
    assert_eq!(read_text(&mut conn, 10).await, "last words");
    assert_closed(&mut conn).await; // the server saw the end and closed its side
}

#[tokio::test]
async fn an_unreachable_upstream_closes_the_client_connection() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    };
    let proxy = FaultProxy::start(("127.0.0.1", port)).await.unwrap();
    let mut conn = connect(&proxy).await;
    assert_closed(&mut conn).await;
}

#[tokio::test]
async fn dropping_the_proxy_closes_its_connections_and_its_port() {
    let mut echo_server = Echo::start().await;
    let proxy = FaultProxy::start(echo_server.addr).await.unwrap();
    let addr = proxy.addr();
    let mut conn = connect(&proxy).await;
    echo(&mut conn, "hi").await;

    drop(proxy);
    assert_closed(&mut conn).await;
    echo_server.wait_closed().await;
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "the proxy's port still accepts connections");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn proxied_url_points_at_the_proxy_and_keeps_the_rest() {
    let echo_server = Echo::start().await;
    let proxy = FaultProxy::start(echo_server.addr).await.unwrap();
    let port = proxy.port();
    assert_eq!(
        proxy.proxied_url("postgres://rosey:s3cret@db.example:5432/rosey?sslmode=disable"),
        format!("postgres://rosey:s3cret@127.0.0.1:{port}/rosey?sslmode=disable")
    );
    assert_eq!(proxy.proxied_url("nats://127.0.0.1:4222"), format!("nats://127.0.0.1:{port}"));
    assert_eq!(proxy.proxied_url("postgres://db/x"), format!("postgres://127.0.0.1:{port}/x"));
}

// --- the real PostgreSQL ---------------------------------------------------------------------------

fn postgres_url() -> String {
    std::env::var("ROSEY_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// PostgreSQL's SSLRequest: length 8, code 80877103. The server answers one byte, `S` or `N`.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

async fn ssl_answer(conn: &mut TcpStream) -> u8 {
    let mut answer = [0; 1];
    timeout(WAIT, conn.read_exact(&mut answer)).await.expect("PostgreSQL did not answer").unwrap();
    answer[0]
}

#[tokio::test]
async fn real_postgres_answers_through_the_proxy_and_loses_the_connection_on_cut() {
    let url = postgres_url();
    let proxy = FaultProxy::start_for_url(&url).await.unwrap();
    assert_eq!(url_host_port(&proxy.proxied_url(&url)), Some(proxy.addr().to_string()));

    let mut conn = connect(&proxy).await;
    conn.write_all(&SSL_REQUEST).await.unwrap();
    let answer = ssl_answer(&mut conn).await;
    assert!(answer == b'N' || answer == b'S', "not PostgreSQL's answer to SSLRequest: {answer}");

    proxy.stall();
    let mut stalled = connect(&proxy).await;
    stalled.write_all(&SSL_REQUEST).await.unwrap();
    assert_hangs(&mut stalled).await;
    proxy.resume();
    assert_eq!(ssl_answer(&mut stalled).await, answer);

    proxy.cut();
    assert_closed(&mut conn).await;
    assert_closed(&mut stalled).await;
    let mut refused = connect(&proxy).await;
    assert_closed(&mut refused).await;

    proxy.resume();
    let mut again = connect(&proxy).await;
    again.write_all(&SSL_REQUEST).await.unwrap();
    assert_eq!(ssl_answer(&mut again).await, answer);
}
