//! The JetStream building blocks of scale-out: the leader lease (one holder at a time, a successor
//! once the holder is gone) and the outgoing chat queue (stored while nobody sends, delivered in
//! order and once, handed to the next holder when one dies). Each test has a throwaway nats-server
//! with JetStream of its own.

use std::time::Duration;

use bytes::Bytes;
use rosey_core::bus::{EventBus, NatsBus};
use rosey_core::cluster::{ChatQueue, ChatQueueOptions, Lease, LeaseHandle, LeaseOptions};
use rosey_core::subject::{CHAT_SEND, PM_SEND};
use rosey_testkit::FaultProxy;
use rosey_testkit::nats::NatsServer;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

/// How long any awaited event may take before the test fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(10);

/// A short ttl keeps the tests quick: renew every 667 ms, margin 400 ms.
const TTL: Duration = Duration::from_secs(2);

async fn nats() -> NatsServer {
    tokio::task::spawn_blocking(NatsServer::start).await.unwrap()
}

/// A node's bus: its own connection, as a separate `rosey run` process would have.
async fn node_bus(url: &str) -> NatsBus {
    NatsBus::connect(url).await.unwrap()
}

async fn start_lease(bus: &NatsBus, holder: &str) -> LeaseHandle {
    let options = LeaseOptions::new("cytube", holder).with_ttl(TTL);
    Lease::start(bus.client().clone(), options).await.unwrap()
}

/// One observation of both flags.
#[derive(Debug, Clone, Copy)]
struct Seen {
    at: Instant,
    a: bool,
    b: bool,
}

/// Follows two nodes' lease flags, failing at any moment both are true.
struct Monitor {
    task: JoinHandle<Vec<Seen>>,
    latest: watch::Receiver<Option<Seen>>,
}

impl Monitor {
    fn start(mut a: watch::Receiver<bool>, mut b: watch::Receiver<bool>) -> Monitor {
        let (latest_tx, latest) = watch::channel(None);
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            let (mut a_running, mut b_running) = (true, true);
            loop {
                let now = Seen {
                    at: Instant::now(),
                    a: *a.borrow_and_update(),
                    b: *b.borrow_and_update(),
                };
                seen.push(now);
                latest_tx.send_replace(Some(now));
                assert!(!(now.a && now.b), "both nodes held the lease at once: {seen:?}");
                if !a_running && !b_running {
                    return seen;
                }
                tokio::select! {
                    changed = a.changed(), if a_running => a_running = changed.is_ok(),
                    changed = b.changed(), if b_running => b_running = changed.is_ok(),
                }
            }
        });
        Monitor { task, latest }
    }

    /// Waits until the monitor has seen B hold the lease, so stopping B cannot hide it.
    async fn saw_b_hold(&mut self) {
        timeout(PATIENCE, self.latest.wait_for(|seen| seen.is_some_and(|s| s.b)))
            .await
            .unwrap()
            .unwrap();
    }

    /// Everything seen, once both leases have stopped.
    async fn finish(self) -> Vec<Seen> {
        self.task.await.unwrap()
    }
}

async fn until_held(lease: &LeaseHandle) -> Instant {
    let mut held = lease.watch();
    timeout(PATIENCE, held.wait_for(|held| *held))
        .await
        .expect("the lease was not taken in time")
        .unwrap();
    Instant::now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_nodes_holds_a_lease_and_the_other_takes_over_once_it_is_released() {
    let server = nats().await;
    let (bus_a, bus_b) = (node_bus(server.url()).await, node_bus(server.url()).await);
    let a = start_lease(&bus_a, "node-a").await;
    let b = start_lease(&bus_b, "node-b").await;
    assert!(a.held(), "the first node claims a free lease");
    assert!(!b.held(), "the second finds it taken");
    let mut monitor = Monitor::start(a.watch(), b.watch());

    // Renewed: still A's after several ttls.
    let mut b_flag = b.watch();
    let waited = timeout(TTL * 2, b_flag.wait_for(|held| *held)).await;
    assert!(waited.is_err(), "B took a lease A kept renewing");
    assert!(a.held() && !b.held());

    let stopped = Instant::now();
    a.stop().await.unwrap();
    let took_over = until_held(&b).await;
    let renew_every = TTL / 3;
    assert!(
        took_over - stopped <= TTL + renew_every,
        "B took over {:?} after A released it",
        took_over - stopped
    );
    assert!(b.held());
    monitor.saw_b_hold().await;
    b.stop().await.unwrap();
    let seen = monitor.finish().await;
    assert!(seen.iter().any(|s| s.a) && seen.iter().any(|s| s.b), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_loses_nats_lets_go_before_another_node_takes_the_lease() {
    let server = nats().await;
    let proxy = FaultProxy::start_for_url(server.url()).await.unwrap();
    let bus_a = node_bus(&proxy.proxied_url(server.url())).await;
    let bus_b = node_bus(server.url()).await;
    let a = start_lease(&bus_a, "node-a").await;
    let b = start_lease(&bus_b, "node-b").await;
    assert!(a.held() && !b.held());
    let mut monitor = Monitor::start(a.watch(), b.watch());

    proxy.cut(); // A can no longer reach NATS, and cannot renew
    let cut = Instant::now();
    let mut a_flag = a.watch();
    timeout(PATIENCE, a_flag.wait_for(|held| !*held)).await.unwrap().unwrap();
    let let_go = Instant::now();
    let took_over = until_held(&b).await;
    assert!(!a.held(), "A still counts itself holder while B holds");
    assert!(let_go < took_over, "A let go at {let_go:?}, after B took over at {took_over:?}");
    assert!(
        let_go - cut <= TTL,
        "A let go {:?} after losing NATS, later than the server could expire its claim",
        let_go - cut
    );
    assert!(
        took_over - cut <= TTL + TTL / 3 + Duration::from_millis(500),
        "B took over {:?} after A lost NATS",
        took_over - cut
    );

    assert!(!a.held(), "A, still cut off, does not claim the lease back");
    monitor.saw_b_hold().await;
    b.stop().await.unwrap();
    a.stop().await.unwrap();
    let seen = monitor.finish().await;
    let a_last = seen.iter().rev().find(|s| s.a).map(|s| s.at);
    let b_first = seen.iter().find(|s| s.b).map(|s| s.at);
    assert!(a_last < b_first, "the flags overlapped: {seen:?}");
}

/// The chat queue of a test: its own server, so the default names do not collide.
async fn open_queue(bus: &NatsBus, options: &ChatQueueOptions) -> ChatQueue {
    ChatQueue::open(bus.client().clone(), options.clone()).await.unwrap()
}

fn line(n: usize) -> Bytes {
    Bytes::from(format!(r#"{{"channel":"test","message":"reply {n}"}}"#))
}

fn text(payload: &Bytes) -> String {
    String::from_utf8_lossy(payload).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_published_while_no_node_sends_are_delivered_later_in_order_once_each() {
    let server = nats().await;
    let plugin_node = node_bus(server.url()).await;
    let options = ChatQueueOptions::default();
    // Every node opens the queue at start, so the stream exists before anyone replies.
    drop(open_queue(&plugin_node, &options).await);

    for n in 0..20 {
        let subject = if n % 3 == 0 { PM_SEND } else { CHAT_SEND };
        if n % 2 == 0 {
            plugin_node.publish_with_id(subject, &format!("reply-{n}"), line(n)).await.unwrap();
        } else {
            plugin_node.publish(subject, line(n)).await.unwrap();
        }
    }
    plugin_node.flush().await.unwrap();

    // A node takes the connection later and sends what waited.
    let holder = node_bus(server.url()).await;
    let mut queue = open_queue(&holder, &options).await;
    for n in 0..20 {
        let delivery = timeout(PATIENCE, queue.next()).await.unwrap().unwrap();
        assert_eq!(text(delivery.payload()), text(&line(n)), "line {n} in publish order");
        let subject = if n % 3 == 0 { PM_SEND } else { CHAT_SEND };
        assert_eq!(delivery.subject(), subject);
        let id = format!("reply-{n}");
        assert_eq!(delivery.message_id(), (n % 2 == 0).then_some(id.as_str()));
        assert_eq!(delivery.delivery_count(), 1, "line {n} delivered once");
        delivery.ack().await.unwrap();
    }
    assert_eq!(queue.backlog().await.unwrap(), 0, "every acknowledged line is gone for good");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_published_twice_with_one_id_is_stored_once() {
    let server = nats().await;
    let node = node_bus(server.url()).await;
    let options = ChatQueueOptions::default();
    let mut queue = open_queue(&node, &options).await;

    node.publish_with_id(CHAT_SEND, "event-7/0", line(1)).await.unwrap();
    node.publish_with_id(CHAT_SEND, "event-7/0", line(1)).await.unwrap(); // a retry
    node.publish_with_id(CHAT_SEND, "event-7/1", line(2)).await.unwrap();
    // Confirmed publishes on the same connection come after the ones above.
    let again = queue.publish(CHAT_SEND, "event-7/1", line(2)).await.unwrap();
    assert!(again.duplicate, "the server knew the id");
    let last = queue.publish(CHAT_SEND, "event-8/0", line(3)).await.unwrap();
    assert!(!last.duplicate);
    assert_eq!(queue.backlog().await.unwrap(), 3, "three lines stored, not five");

    let mut got = Vec::new();
    for _ in 0..3 {
        let delivery = timeout(PATIENCE, queue.next()).await.unwrap().unwrap();
        got.push(text(delivery.payload()));
        delivery.ack().await.unwrap();
    }
    assert_eq!(got, [text(&line(1)), text(&line(2)), text(&line(3))]);
    assert_eq!(queue.backlog().await.unwrap(), 0);
    assert!(queue.publish(CHAT_SEND, "", line(4)).await.is_err(), "an empty id is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_its_holder_never_acknowledged_goes_to_the_next_holder_after_ack_wait() {
    let server = nats().await;
    let options =
        ChatQueueOptions { ack_wait: Duration::from_secs(1), ..ChatQueueOptions::default() };
    let node_a = node_bus(server.url()).await;
    let mut queue_a = open_queue(&node_a, &options).await;
    queue_a.publish(CHAT_SEND, "one", line(1)).await.unwrap();
    queue_a.publish(CHAT_SEND, "two", line(2)).await.unwrap();

    // A takes the first line and dies before acknowledging it.
    let in_doubt = timeout(PATIENCE, queue_a.next()).await.unwrap().unwrap();
    assert_eq!((in_doubt.message_id(), in_doubt.delivery_count()), (Some("one"), 1));
    let taken = Instant::now();
    drop(in_doubt);
    drop(queue_a);
    drop(node_a);

    // B, the next holder, gets that line first, once ack_wait has run out, marked as redelivered.
    let node_b = node_bus(server.url()).await;
    let mut queue_b = open_queue(&node_b, &options).await;
    let again = timeout(PATIENCE, queue_b.next()).await.unwrap().unwrap();
    assert_eq!(again.message_id(), Some("one"), "the unacknowledged line comes first");
    assert!(again.delivery_count() >= 2, "marked as delivered before");
    assert!(taken.elapsed() >= Duration::from_millis(900), "not before ack_wait");
    again.ack().await.unwrap();

    // A line given back unsent comes back at once, before the next one.
    let second = timeout(PATIENCE, queue_b.next()).await.unwrap().unwrap();
    assert_eq!((second.message_id(), second.delivery_count()), (Some("two"), 1));
    second.nak().await.unwrap();
    let second = timeout(PATIENCE, queue_b.next()).await.unwrap().unwrap();
    assert_eq!((second.message_id(), second.delivery_count()), (Some("two"), 2));
    second.ack().await.unwrap();
    assert_eq!(queue_b.backlog().await.unwrap(), 0);
}
