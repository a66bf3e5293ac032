//! Property tests of the protocol line decoder: the framer and the message decoder read whatever a
//! plugin (or the host) writes, so any bytes must come out as lines, discarded lines or errors; never
//! a panic, never a line longer than the limit, and never work that grows faster than the input.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

use std::collections::BTreeMap;

use proptest::prelude::*;
use rosey_plugin::framing::{Framed, LineFramer};
use rosey_plugin::protocol::{Decoded, HostMessage, PluginMessage};
use serde_json::{Map, Value, json};

/// What the framer made of one line: its content, or the length of a discarded one.
type FramedLine = Result<Vec<u8>, usize>;

/// Feeds `input` to a framer in chunks of the given sizes (cycled), as a reader would hand over
/// whatever bytes it has ready, and collects what comes out.
fn frame(input: &[u8], max: usize, chunks: &[usize]) -> Vec<FramedLine> {
    let mut framer = LineFramer::new(max);
    let mut out = Vec::new();
    let mut record = |framer: &LineFramer, framed: Framed| match framed {
        Framed::Line => {
            assert!(framer.line().len() <= max, "a line over the limit came out");
            out.push(Ok(framer.line().to_vec()));
        }
        Framed::TooLong(n) => out.push(Err(n)),
    };
    let mut rest = input;
    let mut sizes = chunks.iter().cycle();
    while !rest.is_empty() {
        let size = sizes.next().copied().unwrap_or(rest.len()).clamp(1, rest.len());
        let (used, framed) = framer.feed(&rest[..size]);
        assert!(used >= 1 && used <= size, "feed used {used} of {size} bytes");
        if let Some(framed) = framed {
            record(&framer, framed);
        }
        rest = &rest[used..];
    }
    if let Some(framed) = framer.finish() {
        record(&framer, framed);
    }
    out
}

/// The framer's contract, written the obvious way over the whole input at once.
fn expected_lines(input: &[u8], max: usize) -> Vec<FramedLine> {
    let mut pieces: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    // The text after the last newline is a line only if it is not empty.
    if pieces.last().is_some_and(|last| last.is_empty()) {
        pieces.pop();
    }
    pieces
        .into_iter()
        .map(|piece| {
            if piece.len() > max {
                Err(piece.len())
            } else {
                Ok(piece.strip_suffix(b"\r").unwrap_or(piece).to_vec())
            }
        })
        .collect()
}

/// Bytes that look like a plugin's output: mostly printable, with newlines and carriage returns.
fn line_bytes() -> impl Strategy<Value = Vec<u8>> {
    // Sampled from a small alphabet rather than built byte by byte: generation dominates the cost.
    const ALPHABET: &[u8] = b"aaaaabbbcd{}\"\n\n\n\r\r\x00\xc3\xa9\xff";
    prop::collection::vec(prop::sample::select(ALPHABET), 0..400)
}

/// Any JSON value, with integers and exactly representable floats only (so a value survives a trip
/// through its text unchanged), nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1_000_000i32..1_000_000).prop_map(|n| Value::from(f64::from(n) / 4.0)),
        Just(json!(1e300)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{0,6}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn plugin_message() -> impl Strategy<Value = PluginMessage> {
    let words = || prop::collection::vec(".{0,10}", 0..3);
    prop_oneof![
        (".{0,10}", ".{0,10}", words(), words()).prop_map(
            |(name, version, commands, subscribe)| {
                PluginMessage::Ready { name, version, commands, subscribe }
            }
        ),
        (any::<u64>(), ".{0,40}").prop_map(|(id, message)| PluginMessage::Reply { id, message }),
        (any::<u64>(), prop::option::of(".{0,20}"))
            .prop_map(|(id, error)| PluginMessage::Done { id, error }),
        any::<u64>().prop_map(|id| PluginMessage::Pong { id }),
        (".{0,20}", json_value())
            .prop_map(|(subject, data)| PluginMessage::Publish { subject, data }),
        (any::<u64>(), ".{0,20}", json_value())
            .prop_map(|(id, subject, data)| PluginMessage::Request { id, subject, data }),
        (".{0,8}", ".{0,40}").prop_map(|(level, message)| PluginMessage::Log { level, message }),
        (
            ".{0,10}",
            ".{0,8}",
            -1_000_000i32..1_000_000,
            prop::collection::btree_map(".{0,5}", ".{0,5}", 0..3)
        )
            .prop_map(|(name, kind, value, labels)| PluginMessage::Metric {
                name,
                kind,
                value: f64::from(value) / 8.0,
                labels: labels.into_iter().collect::<BTreeMap<_, _>>(),
            }),
    ]
}

fn host_message() -> impl Strategy<Value = HostMessage> {
    prop_oneof![
        (any::<u32>(), ".{0,10}", json_value())
            .prop_map(|(protocol, name, config)| HostMessage::Init { protocol, name, config }),
        (any::<u64>(), ".{0,20}", json_value())
            .prop_map(|(id, subject, data)| HostMessage::Event { id, subject, data }),
        any::<u64>().prop_map(|id| HostMessage::Ping { id }),
        Just(HostMessage::Shutdown {}),
        (any::<u64>(), prop::option::of(json_value()), prop::option::of(".{0,20}"))
            .prop_map(|(id, data, error)| HostMessage::Response { id, data, error }),
    ]
}

/// A JSON object whose `type` is one the decoder knows (or nearly), with fields of any name and
/// type: the messages a careless or hostile plugin writes, which reach past the JSON syntax check.
fn near_valid_object(types: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    let kind = prop_oneof![
        4 => prop::sample::select(types).prop_map(|t| Value::String(t.to_owned())),
        1 => ".{0,8}".prop_map(Value::String),
        1 => json_value(),
    ];
    let field = prop_oneof![
        prop::sample::select(
            &[
                "id",
                "name",
                "version",
                "commands",
                "subscribe",
                "message",
                "error",
                "subject",
                "data",
                "level",
                "kind",
                "value",
                "labels",
                "protocol",
                "config",
            ][..]
        )
        .prop_map(str::to_owned),
        "[a-z]{1,6}",
    ];
    (kind, prop::collection::vec((field, json_value()), 0..6)).prop_map(|(kind, fields)| {
        let mut object: Map<String, Value> = fields.into_iter().collect();
        object.insert("type".to_owned(), kind);
        serde_json::to_vec(&Value::Object(object)).unwrap()
    })
}

/// Lines built to make a naive decoder work hard: deep nesting (past serde_json's recursion limit),
/// many keys, long strings full of escapes, long runs of digits.
fn hostile_line() -> impl Strategy<Value = Vec<u8>> {
    let depth = 100usize..20_000;
    prop_oneof![
        depth.clone().prop_map(|n| format!(
            r#"{{"type":"publish","subject":"x","data":{}"#,
            "[".repeat(n)
        )
        .into_bytes()),
        depth.clone().prop_map(|n| format!(
            r#"{{"type":"reply","id":1,"x":{}1{}}}"#,
            "[".repeat(n),
            "]".repeat(n)
        )
        .into_bytes()),
        (100usize..12_000).prop_map(|n| r#"{"a":"#.repeat(n).into_bytes()),
        (1usize..4_000).prop_map(|n| {
            let keys: Vec<String> = (0..n).map(|i| format!(r#""k{i}":{i}"#)).collect();
            format!(r#"{{"type":"log","level":"info","message":"m",{}}}"#, keys.join(","))
                .into_bytes()
        }),
        (1usize..3_500).prop_map(|n| format!(
            r#"{{"type":"reply","id":1,"message":"{}"}}"#,
            r"\ud83d\ude00\n\u0000".repeat(n)
        )
        .into_bytes()),
        (1usize..60_000)
            .prop_map(|n| format!(r#"{{"type":"pong","id":{}}}"#, "9".repeat(n)).into_bytes()),
    ]
}

/// Decoding must not panic, and what it returns must be consistent: an `Unknown` type is one the
/// decoder does not know, and an error message stays proportional to the line it describes.
fn check_plugin_line(line: &[u8]) {
    match PluginMessage::decode(line) {
        Ok(Decoded::Unknown(kind)) => assert!(!PluginMessage::TYPES.contains(&kind.as_str())),
        Ok(Decoded::Message(message)) => {
            let again = message.to_line();
            assert_eq!(
                PluginMessage::decode(&again[..again.len() - 1]),
                Ok(Decoded::Message(message))
            );
        }
        Err(error) => assert!(error.to_string().len() <= 8 * line.len() + 256),
    }
}

fn check_host_line(line: &[u8]) {
    match HostMessage::decode(line) {
        Ok(Decoded::Unknown(kind)) => assert!(!HostMessage::TYPES.contains(&kind.as_str())),
        Ok(Decoded::Message(message)) => {
            let again = message.to_line();
            assert_eq!(
                HostMessage::decode(&again[..again.len() - 1]),
                Ok(Decoded::Message(message))
            );
        }
        Err(error) => assert!(error.to_string().len() <= 8 * line.len() + 256),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn framing_gives_every_line_or_its_length_whatever_the_chunking(
        input in line_bytes(),
        max in 0usize..40,
        chunks in prop::collection::vec(1usize..50, 1..8),
    ) {
        prop_assert_eq!(frame(&input, max, &chunks), expected_lines(&input, max));
    }

    #[test]
    fn framing_any_bytes_never_panics_nor_holds_more_than_the_limit(
        input in prop::collection::vec(any::<u8>(), 0..2048),
        max in 0usize..300,
        chunks in prop::collection::vec(1usize..700, 1..4),
    ) {
        let lines = frame(&input, max, &chunks);
        let kept: usize = lines.iter().map(|line| line.as_ref().map_or(0, Vec::len)).sum();
        prop_assert!(kept <= input.len());
    }

    #[test]
    fn decoding_any_bytes_never_panics(line in prop::collection::vec(any::<u8>(), 0..1024)) {
        check_plugin_line(&line);
        check_host_line(&line);
    }

    #[test]
    fn decoding_any_text_never_panics(line in "\\PC{0,200}") {
        check_plugin_line(line.as_bytes());
        check_host_line(line.as_bytes());
    }

    #[test]
    fn decoding_objects_with_known_types_and_odd_fields_never_panics(
        plugin in near_valid_object(PluginMessage::TYPES),
        host in near_valid_object(HostMessage::TYPES),
    ) {
        check_plugin_line(&plugin);
        check_host_line(&host);
    }

    #[test]
    fn every_message_survives_its_line_and_unknown_fields(
        plugin in plugin_message(),
        host in host_message(),
        extra in json_value(),
    ) {
        // Forward compatibility: a newer peer's extra field changes nothing.
        let with_extra = |line: Vec<u8>| {
            let mut value: Value = serde_json::from_slice(&line).unwrap();
            value.as_object_mut().unwrap().insert("zz_added_later".to_owned(), extra.clone());
            serde_json::to_vec(&value).unwrap()
        };
        prop_assert_eq!(
            PluginMessage::decode(&with_extra(plugin.to_line())),
            Ok(Decoded::Message(plugin))
        );
        // On the wire a `response` with `"data": null` and one without `data` are the same message
        // (both mean "no data"; the SDKs read either as null), so the decoder gives `None` for both.
        let host = match host {
            HostMessage::Response { id, data: Some(Value::Null), error } => {
                HostMessage::Response { id, data: None, error }
            }
            other => other,
        };
        prop_assert_eq!(HostMessage::decode(&with_extra(host.to_line())), Ok(Decoded::Message(host)));
    }
}

proptest! {
    // Big inputs: few cases, each up to the 64 KiB a test should need to show super-linear work.
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn decoding_deep_wide_or_long_lines_is_an_answer_not_a_crash(line in hostile_line()) {
        check_plugin_line(&line);
        check_host_line(&line);
    }

    #[test]
    fn framing_many_short_lines_or_one_huge_line_is_linear(
        lines in 1usize..16_000,
        huge in 1usize..65_536,
        max in 1usize..64,
    ) {
        let many = "a\r\n".repeat(lines);
        prop_assert_eq!(frame(many.as_bytes(), max, &[4096]).len(), lines);
        let one = vec![b'x'; huge];
        let expected = if huge > max { Err(huge) } else { Ok(one.clone()) };
        prop_assert_eq!(frame(&one, max, &[1, 8192]), vec![expected]);
    }
}
