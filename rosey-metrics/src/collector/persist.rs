//! Saving the downsampled tiers to storage and loading them back, so trends survive a restart.
//!
//! Each plugin's tiers are one key of the key-value store: plugin `rosey.metrics` (no real plugin's
//! name has a dot), key `history:<plugin>`, value a compact JSON object:
//! `{"v":1,"series":["cpu_percent",…],"minute":{"bucket_ms":60000,"buckets":[[start_ms, samples,
//! [avg,min,max,count] or null per series…],…]},"quarter":{…}}`. Only closed buckets are saved (the
//! one being filled is lost on a restart). The raw samples are not saved.

use std::collections::HashSet;
use std::sync::Arc;

use rosey_core::storage::{Storage, StorageError, now_micros};
use serde::{Deserialize, Serialize};

use super::history::{Bucket, CompactStat, Tier};
use super::reader::Shared;
use super::series::Series;

/// The key-value "plugin" the collector saves under.
pub(crate) const KV_PLUGIN: &str = "rosey.metrics";
const KEY_PREFIX: &str = "history:";
const FORMAT_VERSION: u32 = 1;

type SavedStat = Option<(f32, f32, f32, u16)>;
type SavedBucket = (i64, u16, Vec<SavedStat>);

#[derive(Debug, Serialize, Deserialize)]
struct SavedTier {
    bucket_ms: i64,
    buckets: Vec<SavedBucket>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedHistory {
    v: u32,
    series: Vec<String>,
    minute: SavedTier,
    quarter: SavedTier,
}

fn save_tier(tier: &Tier) -> SavedTier {
    let buckets = tier
        .closed()
        .map(|b| {
            let stats = b
                .stats
                .iter()
                .map(|s| (s.count > 0).then_some((s.avg, s.min, s.max, s.count)))
                .collect();
            (b.start, b.samples, stats)
        })
        .collect();
    SavedTier { bucket_ms: tier.spec().bucket_ms, buckets }
}

/// The saved buckets in this build's series order (series it does not know are dropped, series
/// the save did not have are empty); `None` when the bucket length differs from this tier's.
fn load_tier(saved: SavedTier, series: &[Option<Series>], tier: &Tier) -> Option<Vec<Bucket>> {
    if saved.bucket_ms != tier.spec().bucket_ms {
        return None;
    }
    let buckets = saved
        .buckets
        .into_iter()
        .map(|(start, samples, stats)| {
            let mut compact = [CompactStat::default(); Series::ALL.len()];
            for (known, stat) in series.iter().zip(stats) {
                if let (Some(series), Some((avg, min, max, count))) = (known, stat) {
                    compact[series.index()] = CompactStat { avg, min, max, count };
                }
            }
            Bucket { start, samples, stats: compact }
        })
        .collect();
    Some(buckets)
}

/// Serializes every plugin's closed tier buckets: (plugin, JSON text).
pub(crate) fn encode_all(shared: &Shared) -> Vec<(String, String)> {
    let histories = shared.histories.read();
    let saved: Vec<(String, SavedHistory)> = histories
        .iter()
        .map(|(name, history)| {
            let saved = SavedHistory {
                v: FORMAT_VERSION,
                series: Series::ALL.iter().map(|s| s.as_str().to_owned()).collect(),
                minute: save_tier(&history.minute),
                quarter: save_tier(&history.quarter),
            };
            (name.clone(), saved)
        })
        .collect();
    drop(histories);
    saved
        .into_iter()
        .filter_map(|(name, saved)| match serde_json::to_string(&saved) {
            Ok(json) => Some((name, json)),
            Err(error) => {
                tracing::warn!(message = "cannot encode metrics history", plugin = %name, %error);
                None
            }
        })
        .collect()
}

/// Saves every plugin's tiers and deletes the keys of plugins saved before that have aged out;
/// returns the plugins saved now. Storage errors are logged and skipped.
pub(crate) async fn save(
    shared: &Shared,
    storage: &Arc<dyn Storage>,
    previously: &HashSet<String>,
) -> HashSet<String> {
    let mut saved = HashSet::new();
    for (plugin, json) in encode_all(shared) {
        let key = format!("{KEY_PREFIX}{plugin}");
        match storage.kv_set(KV_PLUGIN, &key, &json, u64::MAX, now_micros()).await {
            Ok(()) => {}
            Err(error) => {
                tracing::warn!(message = "cannot save metrics history", %plugin, %error);
            }
        }
        saved.insert(plugin);
    }
    for gone in previously.difference(&saved) {
        let key = format!("{KEY_PREFIX}{gone}");
        if let Err(error) = storage.kv_delete(KV_PLUGIN, &key).await {
            tracing::warn!(message = "cannot delete aged-out metrics history", plugin = %gone, %error);
        }
    }
    saved
}

async fn saved_keys(storage: &Arc<dyn Storage>) -> Result<Vec<String>, StorageError> {
    let mut keys = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = storage.kv_list(KV_PLUGIN, KEY_PREFIX, after.as_deref(), 1000).await?;
        let full = page.len() == 1000;
        after = page.last().cloned();
        keys.extend(page);
        if !full {
            return Ok(keys);
        }
    }
}

/// Loads the saved tiers into `shared` (which holds no history yet); returns the plugins that have a
/// saved key (loaded or not), so that the next save deletes the keys of those that aged out.
/// Storage errors and unreadable values are logged and skipped.
pub(crate) async fn load(shared: &Shared, storage: &Arc<dyn Storage>) -> HashSet<String> {
    let keys = match saved_keys(storage).await {
        Ok(keys) => keys,
        Err(error) => {
            tracing::warn!(message = "cannot load metrics history; starting without it", %error);
            return HashSet::new();
        }
    };
    let mut loaded = HashSet::new();
    for key in keys {
        let Some(plugin) = key.strip_prefix(KEY_PREFIX) else { continue };
        loaded.insert(plugin.to_owned());
        let json = match storage.kv_get(KV_PLUGIN, &key).await {
            Ok(Some(entry)) => entry.value,
            Ok(None) => continue,
            Err(error) => {
                tracing::warn!(message = "cannot load metrics history", %plugin, %error);
                continue;
            }
        };
        let saved: SavedHistory = match serde_json::from_str::<SavedHistory>(&json) {
            Ok(saved) if saved.v == FORMAT_VERSION => saved,
            Ok(saved) => {
                tracing::warn!(message = "skipping metrics history of an unknown format", %plugin, format = saved.v);
                continue;
            }
            Err(error) => {
                tracing::warn!(message = "skipping unreadable metrics history", %plugin, %error);
                continue;
            }
        };
        let series: Vec<Option<Series>> = saved.series.iter().map(|s| Series::parse(s)).collect();
        let mut history = shared.new_history();
        if let Some(buckets) = load_tier(saved.minute, &series, &history.minute) {
            history.minute.restore(buckets);
        }
        if let Some(buckets) = load_tier(saved.quarter, &series, &history.quarter) {
            history.quarter.restore(buckets);
        }
        history.expire(shared.now());
        if !history.is_empty() {
            shared.histories.write().insert(plugin.to_owned(), history);
        }
    }
    loaded
}
