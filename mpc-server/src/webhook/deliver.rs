//! The delivery loop: a dispatcher that hands keys' due events to a
//! bounded pool of workers (see the [parent module](super) for the
//! guarantees).
//!
//! The dispatcher asks the outbox for due *heads* (each key's oldest
//! undelivered event) and starts one worker per head, at most
//! `concurrency` at a time and never two for one key in this process; the
//! outbox claim keeps other processes off the key. A worker claims, sends
//! and records its event. If it was delivered and no other key is waiting
//! for a worker (`contended` is clear), the worker goes on with its key's
//! next event, which saves a heads query per event on a busy key;
//! otherwise it ends, and its key's next event, due from the delivery time
//! on, queues behind the heads that were already waiting (round robin).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mpc_core::KeyId;
use rand_core::{OsRng, RngCore};
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::Url;
use tokio::sync::watch;
use tokio::task::{self, JoinSet};
use tokio::time::Instant;

use super::{
    sign, url_origin, DeliveryStats, WebhookConfig, ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use crate::vault::{OutboxEvent, Vault};

/// Bound on giving a claim back at shutdown.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest error description stored with a failed attempt.
const MAX_ERROR_CHARS: usize = 200;

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
pub(super) fn backoff(base: Duration, max: Duration, attempts: u32, jitter: u32) -> Duration {
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
pub(super) fn random_jitter() -> u32 {
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

fn stop_requested(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

/// What became of one event.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Delivered (answered 2xx) and recorded.
    Delivered,
    /// A failed attempt, rescheduled; or claimed elsewhere, skipped.
    NotDelivered,
    /// A database call failed.
    DatabaseError,
    /// Shutdown was requested.
    Stop,
}

/// What the dispatcher and its workers share.
pub(super) struct Shared {
    pub(super) vault: Vault,
    pub(super) client: reqwest::Client,
    pub(super) url: Url,
    pub(super) config: WebhookConfig,
    pub(super) stats: Arc<DeliveryStats>,
    /// Set while due heads wait for a worker: workers then end after their
    /// current event instead of going on with their key.
    pub(super) contended: AtomicBool,
}

/// Runs the dispatcher until shutdown (see the module documentation).
pub(super) async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    tracing::info!(
        url = %url_origin(shared.url.as_str()),
        concurrency = shared.config.concurrency,
        "webhook delivery started"
    );
    let concurrency = shared.config.concurrency.max(1);
    let poll = shared.config.poll_interval;
    let mut workers: JoinSet<()> = JoinSet::new();
    // The key each running worker serves.
    let mut in_flight: HashMap<task::Id, KeyId> = HashMap::new();
    let mut next_tick = Instant::now();
    while !stop_requested(&shutdown) {
        let tick = Instant::now() >= next_tick;
        if tick {
            next_tick = Instant::now() + poll;
            refresh_backlog(&shared).await;
        }
        let free = concurrency.saturating_sub(workers.len());
        // After a worker ended or on a tick: look for due heads. One more
        // than fits tells whether any must wait.
        if free > 0 || tick {
            let limit = u32::try_from(free + in_flight.len() + 1).unwrap_or(u32::MAX);
            match shared.vault.due_heads(now_ms(), limit).await {
                Ok(heads) => {
                    let busy: HashSet<KeyId> = in_flight.values().copied().collect();
                    let mut waiting = false;
                    for head in heads {
                        if busy.contains(&head.key_id) {
                            continue;
                        }
                        if workers.len() >= concurrency {
                            waiting = true;
                            break;
                        }
                        let key_id = head.key_id;
                        let worker =
                            workers.spawn(work(Arc::clone(&shared), head, shutdown.clone()));
                        in_flight.insert(worker.id(), key_id);
                    }
                    shared.contended.store(waiting, Ordering::Relaxed);
                }
                Err(error) => {
                    tracing::warn!(%error, "webhook delivery: reading the outbox failed");
                }
            }
        }
        shared.stats.set_in_flight(workers.len());
        tokio::select! {
            () = stopped(&mut shutdown) => break,
            Some(done) = workers.join_next_with_id(), if !workers.is_empty() => {
                finished(done, &mut in_flight);
                while let Some(done) = workers.try_join_next_with_id() {
                    finished(done, &mut in_flight);
                }
            }
            () = tokio::time::sleep_until(next_tick) => {}
        }
    }
    // Workers see the shutdown too: they give back their claims and end.
    let drained = tokio::time::timeout(RELEASE_TIMEOUT + Duration::from_secs(1), async {
        while workers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("webhook delivery: workers did not stop in time");
    }
    shared.stats.set_in_flight(0);
    tracing::info!("webhook delivery stopped");
}

/// Forgets the key of a worker that ended.
fn finished(
    done: Result<(task::Id, ()), task::JoinError>,
    in_flight: &mut HashMap<task::Id, KeyId>,
) {
    let id = match done {
        Ok((id, ())) => id,
        Err(error) => {
            // Its claim, if any, runs out with its lease.
            tracing::error!(%error, "webhook delivery: a worker failed");
            error.id()
        }
    };
    in_flight.remove(&id);
}

/// Updates the backlog gauges from the outbox.
async fn refresh_backlog(shared: &Shared) {
    match shared.vault.outbox_backlog().await {
        Ok((waiting, oldest)) => shared.stats.set_backlog(waiting, oldest),
        Err(error) => {
            tracing::warn!(%error, "webhook delivery: measuring the backlog failed");
        }
    }
}

/// One worker: delivers `event`, then its key's next events while nobody
/// waits for a worker.
async fn work(shared: Arc<Shared>, event: OutboxEvent, shutdown: watch::Receiver<bool>) {
    let key_id = event.key_id;
    let mut event = event;
    loop {
        let outcome = deliver(&shared, &event, &shutdown).await;
        if outcome != Outcome::Delivered
            || shared.contended.load(Ordering::Relaxed)
            || stop_requested(&shutdown)
        {
            break;
        }
        match shared.vault.due_head_of_key(&key_id, now_ms()).await {
            Ok(Some(next)) => event = next,
            Ok(None) => break,
            Err(error) => {
                tracing::warn!(%error, "webhook delivery: reading the outbox failed");
                break;
            }
        }
    }
}

/// Claims, sends, and records the outcome of one event.
async fn deliver(
    shared: &Shared,
    event: &OutboxEvent,
    shutdown: &watch::Receiver<bool>,
) -> Outcome {
    let config = &shared.config;
    let now = now_ms();
    let lease = config.request_timeout.saturating_add(config.lease_margin);
    let lease_until = now.saturating_add(millis(lease));
    match shared.vault.claim_event(event.id, now, lease_until).await {
        Ok(true) => {}
        // Delivered, rescheduled or claimed by another deliverer.
        Ok(false) => return Outcome::NotDelivered,
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
    let mut shutdown = shutdown.clone();
    let result = tokio::select! {
        () = stopped(&mut shutdown) => None,
        result = send(shared, event) => Some(result),
    };
    let Some(result) = result else {
        release(shared, event, lease_until).await;
        return Outcome::Stop;
    };
    let (recorded, outcome) = match result {
        Ok(()) => {
            shared.stats.delivered.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                event_id = %event.event_id,
                event_type = %event.event_type,
                attempt = event.attempts.saturating_add(1),
                "webhook delivered"
            );
            let recorded = shared.vault.mark_delivered(event.id, now_ms()).await;
            (recorded, Outcome::Delivered)
        }
        Err(error) => {
            shared.stats.failed.fetch_add(1, Ordering::Relaxed);
            let delay = backoff(
                config.retry_base,
                config.retry_max,
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
            let recorded = shared.vault.schedule_retry(event.id, next, &error).await;
            (recorded, Outcome::NotDelivered)
        }
    };
    match recorded {
        Ok(()) => outcome,
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
async fn send(shared: &Shared, event: &OutboxEvent) -> Result<(), String> {
    let body = serde_json::to_vec(&serde_json::json!({
        "id": event.event_id,
        "type": event.event_type,
        "created_at": event.created_at,
        "key_id": hex::encode(event.key_id.0),
        "data": event.payload,
    }))
    .map_err(|_| "cannot serialize the event".to_owned())?;
    let timestamp = now_ms().div_euclid(1000);
    let mut signature = HeaderValue::from_str(&sign(&shared.config.secret, timestamp, &body))
        .map_err(|_| "invalid signature header".to_owned())?;
    signature.set_sensitive(true);
    let response = shared
        .client
        .post(shared.url.clone())
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
async fn release(shared: &Shared, event: &OutboxEvent, lease_until: i64) {
    let release = shared.vault.release_event(event.id, lease_until, now_ms());
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
