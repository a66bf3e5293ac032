//! The fake CyTube server against the recorded scenarios, driven by a raw websocket
//! client the way the recorder drove the real server.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use rosey_testkit::cytube::{Account, FakeCytube, FakeCytubeOptions, ServerEvent};
use support::{Client, Replay, event_arg, fixtures, scenario};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(5);

fn recorded_accounts() -> FakeCytubeOptions {
    FakeCytubeOptions { accounts: Account::recorded(), ..Default::default() }
}

async fn replay(name: &str, options: FakeCytubeOptions, channel: &str, conns: &[&str]) {
    let server = FakeCytube::start(options).await.unwrap();
    let replay = Replay {
        server: &server,
        channel: server.channel(channel),
        conns,
        until_ms: u64::MAX,
        timed: false,
    };
    replay.run(name).await;
}

#[tokio::test]
async fn replays_handshake_guest_join() {
    replay("handshake_guest_join", Default::default(), "testchan", &["bot"]).await;
}

#[tokio::test]
async fn replays_registered_login() {
    replay("registered_login", recorded_accounts(), "testchan", &["bot"]).await;
}

#[tokio::test]
async fn replays_chat_roundtrip() {
    replay("chat_roundtrip", Default::default(), "testchan", &["bot"]).await;
}

#[tokio::test]
async fn replays_pm() {
    replay("pm", Default::default(), "testchan", &["bot"]).await;
}

#[tokio::test]
async fn replays_errors_without_the_per_ip_probes() {
    replay("errors", recorded_accounts(), "testchan", &["badjoin", "bot", "bot2"]).await;
}

#[tokio::test]
async fn replays_flood_at_the_recorded_pace() {
    let server = FakeCytube::start(Default::default()).await.unwrap();
    let mut events = server.subscribe();
    let replay = Replay {
        server: &server,
        channel: server.channel("testchan"),
        conns: &["bot"],
        until_ms: u64::MAX,
        timed: true,
    };
    replay.run("flood").await;
    let log = server.channel("testchan").chat_log();
    assert_eq!(log.len(), 21);
    assert_eq!(log[20], ("RoseyBot".to_owned(), "after the cooldown".to_owned()));
    let dropped = FakeCytube::wait_for(&mut events, WAIT, |ev| match ev {
        ServerEvent::ChatDropped { msg, cooldown_ms, .. } => Some((msg.clone(), *cooldown_ms)),
        _ => None,
    })
    .await;
    assert_eq!(dropped, ("flood 21".to_owned(), 100));
}

#[tokio::test]
async fn replays_channel_antiflood_at_the_recorded_pace() {
    let server = FakeCytube::start(recorded_accounts()).await.unwrap();
    let channel = server.channel("roseyroom");
    channel.set_registered(true);
    let replay =
        Replay { server: &server, channel, conns: &["bot"], until_ms: u64::MAX, timed: true };
    replay.run("flood_antiflood").await;
}

#[tokio::test]
async fn replays_channel_password() {
    let server = FakeCytube::start(recorded_accounts()).await.unwrap();
    let channel = server.channel("roseyroom");
    channel.set_registered(true);
    // The registered channel's chat buffer from an earlier scenario, as the bot saw it.
    for rec in scenario("channel_password").iter().filter(|r| r.conn == "bot" && r.t < 1500) {
        if let Some(arg) = event_arg(&rec.frame).filter(|_| rec.frame.contains("chatMsg")) {
            let s = |k: &str| arg[k].as_str().unwrap().to_owned();
            channel.add_history(&s("username"), &s("msg"), arg["time"].as_i64().unwrap());
        }
    }
    let replay = Replay {
        server: &server,
        channel,
        conns: &["bot", "bot2", "bot3"],
        until_ms: u64::MAX,
        timed: false,
    };
    replay.run("channel_password").await;
}

#[tokio::test]
async fn replays_users_until_the_moderator_commands() {
    // In `roseyroom`, which it owns, `rosey_admin` has channel rank 5.
    let owner = Account::new("rosey_admin", "hunter22").with_channel_rank(5.0);
    let options = FakeCytubeOptions { accounts: vec![owner], ..Default::default() };
    let server = FakeCytube::start(options).await.unwrap();
    let channel = server.channel("roseyroom");
    channel.set_registered(true);
    // `/rank` and `assignLeader` are not simulated; stop before them.
    let replay =
        Replay { server: &server, channel, conns: &["bot"], until_ms: 11_500, timed: false };
    replay.run("users").await;
}

async fn http_get(server: &FakeCytube, path: &str) -> String {
    let addr = server.url().trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response)).await.unwrap().unwrap();
    response
}

#[tokio::test]
async fn socketconfig_over_http() {
    let server = FakeCytube::start(Default::default()).await.unwrap();
    let ws_port = server.ws_url().split(':').nth(2).unwrap().split('/').next().unwrap().to_owned();

    let ok = http_get(&server, "/socketconfig/testchan.json").await;
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(ok.contains("Content-Type: application/json; charset=utf-8\r\n"), "{ok}");
    let recorded = std::fs::read_to_string(fixtures().join("socketconfig.json")).unwrap();
    let expected = recorded
        .trim_end()
        .replace("http://localhost:1337", &format!("http://127.0.0.1:{ws_port}"));
    assert!(ok.ends_with(&format!("\r\n\r\n{expected}")), "{ok}");

    let bad = http_get(&server, "/socketconfig/$bad$.json").await;
    assert!(bad.starts_with("HTTP/1.1 404 Not Found\r\n"), "{bad}");
    assert!(bad.contains("Content-Type: application/json; charset=utf-8\r\n"), "{bad}");
    let recorded = std::fs::read_to_string(fixtures().join("socketconfig_invalid.json")).unwrap();
    assert!(bad.ends_with(&format!("\r\n\r\n{}", recorded.trim_end())), "{bad}");

    assert!(http_get(&server, "/").await.starts_with("HTTP/1.1 404 Not Found\r\n"));
}

fn short_pings() -> FakeCytubeOptions {
    FakeCytubeOptions {
        ping_interval: Duration::from_millis(50),
        ping_timeout: Duration::from_millis(150),
        ..Default::default()
    }
}

#[tokio::test]
async fn unanswered_ping_closes_the_socket() {
    let server = FakeCytube::start(short_pings()).await.unwrap();
    let mut events = server.subscribe();
    let mut client = Client::open(&server).await;
    client.auto_pong = false;
    let open = client.recv().await;
    assert!(
        open.contains(r#""pingInterval":50,"pingTimeout":150,"maxPayload":1048576}"#),
        "{open}"
    );
    assert_eq!(client.recv().await, "2");
    match client.next_message().await {
        Some(Ok(Message::Close(None))) => {}
        other => panic!("expected a close frame without a code, got {other:?}"),
    }
    FakeCytube::wait_for(&mut events, WAIT, |ev| {
        matches!(ev, ServerEvent::Disconnected { .. }).then_some(())
    })
    .await;
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn answered_pings_keep_the_socket() {
    let server = FakeCytube::start(short_pings()).await.unwrap();
    let mut events = server.subscribe();
    let mut client = Client::connected(&server).await;
    // `recv` answers pings; three pongs span well over one ping timeout.
    let reader = tokio::spawn(async move {
        loop {
            let f = client.recv().await;
            assert!(f.starts_with(r#"42["usercount""#), "{f}");
        }
    });
    for _ in 0..4 {
        FakeCytube::wait_for(&mut events, WAIT, |ev| {
            matches!(ev, ServerEvent::Pong { .. }).then_some(())
        })
        .await;
    }
    assert_eq!(server.connections(), 1);
    reader.abort();
}

#[tokio::test]
async fn drop_connections_cuts_every_socket() {
    let server = FakeCytube::start(Default::default()).await.unwrap();
    let mut events = server.subscribe();
    let mut a = Client::connected(&server).await;
    let mut b = Client::connected(&server).await;
    assert_eq!(server.connections(), 2);
    server.drop_connections();
    for client in [&mut a, &mut b] {
        match client.next_message().await {
            None | Some(Err(_)) => {}
            other => panic!("expected the socket to be cut, got {other:?}"),
        }
    }
    for _ in 0..2 {
        FakeCytube::wait_for(&mut events, WAIT, |ev| {
            matches!(ev, ServerEvent::Disconnected { .. }).then_some(())
        })
        .await;
    }
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn connect_throttle_answers_44_and_keeps_the_socket() {
    let options = FakeCytubeOptions { connect_limit: Some(2), ..Default::default() };
    let server = FakeCytube::start(options).await.unwrap();
    let _a = Client::connected(&server).await;
    let _b = Client::connected(&server).await;
    let mut c = Client::open(&server).await;
    assert!(c.recv().await.starts_with("0{"));
    c.send("40").await;
    assert_eq!(c.recv().await, r#"44{"message":"Rate limit exceeded"}"#);
    server.reset_connect_limit();
    c.send("40").await;
    assert!(c.recv().await.starts_with("40{\"sid\":"));
    assert_eq!(c.recv().await, r#"42["rank",-1]"#);
}

#[tokio::test]
async fn events_before_the_namespace_connect_are_dropped() {
    let server = FakeCytube::start(Default::default()).await.unwrap();
    let mut events = server.subscribe();
    let mut c = Client::open(&server).await;
    assert!(c.recv().await.starts_with("0{"));
    c.send(r#"42["joinChannel",{"name":"early"}]"#).await;
    c.send("40").await;
    assert!(c.recv().await.starts_with("40{"));
    assert_eq!(c.recv().await, r#"42["rank",-1]"#);
    c.send(r#"42["joinChannel",{"name":"late"}]"#).await;
    let joined = FakeCytube::wait_for(&mut events, WAIT, |ev| match ev {
        ServerEvent::Joined { channel, .. } => Some(channel.clone()),
        _ => None,
    })
    .await;
    assert_eq!(joined, "late");
    assert!(c.recv().await.starts_with(r#"42["setPermissions""#));
}

async fn joined_guest(server: &FakeCytube, channel: &str, name: &str) -> Client {
    let mut c = Client::connected(server).await;
    c.send(&format!(r#"42["joinChannel",{{"name":"{channel}"}}]"#)).await;
    while !c.recv_frame().await.starts_with(r#"42["userlist""#) {}
    assert_eq!(c.recv_frame().await, r#"42["channelNotRegistered"]"#);
    c.send(&format!(r#"42["login",{{"name":"{name}"}}]"#)).await;
    assert_eq!(c.recv_frame().await, r#"42["rank",0]"#);
    assert!(c.recv_frame().await.contains(r#""success":true"#));
    assert!(c.recv_frame().await.starts_with(r#"42["addUser""#));
    c
}

#[tokio::test]
async fn guest_login_delay_refuses_quick_guests() {
    let options = FakeCytubeOptions {
        guest_login_delay: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    let server = FakeCytube::start(options).await.unwrap();
    let _first = joined_guest(&server, "testchan", "first").await;
    let mut c = Client::connected(&server).await;
    c.send(r#"42["joinChannel",{"name":"testchan"}]"#).await;
    while !c.recv_frame().await.starts_with(r#"42["channelNotRegistered""#) {}
    c.send(r#"42["login",{"name":"second"}]"#).await;
    assert_eq!(
        c.recv_frame().await,
        r#"42["login",{"success":false,"error":"Guest logins are restricted to one per IP address per 60 seconds."}]"#
    );
}

#[tokio::test]
async fn kick_and_ban() {
    let server = FakeCytube::start(Default::default()).await.unwrap();
    let chan = server.channel("testchan");
    let mut bob = joined_guest(&server, "testchan", "Bob").await;
    let mut watcher = joined_guest(&server, "testchan", "watcher").await;
    assert!(bob.recv_frame().await.contains(r#""name":"watcher""#));

    chan.kick("bob", "go away");
    assert_eq!(bob.recv_frame().await, r#"42["kick",{"reason":"go away"}]"#);
    assert_eq!(bob.recv_frame().await, "41");
    assert_eq!(watcher.recv_frame().await, r#"42["userLeave",{"name":"Bob"}]"#);
    // The websocket stays open, the namespace does not: events are ignored now.
    bob.send(r#"42["chatMsg",{"msg":"still here?"}]"#).await;
    bob.close().await;

    chan.ban("Bob");
    let mut again = Client::connected(&server).await;
    again.send(r#"42["joinChannel",{"name":"testchan"}]"#).await;
    while !again.recv_frame().await.starts_with(r#"42["channelNotRegistered""#) {}
    again.send(r#"42["login",{"name":"bob"}]"#).await;
    assert_eq!(again.recv_frame().await, r#"42["kick",{"reason":"You're banned!"}]"#);
    assert_eq!(again.recv_frame().await, "41");
    assert!(chan.chat_log().is_empty());
}

#[tokio::test]
async fn peer_controls_send_the_recorded_shapes() {
    let server = FakeCytube::start(Default::default()).await.unwrap();
    let mut events = server.subscribe();
    let chan = server.channel("testchan");
    let mut bot = joined_guest(&server, "testchan", "RoseyBot").await;

    chan.join_peer("alice", 0.0);
    assert_eq!(
        bot.recv_frame().await,
        r#"42["addUser",{"name":"alice","rank":0,"profile":{"image":"","text":""},"meta":{"afk":false,"muted":false}}]"#
    );
    chan.set_rank("alice", 1.5);
    assert_eq!(bot.recv_frame().await, r#"42["setUserRank",{"name":"alice","rank":1.5}]"#);
    chan.set_afk("alice", true);
    assert_eq!(
        bot.recv_frame().await,
        r#"42["setUserMeta",{"name":"alice","meta":{"afk":true,"muted":false}}]"#
    );
    assert_eq!(bot.recv_frame().await, r#"42["setAFK",{"name":"alice","afk":true}]"#);
    chan.change_media("A: custom, 60 s, temp", "cu", "cu:abc=", 60.0);
    assert_eq!(
        bot.recv_frame().await,
        r#"42["changeMedia",{"id":"cu:abc=","title":"A: custom, 60 s, temp","seconds":60,"duration":"01:00","type":"cu","meta":{},"currentTime":-3,"paused":true}]"#
    );
    chan.pm("alice", "roseybot", "hi <b>");
    let pm = bot.recv_frame().await;
    assert!(
        pm.starts_with(r#"42["pm",{"username":"alice","msg":"hi &lt;b&gt;","meta":{},"time":"#)
    );
    assert!(pm.ends_with(r#","to":"RoseyBot"}]"#), "{pm}");

    bot.send(r#"42["pm",{"to":"ALICE","msg":"back at you","meta":{}}]"#).await;
    assert!(bot.recv_frame().await.ends_with(r#","to":"alice"}]"#));
    let pm = FakeCytube::wait_for(&mut events, WAIT, |ev| match ev {
        ServerEvent::Pm { from, to, msg, .. } => Some((from.clone(), to.clone(), msg.clone())),
        _ => None,
    })
    .await;
    assert_eq!(pm, ("RoseyBot".into(), "alice".into(), "back at you".into()));

    chan.say("alice", "/me waves at http://x.test/?a&b");
    assert_eq!(
        support::normalize(&bot.recv_frame().await),
        r#"42["chatMsg",{"username":"alice","msg":"waves at <a href=\"http://x.test/?a&amp;b\" target=\"_blank\" rel=\"noopener noreferrer\">http://x.test/?a&amp;b</a>","meta":{"addClass":"action","action":true},"time":*}]"#
    );
    chan.leave_peer("alice");
    assert_eq!(bot.recv_frame().await, r#"42["userLeave",{"name":"alice"}]"#);
}

#[tokio::test]
async fn history_is_the_last_fifteen_lines() {
    let server = FakeCytube::start(Default::default()).await.unwrap();
    let chan = server.channel("testchan");
    for i in 0..20 {
        chan.add_history("old", &format!("line {i}"), 1_795_343_000_000 + i);
    }
    chan.join_peer("alice", 0.0);
    let mut c = Client::connected(&server).await;
    c.send(r#"42["joinChannel",{"name":"testchan"}]"#).await;
    let mut history = Vec::new();
    loop {
        let f = c.recv_frame().await;
        if f.starts_with(r#"42["chatMsg""#) {
            history.push(event_arg(&f).unwrap()["msg"].as_str().unwrap().to_owned());
        }
        if f.starts_with(r#"42["userlist""#) {
            assert!(f.contains(r#""name":"alice""#));
            break;
        }
    }
    assert_eq!(history.first().map(String::as_str), Some("line 5"));
    assert_eq!(history.len(), 15);
}

#[tokio::test]
async fn the_first_joiner_gets_usercount_inside_the_burst() {
    let server = FakeCytube::start(Default::default()).await.unwrap();
    let mut c = Client::connected(&server).await;
    c.send(r#"42["joinChannel",{"name":"testchan"}]"#).await;
    while !c.recv().await.starts_with(r#"42["userlist""#) {}
    // As alice saw it in handshake_guest_join.peers.jsonl.
    assert_eq!(c.recv().await, r#"42["usercount",1]"#);
    assert_eq!(c.recv().await, r#"42["channelNotRegistered"]"#);
}

#[tokio::test]
async fn dropping_the_server_cuts_every_socket() {
    let server = FakeCytube::start(Default::default()).await.unwrap();
    let mut c = Client::connected(&server).await;
    let url = server.url();
    drop(server);
    match c.next_message().await {
        None | Some(Err(_)) => {}
        other => panic!("expected the socket to be cut, got {other:?}"),
    }
    let addr = url.trim_start_matches("http://").to_owned();
    // The listener is gone (a refused connect), or at least answers nothing.
    if let Ok(mut stream) = TcpStream::connect(addr).await {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut buf)).await;
        assert!(read.is_ok_and(|r| r.is_err() || buf.is_empty()));
    }
}
