//! Headless Chromium for tests of web pages: [`Browser`] starts one `chromedriver` and one
//! browser session and speaks W3C WebDriver to it over HTTP on 127.0.0.1.
//!
//! ```no_run
//! # async fn demo() -> Result<(), rosey_testkit::browser::BrowserError> {
//! use std::path::Path;
//! use std::time::Duration;
//! use rosey_testkit::browser::Browser;
//!
//! let browser = Browser::start().await?;
//! browser.set_window_size(1280, 800).await?;
//! browser.goto("http://127.0.0.1:8080/").await?;
//! browser.wait_for_text(".card h2", "dice-roller", Duration::from_secs(5)).await?;
//! let foreign: Vec<String> = browser
//!     .requested_urls()
//!     .await?
//!     .into_iter()
//!     .filter(|url| !url.starts_with("http://127.0.0.1:8080/"))
//!     .collect();
//! assert!(foreign.is_empty(), "requests to other origins: {foreign:?}");
//! browser.screenshot(Path::new("target/screenshots/dashboard-1280.png")).await?;
//! browser.quit().await?;
//! # Ok(()) }
//! ```
//!
//! The programs come from `$CHROMEDRIVER` (default `/usr/bin/chromedriver`) and `$CHROMIUM`
//! (default `/usr/bin/chromium`), the Debian packages `chromium-driver` and `chromium`. A missing
//! program is an error carrying the install command ([`BrowserError::NotInstalled`]); nothing is
//! skipped.
//!
//! Chromium runs with a fresh profile and `HOME` in a temporary directory (nothing is written to
//! the user's home) and with its own background traffic turned off (component updates, sync,
//! QUIC, proxies), so that on a closed network it does not try Google's hosts and every request
//! it makes is one the page asked for.

mod process;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use std::{fmt, fs, io};

use base64::Engine;
use parking_lot::Mutex;
use serde_json::{Value, json};

use process::{DriverProcess, TempDir, installed};

/// The command that installs both programs on Debian and Ubuntu.
pub const INSTALL_HINT: &str = "sudo apt-get install chromium chromium-driver";

/// How long `chromedriver` may take to listen, and the browser to open.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// WebDriver's page-load timeout for [`Browser::goto`].
const PAGE_LOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// WebDriver's script timeout, unless [`Browser::wait_for_text`] needs longer.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);
/// How much longer than the WebDriver timeout an HTTP request may take before it counts as hung.
const HTTP_MARGIN: Duration = Duration::from_secs(10);

/// URL schemes that never leave the browser, left out of [`Browser::requested_urls`].
const LOCAL_SCHEMES: &[&str] =
    &["data:", "blob:", "about:", "chrome:", "chrome-extension:", "devtools:"];

/// Why the browser could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    /// `chromedriver` or Chromium is not where it was looked for.
    #[error("{} is not installed (or not executable); install it with `{install_hint}`", which.display())]
    NotInstalled {
        /// The path looked at (`$CHROMEDRIVER`/`$CHROMIUM` or the Debian default).
        which: PathBuf,
        /// The command that installs it: [`INSTALL_HINT`].
        install_hint: &'static str,
    },
    /// `chromedriver` could not be started, or exited or stayed silent before it was ready.
    #[error("could not start {}: {reason}", program.display())]
    Spawn {
        /// The program.
        program: PathBuf,
        /// What went wrong, with the end of its log when there is one.
        reason: String,
    },
    /// `chromedriver` answered a command with an error.
    #[error("WebDriver {command} failed with HTTP {status}: {message}")]
    WebDriver {
        /// The command, as `METHOD /path`.
        command: String,
        /// The HTTP status.
        status: u16,
        /// The WebDriver error code and message (`javascript error: …`), or the body as sent.
        message: String,
    },
    /// `chromedriver` could not be reached, or did not answer in time.
    #[error("WebDriver {command}: no answer from chromedriver: {source}")]
    Transport {
        /// The command, as `METHOD /path`.
        command: String,
        /// The HTTP client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Something awaited in the page did not happen in time.
    #[error("timed out waiting for {what}; seen: {seen}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// What was there instead, as JSON.
        seen: String,
    },
    /// A file could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// One `chromedriver` process with one headless Chromium session.
///
/// Dropping it without [`quit`](Self::quit) kills `chromedriver` and every Chromium process
/// (they share a process group; the crash handler, which leaves it, is found by the temporary
/// directory in its command line) and removes the temporary directory. `quit` closes the browser
/// first, which is gentler.
pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`.
    session: String,
    /// The WebDriver script timeout in force, in milliseconds.
    script_timeout_ms: AtomicU64,
    /// Every URL read from the performance log so far (reading the log empties it).
    requested: Mutex<Vec<String>>,
    /// Every SEVERE browser log message read so far.
    errors: Mutex<Vec<String>>,
    driver: DriverProcess,
}

impl fmt::Debug for Browser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Browser")
            .field("session", &self.session)
            .field("driver_pid", &self.driver.pid())
            .finish_non_exhaustive()
    }
}

impl Browser {
    /// Starts `chromedriver` on a free loopback port, waits until it is ready and opens a
    /// headless Chromium session with a fresh profile, performance (network) and browser
    /// logging on.
    ///
    /// # Errors
    /// [`BrowserError::NotInstalled`] when either program is missing, [`BrowserError::Spawn`]
    /// when `chromedriver` does not come up within 20 s, [`BrowserError::WebDriver`] when
    /// Chromium does not start (the message says why).
    pub async fn start() -> Result<Browser, BrowserError> {
        let chromedriver = installed("CHROMEDRIVER", "/usr/bin/chromedriver")?;
        let chromium = installed("CHROMIUM", "/usr/bin/chromium")?;
        let dir = TempDir::create()?;
        let (driver, port) = DriverProcess::spawn(&chromedriver, dir, START_TIMEOUT).await?;
        let http = http_client()?;
        let base = format!("http://127.0.0.1:{port}");
        // The port is announced once chromedriver listens; /status says it accepts sessions.
        let status =
            call(&http, reqwest::Method::GET, &format!("{base}/status"), None, HTTP_MARGIN).await?;
        if status.get("ready") != Some(&Value::Bool(true)) {
            return Err(BrowserError::Spawn {
                program: chromedriver,
                reason: format!("/status says {status}"),
            });
        }
        let profile = driver.dir().join("profile");
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "pageLoadStrategy": "normal",
                "timeouts": {
                    "pageLoad": millis(PAGE_LOAD_TIMEOUT),
                    "script": millis(SCRIPT_TIMEOUT),
                    "implicit": 0,
                },
                "goog:loggingPrefs": { "performance": "ALL", "browser": "ALL" },
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": chromium_args(&profile),
                    "perfLoggingPrefs": { "enableNetwork": true, "enablePage": false },
                },
            }}
        });
        let created = call(
            &http,
            reqwest::Method::POST,
            &format!("{base}/session"),
            Some(capabilities),
            START_TIMEOUT + HTTP_MARGIN,
        )
        .await?;
        let Some(id) = created.get("sessionId").and_then(Value::as_str) else {
            return Err(BrowserError::WebDriver {
                command: "POST /session".into(),
                status: 200,
                message: format!("no sessionId in {created}"),
            });
        };
        tracing::debug!(port, session = id, pid = driver.pid(), "browser started");
        Ok(Browser {
            http,
            session: format!("{base}/session/{id}"),
            script_timeout_ms: AtomicU64::new(millis(SCRIPT_TIMEOUT)),
            requested: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
            driver,
        })
    }

    /// The process id of `chromedriver`, which also leads the process group Chromium runs in
    /// (for tests that check nothing is left behind).
    pub fn process_group(&self) -> u32 {
        self.driver.pid()
    }

    /// The temporary directory of this browser (Chromium's profile, the `chromedriver` log);
    /// removed when the browser quits or is dropped.
    pub fn temp_dir(&self) -> &Path {
        self.driver.dir()
    }

    /// Resizes the window; in headless mode the viewport (and so [`screenshot`](Self::screenshot))
    /// is then `width` × `height` CSS pixels.
    pub async fn set_window_size(&self, width: u32, height: u32) -> Result<(), BrowserError> {
        self.command(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await
        .map(drop)
    }

    /// Opens `url` and returns once it has loaded (the `load` event, so images and scripts
    /// included), or fails after 30 s.
    pub async fn goto(&self, url: &str) -> Result<(), BrowserError> {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await.map(drop)
    }

    /// Runs `script` as the body of a function in the page (`arguments[i]` are `args`) and
    /// returns what it returns, as JSON (DOM elements become WebDriver element references).
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Result<Value, BrowserError> {
        let body = json!({ "script": script, "args": args });
        self.command(reqwest::Method::POST, "/execute/sync", Some(body)).await
    }

    /// Like [`execute`](Self::execute), but the result is what the script passes to the callback
    /// WebDriver adds as its last argument (`arguments[arguments.length - 1]`): for waiting on
    /// the page (a `MutationObserver`, a `fetch`) without polling from here. The script should
    /// call it within a timeout of its own; WebDriver gives up after 30 s (or 10 s more than the
    /// longest [`wait_for_text`](Self::wait_for_text) so far), an error then.
    pub async fn execute_async(
        &self,
        script: &str,
        args: Vec<Value>,
    ) -> Result<Value, BrowserError> {
        let body = json!({ "script": script, "args": args });
        self.command(reqwest::Method::POST, "/execute/async", Some(body)).await
    }

    /// The `textContent` of every element matching the CSS selector `css`, in document order.
    pub async fn texts(&self, css: &str) -> Result<Vec<String>, BrowserError> {
        let value = self
            .execute(
                "return Array.from(document.querySelectorAll(arguments[0]), e => e.textContent);",
                vec![json!(css)],
            )
            .await?;
        Ok(strings(&value))
    }

    /// Waits until an element matching `css` has a `textContent` containing `expected`, watching
    /// the page with a `MutationObserver` (no reload, no polling).
    ///
    /// # Errors
    /// [`BrowserError::Timeout`] after `timeout`, with the texts of the matching elements then.
    pub async fn wait_for_text(
        &self,
        css: &str,
        expected: &str,
        timeout: Duration,
    ) -> Result<(), BrowserError> {
        const SCRIPT: &str = r#"
            const [css, expected, ms, done] = arguments;
            const texts = () => Array.from(document.querySelectorAll(css), e => e.textContent);
            const found = () => texts().some(t => t.includes(expected));
            if (found()) { done({ found: true }); return; }
            let timer;
            const observer = new MutationObserver(() => {
                if (found()) { observer.disconnect(); clearTimeout(timer); done({ found: true }); }
            });
            observer.observe(document, { subtree: true, childList: true, characterData: true });
            timer = setTimeout(() => { observer.disconnect(); done({ found: false, seen: texts() }); }, ms);
        "#;
        self.ensure_script_timeout(timeout + HTTP_MARGIN).await?;
        let result = self
            .execute_async(SCRIPT, vec![json!(css), json!(expected), json!(millis(timeout))])
            .await?;
        if result.get("found") == Some(&Value::Bool(true)) {
            return Ok(());
        }
        Err(BrowserError::Timeout {
            what: format!("{expected:?} in the text of `{css}` within {timeout:?}"),
            seen: result.get("seen").map_or_else(|| result.to_string(), Value::to_string),
        })
    }

    /// Saves what the viewport shows as a PNG at `path` (creating its directory), one image
    /// pixel per CSS pixel.
    pub async fn screenshot(&self, path: &Path) -> Result<(), BrowserError> {
        let value = self.command(reqwest::Method::GET, "/screenshot", None).await?;
        let png = value
            .as_str()
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .ok_or_else(|| BrowserError::WebDriver {
                command: "GET /screenshot".into(),
                status: 200,
                message: "the answer is not a base64 string".into(),
            })?;
        let context = || format!("writing the screenshot {}", path.display());
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)
                .map_err(|source| BrowserError::Io { context: context(), source })?;
        }
        fs::write(path, png).map_err(|source| BrowserError::Io { context: context(), source })
    }

    /// Every URL the page asked for since start, in order and with repeats: each
    /// `Network.requestWillBeSent` and `Network.webSocketCreated` in the performance log,
    /// so requests that were blocked (CSP, mixed content) or failed (unknown host) are listed
    /// too. URLs that never leave the browser (`data:`, `blob:`, `about:`, `chrome:`, …) are
    /// left out; Chromium's own traffic is off (`--disable-background-networking`) and was never
    /// in this log, which only covers pages.
    pub async fn requested_urls(&self) -> Result<Vec<String>, BrowserError> {
        let entries = self.read_log("performance").await?;
        let urls = entries.iter().filter_map(|entry| {
            let message: Value = serde_json::from_str(entry.get("message")?.as_str()?).ok()?;
            let event = message.get("message")?;
            let url = match event.get("method")?.as_str()? {
                "Network.requestWillBeSent" => event.pointer("/params/request/url")?,
                "Network.webSocketCreated" => event.pointer("/params/url")?,
                _ => return None,
            };
            let url = url.as_str()?;
            (!LOCAL_SCHEMES.iter().any(|scheme| url.starts_with(scheme))).then(|| url.to_owned())
        });
        let mut requested = self.requested.lock();
        requested.extend(urls);
        Ok(requested.clone())
    }

    /// Every browser log entry of level SEVERE since start: uncaught exceptions, failed loads,
    /// Content-Security-Policy violations, `console.error` calls.
    pub async fn console_errors(&self) -> Result<Vec<String>, BrowserError> {
        let entries = self.read_log("browser").await?;
        let messages = entries
            .iter()
            .filter(|e| e.get("level").and_then(Value::as_str) == Some("SEVERE"))
            .map(|e| {
                e.get("message")
                    .and_then(Value::as_str)
                    .map_or_else(|| e.to_string(), str::to_owned)
            });
        let mut errors = self.errors.lock();
        errors.extend(messages);
        Ok(errors.clone())
    }

    /// Ends the session (Chromium closes), stops `chromedriver` and removes the temporary
    /// profile. Everything is stopped even when ending the session fails; that error is
    /// returned then.
    pub async fn quit(self) -> Result<(), BrowserError> {
        let ended = self.command(reqwest::Method::DELETE, "", None).await;
        // Dropping `self` stops chromedriver and removes the directory.
        ended.map(drop)
    }

    async fn read_log(&self, kind: &str) -> Result<Vec<Value>, BrowserError> {
        let value =
            self.command(reqwest::Method::POST, "/se/log", Some(json!({ "type": kind }))).await?;
        Ok(match value {
            Value::Array(entries) => entries,
            _ => Vec::new(),
        })
    }

    async fn ensure_script_timeout(&self, needed: Duration) -> Result<(), BrowserError> {
        let needed = millis(needed);
        if self.script_timeout_ms.load(Ordering::Relaxed) >= needed {
            return Ok(());
        }
        self.command(reqwest::Method::POST, "/timeouts", Some(json!({ "script": needed }))).await?;
        self.script_timeout_ms.fetch_max(needed, Ordering::Relaxed);
        Ok(())
    }

    /// Sends one command of this session; `path` is relative to `/session/<id>`.
    async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, BrowserError> {
        let timeout = Duration::from_millis(self.script_timeout_ms.load(Ordering::Relaxed))
            .max(PAGE_LOAD_TIMEOUT)
            + HTTP_MARGIN;
        call(&self.http, method, &format!("{}{path}", self.session), body, timeout).await
    }
}

/// A client for plain HTTP to loopback (chromedriver, or a server under test), no proxy. reqwest is built with
/// `rustls-no-provider` in this workspace and refuses to build without a TLS configuration,
/// so it gets one (ring, no roots) that is never used.
pub fn http_client() -> Result<reqwest::Client, BrowserError> {
    let setup = |source: Box<dyn std::error::Error + Send + Sync>| BrowserError::Transport {
        command: "building the HTTP client".into(),
        source,
    };
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| setup(e.into()))?
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    reqwest::Client::builder()
        .no_proxy()
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(|e| setup(e.into()))
}

/// Sends one WebDriver command and returns the `value` of the answer.
async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
    timeout: Duration,
) -> Result<Value, BrowserError> {
    let path = url.splitn(4, '/').nth(3).unwrap_or_default();
    let command = format!("{method} /{path}");
    let mut request = http.request(method, url).timeout(timeout);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let transport = |source: reqwest::Error| BrowserError::Transport {
        command: command.clone(),
        source: source.into(),
    };
    let response = request.send().await.map_err(transport)?;
    let status = response.status();
    let text = response.text().await.map_err(transport)?;
    let value = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|mut v| v.get_mut("value").map(Value::take));
    match value {
        Some(value) if status.is_success() => Ok(value),
        Some(value) => {
            let error = value.get("error").and_then(Value::as_str).unwrap_or("unknown error");
            let message = value.get("message").and_then(Value::as_str).unwrap_or_default();
            Err(BrowserError::WebDriver {
                command,
                status: status.as_u16(),
                message: format!("{error}: {message}"),
            })
        }
        None => Err(BrowserError::WebDriver { command, status: status.as_u16(), message: text }),
    }
}

/// Chromium's command line: headless, and quiet on the network.
fn chromium_args(profile: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        // A proxy from the environment would turn "unknown host" into a request to the proxy.
        "--no-proxy-server",
        "--hide-scrollbars",
    ]
    .map(str::to_owned)
    .into();
    args.push(format!("--user-data-dir={}", profile.display()));
    args
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap_or_default().to_owned()).collect())
        .unwrap_or_default()
}
