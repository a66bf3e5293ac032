//! The key-value bench plugin (`benches/storage.rs`): times round trips to the host's key-value store
//! from inside a plugin process.
//!
//! - `!kvbench fill`: sets every bench key once (so that every `get` finds its key);
//! - `!kvbench <set|get> <n>`: n operations through `ctx.kv()`, each timed with [`Instant`] from
//!   the request written to the response read (plugin → host → bus → `KvService` → database and
//!   back); replies `n=<n> total_ns=<sum of the n round trips>` and keeps every sample;
//! - `!kvbench stats <set|get>`: replies `op=… n=… p50_us=… p99_us=… mean_us=… max_us=…` over the
//!   samples kept since the last `stats` of that operation, and forgets them.
//!
//! A failed request is replied as `error: <message>`, so the bench stops at once with the reason.

use std::process::ExitCode;
use std::time::Instant;

use rosey_plugin::{Context, Plugin, Response};
use serde_json::{Value, json};

/// Keys the operations cycle through.
const KEYS: usize = 100;

/// The samples kept per operation, in nanoseconds.
#[derive(Default)]
struct Samples {
    set: Vec<u64>,
    get: Vec<u64>,
    /// The next key index of each operation.
    next_set: usize,
    next_get: usize,
}

fn key(index: usize) -> String {
    format!("bench:{:03}", index % KEYS)
}

/// A JSON value of about 100 bytes serialized.
fn value(index: usize) -> Value {
    json!({
        "user": "alice",
        "count": index,
        "tags": ["quote", "bench", "rosey"],
        "text": "the quick brown fox jumps over the lazy dog",
    })
}

fn nanos(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn run(samples: &mut Samples, op: &str, n: usize, ctx: &mut Context<'_>) -> Result<String, String> {
    let mut kv = ctx.kv();
    let mut total = 0u64;
    for _ in 0..n {
        let took = match op {
            "set" => {
                let index = samples.next_set;
                samples.next_set = samples.next_set.wrapping_add(1);
                let (key, value) = (key(index), value(index));
                let start = Instant::now();
                kv.set(&key, &value).map_err(|e| e.to_string())?;
                nanos(start)
            }
            "get" => {
                let key = key(samples.next_get);
                samples.next_get = samples.next_get.wrapping_add(1);
                let start = Instant::now();
                let found = kv.get(&key).map_err(|e| e.to_string())?;
                let took = nanos(start);
                if found.is_none() {
                    return Err(format!("{key} not found: run `kvbench fill` first"));
                }
                took
            }
            _ => return Err(format!("unknown operation {op:?}: use set or get")),
        };
        total = total.saturating_add(took);
        match op {
            "set" => samples.set.push(took),
            _ => samples.get.push(took),
        }
    }
    Ok(format!("n={n} total_ns={total}"))
}

fn stats(samples: &mut Samples, op: &str) -> Result<String, String> {
    let mut taken = match op {
        "set" => std::mem::take(&mut samples.set),
        "get" => std::mem::take(&mut samples.get),
        _ => return Err(format!("unknown operation {op:?}: use set or get")),
    };
    if taken.is_empty() {
        return Ok(format!("op={op} n=0"));
    }
    taken.sort_unstable();
    let pct = |p: f64| taken[((taken.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    let mean = taken.iter().sum::<u64>() as f64 / taken.len() as f64 / 1000.0;
    Ok(format!(
        "op={op} n={} p50_us={:.1} p99_us={:.1} mean_us={mean:.1} max_us={:.1}",
        taken.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0),
    ))
}

fn main() -> ExitCode {
    let mut samples = Samples::default();
    Plugin::new("kvbench", env!("CARGO_PKG_VERSION"))
        .command_with("kvbench", move |cmd, ctx| {
            let words: Vec<&str> = cmd.args.split_whitespace().collect();
            let outcome = match words.as_slice() {
                ["fill"] => {
                    let mut kv = ctx.kv();
                    (0..KEYS)
                        .try_for_each(|i| kv.set(&key(i), &value(i)))
                        .map(|()| format!("filled {KEYS} keys"))
                        .map_err(|e| e.to_string())
                }
                ["stats", op] => stats(&mut samples, op),
                [op, n] => match n.parse::<usize>() {
                    Ok(n) => run(&mut samples, op, n, ctx),
                    Err(_) => Err(format!("{n:?} is not a count")),
                },
                _ => Err("usage: kvbench fill | kvbench <set|get> <n> | kvbench stats <set|get>"
                    .to_owned()),
            };
            Ok(Response::reply(outcome.unwrap_or_else(|e| format!("error: {e}"))))
        })
        .run()
}
