//! Property tests of the socket.io frame parser: the server (or anything posing as it) sends any text,
//! so every frame is read or refused with a short reason, never a panic; and what is read survives
//! its own encoding.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::connector::cytube::incoming::Incoming;
use crate::connector::cytube::users::UserTable;

/// Any JSON value with integer numbers only (floats may not survive a text round trip exactly),
/// nested a few levels, keys and strings from CyTube's vocabulary and elsewhere.
fn json_value() -> impl Strategy<Value = Value> {
    let text = prop_oneof![
        prop::sample::select(
            &[
                "chatMsg",
                "pm",
                "userlist",
                "username",
                "msg",
                "meta",
                "time",
                "sid",
                "<b>&amp;</b>",
                "!roll 2d6",
                ""
            ][..]
        )
        .prop_map(str::to_owned),
        "\\PC{0,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        text.clone().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(text.clone(), inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Frames as they come off the wire: a packet type (right, wrong or missing), a namespace digit,
/// an optional ack id, then JSON or garbage.
fn frame_text() -> impl Strategy<Value = String> {
    let kind = prop::sample::select(
        &["0", "1", "2", "3", "4", "40", "41", "42", "43", "44", "45", "46", "4é", "9", ""][..],
    );
    let ack =
        prop_oneof![3 => Just(String::new()), 1 => "[0-9]{1,20}", 1 => Just("/chat,".to_owned())];
    let body = prop_oneof![
        4 => json_value().prop_map(|v| v.to_string()),
        2 => (
            prop::sample::select(&["chatMsg", "pm", "userlist", "addUser", ""][..]),
            json_value(),
            prop::collection::vec(json_value(), 0..2),
        )
            .prop_map(|(name, arg, more)| {
                let mut items = vec![json!(name), arg];
                items.extend(more);
                Value::Array(items).to_string()
            }),
        1 => "\\PC{0,20}",
        1 => Just(r#"{"sid":"a","pingInterval":25000,"pingTimeout":20000,"maxPayload":1e6}"#.to_owned()),
        1 => Just(r#"{"sid":1,"pingInterval":-1}"#.to_owned()),
    ];
    (kind, ack, body).prop_map(|(kind, ack, body)| format!("{kind}{ack}{body}"))
}

fn has_float(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.is_f64(),
        Value::Array(items) => items.iter().any(has_float),
        Value::Object(map) => map.values().any(has_float),
        _ => false,
    }
}

fn frame_has_float(frame: &Frame) -> bool {
    match frame {
        Frame::Connect(Some(value)) | Frame::ConnectError(value) => has_float(value),
        Frame::Event { arg: Some(value), .. } => has_float(value),
        _ => false,
    }
}

/// Reading must not panic; a frame read is the frame its encoding reads as, and a refusal says why
/// in a line a log can hold.
fn check_frame(text: &str) {
    match Frame::parse(text) {
        Ok(frame) => {
            if let Frame::Event { name, .. } = &frame {
                assert!(name.len() <= text.len());
            }
            if !frame_has_float(&frame) {
                assert_eq!(Frame::parse(&frame.encode()), Ok(frame));
            }
        }
        Err(error) => assert!(error.to_string().chars().count() <= 600, "{error}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_text_is_a_frame_or_a_short_refusal(text in "\\PC{0,200}") {
        check_frame(&text);
    }

    #[test]
    fn frames_with_random_types_ids_and_json_are_read_or_refused(text in frame_text()) {
        check_frame(&text);
    }

    #[test]
    fn event_frames_with_odd_arguments_become_chat_or_nothing(
        text in frame_text(),
        joined in any::<bool>(),
    ) {
        let Ok(Frame::Event { name, arg }) = Frame::parse(&text) else { return Ok(()) };
        let mut incoming = Incoming::new("chan", "RoseyBot");
        if joined {
            incoming.mark_joined();
        }
        if let Some(chat) = incoming.chat(&name, arg.as_ref(), &UserTable::default()) {
            prop_assert!(chat.message.len() <= text.len());
            prop_assert!(!incoming.is_bot(&chat.user));
        }
        if let Some(pm) = incoming.pm(arg.as_ref(), &UserTable::default()) {
            prop_assert!(pm.message.len() <= text.len());
        }
    }
}

proptest! {
    // Big frames: few cases, each up to 64 KiB, deep past serde_json's recursion limit or wide.
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn deep_or_wide_frames_are_read_or_refused_in_one_pass(
        n in 100usize..20_000,
        kind in prop::sample::select(&["0", "40", "42", "44"][..]),
        shape in 0..4,
    ) {
        let text = match shape {
            0 => format!("{kind}{}", "[".repeat(n)),
            1 => format!("{kind}[\"chatMsg\",{}1{}]", "[".repeat(n), "]".repeat(n)),
            2 => format!("{kind}[\"chatMsg\",{{\"msg\":\"{}\"}}]", "<b>&amp;".repeat(n / 3)),
            _ => format!("{kind}[\"e\",{}]", (0..n / 4).map(|i| i.to_string()).collect::<Vec<_>>().join(",")),
        };
        prop_assert!(text.len() <= 65_536);
        check_frame(&text);
    }
}
