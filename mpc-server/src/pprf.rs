//! Failed GGM-tree (PPRF) proofs per key and owner (PROTOCOL.md §5.3).
//!
//! A client that builds its OT-setup trees can tamper with a correction
//! word and learn, from whether our setup aborts, one choice bit of the
//! setup; on a setup that then succeeds, the bits it guessed are bits of the
//! material we keep. Each extra guessed bit halves its chance of success, so
//! the number of failures it needs grows exponentially in what it learns:
//! counting failures per key and owner bounds the leak (§5.3), and a count
//! past the threshold is an alert (a warning log and the
//! `mpc_pprf_failure_alerts` counter).
//!
//! The counts live in this process's memory: a restart resets them, and
//! replicas count separately (the bound is per process and lifetime).
//! Entries exist only for authenticated owners that failed a proof.

use std::collections::HashMap;
use std::sync::Mutex;

use mpc_core::KeyId;
use mpc_transport_ws::TransportError;
use tracing::warn;

use crate::rest::metrics::Metrics;

/// Failure counts by (owner, key); key `None` for key generation, where the
/// key does not exist yet.
pub(crate) struct PprfFailures {
    threshold: u64,
    counts: Mutex<HashMap<(String, Option<KeyId>), u64>>,
}

impl PprfFailures {
    /// Counts with alerts from the `threshold`-th failure on (at least 1).
    pub(crate) fn new(threshold: u64) -> Self {
        Self {
            threshold: threshold.max(1),
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// Counts `error` if it is a failed PPRF proof of `operation` (`keygen`
    /// or `refresh`) by `owner` on `key`, and alerts past the threshold.
    /// Returns the new count, or `None` for any other error.
    pub(crate) fn observe(
        &self,
        metrics: &Metrics,
        operation: &'static str,
        owner: &str,
        key: Option<&KeyId>,
        error: &TransportError,
    ) -> Option<u64> {
        if !matches!(
            error,
            TransportError::Protocol {
                error: mpc_core::Error::PprfProofFailed,
                ..
            }
        ) {
            return None;
        }
        let count = {
            // A poisoned lock only means another thread panicked mid-insert;
            // the counts are still meaningful.
            let mut counts = self
                .counts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let count = counts.entry((owner.to_owned(), key.copied())).or_insert(0);
            *count = count.saturating_add(1);
            *count
        };
        metrics.pprf_proof_failed(operation);
        let key = key.map_or_else(|| "-".to_owned(), ToString::to_string);
        if count >= self.threshold {
            metrics.pprf_failure_alert(operation);
            warn!(
                operation,
                owner,
                key_id = %key,
                failures = count,
                threshold = self.threshold,
                "repeated OT-setup GGM-tree (PPRF) proof failures with one peer: \
                 a selective-failure probe of the setup's choice bits (PROTOCOL.md 5.3)"
            );
        } else {
            tracing::info!(
                operation,
                owner,
                key_id = %key,
                failures = count,
                "OT-setup GGM-tree (PPRF) proof failed"
            );
        }
        Some(count)
    }

    /// The failures counted for `owner` on `key` (`None`: key generation).
    #[cfg(test)]
    pub(crate) fn count(&self, owner: &str, key: Option<&KeyId>) -> u64 {
        let counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        counts
            .get(&(owner.to_owned(), key.copied()))
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed() -> TransportError {
        TransportError::Protocol {
            error: mpc_core::Error::PprfProofFailed,
        }
    }

    #[test]
    fn counts_per_owner_and_key_and_alerts_from_the_threshold() {
        let metrics = Metrics::new();
        let failures = PprfFailures::new(2);
        let key = KeyId([7; 32]);
        let other = TransportError::Protocol {
            error: mpc_core::Error::InvalidPoint,
        };
        assert_eq!(
            failures.observe(&metrics, "refresh", "a", Some(&key), &other),
            None
        );
        assert_eq!(
            failures.observe(&metrics, "refresh", "a", Some(&key), &failed()),
            Some(1)
        );
        assert_eq!(
            failures.observe(&metrics, "keygen", "a", None, &failed()),
            Some(1)
        );
        assert_eq!(
            failures.observe(&metrics, "refresh", "b", Some(&key), &failed()),
            Some(1)
        );
        assert!(!metrics.render().contains("mpc_pprf_failure_alerts_total{"));
        assert_eq!(
            failures.observe(&metrics, "refresh", "a", Some(&key), &failed()),
            Some(2)
        );
        assert_eq!(failures.count("a", Some(&key)), 2);
        let text = metrics.render();
        assert!(
            text.contains("mpc_pprf_failure_alerts_total{operation=\"refresh\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mpc_pprf_proof_failures_total{operation=\"refresh\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("mpc_pprf_proof_failures_total{operation=\"keygen\"} 1"),
            "{text}"
        );
    }
}
