//! Cheap randomness for ids and jitter (never secrets): std's hasher seeds are random per process,
//! so hashing the process id and the time gives a fresh value on every call without a dependency.

use std::hash::{BuildHasher, Hasher};

/// A random 64-bit value.
pub(crate) fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(std::time::UNIX_EPOCH.elapsed().map_or(0, |d| d.as_nanos()));
    hasher.finish()
}

/// A random id of 16 hex digits.
pub(crate) fn random_hex() -> String {
    format!("{:016x}", random_u64())
}

/// A uniform sample in `[0, 1)`.
pub(crate) fn random_fraction() -> f64 {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_stay_in_range_and_ids_differ() {
        for _ in 0..100 {
            let x = random_fraction();
            assert!((0.0..1.0).contains(&x), "{x}");
        }
        let id = random_hex();
        assert_eq!(id.len(), 16);
        assert_ne!(id, random_hex());
    }
}
