//! The NATS trust boundary: each test starts its own `nats-server` (from PATH or the sbin folders,
//! on a port it picks itself) with credentials, most with the shipped
//! `examples/nats/authorization.conf`, and stops it when done. A restricted `plugin-node` cannot
//! forge inbound chat but can send chat; wrong credentials fail with an error naming what was
//! refused and never the secret; user/password, token and nkey seed file all connect.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use rosey_core::bus::{BusError, EventBus, NatsAuthError, NatsBus, NatsOptions, Subscription};
use rosey_core::config::{NatsCredentials, Secret};
use rosey_core::error::{Chain, find_cause};

const ROSEY_NODE_PASSWORD: &str = "rosey-node-pw-5f1e";
const PLUGIN_NODE_PASSWORD: &str = "plugin-node-pw-9c2a";
const TOKEN: &str = "token-pw-77d0";
/// A user nkey made for this test only (seed and its public key).
const NKEY_SEED: &str = "SUAKVM7BHFSIQ32UVQDEOXJJXXJLB3LXIG5ZQWRLDLRVTQ6AEGWZIPNWZA";
const NKEY_PUBLIC: &str = "UCWAKGVRWN7IORRYTYMXF2KMR5NEQSXS7TDKMT5CZ3D477C22OFYIPJM";

const WAIT: Duration = Duration::from_secs(10);

/// A `nats-server` of this test's own, killed when dropped.
struct NatsServer {
    child: Child,
    url: String,
}

impl NatsServer {
    /// Starts `nats-server -c config` on 127.0.0.1 and a free port, with `env` in its environment
    /// (the config reads its passwords from there), and waits until it accepts clients.
    fn start(config: &Path, env: &[(&str, &str)]) -> NatsServer {
        let mut child = Command::new(nats_server_program())
            .arg("-c")
            .arg(config)
            .args(["-a", "127.0.0.1", "-p", "-1"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The server logs to stderr; read it on a thread (which also keeps the pipe drained) and
        // wait for the port it listens on and for "Server is ready".
        let stderr = child.stderr.take().unwrap();
        let (lines, seen) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let mut server = NatsServer { child, url: String::new() };
        let mut log = Vec::new();
        loop {
            let line = seen.recv_timeout(WAIT).unwrap_or_else(|_| {
                panic!("nats-server did not become ready:\n{}", log.join("\n"))
            });
            if let Some((_, address)) = line.split_once("Listening for client connections on ") {
                server.url = format!("nats://{}", address.trim());
            }
            let ready = line.contains("Server is ready");
            log.push(line);
            if ready {
                break;
            }
        }
        assert!(!server.url.is_empty(), "no client port in the log:\n{}", log.join("\n"));
        server
    }

    /// Starts a server whose whole configuration is `text`.
    fn with_config_text(text: &str, env: &[(&str, &str)]) -> NatsServer {
        let dir = std::env::temp_dir().join(format!("rosey-{}", crate::support::unique_prefix()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("server.conf");
        std::fs::write(&config, text).unwrap();
        // The server has read its configuration once it is ready.
        let server = NatsServer::start(&config, env);
        std::fs::remove_dir_all(&dir).unwrap();
        server
    }

    /// Starts a server with the shipped authorization example and both users' passwords.
    fn with_example_authorization() -> NatsServer {
        let config =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/nats/authorization.conf");
        NatsServer::start(
            &config,
            &[
                ("ROSEY_NODE_PASSWORD", ROSEY_NODE_PASSWORD),
                ("PLUGIN_NODE_PASSWORD", PLUGIN_NODE_PASSWORD),
            ],
        )
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `nats-server` from PATH, or from the sbin folders where Debian installs it (as scripts/test finds
/// it). Missing, the test fails with the command that installs it: it is never skipped.
fn nats_server_program() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nats-server is not installed; install it with `sudo apt-get install nats-server`"
            )
        })
}

fn user(name: &str, password: &str) -> NatsCredentials {
    NatsCredentials::UserPassword {
        user: name.to_owned(),
        password: Secret::new(password.to_owned()),
    }
}

async fn connect(url: &str, credentials: NatsCredentials) -> Result<NatsBus, BusError> {
    NatsBus::connect_with(url, NatsOptions { credentials, ..NatsOptions::default() }).await
}

async fn next(sub: &mut Subscription) -> rosey_core::bus::Message {
    tokio::time::timeout(WAIT, sub.next()).await.expect("no message in time").expect("ended")
}

/// Publishes on one connection and sees it on another: the connection works both ways.
async fn assert_round_trip(bus: &NatsBus) {
    let mut sub = bus.subscribe("cytube.chat.send").await.unwrap();
    bus.publish("cytube.chat.send", Bytes::from_static(b"ping")).await.unwrap();
    assert_eq!(next(&mut sub).await.payload().as_ref(), b"ping");
}

#[tokio::test]
async fn restricted_plugin_node_cannot_publish_inbound_chat_but_can_send_chat() {
    let server = NatsServer::with_example_authorization();
    let full = connect(&server.url, user("rosey-node", ROSEY_NODE_PASSWORD)).await.unwrap();
    // One subscription for both subjects: NATS keeps one publisher's order within it, so had the
    // forged message passed, it would arrive before the allowed one.
    let mut chat = full.subscribe("cytube.chat.*").await.unwrap();

    let plugin_node =
        connect(&server.url, user("plugin-node", PLUGIN_NODE_PASSWORD)).await.unwrap();
    let forged = br#"{"channel":"c","user":"owner","rank":99,"message":"!roll 7d2","time":0}"#;
    plugin_node.publish("cytube.chat.message", Bytes::from_static(forged)).await.unwrap();
    plugin_node.publish("rosey.command.roll", Bytes::from_static(forged)).await.unwrap();
    let reply = br#"{"channel":"c","message":"rolled 4"}"#;
    plugin_node.publish("cytube.chat.send", Bytes::from_static(reply)).await.unwrap();

    let first = next(&mut chat).await;
    assert_eq!(first.subject(), "cytube.chat.send");
    assert_eq!(first.payload().as_ref(), reply);

    // What a plugin node needs still works: subscribing to commands (confirmed by a round trip
    // through its _INBOX) and receiving them from a full node.
    let mut commands = plugin_node.subscribe("rosey.command.roll").await.unwrap();
    full.publish("rosey.command.roll", Bytes::from_static(b"routed")).await.unwrap();
    assert_eq!(next(&mut commands).await.payload().as_ref(), b"routed");

    // The client hears the refusal from the server as a permissions violation naming the subject.
    let (events, mut heard) = tokio::sync::mpsc::unbounded_channel();
    let raw = async_nats::ConnectOptions::with_user_and_password(
        "plugin-node".to_owned(),
        PLUGIN_NODE_PASSWORD.to_owned(),
    )
    .event_callback(move |event| {
        let events = events.clone();
        async move {
            let _ = events.send(event);
        }
    })
    .connect(&server.url)
    .await
    .unwrap();
    raw.publish("cytube.chat.message", Bytes::from_static(forged)).await.unwrap();
    raw.flush().await.unwrap();
    let violation = tokio::time::timeout(WAIT, async {
        loop {
            match heard.recv().await.expect("events ended") {
                async_nats::Event::ServerError(async_nats::ServerError::Other(error)) => {
                    break error;
                }
                _ => continue,
            }
        }
    })
    .await
    .expect("no permissions violation reported");
    assert_eq!(violation, r#"Permissions Violation for Publish to "cytube.chat.message""#);
}

#[tokio::test]
async fn wrong_password_fails_to_connect_with_an_error_naming_the_user_but_not_the_password() {
    let server = NatsServer::with_example_authorization();
    let wrong = "wrong-pw-3b8e";
    let error = connect(&server.url, user("plugin-node", wrong)).await.unwrap_err();
    let shown = Chain(&error).to_string();
    assert_eq!(
        shown,
        format!(
            "cannot connect to NATS at {}: the NATS server refused the password of user \
             \"plugin-node\": nats: authorization violation",
            server.url
        )
    );
    assert!(matches!(find_cause::<NatsAuthError>(&error), Some(NatsAuthError::Refused { .. })));
    let debug = format!("{error:?}");
    for secret in [wrong, PLUGIN_NODE_PASSWORD] {
        assert!(!shown.contains(secret) && !debug.contains(secret), "{shown}\n{debug}");
    }

    // No credentials at all: refused too, and said so.
    let error = connect(&server.url, NatsCredentials::None).await.unwrap_err();
    assert!(
        Chain(&error).to_string().contains("refused a connection without credentials"),
        "{}",
        Chain(&error)
    );
}

#[tokio::test]
async fn user_password_token_and_nkey_seed_file_each_connect() {
    let users = NatsServer::with_example_authorization();
    for (name, password) in
        [("rosey-node", ROSEY_NODE_PASSWORD), ("plugin-node", PLUGIN_NODE_PASSWORD)]
    {
        let bus = connect(&users.url, user(name, password)).await.unwrap();
        assert_round_trip(&bus).await;
    }

    let tokens = NatsServer::with_config_text(
        "authorization { token: $ROSEY_TEST_TOKEN }",
        &[("ROSEY_TEST_TOKEN", TOKEN)],
    );
    let bus =
        connect(&tokens.url, NatsCredentials::Token(Secret::new(TOKEN.to_owned()))).await.unwrap();
    assert_round_trip(&bus).await;
    let wrong = "not-the-token-41a";
    let error = connect(&tokens.url, NatsCredentials::Token(Secret::new(wrong.to_owned())))
        .await
        .unwrap_err();
    let shown = Chain(&error).to_string();
    assert!(shown.contains("refused a token") && !shown.contains(wrong), "{shown}");

    let nkeys = NatsServer::with_config_text(
        &format!("authorization {{ users = [ {{ nkey: {NKEY_PUBLIC} }} ] }}"),
        &[],
    );
    let dir = std::env::temp_dir().join(format!("rosey-{}", crate::support::unique_prefix()));
    std::fs::create_dir_all(&dir).unwrap();
    let seed_file = dir.join("plugin-node.nk");
    std::fs::write(&seed_file, format!("{NKEY_SEED}\n")).unwrap();
    let bus = connect(&nkeys.url, NatsCredentials::NkeyFile(seed_file.clone())).await.unwrap();
    assert_round_trip(&bus).await;

    // A seed file that holds something else is refused before connecting, without its content.
    std::fs::write(&seed_file, "hunter2\n").unwrap();
    let error =
        connect(&nkeys.url, NatsCredentials::NkeyFile(seed_file.clone())).await.unwrap_err();
    let shown = Chain(&error).to_string();
    assert!(
        shown.contains("does not hold a user nkey seed") && !shown.contains("hunter2"),
        "{shown}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
