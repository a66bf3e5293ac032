//! The tiny HTTP listener: `GET /socketconfig/<channel>.json`, everything else 404.
//! One request per connection: read the head, answer, close.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::text;
use crate::wire::js;

/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// How long a client may take to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves HTTP until shutdown; while `failing` holds a status code (not 0), every request is
/// answered with it (a server in trouble).
pub(crate) async fn serve(
    listener: TcpListener,
    ws_port: u16,
    failing: Arc<AtomicU16>,
    mut shutdown: watch::Receiver<()>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let mut shutdown = shutdown.clone();
                    let failing = failing.load(Ordering::Relaxed);
                    tokio::spawn(async move {
                        tokio::select! {
                            () = handle(stream, ws_port, failing) => {}
                            _ = shutdown.changed() => {}
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "fake cytube: http accept failed"),
            },
            _ = shutdown.changed() => break,
        }
    }
}

async fn handle(mut stream: TcpStream, ws_port: u16, failing: u16) {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(Some(head)) => head,
        _ => return,
    };
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    tracing::debug!(method, target, "fake cytube: http request");
    let response = if failing == 0 {
        respond(method, target, ws_port)
    } else {
        let status = format!("{failing} Server Trouble");
        response(&status, "text/html; charset=utf-8", "<h1>Service Unavailable</h1>")
    };
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Reads until the blank line ending the head; `None` on EOF, error or oversize.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(String::from_utf8_lossy(&buf[..end]).into_owned());
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
    }
}

/// The whole response for a request.
fn respond(method: &str, target: &str, ws_port: u16) -> String {
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let channel = path
        .strip_prefix("/socketconfig/")
        .and_then(|rest| rest.strip_suffix(".json"))
        .filter(|_| method == "GET");
    let Some(channel) = channel else {
        return response("404 Not Found", "text/plain; charset=utf-8", "Not Found");
    };
    let channel = percent_decode(channel);
    if text::valid_channel_name(&channel) {
        let body =
            format!(r#"{{"servers":[{{"url":"http://127.0.0.1:{ws_port}","secure":false}}]}}"#);
        response("200 OK", "application/json; charset=utf-8", &body)
    } else {
        let body =
            format!(r#"{{"error":{}}}"#, js(&format!("Channel \"{channel}\" does not exist.")));
        response("404 Not Found", "application/json; charset=utf-8", &body)
    }
}

fn response(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Decodes `%XX` escapes (invalid ones are kept as they are).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socketconfig_bodies() {
        let ok = respond("GET", "/socketconfig/testchan.json", 1337);
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(ok.ends_with(r#"{"servers":[{"url":"http://127.0.0.1:1337","secure":false}]}"#));
        let bad = respond("GET", "/socketconfig/%24bad%24.json", 1337);
        assert!(bad.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(bad.ends_with(r#"{"error":"Channel \"$bad$\" does not exist."}"#));
        assert!(respond("GET", "/", 1).starts_with("HTTP/1.1 404"));
        assert!(respond("POST", "/socketconfig/testchan.json", 1).starts_with("HTTP/1.1 404"));
    }
}
