//! Event bus benchmarks: MemoryBus fan-out throughput, and request/reply round trips on MemoryBus and
//! on a real NATS server (127.0.0.1:4222, or `ROSEY_TEST_NATS_URL`).
//!
//! Run: `cargo bench -p rosey-benches --bench bus`. Besides criterion's estimates, the request/reply
//! benches print p50/p99 of the individual round trips they timed. Results: benches/RESULTS.md.

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::StreamExt;
use rosey_core::bus::{EventBus, EventBusExt, MemoryBus, NatsBus};

/// Messages published per measured batch in the fan-out bench.
const BATCH: u64 = 1_000;

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

fn memory_fanout(c: &mut Criterion) {
    let rt = current_thread();
    let mut group = c.benchmark_group("memory_fanout");
    group.throughput(Throughput::Elements(BATCH));
    for subscribers in [1usize, 8, 64] {
        group.bench_with_input(BenchmarkId::from_parameter(subscribers), &subscribers, |b, &n| {
            let bus = MemoryBus::new();
            let mut subs: Vec<_> = rt.block_on(async {
                let mut subs = Vec::new();
                for _ in 0..n {
                    subs.push(bus.subscribe("cytube.chat.*").await.expect("subscribe"));
                }
                subs
            });
            let payload =
                Bytes::from_static(br#"{"channel":"lobby","user":"alice","message":"hi"}"#);
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        for _ in 0..BATCH {
                            bus.publish("cytube.chat.message", payload.clone()).await.expect("pub");
                        }
                        for sub in &mut subs {
                            for _ in 0..BATCH {
                                sub.next().await.expect("delivered");
                            }
                        }
                    }
                    start.elapsed()
                })
            });
            assert_eq!(bus.stats().dropped, 0, "the bench must not overflow its subscribers");
        });
    }
    group.finish();
}

/// Times each request/reply round trip into `samples`.
async fn round_trips<B: EventBus + Clone>(
    bus: &B,
    subject: &str,
    iters: u64,
    samples: &mut Vec<Duration>,
) {
    for _ in 0..iters {
        let start = Instant::now();
        bus.request(subject, Bytes::from_static(b"ping"), Duration::from_secs(5))
            .await
            .expect("reply");
        samples.push(start.elapsed());
    }
}

async fn spawn_echo<B: EventBus + Clone>(bus: &B, subject: &str) -> tokio::task::JoinHandle<()> {
    let mut requests = bus.subscribe(subject).await.expect("subscribe");
    let responder = bus.clone();
    tokio::spawn(async move {
        while let Some(req) = requests.next().await {
            let _ = responder.respond(&req, Bytes::from_static(b"pong")).await;
        }
    })
}

fn report(name: &str, samples: &mut [Duration]) {
    if samples.is_empty() {
        return;
    }
    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p) as usize];
    eprintln!("{name}: {} round trips, p50 {:?}, p99 {:?}", samples.len(), pct(0.50), pct(0.99));
}

fn request_reply(c: &mut Criterion) {
    let rt = current_thread();
    let mut group = c.benchmark_group("request_reply");
    // Unique per run, so a bench never answers (or steals) another process's requests on a shared NATS.
    let subject = format!("bench{}.echo", std::process::id());

    let memory = MemoryBus::new();
    let echo = rt.block_on(spawn_echo(&memory, &subject));
    let mut samples = Vec::new();
    group.bench_function("memory", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                round_trips(&memory, &subject, iters, &mut samples).await;
                start.elapsed()
            })
        })
    });
    echo.abort();
    report("request_reply/memory", &mut samples);

    let url =
        std::env::var("ROSEY_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    // One connection for requester and responder, on the current thread: what is measured is the
    // client and the server, not cross-thread wake-ups.
    let nats = rt.block_on(NatsBus::connect(&url)).expect("NATS must be running for this bench");
    let echo = rt.block_on(spawn_echo(&nats, &subject));
    let mut samples = Vec::new();
    group.bench_function("nats", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                round_trips(&nats, &subject, iters, &mut samples).await;
                start.elapsed()
            })
        })
    });
    echo.abort();
    report("request_reply/nats", &mut samples);
    group.finish();
}

criterion_group!(benches, memory_fanout, request_reply);
criterion_main!(benches);
