//! Frame building: Engine.IO / socket.io packets and the JSON payloads CyTube sends,
//! written by hand so that key order matches the recorded frames byte for byte.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// `setPermissions` of an unregistered channel (handshake_guest_join.jsonl).
pub(crate) const PERMS_UNREGISTERED: &str = r#"{"seeplaylist":-1,"playlistadd":-1,"playlistnext":0,"playlistmove":0,"playlistdelete":0,"playlistjump":0,"playlistaddlist":0,"oplaylistadd":-1,"oplaylistnext":0,"oplaylistmove":0,"oplaylistdelete":0,"oplaylistjump":0,"oplaylistaddlist":0,"playlistaddcustom":0,"playlistaddlive":0,"exceedmaxlength":0,"addnontemp":0,"settemp":0,"playlistshuffle":0,"playlistclear":0,"pollctl":0,"pollvote":-1,"viewhiddenpoll":1.5,"voteskip":-1,"viewvoteskip":1.5,"playlistlock":2,"leaderctl":0,"drink":0,"chat":0,"chatclear":2,"exceedmaxitems":2,"deletefromchannellib":2}"#;

/// `setPermissions` of a registered channel (users.jsonl).
pub(crate) const PERMS_REGISTERED: &str = r#"{"seeplaylist":-1,"playlistadd":1.5,"playlistnext":1.5,"playlistmove":1.5,"playlistdelete":2,"playlistjump":1.5,"playlistaddlist":1.5,"oplaylistadd":-1,"oplaylistnext":1.5,"oplaylistmove":1.5,"oplaylistdelete":2,"oplaylistjump":1.5,"oplaylistaddlist":1.5,"playlistaddcustom":3,"playlistaddrawfile":2,"playlistaddlive":1.5,"exceedmaxlength":2,"addnontemp":2,"settemp":2,"playlistshuffle":2,"playlistclear":2,"pollctl":1.5,"pollvote":-1,"viewhiddenpoll":1.5,"voteskip":-1,"viewvoteskip":1.5,"mute":1.5,"kick":1.5,"ban":2,"motdedit":3,"filteredit":3,"filterimport":3,"emoteedit":3,"emoteimport":3,"playlistlock":2,"leaderctl":2,"drink":1.5,"chat":0,"chatclear":2,"exceedmaxitems":2,"deletefromchannellib":2,"exceedmaxdurationperuser":2}"#;

/// `channelCSSJS` of a channel without custom CSS/JS.
pub(crate) const CSS_JS: &str = r#"{"css":"","cssHash":"1B2M2Y8AsgTpgAmY7PhCfg==","js":"","jsHash":"1B2M2Y8AsgTpgAmY7PhCfg=="}"#;

/// `setPlaylistMeta` of an empty playlist.
pub(crate) const PLAYLIST_META: &str = r#"{"count":0,"rawTime":0,"time":"00:00"}"#;

/// `errorMsg` text for a bad channel name (errors.jsonl).
pub(crate) const INVALID_CHANNEL: &str = "Invalid channel name.  Channel names may consist of 1-30 characters in the set a-z, A-Z, 0-9, -, and _";

/// Guest login error for a bad user name (errors.jsonl).
pub(crate) const INVALID_USERNAME: &str = "Invalid username.  Usernames must be 1-20 characters long and consist only of characters a-z, A-Z, 0-9, -, or _.";

/// A JSON string literal.
pub(crate) fn js(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// A JSON number the way JavaScript prints it: integral values without a fraction.
pub(crate) fn num(v: f64) -> String {
    if !v.is_finite() {
        return "null".to_owned();
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        // Exact: the value is integral and well inside i64.
        return format!("{}", v as i64);
    }
    serde_json::Number::from_f64(v).map_or_else(|| "null".to_owned(), |n| n.to_string())
}

/// `42["name",arg]`, or `42["name"]` without an argument.
pub(crate) fn event(name: &str, arg: Option<&str>) -> String {
    match arg {
        Some(arg) => format!("42[{},{}]", js(name), arg),
        None => format!("42[{}]", js(name)),
    }
}

/// `42["errorMsg",{"msg":..}]`.
pub(crate) fn error_msg(msg: &str) -> String {
    event("errorMsg", Some(&format!(r#"{{"msg":{}}}"#, js(msg))))
}

/// `42["kick",{"reason":..}]`.
pub(crate) fn kick(reason: &str) -> String {
    event("kick", Some(&format!(r#"{{"reason":{}}}"#, js(reason))))
}

/// `42["login",{"success":false,"error":..}]`.
pub(crate) fn login_failed(error: &str) -> String {
    event("login", Some(&format!(r#"{{"success":false,"error":{}}}"#, js(error))))
}

/// A `chatMsg` (or history line) payload.
pub(crate) fn chat_payload(user: &str, msg: &str, meta: &str, time: i64) -> String {
    format!(r#"{{"username":{},"msg":{},"meta":{},"time":{}}}"#, js(user), js(msg), meta, time)
}

/// Epoch milliseconds now.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `MM:SS` (or `HH:MM:SS`) like CyTube's `formatTime`; `--:--` for an unknown (0) length.
pub(crate) fn format_duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds <= 0.0 {
        return "--:--".to_owned();
    }
    // Truncation is the point: CyTube floors the seconds.
    let total = seconds.floor() as u64;
    let (h, m, s) = (total / 3600, total % 3600 / 60, total % 60);
    if h > 0 { format!("{h:02}:{m:02}:{s:02}") } else { format!("{m:02}:{s:02}") }
}

static SID_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A random-looking 20-character socket id (base64id alphabet), like `G_MlKnK6vkc4fJKRAAAG`.
pub(crate) fn sid() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    let n = SID_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut x = n ^ (now_ms() as u64).rotate_left(17) ^ 0x9E37_79B9_7F4A_7C15;
    (0..20)
        .map(|_| {
            // splitmix64
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            char::from(ALPHABET[(z % 64) as usize])
        })
        .collect()
}

/// CyTube-style cloaked address shown to moderators (`+Jk.uMN.kQP.Zf6`); derived from the name.
pub(crate) fn cloaked_ip(name: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut h: u32 = 0x811C_9DC5;
    for b in name.to_ascii_lowercase().bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    let tail: String =
        (0..3).map(|i| char::from(ALPHABET[((h >> (i * 6)) & 63) as usize])).collect();
    format!("+Jk.uMN.kQP.{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_like_javascript() {
        assert_eq!(num(-1.0), "-1");
        assert_eq!(num(5.0), "5");
        assert_eq!(num(1.5), "1.5");
        assert_eq!(num(5.004999999999999), "5.004999999999999");
        assert_eq!(num(f64::NAN), "null");
    }

    #[test]
    fn events_and_durations() {
        assert_eq!(event("channelNotRegistered", None), r#"42["channelNotRegistered"]"#);
        assert_eq!(event("rank", Some(&num(-1.0))), r#"42["rank",-1]"#);
        assert_eq!(format_duration(60.0), "01:00");
        assert_eq!(format_duration(0.0), "--:--");
        assert_eq!(format_duration(3725.9), "01:02:05");
        assert_eq!(sid().len(), 20);
        assert_ne!(sid(), sid());
        assert!(cloaked_ip("alice").starts_with("+Jk.uMN.kQP."));
    }
}
