//! [`LeaseOptions`]: what a lease is for and how it is timed, checked before anything is claimed.

use std::time::Duration;

use crate::cluster::ClusterError;

/// The bucket leases live in unless told otherwise.
pub const DEFAULT_BUCKET: &str = "rosey-leases";

/// The ttl of a lease unless told otherwise: a dead holder is replaced within about 5 s + 5/3 s.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5);

/// The shortest ttl [`Lease::start`](super::Lease::start) accepts: below it, the margin left for
/// scheduling delays on a busy machine is too thin to promise anything.
pub const MIN_TTL: Duration = Duration::from_secs(1);

/// What a lease is for and how it is timed. [`LeaseOptions::new`] gives the defaults; every node
/// contending for one key must use the same `bucket` and `ttl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseOptions {
    /// The key-value bucket, created when missing (letters, digits, `-`, `_`).
    pub bucket: String,
    /// What is leased, e.g. `cytube` (letters, digits, `-`, `_`, `/`, `=`, `.`; no leading or
    /// trailing `.`).
    pub key: String,
    /// Who claims it: the node's name, stored in the key so an operator can see who holds it.
    pub holder: String,
    /// How long the server keeps a claim that is not renewed. A dead holder is replaced within
    /// `ttl + renew_every`.
    pub ttl: Duration,
    /// How often the holder renews, and how often a node that does not hold it tries to claim it.
    /// Must be below `ttl - margin`; `ttl / 3` leaves room for two attempts.
    pub renew_every: Duration,
    /// How long before the server could expire the claim the holder stops counting itself holder:
    /// room for this node's scheduling delay and clock drift (see the [module docs](super)).
    pub margin: Duration,
}

impl LeaseOptions {
    /// A lease on `key` in [`DEFAULT_BUCKET`] for `holder`, with the timings of
    /// [`with_ttl`](Self::with_ttl)`(`[`DEFAULT_TTL`]`)`.
    pub fn new(key: impl Into<String>, holder: impl Into<String>) -> Self {
        let (ttl, renew_every, margin) = proportions(DEFAULT_TTL);
        Self {
            bucket: DEFAULT_BUCKET.to_owned(),
            key: key.into(),
            holder: holder.into(),
            ttl,
            renew_every,
            margin,
        }
    }

    /// Sets `ttl`, with `renew_every = ttl / 3` and `margin = ttl / 5`, the proportions the defaults
    /// use.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        (self.ttl, self.renew_every, self.margin) = proportions(ttl);
        self
    }

    /// Sets the bucket.
    pub fn in_bucket(mut self, bucket: impl Into<String>) -> Self {
        self.bucket = bucket.into();
        self
    }

    /// Checks that the options can keep the lease's promise.
    pub(super) fn validate(&self) -> Result<(), ClusterError> {
        let invalid = |reason: String| Err(ClusterError::InvalidLeaseOptions { reason });
        let bucket_ok = !self.bucket.is_empty()
            && self.bucket.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !bucket_ok {
            return invalid(format!(
                "bucket {:?} must be letters, digits, '-' and '_' only",
                self.bucket
            ));
        }
        let key_ok = !self.key.is_empty()
            && !self.key.starts_with('.')
            && !self.key.ends_with('.')
            && self.key.chars().all(|c| c.is_ascii_alphanumeric() || "-_/=.".contains(c));
        if !key_ok {
            return invalid(format!(
                "key {:?} must be letters, digits, '-', '_', '/', '=' and '.' (not first or last)",
                self.key
            ));
        }
        if self.holder.trim().is_empty() {
            return invalid("holder must name the node".to_owned());
        }
        if self.ttl < MIN_TTL {
            return invalid(format!("ttl {:?} is below the minimum {MIN_TTL:?}", self.ttl));
        }
        if self.margin.is_zero() || self.margin >= self.ttl {
            return invalid(format!(
                "margin {:?} must be above zero and below ttl {:?}",
                self.margin, self.ttl
            ));
        }
        if self.renew_every.is_zero() || self.renew_every >= self.ttl - self.margin {
            return invalid(format!(
                "renew_every {:?} must be above zero and below ttl - margin ({:?})",
                self.renew_every,
                self.ttl - self.margin
            ));
        }
        Ok(())
    }

    /// How long a confirmed write keeps this node holder, from just before it was sent.
    pub(super) fn valid_for(&self) -> Duration {
        self.ttl - self.margin
    }
}

/// `(ttl, renew_every, margin)` in the default proportions: renew three times per ttl, stop trusting
/// the claim a fifth of a ttl before the server could expire it.
fn proportions(ttl: Duration) -> (Duration, Duration, Duration) {
    (ttl, ttl / 3, ttl / 5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_options_keep_the_promise() {
        let options = LeaseOptions::new("cytube", "node-a");
        assert_eq!(options.bucket, "rosey-leases");
        assert_eq!(options.ttl, Duration::from_secs(5));
        assert_eq!(options.margin, Duration::from_secs(1));
        assert!(options.validate().is_ok());
        assert!(options.renew_every * 2 < options.valid_for(), "two renew attempts fit");
    }

    #[test]
    fn options_that_cannot_keep_the_promise_are_refused() {
        let base = LeaseOptions::new("cytube", "node-a");
        let cases = [
            LeaseOptions { key: ".cytube".to_owned(), ..base.clone() },
            LeaseOptions { key: "cy tube".to_owned(), ..base.clone() },
            LeaseOptions { bucket: "rosey.leases".to_owned(), ..base.clone() },
            LeaseOptions { holder: " ".to_owned(), ..base.clone() },
            base.clone().with_ttl(Duration::from_millis(500)),
            LeaseOptions { margin: Duration::ZERO, ..base.clone() },
            LeaseOptions { renew_every: Duration::from_secs(4), ..base.clone() },
        ];
        for options in cases {
            let error = options.validate().unwrap_err();
            assert!(matches!(error, ClusterError::InvalidLeaseOptions { .. }), "{options:?}");
        }
    }
}
