//! Rate limits per token subject and per client IP, per process. The
//! stricter quota for backup, export and revoke is shared by every replica:
//! [`crate::rate_limits`].

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::problem::Problem;

/// Requests allowed, as quotas; each is also the burst size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// REST requests per minute per token subject.
    pub per_subject_per_minute: u32,
    /// REST requests per minute per client IP (counted before
    /// authentication, so token guessing is limited too).
    pub per_ip_per_minute: u32,
    /// Backup, export and revoke requests per hour per token subject.
    pub sensitive_per_subject_per_hour: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            per_subject_per_minute: 600,
            per_ip_per_minute: 1200,
            sensitive_per_subject_per_hour: 10,
        }
    }
}

/// The keyed limiters.
pub(crate) struct Limiters {
    subject: DefaultKeyedRateLimiter<String>,
    ip: DefaultKeyedRateLimiter<IpAddr>,
    checks: AtomicU32,
}

/// How often the limiters forget idle keys (every this many checks).
const PRUNE_EVERY: u32 = 4096;

fn quota(per_minute: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN))
}

impl Limiters {
    pub(crate) fn new(limits: RateLimits) -> Self {
        Self {
            subject: RateLimiter::keyed(quota(limits.per_subject_per_minute)),
            ip: RateLimiter::keyed(quota(limits.per_ip_per_minute)),
            checks: AtomicU32::new(0),
        }
    }

    fn prune(&self) {
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.subject.retain_recent();
            self.ip.retain_recent();
        }
    }

    pub(crate) fn check_ip(&self, ip: IpAddr) -> Result<(), Problem> {
        self.prune();
        let key = crate::client_addr::limit_key(ip);
        check(&self.ip, &key, "too many requests from this address")
    }

    pub(crate) fn check_subject(&self, subject: &str) -> Result<(), Problem> {
        check(
            &self.subject,
            &subject.to_owned(),
            "too many requests for this user",
        )
    }
}

fn check<K>(limiter: &DefaultKeyedRateLimiter<K>, key: &K, detail: &str) -> Result<(), Problem>
where
    K: Clone + std::hash::Hash + Eq,
{
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        // Rounded up: retrying after Retry-After seconds succeeds.
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Problem::rate_limited(seconds, detail)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn quota_then_429_with_retry_after() {
        let limiters = Limiters::new(RateLimits {
            per_subject_per_minute: 3,
            per_ip_per_minute: 100,
            sensitive_per_subject_per_hour: 1,
        });
        for _ in 0..3 {
            limiters.check_subject("a").unwrap();
        }
        let problem = limiters.check_subject("a").unwrap_err();
        assert_eq!(problem.status, 429);
        // One request per 20 s replenishes.
        let retry = problem.retry_after.unwrap();
        assert!((1..=20).contains(&retry), "{retry}");
        // Other subjects are unaffected.
        limiters.check_subject("b").unwrap();
    }
}
