//! Webhook delivery from the durable outbox.
//!
//! Every key change writes a webhook event into the `outbox` table in the
//! same transaction as the change ([`crate::vault`]). [`spawn`] starts a
//! task that POSTs due events to one configured URL and records the outcome
//! in the database: delivered, or a failed attempt with the time of the
//! next one (exponential backoff with jitter). Nothing that matters is kept
//! in memory, so events survive restarts and are retried until the
//! receiver accepts them.
//!
//! # The request
//!
//! `POST <url>` with the JSON body
//!
//! ```json
//! {"created_at": 1700000000000, "data": {...}, "id": "<event id>",
//!  "key_id": "<64 hex>", "type": "key.created"}
//! ```
//!
//! - `id`: the event's id, 32 hex characters, unique per event and the same
//!   on every attempt;
//! - `type`: `key.created`, `key.refreshed`, `key.backed_up`,
//!   `key.exported`, `key.revoked` or `key.banned`;
//! - `created_at`: when the change happened, unix milliseconds;
//! - `key_id`: the key concerned, 64 hex characters;
//! - `data`: the event's details (never secrets).
//!
//! Key order and spacing are not part of the contract: verify the raw
//! bytes, then parse. The request's headers are
//!
//! - `Content-Type: application/json`
//! - `Mpc-Webhook-Id: <event id>` (as in the body)
//! - `Mpc-Webhook-Timestamp: <unix seconds>`: when this attempt was signed
//! - `Mpc-Webhook-Signature: v1=<hex>`: HMAC-SHA256 under the shared
//!   secret of the bytes `<timestamp>.<body>`, i.e. the timestamp header's
//!   decimal text, one `.`, then the raw request body exactly as received
//!   (see [`sign`]).
//!
//! Any 2xx answer counts as delivered. Anything else (another status,
//! including 3xx: redirects are not followed; a connection error; no
//! answer within [`WebhookConfig::request_timeout`]) is a failed attempt,
//! retried after `retry_base * 2^(failed attempts so far)`, capped at
//! `retry_max`, randomized by ±20% (never above `retry_max`). Events are
//! retried without limit; the last error (a short description, never a
//! body or secret) is stored in the outbox row for operators.
//!
//! # What a receiver must check
//!
//! 1. The signature: recompute it over the raw body bytes (before any JSON
//!    parsing) and the `Mpc-Webhook-Timestamp` header, and compare in
//!    constant time; [`verify`] does this. The header may carry several
//!    comma-separated `v1=` values; one matching is enough.
//! 2. The timestamp: within a few minutes of the receiver's clock (e.g.
//!    5 minutes), which bounds how long a captured request can be
//!    replayed. [`verify`] checks this too.
//! 3. Duplicates: delivery is **at least once**. An event may arrive more
//!    than once: when the receiver's 2xx got lost, when a server stopped
//!    mid-request, or when two server processes sharing a database race
//!    (rare, see below). Deduplicate by `id` (`Mpc-Webhook-Id`) and answer
//!    2xx to a duplicate.
//!
//! Ordering: each deliverer sends one event at a time, taking due events
//! in outbox order (oldest first), so events normally arrive in the order
//! of the changes, per key and overall. A failed event is retried later
//! while newer events go ahead, so after a failure (or with several server
//! processes) a receiver may see a key's events out of order: use
//! `created_at`, or fetch the key's current state, rather than arrival
//! order.
//!
//! # Several processes on one database
//!
//! Before sending, a deliverer claims the event
//! ([`Vault::claim_event`]): one conditional update moves its next attempt
//! time to the end of a lease (the request timeout plus a margin), which
//! only succeeds while the event is still due. Other deliverers then skip
//! it until it is delivered, rescheduled, or the lease runs out (e.g. the
//! claimer died). A deliverer stopped mid-request gives its claim back
//! ([`Vault::release_event`]). Duplicates remain possible (a lease that
//! runs out while its request is still in flight) and are harmless.
//!
//! Nothing here logs or stores the secret, a signature, a request body or
//! the URL's path, query or credentials.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::Url;
use sha2::Sha256;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use crate::vault::{OutboxEvent, Vault};

type HmacSha256 = Hmac<Sha256>;

/// Header carrying the event id.
pub const ID_HEADER: &str = "Mpc-Webhook-Id";
/// Header carrying the signing time, unix seconds.
pub const TIMESTAMP_HEADER: &str = "Mpc-Webhook-Timestamp";
/// Header carrying the signature(s), `v1=<hex>`.
pub const SIGNATURE_HEADER: &str = "Mpc-Webhook-Signature";

/// The signature scheme's prefix in [`SIGNATURE_HEADER`].
const SCHEME: &str = "v1=";
/// Most signatures [`verify`] looks at in one header.
const MAX_SIGNATURES: usize = 8;
/// How long a claim outlives the request timeout (time to claim, then
/// record the outcome).
const LEASE_MARGIN: Duration = Duration::from_secs(15);
/// Bound on giving a claim back at shutdown.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest error description stored with a failed attempt.
const MAX_ERROR_CHARS: usize = 200;

/// Configuration of webhook delivery.
///
/// `Debug` shows only the URL's scheme, host and port, never the secret
/// (or the URL's credentials, path or query).
#[derive(Clone)]
pub struct WebhookConfig {
    /// Where events are POSTed: an `http://` or `https://` URL.
    pub url: String,
    /// The shared HMAC-SHA256 secret (not empty; 32 random bytes or more
    /// recommended).
    pub secret: Zeroizing<Vec<u8>>,
    /// Delay after the first failed attempt; doubles with each further one.
    /// Default 1 s.
    pub retry_base: Duration,
    /// Longest delay between attempts. Default 5 min.
    pub retry_max: Duration,
    /// How often the outbox is checked for due events when idle. Default
    /// 1 s.
    pub poll_interval: Duration,
    /// Limit on one request, from connecting to the response headers.
    /// Default 10 s.
    pub request_timeout: Duration,
    /// Most events read from the outbox per query. Default 32.
    pub batch: u32,
}

impl WebhookConfig {
    /// A configuration for `url` and `secret` with the default timings.
    #[must_use]
    pub fn new(url: impl Into<String>, secret: impl Into<Vec<u8>>) -> Self {
        Self {
            url: url.into(),
            secret: Zeroizing::new(secret.into()),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(5 * 60),
            poll_interval: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
            batch: 32,
        }
    }

    /// Checks the URL (absolute, `http` or `https`, with a host) and the
    /// secret (not empty), returning the parsed URL.
    ///
    /// # Errors
    ///
    /// [`WebhookError::InvalidUrl`] or [`WebhookError::EmptySecret`].
    pub fn validate(&self) -> Result<Url, WebhookError> {
        let url = Url::parse(self.url.trim())
            .map_err(|_| WebhookError::InvalidUrl("it is not an absolute URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(WebhookError::InvalidUrl("the scheme must be http or https"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(WebhookError::InvalidUrl("it has no host"));
        }
        if self.secret.is_empty() {
            return Err(WebhookError::EmptySecret);
        }
        Ok(url)
    }

    /// The URL's scheme, host and port, for logs: its user info, path and
    /// query may hold credentials (e.g. a token in the path).
    #[must_use]
    pub fn url_for_log(&self) -> String {
        url_origin(&self.url)
    }
}

/// The scheme, host and port of `url`, for logs.
fn url_origin(url: &str) -> String {
    match Url::parse(url.trim()) {
        Ok(url) => {
            let host = url.host_str().unwrap_or_default();
            match url.port() {
                Some(port) => format!("{}://{host}:{port}", url.scheme()),
                None => format!("{}://{host}", url.scheme()),
            }
        }
        Err(_) => "<invalid URL>".to_owned(),
    }
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &url_origin(&self.url))
            .field("secret", &"<redacted>")
            .field("retry_base", &self.retry_base)
            .field("retry_max", &self.retry_max)
            .field("poll_interval", &self.poll_interval)
            .field("request_timeout", &self.request_timeout)
            .field("batch", &self.batch)
            .finish()
    }
}

/// Why webhook delivery could not start.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The URL is unusable; says why (without repeating the URL).
    #[error("invalid webhook URL: {0}")]
    InvalidUrl(&'static str),
    /// The secret is empty.
    #[error("the webhook secret is empty")]
    EmptySecret,
    /// The HTTP client could not be built (e.g. TLS setup).
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(String),
}

/// Delivery counters, shared with the running deliverer (for the metrics
/// endpoint). Read them with `load(Ordering::Relaxed)`.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    /// Events delivered (answered 2xx).
    pub delivered: AtomicU64,
    /// Failed attempts (non-2xx status, connection error, timeout); each
    /// is retried later.
    pub failed: AtomicU64,
}

/// The [`SIGNATURE_HEADER`] value for a request signed at `timestamp`
/// (unix seconds, as sent in [`TIMESTAMP_HEADER`]) with body `body`:
/// `v1=` followed by the lowercase hex HMAC-SHA256 under `secret` of the
/// timestamp's decimal text, `.`, and the body bytes.
#[must_use]
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length: `mac` does not fail.
    mac(secret, timestamp, body)
        .map(|mac| format!("{SCHEME}{}", hex::encode(mac.finalize().into_bytes())))
        .unwrap_or_default()
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Option<HmacSha256> {
    let mut mac = HmacSha256::new_from_slice(secret).ok()?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// Checks a received request: `header_value` (the [`SIGNATURE_HEADER`]
/// value) holds a valid `v1=` signature under `secret` of `timestamp` (the
/// [`TIMESTAMP_HEADER`] value, unix seconds) and the raw `body`, and
/// `timestamp` is within `tolerance` of `now` (unix seconds). The header
/// may list several comma-separated signatures (e.g. during a secret
/// change); one valid is enough. Signatures are compared in constant time.
///
/// A receiver must also deduplicate events by id (see the
/// [module documentation](self)).
#[must_use]
pub fn verify(
    secret: &[u8],
    header_value: &str,
    timestamp: i64,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> bool {
    if now.abs_diff(timestamp) > tolerance.as_secs() {
        return false;
    }
    let Some(expected) = mac(secret, timestamp, body) else {
        return false;
    };
    let mut valid = false;
    for part in header_value.split(',').take(MAX_SIGNATURES) {
        let Some(hex_tag) = part.trim().strip_prefix(SCHEME) else {
            continue;
        };
        let Ok(tag) = hex::decode(hex_tag) else {
            continue;
        };
        // No early exit: every listed signature is checked.
        valid |= expected.clone().verify_slice(&tag).is_ok();
    }
    valid
}

/// Starts delivering due outbox events of `vault` to `config.url`, until
/// `shutdown` becomes `true` (or its sender is dropped). Returns the task
/// and its counters.
///
/// The task polls the outbox every `poll_interval` (at once again after a
/// full batch), and sends due events one at a time, oldest first, each
/// claimed first so that other deliverers on the same database skip it
/// (see the [module documentation](self)). It stops promptly at shutdown:
/// a request in flight is abandoned and its claim given back, so a later
/// deliverer sends that event again at once.
///
/// Must be called within a Tokio runtime.
///
/// # Errors
///
/// [`WebhookError::InvalidUrl`] if the URL is not an absolute `http(s)`
/// URL with a host; [`WebhookError::EmptySecret`];
/// [`WebhookError::Client`] if the HTTP client cannot be built.
pub fn spawn(
    vault: Vault,
    config: WebhookConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<(JoinHandle<()>, Arc<DeliveryStats>), WebhookError> {
    let url = config.validate()?;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(config.request_timeout)
        .user_agent(concat!("mpc-server-webhook/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| WebhookError::Client(e.without_url().to_string()))?;
    let stats = Arc::new(DeliveryStats::default());
    let deliverer = Deliverer {
        vault,
        client,
        url,
        config,
        stats: Arc::clone(&stats),
        shutdown,
    };
    Ok((tokio::spawn(deliverer.run()), stats))
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The delay before the next attempt of an event that has failed
/// `attempts` times before this failure: `base * 2^attempts`, capped at
/// `max`, then scaled by a factor in [0.8, 1.2] chosen by `jitter` (0 →
/// 0.8, `u32::MAX` → 1.2) and capped at `max` again.
fn backoff(base: Duration, max: Duration, attempts: u32, jitter: u32) -> Duration {
    let exponential = 1u32
        .checked_shl(attempts)
        .and_then(|factor| base.checked_mul(factor))
        .unwrap_or(max)
        .min(max);
    // Parts per million: 800_000 ..= 1_200_000.
    let ppm = 800_000 + u128::from(jitter) * 400_000 / u128::from(u32::MAX);
    let nanos = exponential.as_nanos() * ppm / 1_000_000;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)).min(max)
}

/// A uniformly random jitter input (the middle if randomness fails).
fn random_jitter() -> u32 {
    let mut bytes = [0u8; 4];
    match OsRng.try_fill_bytes(&mut bytes) {
        Ok(()) => u32::from_le_bytes(bytes),
        Err(_) => u32::MAX / 2,
    }
}

/// The stored and logged description of a failed request: what failed and
/// the innermost cause, never the URL.
fn describe_error(error: reqwest::Error) -> String {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_redirect() {
        "redirect refused"
    } else {
        "request failed"
    };
    let error = error.without_url();
    let mut cause: &dyn std::error::Error = &error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    let mut text = format!("{what}: {cause}");
    if text.chars().count() > MAX_ERROR_CHARS {
        text = text.chars().take(MAX_ERROR_CHARS).collect();
    }
    text
}

/// Resolves once shutdown is requested (or can no longer be: the sender is
/// gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // An error means the sender is dropped: stop as well.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// What became of one event.
enum Outcome {
    /// Delivered, retried later, or skipped (claimed elsewhere).
    Done,
    /// A database call failed; pause before the next pass.
    DatabaseError,
    /// Shutdown was requested.
    Stop,
}

struct Deliverer {
    vault: Vault,
    client: reqwest::Client,
    url: Url,
    config: WebhookConfig,
    stats: Arc<DeliveryStats>,
    shutdown: watch::Receiver<bool>,
}

impl Deliverer {
    fn stop_requested(&self) -> bool {
        *self.shutdown.borrow() || self.shutdown.has_changed().is_err()
    }

    async fn run(mut self) {
        tracing::info!(
            url = %url_origin(self.url.as_str()),
            "webhook delivery started"
        );
        let batch = self.config.batch.max(1);
        let batch_len = usize::try_from(batch).unwrap_or(usize::MAX);
        while !self.stop_requested() {
            let mut pause = true;
            let due = tokio::select! {
                () = stopped(&mut self.shutdown) => break,
                due = self.vault.due_events(now_ms(), batch) => due,
            };
            match due {
                Ok(mut events) => {
                    // A full batch: more may be due, look again at once.
                    pause = events.len() < batch_len;
                    events.sort_by_key(|event| event.id);
                    for event in &events {
                        match self.deliver(event).await {
                            Outcome::Done => {}
                            Outcome::DatabaseError => pause = true,
                            Outcome::Stop => break,
                        }
                        if self.stop_requested() {
                            break;
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "webhook delivery: reading the outbox failed");
                }
            }
            if pause && !self.stop_requested() {
                tokio::select! {
                    () = stopped(&mut self.shutdown) => break,
                    () = tokio::time::sleep(self.config.poll_interval) => {}
                }
            }
        }
        tracing::info!("webhook delivery stopped");
    }

    /// Claims, sends, and records the outcome of one event.
    async fn deliver(&self, event: &OutboxEvent) -> Outcome {
        let now = now_ms();
        let lease = self.config.request_timeout.saturating_add(LEASE_MARGIN);
        let lease_until = now.saturating_add(millis(lease));
        match self.vault.claim_event(event.id, now, lease_until).await {
            Ok(true) => {}
            // Delivered, rescheduled or claimed by another deliverer.
            Ok(false) => return Outcome::Done,
            Err(error) => {
                tracing::warn!(
                    event_id = %event.event_id,
                    event_type = %event.event_type,
                    %error,
                    "webhook delivery: claiming an event failed"
                );
                return Outcome::DatabaseError;
            }
        }
        let mut shutdown = self.shutdown.clone();
        let result = tokio::select! {
            () = stopped(&mut shutdown) => None,
            result = self.send(event) => Some(result),
        };
        let Some(result) = result else {
            self.release(event, lease_until).await;
            return Outcome::Stop;
        };
        let recorded = match result {
            Ok(()) => {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    event_id = %event.event_id,
                    event_type = %event.event_type,
                    attempt = event.attempts.saturating_add(1),
                    "webhook delivered"
                );
                self.vault.mark_delivered(event.id, now_ms()).await
            }
            Err(error) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                let delay = backoff(
                    self.config.retry_base,
                    self.config.retry_max,
                    event.attempts,
                    random_jitter(),
                );
                tracing::warn!(
                    event_id = %event.event_id,
                    event_type = %event.event_type,
                    attempt = event.attempts.saturating_add(1),
                    error = %error,
                    retry_in_ms = millis(delay),
                    "webhook delivery failed"
                );
                let next = now_ms().saturating_add(millis(delay));
                self.vault.schedule_retry(event.id, next, &error).await
            }
        };
        match recorded {
            Ok(()) => Outcome::Done,
            Err(error) => {
                tracing::warn!(
                    event_id = %event.event_id,
                    event_type = %event.event_type,
                    %error,
                    "webhook delivery: recording the outcome failed"
                );
                Outcome::DatabaseError
            }
        }
    }

    /// One POST of `event`; `Err` describes a failure (without the URL, the
    /// body or the signature).
    async fn send(&self, event: &OutboxEvent) -> Result<(), String> {
        let body = serde_json::to_vec(&serde_json::json!({
            "id": event.event_id,
            "type": event.event_type,
            "created_at": event.created_at,
            "key_id": hex::encode(event.key_id.0),
            "data": event.payload,
        }))
        .map_err(|_| "cannot serialize the event".to_owned())?;
        let timestamp = now_ms().div_euclid(1000);
        let mut signature = HeaderValue::from_str(&sign(&self.config.secret, timestamp, &body))
            .map_err(|_| "invalid signature header".to_owned())?;
        signature.set_sensitive(true);
        let response = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ID_HEADER, event.event_id.as_str())
            .header(TIMESTAMP_HEADER, timestamp)
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await
            .map_err(describe_error)?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else if status.is_redirection() {
            Err(format!("HTTP {status} (redirects are not followed)"))
        } else {
            Err(format!("HTTP {status}"))
        }
    }

    /// Gives back the claim on an event not sent because of shutdown.
    async fn release(&self, event: &OutboxEvent, lease_until: i64) {
        let release = self.vault.release_event(event.id, lease_until, now_ms());
        match tokio::time::timeout(RELEASE_TIMEOUT, release).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(
                event_id = %event.event_id,
                %error,
                "webhook delivery: releasing an event at shutdown failed"
            ),
            Err(_) => tracing::warn!(
                event_id = %event.event_id,
                "webhook delivery: releasing an event at shutdown timed out"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a webhook secret of some length!";
    const BODY: &[u8] = br#"{"id":"00112233445566778899aabbccddeeff","type":"key.created"}"#;
    const TOLERANCE: Duration = Duration::from_secs(300);

    #[test]
    fn sign_is_hmac_sha256_of_timestamp_dot_body() {
        let header = sign(SECRET, 1_700_000_000, BODY);
        let hex_tag = header.strip_prefix("v1=").unwrap();
        assert_eq!(hex_tag.len(), 64);
        let mut mac = HmacSha256::new_from_slice(SECRET).unwrap();
        mac.update(b"1700000000.");
        mac.update(BODY);
        assert_eq!(hex_tag, hex::encode(mac.finalize().into_bytes()));
        // Deterministic.
        assert_eq!(header, sign(SECRET, 1_700_000_000, BODY));
    }

    #[test]
    fn verify_accepts_a_fresh_valid_signature() {
        let ts = 1_700_000_000;
        let header = sign(SECRET, ts, BODY);
        assert!(verify(SECRET, &header, ts, BODY, ts, TOLERANCE));
        assert!(verify(SECRET, &header, ts, BODY, ts + 300, TOLERANCE));
        assert!(verify(SECRET, &header, ts, BODY, ts - 300, TOLERANCE));
        // One of several listed signatures is enough.
        let several = format!("v1=00ff, {header}");
        assert!(verify(SECRET, &several, ts, BODY, ts, TOLERANCE));
    }

    #[test]
    fn verify_rejects_wrong_secret_timestamp_body_or_header() {
        let ts = 1_700_000_000;
        let header = sign(SECRET, ts, BODY);
        assert!(!verify(b"another secret", &header, ts, BODY, ts, TOLERANCE));
        // The signed timestamp is not the one claimed.
        assert!(!verify(SECRET, &header, ts + 1, BODY, ts, TOLERANCE));
        // Body changed by one byte, or truncated.
        let mut body = BODY.to_vec();
        body[10] ^= 1;
        assert!(!verify(SECRET, &header, ts, &body, ts, TOLERANCE));
        assert!(!verify(
            SECRET,
            &header,
            ts,
            &BODY[..BODY.len() - 1],
            ts,
            TOLERANCE
        ));
        // Too old or too far in the future.
        assert!(!verify(SECRET, &header, ts, BODY, ts + 301, TOLERANCE));
        assert!(!verify(SECRET, &header, ts, BODY, ts - 301, TOLERANCE));
        // Malformed headers.
        let bare = header.strip_prefix("v1=").unwrap();
        assert!(!verify(SECRET, bare, ts, BODY, ts, TOLERANCE));
        assert!(!verify(
            SECRET,
            &format!("v0={bare}"),
            ts,
            BODY,
            ts,
            TOLERANCE
        ));
        assert!(!verify(
            SECRET,
            &header[..header.len() - 2],
            ts,
            BODY,
            ts,
            TOLERANCE
        ));
        assert!(!verify(SECRET, "v1=zz", ts, BODY, ts, TOLERANCE));
        assert!(!verify(SECRET, "", ts, BODY, ts, TOLERANCE));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(300);
        let middle = u32::MAX / 2;
        let close = |a: Duration, b: Duration| a.abs_diff(b) <= Duration::from_millis(1);
        assert!(close(backoff(base, max, 0, middle), base));
        assert!(close(backoff(base, max, 1, middle), 2 * base));
        assert!(close(backoff(base, max, 5, middle), 32 * base));
        assert!(close(backoff(base, max, 8, middle), 256 * base));
        assert!(close(backoff(base, max, 9, middle), max));
        for attempts in [9, 31, 32, 63, 1000, u32::MAX] {
            assert!(backoff(base, max, attempts, u32::MAX) <= max);
            assert!(close(backoff(base, max, attempts, middle), max));
        }
        // A base of zero stays zero; a huge base is capped.
        assert_eq!(backoff(Duration::ZERO, max, 3, middle), Duration::ZERO);
        assert_eq!(backoff(Duration::MAX, max, 3, 0), max.mul_f64(0.8));
    }

    #[test]
    fn backoff_jitter_stays_within_20_percent() {
        let base = Duration::from_millis(20);
        let max = Duration::from_secs(300);
        for attempts in 0..12 {
            let nominal = (base * (1 << attempts)).min(max);
            let low = backoff(base, max, attempts, 0);
            let high = backoff(base, max, attempts, u32::MAX);
            assert_eq!(low, nominal.mul_f64(0.8));
            assert_eq!(high, nominal.mul_f64(1.2).min(max));
            for _ in 0..100 {
                let delay = backoff(base, max, attempts, random_jitter());
                assert!(low <= delay && delay <= high, "{delay:?} for {attempts}");
            }
        }
    }

    #[test]
    fn config_defaults_validation_and_redacted_debug() {
        let config = WebhookConfig::new("https://user:pw@hooks.example:8443/p?token=t", b"s3cr3t");
        assert_eq!(config.retry_base, Duration::from_secs(1));
        assert_eq!(config.retry_max, Duration::from_secs(300));
        assert_eq!(config.poll_interval, Duration::from_secs(1));
        assert_eq!(config.request_timeout, Duration::from_secs(10));
        assert_eq!(config.batch, 32);
        assert!(config.validate().is_ok());
        let debug = format!("{config:?}");
        assert!(debug.contains("https://hooks.example:8443"), "{debug}");
        for secret in ["s3cr3t", "pw", "token", "user", "/p"] {
            assert!(!debug.contains(secret), "{debug}");
        }

        for url in [
            "ftp://hooks.example/",
            "hooks.example/x",
            "",
            "file:///tmp/x",
        ] {
            let config = WebhookConfig::new(url, b"s".to_vec());
            assert!(
                matches!(config.validate(), Err(WebhookError::InvalidUrl(_))),
                "{url}"
            );
        }
        let config = WebhookConfig::new("http://127.0.0.1:9/", Vec::new());
        assert!(matches!(config.validate(), Err(WebhookError::EmptySecret)));
    }
}
