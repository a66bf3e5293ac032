//! The dashboard in a real browser: headless Chromium (Debian `chromium` and `chromium-driver`;
//! `scripts/test` installs them) loads the page of a node with real plugin processes, finds one card
//! per plugin, sees a reload's new version appear without the page reloading, finds no request to
//! any other origin, and saves screenshots at 1280 and 390 px wide (under the cargo target dir;
//! docs/dashboard-*.png are copies of them).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

mod support;

use std::path::PathBuf;
use std::time::Duration;

use rosey_testkit::browser::Browser;
use serde_json::json;
use support::Node;

const PATIENCE: Duration = Duration::from_secs(20);

fn screenshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_a_card_per_plugin_and_updates_in_place_after_a_reload() {
    let node = Node::start(&[("dice-roller", "roll"), ("trivia", "trivia")], true).await;
    for _ in 0..5 {
        node.command("roll").await;
    }
    node.polls(3).await;
    let browser = Browser::start().await.expect("headless Chromium starts");
    browser.set_window_size(1280, 900).await.unwrap();
    browser.goto(&node.url("/")).await.unwrap();

    let names = browser.texts("article.card h3, article.card h2").await.unwrap();
    let cards = browser
        .execute(
            "return Array.from(document.querySelectorAll('article.card'), c => c.dataset.plugin);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(cards, json!(["dice-roller", "trivia"]), "one card per plugin: {names:?}");
    let version = r#"article.card[data-plugin="dice-roller"] .version"#;
    assert_eq!(browser.texts(version).await.unwrap(), ["1.0.0"]);
    browser
        .wait_for_text("#live, [aria-live]", "Live", PATIENCE)
        .await
        .expect("the stream connects");

    // A marker on the window survives only if the page is not reloaded.
    browser.execute("window.__roseyMarker = 42; return null;", vec![]).await.unwrap();
    node.set_version("dice-roller", "1.1.0");
    node.manager.reload("dice-roller").await.unwrap();
    browser
        .wait_for_text(version, "1.1.0", PATIENCE)
        .await
        .expect("the card shows the new version");
    let marker = browser.execute("return window.__roseyMarker;", vec![]).await.unwrap();
    assert_eq!(marker, json!(42), "updated in place, not reloaded");
    let state = r#"article.card[data-plugin="dice-roller"] .state"#;
    assert_eq!(browser.texts(state).await.unwrap(), ["RUNNING"]);

    let dir = screenshot_dir();
    browser.screenshot(&dir.join("dashboard-1280.png")).await.unwrap();
    browser.set_window_size(390, 844).await.unwrap();
    let overflow = browser
        .execute("return document.documentElement.scrollWidth > window.innerWidth;", vec![])
        .await
        .unwrap();
    assert_eq!(overflow, json!(false), "no sideways scrolling on a 390-px phone");
    browser.screenshot(&dir.join("dashboard-390.png")).await.unwrap();

    let origin = node.base.clone();
    let requested = browser.requested_urls().await.unwrap();
    assert!(requested.iter().any(|u| u.ends_with("/api/stream")), "{requested:?}");
    let elsewhere: Vec<&String> = requested.iter().filter(|u| !u.starts_with(&origin)).collect();
    assert!(elsewhere.is_empty(), "requests left the dashboard's origin: {elsewhere:?}");
    let errors = browser.console_errors().await.unwrap();
    assert!(errors.is_empty(), "console errors (CSP violations…): {errors:?}");
    browser.quit().await.unwrap();
    node.stop().await;
}
