//! One conformance suite for every `EventBus`: the same cases run against `MemoryBus` and against a real
//! NATS server (127.0.0.1:4222, or `ROSEY_TEST_NATS_URL`). Each test uses its own subject prefix so
//! tests can share the server.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use rosey_core::bus::{BusError, EventBus, EventBusExt, Message, Subscription};
use tokio::sync::mpsc;

use crate::support::unique_prefix;

/// How long any single awaited delivery may take before the test fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(10);

/// Gives a test connections to one bus. For NATS each connection is a separate client, like separate
/// Rosey nodes; for the memory bus they are clones of one bus.
pub(crate) trait Harness: Sync {
    type Bus: EventBus + Clone;
    async fn connect(&self) -> Self::Bus;
}

async fn next(sub: &mut Subscription) -> Message {
    match tokio::time::timeout(PATIENCE, sub.next()).await {
        Ok(Some(msg)) => msg,
        Ok(None) => panic!("subscription ended unexpectedly"),
        Err(_) => panic!("no message within {PATIENCE:?}"),
    }
}

fn text(msg: &Message) -> String {
    String::from_utf8_lossy(msg.payload()).into_owned()
}

/// Reads until a message with payload `end` arrives; returns everything before it, as `subject=payload`.
async fn until_end(sub: &mut Subscription) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let msg = next(sub).await;
        if text(&msg) == "end" {
            return seen;
        }
        seen.push(format!("{}={}", msg.subject(), text(&msg)));
    }
}

pub(crate) async fn wildcards_deliver_what_they_match<H: Harness>(h: &H) {
    let p = unique_prefix();
    let subscriber = h.connect().await;
    let publisher = h.connect().await;
    let mut exact = subscriber.subscribe(&format!("{p}.chat.message")).await.unwrap();
    let mut star = subscriber.subscribe(&format!("{p}.chat.*")).await.unwrap();
    let mut rest = subscriber.subscribe(&format!("{p}.>")).await.unwrap();
    let mut middle = subscriber.subscribe(&format!("{p}.*.message")).await.unwrap();

    for (subject, payload) in [
        ("chat.message", "1"),
        ("chat.send", "2"),
        ("x.y.z", "3"),
        ("chat.message.extra", "4"),
        ("pm.message", "5"),
        ("chat.message", "end"),
    ] {
        publisher.publish(&format!("{p}.{subject}"), Bytes::from(payload)).await.unwrap();
    }

    assert_eq!(until_end(&mut exact).await, [format!("{p}.chat.message=1")]);
    assert_eq!(
        until_end(&mut star).await,
        [format!("{p}.chat.message=1"), format!("{p}.chat.send=2")]
    );
    assert_eq!(
        until_end(&mut rest).await,
        [
            format!("{p}.chat.message=1"),
            format!("{p}.chat.send=2"),
            format!("{p}.x.y.z=3"),
            format!("{p}.chat.message.extra=4"),
            format!("{p}.pm.message=5"),
        ]
    );
    assert_eq!(
        until_end(&mut middle).await,
        [format!("{p}.chat.message=1"), format!("{p}.pm.message=5")]
    );
}

pub(crate) async fn one_publisher_is_received_in_order<H: Harness>(h: &H) {
    let p = unique_prefix();
    let subscriber = h.connect().await;
    let publisher = h.connect().await;
    let subject = format!("{p}.seq");
    let mut a = subscriber.subscribe(&subject).await.unwrap();
    let mut b = subscriber.subscribe(&format!("{p}.*")).await.unwrap();
    for i in 0..1000u32 {
        publisher.publish(&subject, Bytes::from(i.to_string())).await.unwrap();
    }
    for i in 0..1000u32 {
        assert_eq!(text(&next(&mut a).await), i.to_string());
        assert_eq!(text(&next(&mut b).await), i.to_string());
    }
}

pub(crate) async fn a_queue_group_delivers_each_message_to_exactly_one_member<H: Harness>(h: &H) {
    const N: usize = 300;
    let p = unique_prefix();
    let subject = format!("{p}.command.roll");
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, String)>();
    let mut members = Vec::new();
    for member in 0..3 {
        // Each member on its own connection, like three Rosey nodes running the same plugin.
        let node = h.connect().await;
        let mut sub = node.queue_subscribe(&format!("{p}.command.*"), "dice-roller").await.unwrap();
        let tx = tx.clone();
        members.push(tokio::spawn(async move {
            let _node = node;
            while let Some(msg) = sub.next().await {
                if tx.send((member, text(&msg))).is_err() {
                    break;
                }
            }
        }));
    }
    let observer_conn = h.connect().await;
    let mut observer = observer_conn.subscribe(&subject).await.unwrap();

    let publisher = h.connect().await;
    for i in 0..N {
        publisher.publish(&subject, Bytes::from(i.to_string())).await.unwrap();
    }

    let mut seen = HashSet::new();
    let mut per_member = [0usize; 3];
    while seen.len() < N {
        let (member, payload) = tokio::time::timeout(PATIENCE, rx.recv())
            .await
            .expect("queue group stalled")
            .expect("members alive");
        assert!(seen.insert(payload.clone()), "message {payload} delivered twice");
        per_member[member] += 1;
    }
    for i in 0..N {
        assert_eq!(text(&next(&mut observer).await), i.to_string(), "plain subscribers get all");
    }
    // Nothing may arrive late: a duplicate would show up within this window.
    publisher.flush().await.unwrap();
    let late = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await;
    assert!(late.is_err(), "unexpected extra delivery: {late:?}");
    assert!(
        per_member.iter().filter(|&&n| n > 0).count() > 1,
        "work was not shared among members: {per_member:?}"
    );
    for member in members {
        member.abort();
    }
}

pub(crate) async fn request_gets_the_reply<H: Harness>(h: &H) {
    let p = unique_prefix();
    let subject = format!("{p}.control.status");
    let server = h.connect().await;
    let mut requests = server.queue_subscribe(&subject, "control").await.unwrap();
    let responder = tokio::spawn(async move {
        while let Some(req) = requests.next().await {
            let answer = format!("status of {}", text(&req));
            server.respond(&req, Bytes::from(answer)).await.unwrap();
        }
    });
    let client = h.connect().await;
    for name in ["dice-roller", "8ball"] {
        let reply = client.request(&subject, Bytes::from(name), PATIENCE).await.unwrap();
        assert_eq!(text(&reply), format!("status of {name}"));
    }
    responder.abort();
}

pub(crate) async fn request_times_out_when_nobody_answers<H: Harness>(h: &H) {
    let p = unique_prefix();
    let subject = format!("{p}.silent");
    let server = h.connect().await;
    let _listening_but_mute = server.subscribe(&subject).await.unwrap();
    let client = h.connect().await;
    let started = std::time::Instant::now();
    let err = client.request(&subject, Bytes::new(), Duration::from_millis(300)).await.unwrap_err();
    assert!(matches!(err, BusError::Timeout { .. }), "expected a timeout, got {err:?}");
    assert!(started.elapsed() >= Duration::from_millis(300), "timed out early");
}

pub(crate) async fn request_fails_fast_without_responders<H: Harness>(h: &H) {
    let p = unique_prefix();
    let client = h.connect().await;
    let err = client.request(&format!("{p}.nobody"), Bytes::new(), PATIENCE).await.unwrap_err();
    assert!(matches!(err, BusError::NoResponders { .. }), "expected no responders, got {err:?}");
}

pub(crate) async fn dropping_a_subscription_unsubscribes<H: Harness>(h: &H) {
    let p = unique_prefix();
    let subject = format!("{p}.svc");
    // One connection, so the unsubscribe and the next request reach the server in that order.
    let bus = h.connect().await;
    let mut sub = bus.subscribe(&subject).await.unwrap();
    let answer = {
        let bus = bus.clone();
        async move {
            let req = next(&mut sub).await;
            bus.respond(&req, Bytes::from("here")).await.unwrap();
            sub
        }
    };
    let (reply, sub) = tokio::join!(bus.request(&subject, Bytes::new(), PATIENCE), answer);
    assert_eq!(text(&reply.unwrap()), "here");

    drop(sub);
    let err = bus.request(&subject, Bytes::new(), PATIENCE).await.unwrap_err();
    assert!(matches!(err, BusError::NoResponders { .. }), "still subscribed after drop: {err:?}");
}

pub(crate) async fn a_hundred_subscribers_each_get_every_message<H: Harness>(h: &H) {
    let p = unique_prefix();
    let subject = format!("{p}.fan");
    let subscriber = h.connect().await;
    let mut subs = Vec::new();
    for _ in 0..100 {
        subs.push(subscriber.subscribe(&subject).await.unwrap());
    }
    let publisher = h.connect().await;
    for i in 0..10u32 {
        publisher.publish(&subject, Bytes::from(i.to_string())).await.unwrap();
    }
    for sub in &mut subs {
        for i in 0..10u32 {
            assert_eq!(text(&next(sub).await), i.to_string());
        }
    }
}

pub(crate) async fn invalid_subjects_are_errors<H: Harness>(h: &H) {
    let bus = h.connect().await;
    for bad in ["", "a..b", "a.*", "a.>", "has space", "trailing."] {
        let err = bus.publish(bad, Bytes::new()).await.unwrap_err();
        assert!(matches!(err, BusError::Subject(_)), "publish {bad:?} gave {err:?}");
        let err = bus.request(bad, Bytes::new(), PATIENCE).await.unwrap_err();
        assert!(matches!(err, BusError::Subject(_)), "request {bad:?} gave {err:?}");
    }
    for bad in ["", "a..b", "a.>.b", "a.b*", "tab\there"] {
        let err = bus.subscribe(bad).await.unwrap_err();
        assert!(matches!(err, BusError::Subject(_)), "subscribe {bad:?} gave {err:?}");
    }
    let err = bus.queue_subscribe("ok.subject", "bad group").await.unwrap_err();
    assert!(matches!(err, BusError::Subject(_)), "bad group gave {err:?}");
}

pub(crate) async fn publish_with_id_reaches_subscribers_like_publish<H: Harness>(h: &H) {
    let p = unique_prefix();
    let subject = format!("{p}.chat.send");
    let subscriber = h.connect().await;
    let publisher = h.connect().await;
    let mut sub = subscriber.subscribe(&subject).await.unwrap();
    publisher.publish_with_id(&subject, "event-1/0", Bytes::from("1")).await.unwrap();
    publisher.publish_with_id(&subject, "event-1/0", Bytes::from("2")).await.unwrap();
    publisher.publish(&subject, Bytes::from("end")).await.unwrap();
    // Only a stream de-duplicates; a plain subscriber sees every publish.
    assert_eq!(until_end(&mut sub).await, [format!("{subject}=1"), format!("{subject}=2")]);

    let too_long = "x".repeat(257);
    for bad in ["", "line\nbreak", "carriage\rreturn", too_long.as_str()] {
        let err = publisher.publish_with_id(&subject, bad, Bytes::new()).await.unwrap_err();
        assert!(matches!(err, BusError::InvalidMessageId { .. }), "id {bad:?} gave {err:?}");
    }
    let err = publisher.publish_with_id("a..b", "ok", Bytes::new()).await.unwrap_err();
    assert!(matches!(err, BusError::Subject(_)), "bad subject gave {err:?}");
}

/// Instantiates every conformance case as a `#[tokio::test]` for one harness.
macro_rules! conformance_suite {
    ($harness:expr) => {
        conformance_suite!(@cases $harness;
            wildcards_deliver_what_they_match,
            one_publisher_is_received_in_order,
            a_queue_group_delivers_each_message_to_exactly_one_member,
            request_gets_the_reply,
            request_times_out_when_nobody_answers,
            request_fails_fast_without_responders,
            dropping_a_subscription_unsubscribes,
            a_hundred_subscribers_each_get_every_message,
            invalid_subjects_are_errors,
            publish_with_id_reaches_subscribers_like_publish,
        );
    };
    (@cases $harness:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let harness = $harness;
                crate::bus_conformance::$case(&harness).await;
            }
        )*
    };
}

mod memory {
    use rosey_core::bus::MemoryBus;

    struct Memory(MemoryBus);

    impl super::Harness for Memory {
        type Bus = MemoryBus;
        async fn connect(&self) -> MemoryBus {
            self.0.clone()
        }
    }

    conformance_suite!(Memory(MemoryBus::new()));

    // The memory bus's own overflow policy, beyond the shared contract.

    use bytes::Bytes;
    use futures_util::StreamExt;
    use rosey_core::bus::{EventBus, MemoryBusOptions};

    const MIB: usize = 1024 * 1024;

    #[tokio::test]
    async fn a_stalled_subscriber_holds_at_most_its_byte_bound_and_the_rest_is_dropped_and_counted()
    {
        let bus = MemoryBus::with_options(MemoryBusOptions {
            subscriber_max_bytes: 16 * MIB,
            ..MemoryBusOptions::default()
        });
        let mut stalled = bus.subscribe("big").await.unwrap();
        let mut reader = bus.subscribe("big").await.unwrap();
        for i in 0..64u8 {
            bus.publish("big", Bytes::from(vec![i; MIB])).await.unwrap();
            let got = super::next(&mut reader).await;
            assert_eq!(got.payload()[0], i, "a subscriber that keeps up gets every message");
            assert!(
                bus.stats().queued_bytes <= 16 * MIB,
                "held {} bytes",
                bus.stats().queued_bytes
            );
        }
        let stats = bus.stats();
        assert_eq!(stats.queued_bytes, 16 * MIB, "the stalled subscriber holds exactly its bound");
        assert_eq!(stats.dropped, 48, "what did not fit is counted");
        // The oldest 16 wait for the stalled subscriber; reading them gives their bytes back.
        for i in 0..16u8 {
            assert_eq!(super::next(&mut stalled).await.payload()[0], i);
        }
        assert_eq!(bus.stats().queued_bytes, 0);
        bus.publish("big", Bytes::from(vec![64; MIB])).await.unwrap();
        assert_eq!(super::next(&mut stalled).await.payload()[0], 64, "room again once read");
    }

    #[tokio::test]
    async fn a_message_larger_than_the_byte_bound_still_reaches_an_empty_subscriber() {
        let bus = MemoryBus::with_options(MemoryBusOptions {
            subscriber_max_bytes: 10,
            ..MemoryBusOptions::default()
        });
        let mut sub = bus.subscribe("x").await.unwrap();
        bus.publish("x", Bytes::from(vec![1; 100])).await.unwrap();
        bus.publish("x", Bytes::from(vec![2; 1])).await.unwrap();
        assert_eq!(super::next(&mut sub).await.payload().len(), 100);
        assert_eq!(bus.stats().dropped, 1, "nothing fits behind an oversized message");
        bus.publish("x", Bytes::from(vec![3; 1])).await.unwrap();
        assert_eq!(super::next(&mut sub).await.payload()[..], [3]);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(1), sub.next()).await.is_err()
        );
    }
}

mod nats {
    use rosey_core::bus::NatsBus;

    struct Nats(String);

    impl super::Harness for Nats {
        type Bus = NatsBus;
        async fn connect(&self) -> NatsBus {
            NatsBus::connect(&self.0).await.unwrap_or_else(|e| {
                panic!("NATS must be running at {} for these tests: {e}", self.0)
            })
        }
    }

    conformance_suite!(Nats(crate::support::nats_url()));
}
