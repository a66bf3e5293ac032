//! Rosey's `!admin` chat plugin: operators list, inspect, reload and restart plugins from the chat.
//!
//! | command | answer |
//! |---|---|
//! | `!admin help` | the sub-commands |
//! | `!admin list` | `Plugins (3): dice-roller v1.0 RUNNING · 8ball v1.0 RUNNING · …` |
//! | `!admin status [plugin]` | a summary per plugin, or one plugin's state, pid, uptime, CPU, memory, events, crashes, last error |
//! | `!admin reload <plugin>` | `Reload dice-roller v1.0 → v1.1? Type yes to confirm (30s timeout)`, then `✅ Reloaded dice-roller v1.0 → v1.1 (0.2s)` or `❌ Reload failed: <step>: <reason>` |
//! | `!admin reload --all` | after `yes`: a line per plugin, one at a time, stopping at the first failure |
//! | `!admin restart <plugin>` | after `yes`: `✅ Restarted dice-roller v1.0 (1.2s)` or `❌ Restart failed: …` |
//! | `!admin metrics` | `📊 3 plugins (3 running, 0 crashed) · 1,234 events · up 2h 3m · <dashboard URL>` |
//!
//! **Who may**: a sender whose name is `owner` or in `admins` (compared case-insensitively, as
//! CyTube compares names) and, when a [`RankLookup`] is given (CyTube), who is in the channel's user
//! table with a rank of at least 1, so a guest who takes an admin's name is refused. Without one (the
//! console) every line is local and the name is trusted. Anyone else gets `❌ Admin permission
//! required`.
//!
//! **Confirmation**: reload, restart and reload --all wait for a `yes` from the same user in the same
//! channel (or by private message when asked by private message); another user's `yes` does nothing,
//! a newer request replaces the older one, and a `yes` after the timeout is told `⌛ That request
//! expired; ask again`. **Rate limits** (tokio's clock): one command per user every 5 s and 10 a
//! minute in all (`⏳ Slow down: try again in 4s`); a `yes` is not limited, nor is a refusal.
//! **Audit**: every command, allowed or not, becomes an `audit_log` row, an INFO log line and a count
//! in `rosey_admin_commands_total{command,user}`. The plugin never reloads or restarts itself.
//!
//! Wiring it into a node (rosey-bin does this when `owner` or `admins` is set):
//!
//! ```
//! use std::sync::Arc;
//! use rosey_admin::{AdminOptions, AdminPlugin};
//! use rosey_core::bus::MemoryBus;
//! use rosey_core::plugin::{MixedRuntime, PluginControl, PluginManager};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let runtime = MixedRuntime::default();
//! let manager = Arc::new(PluginManager::new(Arc::new(MemoryBus::new()), Arc::new(runtime.clone())));
//! let options = AdminOptions { owner: Some("alice".to_owned()), ..AdminOptions::default() };
//! let control: Arc<dyn PluginControl> = manager.clone();
//! AdminPlugin::new(options, control).register(runtime.in_process());
//! manager.add(AdminPlugin::manifest()).await.unwrap();
//! # manager.shutdown().await;
//! # }
//! ```

#![deny(missing_docs)]

mod answers;
mod audit;
mod command;
mod confirm;
mod limits;
mod permission;
mod plugin;
mod text;

pub use permission::RankLookup;
pub use plugin::{ADMIN_EVENT_TIMEOUT, ADMIN_PLUGIN, ADMIN_VERSION, AdminOptions, AdminPlugin};
