//! The headless-Chromium driver against a tiny HTTP server of this test: a page whose own script
//! changes a text through `fetch`, pages that reach for another origin, screenshots at phone and
//! desktop widths, and no browser process left behind.
//!
//! Needs `chromedriver` and `chromium` (`scripts/test` installs them and sets `$CHROMEDRIVER`).

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rosey_testkit::browser::{Browser, BrowserError};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(5);

const INDEX: &str = r#"<!doctype html>
<html><head><title>self-test</title><link rel="icon" href="data:,">
<script src="/app.js" defer></script></head>
<body><h1>Plugins</h1><p id="status">waiting</p><button id="go">go</button></body></html>"#;

const APP_JS: &str = r#"
document.getElementById("go").addEventListener("click", async () => {
  const answer = await fetch("/api/state");
  document.getElementById("status").textContent = await answer.text();
});
"#;

/// Reaches for another origin with an image; `/leak-csp` serves it under a CSP that blocks it.
const LEAK: &str = r#"<!doctype html>
<html><body><p>leak</p><img src="http://example.invalid/x.png" alt=""></body></html>"#;

/// An HTTP/1.1 server on 127.0.0.1 serving the pages above, recording each path asked for.
struct Site {
    origin: String,
    paths: Arc<Mutex<Vec<String>>>,
}

impl Site {
    async fn start() -> Site {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let paths = Arc::new(Mutex::new(Vec::new()));
        let seen = paths.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, seen.clone()));
            }
        });
        Site { origin, paths }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }

    fn hits(&self, path: &str) -> usize {
        self.paths.lock().iter().filter(|p| *p == path).count()
    }
}

/// Answers one request and closes the connection.
async fn serve(mut stream: TcpStream, paths: Arc<Mutex<Vec<String>>>) {
    let mut head = Vec::new();
    let mut buf = [0; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return, // a speculative connection Chromium never used
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
    paths.lock().push(path.clone());
    let (status, kind, extra, body) = match path.as_str() {
        "/" => ("200 OK", "text/html", "", INDEX),
        "/app.js" => ("200 OK", "text/javascript", "", APP_JS),
        "/api/state" => ("200 OK", "text/plain", "", "done: 3 plugins"),
        "/leak" => ("200 OK", "text/html", "", LEAK),
        "/leak-csp" => {
            ("200 OK", "text/html", "Content-Security-Policy: default-src 'self'\r\n", LEAK)
        }
        _ => ("404 Not Found", "text/plain", "", "not found"),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The width in the IHDR chunk of a PNG file, after checking its signature.
fn png_width(path: &Path) -> u32 {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", path.display());
    assert_eq!(&bytes[12..16], b"IHDR");
    u32::from_be_bytes(bytes[16..20].try_into().unwrap())
}

fn screenshot_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-self-test").join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_changes_without_reload_and_every_request_stays_on_the_origin() {
    let site = Site::start().await;
    let browser = Browser::start().await.unwrap();
    browser.goto(&site.url("/")).await.unwrap();
    assert_eq!(browser.texts("#status").await.unwrap(), ["waiting"]);
    browser.execute("window.loadedOnce = true;", vec![]).await.unwrap();

    browser
        .execute("document.getElementById(arguments[0]).click();", vec![json!("go")])
        .await
        .unwrap();
    browser.wait_for_text("#status", "done: 3 plugins", WAIT).await.unwrap();

    let same_page = browser.execute("return window.loadedOnce === true;", vec![]).await.unwrap();
    assert_eq!(same_page, json!(true), "the page was reloaded");
    assert_eq!(site.hits("/"), 1);

    let urls = browser.requested_urls().await.unwrap();
    let foreign: Vec<_> = urls.iter().filter(|u| !u.starts_with(&site.url("/"))).collect();
    assert!(foreign.is_empty(), "requests to other origins: {foreign:?}");
    for path in ["/", "/app.js", "/api/state"] {
        assert!(urls.contains(&site.url(path)), "{path} missing from {urls:?}");
    }
    assert_eq!(browser.console_errors().await.unwrap(), Vec::<String>::new());
    browser.quit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_to_another_origin_are_listed_whether_they_fail_or_are_blocked() {
    let site = Site::start().await;
    let browser = Browser::start().await.unwrap();
    let leak = "http://example.invalid/x.png".to_owned();

    browser.goto(&site.url("/leak")).await.unwrap();
    let urls = browser.requested_urls().await.unwrap();
    assert!(urls.contains(&leak), "the failed request is missing from {urls:?}");

    browser.goto(&site.url("/leak-csp")).await.unwrap();
    let urls = browser.requested_urls().await.unwrap();
    assert_eq!(
        urls.iter().filter(|u| **u == leak).count(),
        2,
        "the blocked request is missing from {urls:?}"
    );
    let errors = browser.console_errors().await.unwrap();
    assert!(
        errors.iter().any(|e| e.contains("Content Security Policy") && e.contains(&leak)),
        "no CSP violation among {errors:?}"
    );
    browser.quit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screenshots_are_pngs_as_wide_as_the_window() {
    let site = Site::start().await;
    let browser = Browser::start().await.unwrap();
    browser.goto(&site.url("/")).await.unwrap();
    for (width, height) in [(390, 844), (1280, 800)] {
        browser.set_window_size(width, height).await.unwrap();
        let path = screenshot_path(&format!("index-{width}.png"));
        browser.screenshot(&path).await.unwrap();
        assert_eq!(png_width(&path), width);
        let inner = browser.execute("return window.innerWidth;", vec![]).await.unwrap();
        assert_eq!(inner, json!(width), "the page's viewport");
    }
    browser.quit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_text_times_out_saying_what_it_saw() {
    let site = Site::start().await;
    let browser = Browser::start().await.unwrap();
    browser.goto(&site.url("/")).await.unwrap();
    let error =
        browser.wait_for_text("#status", "never", Duration::from_millis(300)).await.unwrap_err();
    match &error {
        BrowserError::Timeout { seen, .. } => assert_eq!(seen, r#"["waiting"]"#),
        other => panic!("expected a timeout, got {other}"),
    }
    let error = browser.texts("##bad").await.unwrap_err();
    assert!(matches!(error, BrowserError::WebDriver { .. }), "{error}");
    browser.quit().await.unwrap();
}

/// The processes (not yet dead) in process group `group`, or whose command line mentions `dir`.
fn live_processes(group: u32, dir: &Path) -> HashSet<u32> {
    let dir = dir.to_string_lossy().into_owned();
    let mut found = HashSet::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        // Fields after the parenthesised command name: state, ppid, pgrp, ...
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z") {
            continue;
        }
        let in_group = fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(group);
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if in_group || String::from_utf8_lossy(&cmdline).contains(&dir) {
            found.insert(pid);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_browser_leaves_no_process_and_no_profile_behind() {
    let site = Site::start().await;
    let browser = Browser::start().await.unwrap();
    browser.goto(&site.url("/")).await.unwrap();
    let (group, dir) = (browser.process_group(), browser.temp_dir().to_owned());
    let before = live_processes(group, &dir);
    assert!(before.contains(&group), "chromedriver not found in {before:?}");
    assert!(before.len() > 2, "chromium processes not found: {before:?}");

    drop(browser);

    // A killed process that is not our child is reaped by init a moment later: wait for it.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut left = live_processes(group, &dir);
    while !left.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = live_processes(group, &dir);
    }
    assert!(left.is_empty(), "still running after drop: {left:?} (of {before:?})");
    assert!(!dir.exists(), "{} is still there", dir.display());
}
