//! The bundled quotes plugin: a channel quote book kept in the host's key-value store.
//!
//! `!quote add <text>`, `!quote`, `!quote <n>`, `!quote search <word>`, `!quote del <n>`. Each quote
//! is stored as `{text, by, at}` under `quote:<n on 8 digits>`, numbered by the `next_id` counter, so
//! the keys list in the order the quotes were added.

mod quotes;

use std::process::ExitCode;

use rosey_plugin::{Command, Context, Kv, KvError, Plugin, Response};

use quotes::{Quote, Request};

fn main() -> ExitCode {
    let mut rng = quotes::Rng::from_entropy();
    Plugin::new("quotes", env!("CARGO_PKG_VERSION"))
        .command_with("quote", move |cmd, ctx| Ok(answer(cmd, ctx, &mut rng)))
        .run()
}

/// The reply to one `!quote …`; storage trouble is an answer too, never a failed event.
fn answer(cmd: &Command<'_>, ctx: &mut Context<'_>, rng: &mut quotes::Rng) -> Response {
    let request = match quotes::parse(cmd.args) {
        Ok(request) => request,
        Err(reply) => return Response::reply(reply),
    };
    let mut kv = ctx.kv();
    let outcome = match request {
        Request::Add(text) => add(&mut kv, text, cmd).map(|line| vec![line]),
        Request::Random => random(&mut kv, rng).map(|line| vec![line]),
        Request::Show(n) => show(&mut kv, n).map(|line| vec![line]),
        Request::Search(word) => search(&mut kv, word),
        Request::Delete(n) => delete(&mut kv, n, cmd.user).map(|line| vec![line]),
    };
    match outcome {
        Ok(lines) => Response::replies(lines),
        Err(err) => {
            ctx.log("warn", &format!("!quote {}: {err}", cmd.args.trim()));
            Response::reply(quotes::unavailable(&err))
        }
    }
}

fn add(kv: &mut Kv<'_>, text: &str, cmd: &Command<'_>) -> Result<String, KvError> {
    let mut n = kv.get_as::<u64>(quotes::NEXT_ID_KEY)?.unwrap_or(1).max(1);
    // Never overwrite a quote, even if the counter was lost or lags behind.
    while kv.get(&quotes::key(n))?.is_some() {
        n += 1;
    }
    // The counter moves first: if storing the quote then fails, a number is skipped, never reused.
    kv.set(quotes::NEXT_ID_KEY, &(n + 1))?;
    let at = if cmd.time > 0 { cmd.time / 1000 } else { now_secs() };
    kv.set(&quotes::key(n), &Quote { text: text.to_owned(), by: cmd.user.to_owned(), at })?;
    Ok(quotes::saved(n))
}

fn random(kv: &mut Kv<'_>, rng: &mut quotes::Rng) -> Result<String, KvError> {
    let keys = kv.keys(quotes::KEY_PREFIX)?;
    if keys.is_empty() {
        return Ok(quotes::no_quotes());
    }
    let key = &keys[rng.below(keys.len())];
    let n = quotes::number_of(key).unwrap_or_default();
    Ok(match kv.get_as::<Quote>(key)? {
        Some(quote) => quotes::shown(n, &quote),
        // Deleted between the listing and the read.
        None => quotes::missing(n),
    })
}

fn show(kv: &mut Kv<'_>, n: u64) -> Result<String, KvError> {
    Ok(match kv.get_as::<Quote>(&quotes::key(n))? {
        Some(quote) => quotes::shown(n, &quote),
        None => quotes::missing(n),
    })
}

fn search(kv: &mut Kv<'_>, word: &str) -> Result<Vec<String>, KvError> {
    let mut shown = Vec::new();
    let mut total = 0;
    for key in kv.keys(quotes::KEY_PREFIX)? {
        let (Some(n), Some(quote)) = (quotes::number_of(&key), kv.get_as::<Quote>(&key)?) else {
            continue;
        };
        if quotes::matches(&quote, word) {
            total += 1;
            if shown.len() < quotes::SHOWN_MATCHES {
                shown.push((n, quote));
            }
        }
    }
    Ok(quotes::found(word, &shown, total))
}

fn delete(kv: &mut Kv<'_>, n: u64, user: &str) -> Result<String, KvError> {
    let key = quotes::key(n);
    Ok(match kv.get_as::<Quote>(&key)? {
        None => quotes::missing(n),
        Some(quote) if !quotes::may_delete(&quote, user) => quotes::not_yours(n, &quote),
        Some(_) if kv.delete(&key)? => quotes::deleted(n),
        Some(_) => quotes::missing(n),
    })
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
