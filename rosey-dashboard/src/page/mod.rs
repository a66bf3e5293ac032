//! The dashboard's page: the HTML document for `GET /`, the fragments the SSE stream sends, and the
//! stylesheet and script the document loads.
//!
//! The document works without JavaScript (a `<noscript>` refresh every `refresh_seconds`); with it,
//! `dashboard.js` listens to `/api/stream` for `overview` events carrying [`Fragments`] and swaps the
//! header, each card and the timeline in place. Both paths write the same HTML for those parts, so a
//! fragment can replace what the document rendered.
//!
//! The page obeys a `default-src 'self'` Content-Security-Policy: no inline scripts or styles, no
//! `style` or `on…` attributes, no URL outside this server. Everything from plugins is escaped.

mod render;
mod spark;
mod text;

use std::fmt::{self, Display, Formatter};

use serde::Serialize;

use self::render::{CardView, HeaderFigures, TimelineItems};
use self::text::UtcTime;
use crate::model::Overview;

/// The stylesheet, served at `/assets/dashboard.css` (`text/css`).
pub(crate) const CSS: &str = include_str!("assets/dashboard.css");

/// The script, served at `/assets/dashboard.js` (`text/javascript`).
pub(crate) const JS: &str = include_str!("assets/dashboard.js");

/// The whole HTML document for `GET /`.
pub(crate) fn page(overview: &Overview) -> String {
    Document(overview).to_string()
}

/// What one `overview` event of the SSE stream carries: the changing parts of the page, rendered
/// exactly as [`page`] embeds them.
pub(crate) fn fragments(overview: &Overview) -> Fragments {
    Fragments {
        header: HeaderFigures(&overview.header).to_string(),
        cards: overview
            .cards
            .iter()
            .map(|card| CardFragment {
                name: card.name.clone(),
                html: CardView { card, actions: overview.actions }.to_string(),
            })
            .collect(),
        timeline: TimelineItems(&overview.timeline).to_string(),
        timestamp: overview.timestamp,
    }
}

/// The changing parts of the page, as the SSE stream sends them (JSON).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Fragments {
    /// The content of `<div id="header">`.
    pub(crate) header: String,
    /// One per plugin, sorted by name.
    pub(crate) cards: Vec<CardFragment>,
    /// The content of `<ol id="timeline">`.
    pub(crate) timeline: String,
    /// When the overview was built, Unix seconds.
    pub(crate) timestamp: f64,
}

/// One plugin's card, as the SSE stream sends it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CardFragment {
    /// The plugin's name, as in the card's `data-plugin`.
    pub(crate) name: String,
    /// The card's whole `<article>` (its outer HTML).
    pub(crate) html: String,
}

/// The document around the fragments.
struct Document<'a>(&'a Overview);

impl Display for Document<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let o = self.0;
        let updated = UtcTime::from_unix(o.timestamp);
        write!(
            f,
            concat!(
                "<!DOCTYPE html>\n",
                r#"<html lang="en"><head><meta charset="utf-8">"#,
                r#"<meta name="viewport" content="width=device-width, initial-scale=1">"#,
                r#"<meta name="color-scheme" content="light dark">"#,
                "<title>Rosey dashboard</title>",
                r#"<noscript><meta http-equiv="refresh" content="{refresh}"></noscript>"#,
                r#"<link rel="stylesheet" href="/assets/dashboard.css">"#,
                r#"<script src="/assets/dashboard.js" defer></script>"#,
                "</head>\n<body>",
                r#"<header><h1>Rosey</h1><p id="live" role="status" aria-live="polite">"#,
                "Updated every {refresh} s</p>",
                r#"<div id="header">{header}</div>"#,
            ),
            refresh = o.refresh_seconds,
            header = HeaderFigures(&o.header),
        )?;
        if o.actions {
            f.write_str(concat!(
                r#"<p class="token"><label for="token">Dashboard token</label> "#,
                r#"<input type="password" id="token" autocomplete="off" spellcheck="false"></p>"#,
                "<noscript><p>The Reload and Restart buttons need JavaScript.</p></noscript>",
                r#"<p id="action-status" role="status" aria-live="polite"></p>"#,
            ))?;
        }
        f.write_str(concat!(
            "</header>\n<main>",
            r#"<section aria-labelledby="plugins-title"><h2 id="plugins-title">Plugins</h2>"#,
        ))?;
        let hidden = if o.cards.is_empty() { "" } else { " hidden" };
        write!(f, r#"<p id="no-plugins"{hidden}>No plugins are loaded.</p><div id="cards">"#)?;
        for card in &o.cards {
            write!(f, "\n{}", CardView { card, actions: o.actions })?;
        }
        write!(
            f,
            concat!(
                "</div></section>\n",
                r#"<section aria-labelledby="timeline-title"><h2 id="timeline-title">Crashes and reloads</h2>"#,
                r#"<ol id="timeline">{timeline}</ol></section></main>"#,
                "\n<footer>",
                r#"Updated <time id="updated" datetime="{datetime}">{clock}</time> UTC"#,
                "</footer></body></html>\n",
            ),
            timeline = TimelineItems(&o.timeline),
            datetime = updated.rfc3339(),
            clock = updated.clock(),
        )
    }
}

#[cfg(test)]
mod tests;
