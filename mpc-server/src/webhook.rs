//! Webhook delivery from the durable outbox.
//!
//! Every key change writes a webhook event into the `outbox` table in the
//! same transaction as the change ([`crate::vault`]). [`spawn`] starts a
//! task that POSTs due events to one configured URL, several keys at once,
//! and records each outcome in the database: delivered, or a
//! failed attempt with the time of the next one (exponential backoff with
//! jitter). Nothing that matters is kept
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
//! # Order, concurrency and delay
//!
//! Events of **one key** go out one at a time, in the order of the
//! changes: an event is only sent once every earlier event of its key is
//! delivered (a failed attempt holds the key's later events back until it
//! succeeds). Events of **different keys** go out in parallel, on at most
//! [`WebhookConfig::concurrency`] requests at once per server process
//! (`MPC_WEBHOOK_CONCURRENCY`, default 16), each key on at most one of
//! them. So a receiver that is slow, hangs or fails for one key's events
//! delays that key only. With `P` the poll interval
//! (`MPC_WEBHOOK_POLL_INTERVAL_MS`, default 1 s), `T` the request timeout
//! (`MPC_WEBHOOK_TIMEOUT`, default 10 s) and `C` the concurrency:
//!
//! - An event whose key has no earlier undelivered event is first
//!   attempted within `P` (plus one outbox query) of being written, as
//!   long as fewer than `C` keys have an event in flight. An attempt ends
//!   within `T`: a hung receiver holds a worker for at most `T`.
//! - A key's next event is attempted as soon as the previous one is
//!   delivered (same bound when keys wait, below). After a failed attempt
//!   the same event is retried after the backoff above; its key's later
//!   events wait, other keys' do not.
//! - When more keys have due events than there are workers, they take
//!   turns (round robin): a worker that delivered an event while other
//!   keys wait moves on to the longest-waiting key, and its own key's
//!   next event queues behind those already due. An event due at time `t`
//!   (written, or its key's previous event delivered) is attempted within
//!   about `P + ceil(K / C) * T`, where `K` is the number of other keys
//!   with events due before `t`: each of them gets at most one attempt
//!   ahead of it. Fairness is between keys, not owners: an owner with many
//!   keys with due events gets as many turns.
//!
//! The receiver sees a key's events in order, except that an event may be
//! repeated (at least once, above): after a duplicate, the key's later
//! events follow again in order. Events of different keys arrive in any
//! order; use `created_at` to order them.
//!
//! # Several processes on one database
//!
//! Before sending, a deliverer claims the event
//! ([`Vault::claim_event`]): one conditional update moves its next attempt
//! time to the end of a lease (the request timeout plus
//! [`WebhookConfig::lease_margin`], default 15 s), which only succeeds
//! while the event is due and is its key's oldest undelivered event. So
//! at most one event per key is claimed at a time, on all processes
//! together, and other deliverers skip the key until the event is
//! delivered, rescheduled, or the lease runs out (the claimer died: the
//! event is sent again after at most `T` + the margin). A deliverer
//! stopped mid-request gives its claim back ([`Vault::release_event`]), so
//! the event is sent again at once. Duplicates therefore come from a lost
//! 2xx, a stop or crash mid-request, or a lease that ran out while the
//! claimer still recorded the outcome (a database slower than the
//! margin); each carries the same `id`.
//!
//! # Metrics
//!
//! `/metrics` shows `mpc_webhook_backlog_events` (undelivered events in
//! the outbox, of all processes), `mpc_webhook_oldest_event_age_seconds`
//! (the oldest undelivered event's age, 0 when there is none), both
//! refreshed every `P`, and `mpc_webhook_deliveries_in_flight` (this
//! process's busy workers).
//!
//! Nothing here logs or stores the secret, a signature, a request body or
//! the URL's path, query or credentials.

mod args;
mod deliver;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::Url;
use sha2::Sha256;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use crate::vault::Vault;

pub use args::WebhookArgs;

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
/// Default of [`WebhookConfig::concurrency`] (`MPC_WEBHOOK_CONCURRENCY`).
pub const DEFAULT_CONCURRENCY: usize = 16;

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
    /// Most requests in flight at once, each for a different key. Default
    /// [`DEFAULT_CONCURRENCY`].
    pub concurrency: usize,
    /// How long a claim outlives the request timeout (time to claim, then
    /// record the outcome); after a crash, the claimed event is sent again
    /// `request_timeout + lease_margin` after its claim. Default 15 s.
    pub lease_margin: Duration,
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
            concurrency: DEFAULT_CONCURRENCY,
            lease_margin: Duration::from_secs(15),
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
            .field("concurrency", &self.concurrency)
            .field("lease_margin", &self.lease_margin)
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

/// Delivery counters and gauges, shared with the running deliverer (for
/// the metrics endpoint). Read them with `load(Ordering::Relaxed)`.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    /// Events delivered (answered 2xx).
    pub delivered: AtomicU64,
    /// Failed attempts (non-2xx status, connection error, timeout); each
    /// is retried later.
    pub failed: AtomicU64,
    /// Undelivered events in the outbox (all processes), as of the last
    /// poll.
    pub backlog: AtomicU64,
    /// `created_at` (unix milliseconds) of the oldest undelivered event as
    /// of the last poll; meaningless while `backlog` is 0.
    pub oldest_created_at: AtomicI64,
    /// Requests in flight in this process.
    pub in_flight: AtomicU64,
}

impl DeliveryStats {
    fn set_backlog(&self, waiting: u64, oldest_created_at: Option<i64>) {
        self.oldest_created_at
            .store(oldest_created_at.unwrap_or(0), Ordering::Relaxed);
        self.backlog.store(waiting, Ordering::Relaxed);
    }

    fn set_in_flight(&self, workers: usize) {
        self.in_flight.store(
            u64::try_from(workers).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Age in seconds at `now_ms` (unix milliseconds) of the oldest
    /// undelivered event as of the last poll; 0 when there is none.
    #[must_use]
    pub fn oldest_event_age_seconds(&self, now_ms: i64) -> f64 {
        if self.backlog.load(Ordering::Relaxed) == 0 {
            return 0.0;
        }
        let age_ms = now_ms.saturating_sub(self.oldest_created_at.load(Ordering::Relaxed));
        // Exact below 2^53 ms (285,000 years).
        #[allow(clippy::cast_precision_loss)]
        let age = age_ms.max(0) as f64 / 1000.0;
        age
    }
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
/// The task looks for due events every `poll_interval` and whenever a
/// request ends, and sends them on up to `concurrency` requests at once,
/// in order and one at a time per key, each claimed first so that other
/// deliverers on the same database skip its key (see the [module
/// documentation](self)). It stops promptly at shutdown: requests in
/// flight are abandoned and their claims given back, so a later deliverer
/// sends those events again at once.
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
    let shared = Arc::new(deliver::Shared {
        vault,
        client,
        url,
        config,
        stats: Arc::clone(&stats),
        contended: AtomicBool::new(false),
    });
    Ok((tokio::spawn(deliver::run(shared, shutdown)), stats))
}

#[cfg(test)]
mod tests;
