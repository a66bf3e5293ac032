//! The CyTube wire units against every frame recorded from a real CyTube server
//! (`rosey-testkit/fixtures/cytube/`).

use rosey_core::connector::cytube::__private::{Frame, html_to_text};
use rosey_testkit::recorded::fixtures_dir as fixtures;

/// Every (direction, frame) of every recorded scenario.
fn frames() -> Vec<(String, String)> {
    let mut frames = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(fixtures())
        .expect("rosey-testkit/fixtures/cytube in the repository")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "fixtures missing: {files:?}");
    for file in files {
        for line in std::fs::read_to_string(&file).unwrap().lines() {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            let dir = record["dir"].as_str().unwrap().to_owned();
            if dir == "in" || dir == "out" {
                frames.push((dir, record["frame"].as_str().unwrap().to_owned()));
            }
        }
    }
    frames
}

#[test]
fn every_recorded_frame_is_read() {
    let frames = frames();
    assert!(frames.len() > 900, "{} frames", frames.len());
    for (dir, text) in &frames {
        let frame = Frame::parse(text).unwrap_or_else(|e| panic!("{dir}: {e}"));
        if let Frame::Event { name, arg } = &frame {
            // Re-encoding keeps the event (key order inside objects may differ).
            let again = Frame::parse(&frame.encode()).unwrap();
            assert_eq!(again, Frame::Event { name: name.clone(), arg: arg.clone() });
        }
    }
}

#[test]
fn recorded_chat_reads_as_plain_text() {
    let chat: Vec<String> = frames()
        .into_iter()
        .filter_map(|(dir, text)| match Frame::parse(&text) {
            Ok(Frame::Event { name, arg: Some(arg) }) if dir == "in" && name == "chatMsg" => {
                arg["msg"].as_str().map(html_to_text)
            }
            _ => None,
        })
        .collect();
    assert!(chat.contains(&"hello <b>x</b> http://example.com".to_owned()), "{chat:#?}");
    assert!(chat.contains(&"bot says <b>hi</b> & bye".to_owned()), "{chat:#?}");
    assert!(chat.contains(&">greentext line".to_owned()), "{chat:#?}");
    assert!(chat.iter().any(|m| m == "🎲 [3, 4] = 7"), "{chat:#?}");
    assert!(chat.iter().all(|m| !m.contains("<a ") && !m.contains("&amp;")), "{chat:#?}");
}

#[test]
fn the_user_table_follows_the_recorded_users_scenario() {
    use rosey_core::connector::cytube::__private::UserTable;
    let text = std::fs::read_to_string(fixtures().join("users.jsonl")).unwrap();
    let mut users = UserTable::default();
    let mut alice_was_afk = false;
    let mut bob_led = false;
    for line in text.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        if record["dir"] != "in" || record["conn"] != "bot" {
            continue;
        }
        if let Ok(Frame::Event { name, arg }) = Frame::parse(record["frame"].as_str().unwrap()) {
            users.apply(&name, arg.as_ref());
            alice_was_afk |= users.get("alice").is_some_and(|u| u.afk);
            bob_led |= users.rank("bob") == Some(1.5);
        }
    }
    assert!(alice_was_afk && bob_led, "AFK and leader changes were followed");
    assert_eq!(users.rank("rosey_admin"), Some(5.0), "the bot is the channel owner");
    assert!(users.get("alice").is_none() && users.get("bob").is_none(), "both left");
    assert!(users.get("lurker").is_none(), "anonymous users are not users");
}

#[test]
fn recorded_join_and_chat_give_plugins_only_live_chat_from_others() {
    use rosey_core::connector::cytube::__private::Incoming;
    use rosey_core::connector::cytube::__private::UserTable;
    for (scenario, expected_first) in
        [("handshake_guest_join.jsonl", None), ("chat_roundtrip.jsonl", Some("!roll 2d6"))]
    {
        let text = std::fs::read_to_string(fixtures().join(scenario)).unwrap();
        let mut incoming = Incoming::new("testchan", "RoseyBot");
        let mut users = UserTable::default();
        let mut seen = Vec::new();
        for line in text.lines() {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            if record["dir"] != "in" || record["conn"] != "bot" {
                continue;
            }
            if let Ok(Frame::Event { name, arg }) = Frame::parse(record["frame"].as_str().unwrap())
            {
                users.apply(&name, arg.as_ref());
                if let Some(chat) = incoming.chat(&name, arg.as_ref(), &users) {
                    seen.push(chat);
                }
            }
        }
        assert!(seen.iter().all(|c| c.user != "RoseyBot"), "{scenario}: own echo leaked");
        assert_eq!(
            seen.first().map(|c| c.message.as_str()),
            expected_first,
            "{scenario}: {seen:?}"
        );
        if scenario == "chat_roundtrip.jsonl" {
            let action = seen.iter().find(|c| c.message == "waves").unwrap();
            assert_eq!(action.meta.as_ref().unwrap()["action"], true, "/me is flagged");
            assert_eq!(seen[0].rank, Some(0.0), "alice's rank comes from the user table");
        }
    }
}

/// What alice typed and what CyTube broadcast of it, for every chat line and PM of the `filters`
/// scenarios (`filters`: a registered channel, with CyTube's default chat filters; `unregistered`:
/// without them).
fn typed_and_received(scenario: &str) -> Vec<(String, String)> {
    rosey_testkit::recorded::typed_and_received(scenario)
        .into_iter()
        .map(|line| (line.typed, line.received))
        .collect()
}

/// The HTML CyTube broadcast for what alice typed in the filtered channel.
fn recorded(typed: &str) -> String {
    typed_and_received("filters")
        .into_iter()
        .find(|(t, _)| t == typed)
        .unwrap_or_else(|| panic!("{typed:?} is not in filters.peers.jsonl"))
        .1
}

#[test]
fn italic_underscores_come_back_as_typed() {
    assert_eq!(recorded("_italic_"), "<em>italic</em>");
    assert_eq!(html_to_text(&recorded("_italic_")), "_italic_");
    let quote = recorded("!quote add snake_case_name");
    assert_eq!(quote, "!quote add snake<em>case</em>name");
    assert_eq!(html_to_text(&quote), "!quote add snake_case_name");
    for typed in ["a_b_c_d", "__double__", "_unclosed"] {
        assert_eq!(html_to_text(&recorded(typed)), typed);
    }
}

#[test]
fn bold_asterisks_come_back_as_typed() {
    assert_eq!(recorded("*bold*"), "<strong>bold</strong>");
    for typed in ["*bold*", "*a*b*c*", "2*3*4", "**double**"] {
        assert_eq!(html_to_text(&recorded(typed)), typed);
    }
}

#[test]
fn backtick_code_comes_back_as_typed() {
    assert_eq!(recorded("`mono`"), "<code>mono</code>");
    let typed = "`code with *star* and _under_`";
    assert_eq!(html_to_text(&recorded(typed)), typed, "the filters nest inside <code>");
}

#[test]
fn strike_tildes_come_back_as_typed() {
    assert_eq!(recorded("~~strike~~"), "<s>strike</s>");
    assert_eq!(html_to_text(&recorded("~~*both*~~")), "~~*both*~~");
}

#[test]
fn spoilers_come_back_as_typed() {
    assert_eq!(recorded("[sp]spoiler[/sp]"), r#"<span class="spoiler">spoiler</span>"#);
    for typed in ["[sp]spoiler[/sp]", "[sp]_nested_[/sp]", "[sp][/sp]"] {
        assert_eq!(html_to_text(&recorded(typed)), typed);
    }
    assert_eq!(
        html_to_text(&recorded("[SP]upper[/SP]")),
        "[sp]upper[/sp]",
        "any case, one spelling"
    );
}

#[test]
fn links_keep_their_text_and_the_markup_around_them() {
    let typed = "_x_ and http://example.com/a_b_c*d* link";
    assert!(
        recorded(typed).contains(r#"<a href="http://example.com/a_b_c*d*""#),
        "links are not filtered"
    );
    assert_eq!(html_to_text(&recorded(typed)), typed);
}

#[test]
fn every_recorded_line_reads_back_as_typed_with_or_without_filters() {
    for scenario in ["filters", "filters_unregistered"] {
        let pairs = typed_and_received(scenario);
        assert!(pairs.len() >= 25, "{scenario}: {} lines", pairs.len());
        for (typed, received) in pairs {
            // `/me` and `/sp` become meta; CyTube keeps the first 320 characters; a filtered `[SP]`
            // reads as `[sp]`.
            let text =
                typed.strip_prefix("/me ").or_else(|| typed.strip_prefix("/sp ")).unwrap_or(&typed);
            let expected: String = text.chars().take(320).collect();
            let expected = match scenario {
                "filters" => expected.replace("[SP]", "[sp]").replace("[/SP]", "[/sp]"),
                _ => expected,
            };
            assert_eq!(
                html_to_text(&received),
                expected,
                "{scenario}: {typed:?} arrived as {received:?}"
            );
        }
    }
}
