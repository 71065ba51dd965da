//! Rate limits on WebSocket operations per token subject, on failed token
//! checks per client address, and on backup/export/revoke; the trusted
//! proxies setting (PROTOCOL.md §18.5).
//!
//! Where the state lives:
//! - keygen, refresh, and backup/export/revoke: in the database
//!   (`rate_buckets`, [`crate::store::buckets`]), shared by every replica;
//! - signing (sign, presign, online sign, and their Schnorr forms): in the
//!   database on PostgreSQL (an unlogged table: one round trip, no fsync),
//!   in memory on SQLite (one process; a SQLite write is an fsync);
//! - failed token checks per client address: in memory, per process.
//!
//! Every limit is a GCRA: `limit` requests per period as a burst, then one
//! per `period / limit`. A limit of 0 turns it off.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use mpc_transport_ws::{Operation, Rejection};
use tracing::{debug, error};

use crate::auth::Claims;
use crate::client_addr::TrustedProxies;
use crate::rest::problem::Problem;
use crate::server::AppState;
use crate::store::{buckets, Backend};

/// The rate-limit flags, flattened into [`crate::config::Cli`].
#[derive(Debug, Clone, clap::Args)]
pub struct RateLimitArgs {
    /// Keygen sessions per hour per token subject (0: no limit).
    #[arg(
        long,
        hide_env_values = true,
        env = "MPC_KEYGEN_RATE_PER_HOUR",
        default_value_t = 20
    )]
    pub keygen_rate_per_hour: u32,
    /// Signing sessions (sign, presign, online sign, and the Schnorr forms)
    /// per minute per token subject (0: no limit).
    #[arg(
        long,
        hide_env_values = true,
        env = "MPC_SIGN_RATE_PER_MINUTE",
        default_value_t = 600
    )]
    pub sign_rate_per_minute: u32,
    /// Refresh sessions per hour per token subject (0: no limit).
    #[arg(
        long,
        hide_env_values = true,
        env = "MPC_REFRESH_RATE_PER_HOUR",
        default_value_t = 60
    )]
    pub refresh_rate_per_hour: u32,
    /// Failed token checks at the WebSocket upgrade per minute per client
    /// address, after which the address gets 429 until its budget refills
    /// (0: no limit).
    #[arg(
        long,
        hide_env_values = true,
        env = "MPC_AUTH_FAILURES_PER_IP_PER_MINUTE",
        default_value_t = 30
    )]
    pub auth_failures_per_ip_per_minute: u32,
    /// Reverse proxies (comma-separated CIDR blocks or addresses) whose
    /// `X-Forwarded-For` / `Forwarded` headers name the client.
    #[arg(
        long,
        hide_env_values = true,
        env = "MPC_TRUSTED_PROXIES",
        default_value = ""
    )]
    pub trusted_proxies: String,
}

/// The rate limits of WebSocket operations and the trusted proxies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Keygen sessions per hour per subject (0: no limit).
    pub keygen_per_hour: u32,
    /// Signing sessions per minute per subject (0: no limit).
    pub sign_per_minute: u32,
    /// Refresh sessions per hour per subject (0: no limit).
    pub refresh_per_hour: u32,
    /// Failed token checks per minute per client address (0: no limit).
    pub auth_failures_per_ip_per_minute: u32,
    /// Proxies whose forwarded headers are believed.
    pub trusted_proxies: TrustedProxies,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            keygen_per_hour: 20,
            sign_per_minute: 600,
            refresh_per_hour: 60,
            auth_failures_per_ip_per_minute: 30,
            trusted_proxies: TrustedProxies::default(),
        }
    }
}

impl RateLimitArgs {
    /// The configuration these flags give.
    ///
    /// # Errors
    ///
    /// A message naming `MPC_TRUSTED_PROXIES` and the entry that is not a
    /// CIDR block or address.
    pub fn to_config(&self) -> Result<RateLimitConfig, String> {
        Ok(RateLimitConfig {
            keygen_per_hour: self.keygen_rate_per_hour,
            sign_per_minute: self.sign_rate_per_minute,
            refresh_per_hour: self.refresh_rate_per_hour,
            auth_failures_per_ip_per_minute: self.auth_failures_per_ip_per_minute,
            trusted_proxies: TrustedProxies::parse(&self.trusted_proxies)
                .map_err(|e| format!("MPC_TRUSTED_PROXIES: {e}"))?,
        })
    }
}

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// A GCRA limit: `interval` between requests after a burst of
/// `tolerance / interval + 1`, in microseconds.
#[derive(Debug, Clone, Copy)]
struct Gcra {
    interval: i64,
    tolerance: i64,
}

impl Gcra {
    /// `count` per `period`; `None` for 0 (no limit).
    fn new(count: u32, period: Duration) -> Option<Self> {
        if count == 0 {
            return None;
        }
        let period = i64::try_from(period.as_micros()).unwrap_or(i64::MAX);
        let interval = (period / i64::from(count)).max(1);
        Some(Self {
            interval,
            tolerance: interval.saturating_mul(i64::from(count) - 1),
        })
    }
}

/// GCRA buckets in this process's memory.
#[derive(Default)]
struct LocalBuckets {
    tats: Mutex<LocalTats>,
}

#[derive(Default)]
struct LocalTats {
    tats: HashMap<String, i64>,
    /// When idle buckets were last forgotten (microseconds).
    pruned_at: i64,
}

/// Least time between two prunes (microseconds): a full map is scanned at
/// most once a second, not on every take while it stays full.
const LOCAL_PRUNE_INTERVAL: i64 = 1_000_000;

/// Memory buckets kept before the idle ones are forgotten.
const LOCAL_PRUNE_AT: usize = 65_536;

impl LocalBuckets {
    /// Takes one request; `Err(wait)` (microseconds) when over the limit.
    fn take(&self, bucket: &str, now: i64, gcra: Gcra) -> Result<(), i64> {
        let mut state = self.tats.lock().unwrap_or_else(PoisonError::into_inner);
        if state.tats.len() >= LOCAL_PRUNE_AT
            && now.saturating_sub(state.pruned_at) >= LOCAL_PRUNE_INTERVAL
        {
            state.tats.retain(|_, tat| *tat > now);
            state.pruned_at = now;
        }
        let tats = &mut state.tats;
        let tat = tats.get(bucket).copied().unwrap_or(now);
        if tat - now > gcra.tolerance {
            return Err(tat - gcra.tolerance - now);
        }
        tats.insert(bucket.to_owned(), tat.max(now) + gcra.interval);
        Ok(())
    }

    /// `Err(wait)` while an earlier [`refuse_until`](Self::refuse_until)
    /// of `bucket` holds.
    fn refused(&self, bucket: &str, now: i64) -> Result<(), i64> {
        let state = self.tats.lock().unwrap_or_else(PoisonError::into_inner);
        match state.tats.get(bucket) {
            Some(until) if *until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Remembers that `bucket` refuses until `until` (microseconds).
    fn refuse_until(&self, bucket: &str, now: i64, until: i64) {
        let mut state = self.tats.lock().unwrap_or_else(PoisonError::into_inner);
        if state.tats.len() >= LOCAL_PRUNE_AT
            && now.saturating_sub(state.pruned_at) >= LOCAL_PRUNE_INTERVAL
        {
            state.tats.retain(|_, until| *until > now);
            state.pruned_at = now;
        }
        state.tats.insert(bucket.to_owned(), until);
    }

    /// `Err(wait)` if the next [`take`](Self::take) would be refused.
    #[cfg(test)]
    fn peek(&self, bucket: &str, now: i64, gcra: Gcra) -> Result<(), i64> {
        let state = self.tats.lock().unwrap_or_else(PoisonError::into_inner);
        match state.tats.get(bucket) {
            Some(tat) if tat - now > gcra.tolerance => Err(tat - gcra.tolerance - now),
            _ => Ok(()),
        }
    }
}

/// Which limit a check is against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    Keygen,
    Sign,
    Refresh,
    Sensitive,
}

impl Limit {
    fn name(self) -> &'static str {
        match self {
            Self::Keygen => "keygen",
            Self::Sign => "sign",
            Self::Refresh => "refresh",
            Self::Sensitive => "sensitive",
        }
    }
}

/// A limit was reached: how long until the next request is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limited {
    pub(crate) wait: Duration,
}

/// Shared-check calls between two prunes of `rate_buckets`.
const SHARED_PRUNE_EVERY: u32 = 1024;

/// The rate limiters of one server process.
pub(crate) struct RateLimiters {
    keygen: Option<Gcra>,
    sign: Option<Gcra>,
    refresh: Option<Gcra>,
    sensitive: Option<Gcra>,
    auth_failures: Option<Gcra>,
    /// Whether signing checks go to the database (PostgreSQL).
    sign_shared: bool,
    local: LocalBuckets,
    /// Shared buckets the database refused, until when: a subject that
    /// keeps asking while limited is refused here, without a database
    /// round trip. Exact, not an approximation: other replicas' takes only
    /// push a shared bucket's refusal later, never earlier.
    refused_shared: LocalBuckets,
    shared_checks: AtomicU32,
    pub(crate) trusted_proxies: TrustedProxies,
}

impl RateLimiters {
    pub(crate) fn new(config: &RateLimitConfig, sensitive_per_hour: u32, backend: Backend) -> Self {
        Self {
            keygen: Gcra::new(config.keygen_per_hour, HOUR),
            sign: Gcra::new(config.sign_per_minute, MINUTE),
            refresh: Gcra::new(config.refresh_per_hour, HOUR),
            sensitive: Gcra::new(sensitive_per_hour, HOUR),
            auth_failures: Gcra::new(config.auth_failures_per_ip_per_minute, MINUTE),
            sign_shared: backend == Backend::Postgres,
            local: LocalBuckets::default(),
            refused_shared: LocalBuckets::default(),
            shared_checks: AtomicU32::new(0),
            trusted_proxies: config.trusted_proxies.clone(),
        }
    }

    fn gcra(&self, limit: Limit) -> Option<Gcra> {
        match limit {
            Limit::Keygen => self.keygen,
            Limit::Sign => self.sign,
            Limit::Refresh => self.refresh,
            Limit::Sensitive => self.sensitive,
        }
    }
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn wait_of(micros: i64) -> Duration {
    Duration::from_micros(u64::try_from(micros).unwrap_or(0).max(1))
}

/// Takes one request of `subject` from `limit`.
async fn take(
    state: &Arc<AppState>,
    limit: Limit,
    subject: &str,
) -> Result<Result<(), Limited>, crate::vault::VaultError> {
    let limiters = &state.rate_limiters;
    let Some(gcra) = limiters.gcra(limit) else {
        return Ok(Ok(()));
    };
    let bucket = format!("{}:{subject}", limit.name());
    let now = now_micros();
    if limit == Limit::Sign && !limiters.sign_shared {
        return Ok(limiters
            .local
            .take(&bucket, now, gcra)
            .map_err(|wait| Limited {
                wait: wait_of(wait),
            }));
    }
    if let Err(wait) = limiters.refused_shared.refused(&bucket, now) {
        return Ok(Err(Limited {
            wait: wait_of(wait),
        }));
    }
    let store = state.vault.store();
    let refused = {
        let mut conn = store.acquire().await?;
        buckets::take(&mut conn, &bucket, now, gcra.interval, gcra.tolerance).await?
    };
    if limiters.shared_checks.fetch_add(1, Ordering::Relaxed) % SHARED_PRUNE_EVERY == 0 {
        let state = Arc::clone(state);
        tokio::spawn(async move {
            let pruned = match state.vault.store().acquire().await {
                Ok(mut conn) => buckets::prune(&mut conn, now_micros()).await,
                Err(e) => Err(e),
            };
            if let Err(e) = pruned {
                debug!(error = %e, "rate-limit buckets not pruned");
            }
        });
    }
    Ok(match refused {
        None => Ok(()),
        Some(wait) => {
            limiters
                .refused_shared
                .refuse_until(&bucket, now, now.saturating_add(wait));
            Err(Limited {
                wait: wait_of(wait),
            })
        }
    })
}

/// The limit of an operation named in a WebSocket opening.
fn limit_of(operation: &Operation) -> Option<Limit> {
    match operation {
        Operation::Keygen => Some(Limit::Keygen),
        Operation::Refresh { .. } => Some(Limit::Refresh),
        Operation::Sign { .. }
        | Operation::Presign { .. }
        | Operation::OnlineSign { .. }
        | Operation::SignSchnorr { .. }
        | Operation::PresignSchnorr { .. }
        | Operation::OnlineSignSchnorr { .. } => Some(Limit::Sign),
        // Refused as unsupported right after.
        _ => None,
    }
}

/// Checks `owner`'s rate limit for the operation of a WebSocket opening,
/// before any protocol work. The rejection to close with when over the
/// limit (4110, its reason saying how long to wait) or when the check
/// cannot be made (storage failure: 1011).
pub(crate) async fn check_operation(
    state: &Arc<AppState>,
    owner: &str,
    operation: &Operation,
) -> Result<(), Rejection> {
    let Some(limit) = limit_of(operation) else {
        return Ok(());
    };
    match take(state, limit, owner).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(limited)) => {
            debug!(limit = limit.name(), wait_ms = %limited.wait.as_millis(), "rate limited");
            Err(rate_limited(limited.wait))
        }
        Err(e) => {
            error!(error = %e, "rate limit check failed");
            Err(Rejection::INTERNAL)
        }
    }
}

/// The 4110 rejection: the reason says how long to wait, rounded up to
/// 1 s, 10 s, 1 min, 10 min or 1 h (a close reason is fixed text).
pub(crate) fn rate_limited(wait: Duration) -> Rejection {
    const REASONS: [(u64, &str); 5] = [
        (1, "rate limited: retry in 1 s"),
        (10, "rate limited: retry in 10 s"),
        (60, "rate limited: retry in 1 min"),
        (600, "rate limited: retry in 10 min"),
        (3600, "rate limited: retry in 1 h"),
    ];
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let reason = REASONS
        .iter()
        .find(|(limit, _)| seconds <= *limit)
        .map_or(crate::session::codes::RATE_LIMITED.reason(), |(_, text)| {
            text
        });
    Rejection::application(crate::session::codes::RATE_LIMITED.code().0, reason)
}

/// The stricter limit of backup, export and revoke, per subject, shared by
/// every replica.
///
/// # Errors
///
/// 429 with `Retry-After` when over the limit; 500 if the database fails.
pub(crate) async fn check_sensitive(state: &Arc<AppState>, subject: &str) -> Result<(), Problem> {
    match take(state, Limit::Sensitive, subject).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(limited)) => Err(Problem::rate_limited(
            seconds_rounded_up(limited.wait),
            "too many backup, export or revoke requests for this user",
        )),
        Err(e) => Err(Problem::internal(&e)),
    }
}

fn seconds_rounded_up(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// The bearer token check at the WebSocket upgrade, counting failures per
/// client address. A valid token always passes: an address over its budget
/// of failures (shared by everyone behind one NAT or an untrusted proxy)
/// must not lock out its honest users. A missing or invalid token gets 401,
/// or 429 (with `Retry-After`) once its address is over budget, so that a
/// client probing tokens is slowed and told so.
pub(crate) fn authenticate_upgrade(
    state: &AppState,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Result<Claims, Box<Response>> {
    let limiters = &state.rate_limiters;
    let result = match mpc_transport_ws::server::bearer_token(headers) {
        Some(token) => state.auth.verify(token).map_err(|e| e.code()),
        None => Err("no bearer token"),
    };
    let reason = match result {
        Ok(claims) => return Ok(claims),
        Err(reason) => reason,
    };
    let client = peer.map(|peer| crate::client_addr::client_ip(state, peer, headers));
    if let Some((gcra, ip)) = limiters.auth_failures.zip(client) {
        let bucket = format!("auth:{}", crate::client_addr::limit_key(ip));
        if let Err(wait) = limiters.local.take(&bucket, now_micros(), gcra) {
            debug!(%ip, reason, "upgrade refused: too many failed token checks");
            return Err(Box::new(too_many_failures(wait)));
        }
    }
    debug!(reason, "upgrade refused: invalid token");
    Err(Box::new(StatusCode::UNAUTHORIZED.into_response()))
}

fn too_many_failures(wait: i64) -> Response {
    let seconds = seconds_rounded_up(wait_of(wait)).max(1);
    let mut response = StatusCode::TOO_MANY_REQUESTS.into_response();
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::testkit::TestDb;
    use crate::store::Store;

    #[test]
    fn gcra_allows_a_burst_then_one_per_interval() {
        let gcra = Gcra::new(3, MINUTE).unwrap();
        assert_eq!(gcra.interval, 20_000_000);
        let buckets = LocalBuckets::default();
        let t0 = 1_000_000_000_000;
        for _ in 0..3 {
            buckets.take("a", t0, gcra).unwrap();
        }
        let wait = buckets.take("a", t0, gcra).unwrap_err();
        assert_eq!(wait, 20_000_000);
        assert_eq!(buckets.peek("a", t0, gcra), Err(wait));
        // Another bucket is untouched; a refused take changes nothing.
        buckets.take("b", t0, gcra).unwrap();
        assert_eq!(buckets.take("a", t0 + 19_999_999, gcra), Err(1));
        buckets.take("a", t0 + 20_000_000, gcra).unwrap();
        assert!(buckets.take("a", t0 + 20_000_000, gcra).is_err());
        // A long pause refills the burst, never more.
        let later = t0 + 3_600_000_000;
        assert!(buckets.peek("a", later, gcra).is_ok());
        for _ in 0..3 {
            buckets.take("a", later, gcra).unwrap();
        }
        assert!(buckets.take("a", later, gcra).is_err());
        assert!(Gcra::new(0, MINUTE).is_none());
    }

    #[test]
    fn the_close_reason_rounds_the_wait_up() {
        for (wait, reason) in [
            (Duration::from_millis(100), "rate limited: retry in 1 s"),
            (Duration::from_millis(1001), "rate limited: retry in 10 s"),
            (Duration::from_secs(180), "rate limited: retry in 10 min"),
            (Duration::from_secs(3600), "rate limited: retry in 1 h"),
            (Duration::from_secs(7200), "rate limited"),
        ] {
            let rejection = rate_limited(wait);
            assert_eq!(rejection.code().0, 4110);
            assert_eq!(rejection.reason(), reason, "{wait:?}");
        }
    }

    #[test]
    fn operations_map_to_their_limits() {
        assert_eq!(limit_of(&Operation::Keygen), Some(Limit::Keygen));
        let key_id = mpc_core::KeyId([7; 32]);
        assert_eq!(
            limit_of(&Operation::Refresh { key_id, epoch: 0 }),
            Some(Limit::Refresh)
        );
        assert_eq!(
            limit_of(&Operation::Presign {
                key_id,
                epoch: 0,
                path: mpc_core::DerivationPath::root(),
            }),
            Some(Limit::Sign)
        );
    }

    /// The SQL GCRA gives the memory one's answers, with two pools on one
    /// database (as two replicas) sharing the bucket.
    async fn shared_buckets_hold_across_two_pools(db: TestDb) {
        let one = Store::open(&db.url).await.unwrap();
        let two = Store::open(&db.url).await.unwrap();
        let gcra = Gcra::new(3, HOUR).unwrap();
        let (interval, tolerance) = (gcra.interval, gcra.tolerance);
        let t0 = now_micros();
        let mut conns = [one.acquire().await.unwrap(), two.acquire().await.unwrap()];
        for i in 0..3 {
            let taken = buckets::take(&mut conns[i % 2], "k:x", t0, interval, tolerance);
            assert_eq!(taken.await.unwrap(), None, "request {i}");
        }
        for conn in &mut conns {
            let wait = buckets::take(conn, "k:x", t0, interval, tolerance);
            assert_eq!(wait.await.unwrap(), Some(interval));
        }
        let other = buckets::take(&mut conns[1], "k:y", t0, interval, tolerance);
        assert_eq!(other.await.unwrap(), None);
        // One interval later, one more.
        let later = t0 + interval;
        let again = buckets::take(&mut conns[0], "k:x", later, interval, tolerance);
        assert_eq!(again.await.unwrap(), None);
        // Nothing is pruned while a bucket is in the future.
        assert_eq!(buckets::prune(&mut conns[1], later).await.unwrap(), 0);
        let far = later + 2 * tolerance + interval;
        assert_eq!(buckets::prune(&mut conns[1], far).await.unwrap(), 2);
    }

    /// Concurrent checks on two pools: exactly the burst is allowed. Also
    /// prints the median time of one allowed check (the added latency of a
    /// shared check; see PROTOCOL.md §18.5).
    async fn concurrent_checks_allow_exactly_the_burst(db: TestDb) {
        let pools = [
            Arc::new(Store::open(&db.url).await.unwrap()),
            Arc::new(Store::open(&db.url).await.unwrap()),
        ];
        let gcra = Gcra::new(10, HOUR).unwrap();
        let now = now_micros();
        let mut tasks = Vec::new();
        for i in 0..40 {
            let store = Arc::clone(&pools[i % 2]);
            tasks.push(tokio::spawn(async move {
                let mut conn = store.acquire().await.unwrap();
                buckets::take(&mut conn, "c:x", now, gcra.interval, gcra.tolerance)
                    .await
                    .unwrap()
            }));
        }
        let mut allowed = 0;
        for task in tasks {
            allowed += usize::from(task.await.unwrap().is_none());
        }
        assert_eq!(allowed, 10);
        // Latency: 200 allowed checks on distinct buckets, one at a time.
        let unlimited = Gcra::new(1_000_000, MINUTE).unwrap();
        let mut times = Vec::new();
        for i in 0..200 {
            let started = std::time::Instant::now();
            let mut conn = pools[i % 2].acquire().await.unwrap();
            let bucket = format!("lat:{i}");
            let refused = buckets::take(
                &mut conn,
                &bucket,
                now,
                unlimited.interval,
                unlimited.tolerance,
            );
            assert_eq!(refused.await.unwrap(), None);
            times.push(started.elapsed());
        }
        times.sort();
        eprintln!(
            "shared rate-limit check on {:?}: median {:?}, p90 {:?}",
            db.kind,
            times[times.len() / 2],
            times[times.len() * 9 / 10]
        );
    }

    crate::store::testkit::on_both_backends!(
        shared_buckets_hold_across_two_pools,
        concurrent_checks_allow_exactly_the_burst,
    );
}
