//! Finding a channel's socket.io server: `GET <server>/socketconfig/<channel>.json` answers with the
//! servers to connect to (`{"servers":[{"url":"https://…:8443","secure":true}, …]}`); a secure one is
//! preferred. An invalid channel name gets a 404 with `{"error":"Channel \"…\" does not exist."}`.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::CytubeError;

/// How long the socketconfig request may take.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize)]
struct SocketConfig {
    servers: Vec<SocketServer>,
}

#[derive(Debug, Deserialize)]
struct SocketServer {
    url: String,
    #[serde(default)]
    secure: bool,
}

/// TLS settings shared by the socketconfig request and the websocket: rustls with the ring provider
/// and the Mozilla root certificates compiled in (no dependency on the system's certificate store).
pub(super) fn tls_config() -> Result<Arc<rustls::ClientConfig>, CytubeError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|err| CytubeError::Connect(format!("TLS setup failed: {err}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Reads a socketconfig answer and returns the websocket URL to connect to, preferring a secure server.
pub(super) fn choose_socket_url(body: &str) -> Result<String, CytubeError> {
    let config: SocketConfig = serde_json::from_str(body)
        .map_err(|err| CytubeError::Discovery(format!("unreadable socketconfig: {err}")))?;
    let server = config
        .servers
        .iter()
        .find(|s| s.secure)
        .or_else(|| config.servers.first())
        .ok_or_else(|| CytubeError::Discovery("socketconfig lists no server".to_owned()))?;
    websocket_url(&server.url)
}

/// `http://host:port` → `ws://host:port/socket.io/?EIO=4&transport=websocket` (`https` → `wss`).
fn websocket_url(base: &str) -> Result<String, CytubeError> {
    let base = base.trim_end_matches('/');
    let rest = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if base.starts_with("ws://") || base.starts_with("wss://") {
        base.to_owned()
    } else {
        return Err(CytubeError::Discovery(format!("socketconfig gave an unusable URL {base:?}")));
    };
    Ok(format!("{rest}/socket.io/?EIO=4&transport=websocket"))
}

/// Asks `server` where `channel` is served; see the [module docs](self).
pub(super) async fn discover(
    server: &str,
    channel: &str,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<String, CytubeError> {
    let client = reqwest::Client::builder()
        .use_preconfigured_tls((**tls).clone())
        .timeout(DISCOVERY_TIMEOUT)
        .user_agent(concat!("rosey/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|err| CytubeError::Discovery(format!("HTTP client setup failed: {err}")))?;
    let url = format!("{}/socketconfig/{channel}.json", server.trim_end_matches('/'));
    let unreachable = |err: reqwest::Error| {
        // reqwest's message names the URL, which holds no secret.
        CytubeError::Discovery(format!("cannot reach {url}: {}", error_chain(&err)))
    };
    let response = client.get(&url).send().await.map_err(unreachable)?;
    let status = response.status();
    let body = response.text().await.map_err(unreachable)?;
    if status == reqwest::StatusCode::NOT_FOUND {
        let reason = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| "not found".to_owned());
        return Err(CytubeError::UnknownChannel { channel: channel.to_owned(), reason });
    }
    if !status.is_success() {
        return Err(CytubeError::Discovery(format!("{url} answered {status}")));
    }
    choose_socket_url(&body)
}

/// An error and its causes on one line (reqwest hides the interesting part in the source chain).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_module_example_holds() {
        use super::choose_socket_url;

        let body = r#"{"servers":[{"url":"http://cytu.be:8080","secure":false},
                                  {"url":"https://cytu.be:8443","secure":true}]}"#;
        assert_eq!(
            choose_socket_url(body).unwrap(),
            "wss://cytu.be:8443/socket.io/?EIO=4&transport=websocket"
        );
    }

    #[test]
    fn the_recorded_socketconfig_gives_a_websocket_url() {
        let recorded = r#"{"servers":[{"url":"http://localhost:1337","secure":false}]}"#;
        assert_eq!(
            choose_socket_url(recorded).unwrap(),
            "ws://localhost:1337/socket.io/?EIO=4&transport=websocket"
        );
    }

    #[test]
    fn unusable_socketconfig_is_a_clear_error() {
        for body in [r#"{"servers":[]}"#, "<html>", r#"{"servers":[{"url":"ftp://x"}]}"#] {
            let err = choose_socket_url(body).unwrap_err();
            assert!(matches!(err, CytubeError::Discovery(_)), "{body}: {err}");
        }
    }

    #[test]
    fn tls_is_set_up_with_the_ring_provider() {
        assert!(tls_config().is_ok());
    }
}
