//! Webhook delivery from the outbox, in process: a vault on a temporary
//! SQLite file, events made by real vault calls, and a local axum receiver
//! that records (or refuses) what it gets. Every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use mpc_core::local::run_pair;
use mpc_core::wire::Role;
use mpc_core::{Dkg, KeyShare};
use mpc_server::seal::LocalKek;
use mpc_server::server::now_ms;
use mpc_server::vault::{Event, KeyStatus, OutboxEvent, Vault};
use mpc_server::webhook::{self, DeliveryStats, WebhookConfig};
use rand_core::OsRng;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};

const SECRET: &[u8] = b"webhook test secret: 32 bytes ok";
const KEK_HEX: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
const CONTEXT: &[u8] = b"mpc-server webhook tests";
/// Upper bound on every test.
const TEST_LIMIT: Duration = Duration::from_secs(120);
/// Upper bound on waiting for all events to arrive.
const DELIVERY_LIMIT: Duration = Duration::from_secs(30);
/// Upper bound on a deliverer stopping after shutdown.
const STOP_LIMIT: Duration = Duration::from_secs(5);
const TOLERANCE: Duration = Duration::from_secs(300);

// ---- receiver ----

/// One request as received.
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

/// A recording webhook receiver: answers 204 after `delay` (`slow_delay`
/// for events of `slow_key`) and records the request, except that it never
/// answers its first `hang_first` requests and answers 500 to the next
/// `fail_first` (and to every `fail_every`-th request, if set). It counts
/// requests in flight, per key and in all.
#[derive(Clone, Default)]
struct Receiver {
    delay: Duration,
    slow_key: Option<String>,
    slow_delay: Duration,
    fail_every: usize,
    received: Arc<Mutex<Vec<Received>>>,
    requests: Arc<AtomicUsize>,
    hang_first: Arc<AtomicUsize>,
    fail_first: Arc<AtomicUsize>,
    concurrency: Arc<Mutex<Concurrency>>,
}

/// Requests in flight as the receiver saw them.
#[derive(Default)]
struct Concurrency {
    per_key: HashMap<String, usize>,
    now: usize,
    /// Most requests in flight at once.
    most: usize,
    /// Most requests in flight at once for one key.
    most_per_key: usize,
}

/// Counts a request in flight until dropped.
struct InFlight {
    concurrency: Arc<Mutex<Concurrency>>,
    key: String,
}

impl InFlight {
    fn new(concurrency: &Arc<Mutex<Concurrency>>, key: &str) -> Self {
        let mut c = concurrency.lock().unwrap();
        c.now += 1;
        c.most = c.most.max(c.now);
        let per_key = c.per_key.entry(key.to_owned()).or_default();
        *per_key += 1;
        let per_key = *per_key;
        c.most_per_key = c.most_per_key.max(per_key);
        Self {
            concurrency: Arc::clone(concurrency),
            key: key.to_owned(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut c = self.concurrency.lock().unwrap();
        c.now -= 1;
        if let Some(n) = c.per_key.get_mut(&self.key) {
            *n -= 1;
        }
    }
}

/// Decrements `counter` if positive; whether it did.
fn take_one(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl Receiver {
    fn failing(n: usize) -> Self {
        let receiver = Self::default();
        receiver.fail_first.store(n, Ordering::SeqCst);
        receiver
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn take(&self) -> Vec<Received> {
        std::mem::take(&mut *self.received.lock().unwrap())
    }

    /// Starts it on 127.0.0.1; returns its webhook URL.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/hook", post(hook))
            .route("/redirect", post(redirect))
            .with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}/hook")
    }
}

async fn hook(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let number = receiver.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let key = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|event| event["key_id"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let _in_flight = InFlight::new(&receiver.concurrency, &key);
    if take_one(&receiver.hang_first) {
        std::future::pending::<()>().await;
    }
    if take_one(&receiver.fail_first) {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    if receiver.fail_every > 0 && number % receiver.fail_every == 0 {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    if receiver.slow_key.as_deref() == Some(key.as_str()) {
        sleep(receiver.slow_delay).await;
    } else {
        sleep(receiver.delay).await;
    }
    receiver
        .received
        .lock()
        .unwrap()
        .push(Received { headers, body });
    StatusCode::NO_CONTENT
}

/// Redirects to the recording endpoint (which must not be followed).
async fn redirect(State(receiver): State<Receiver>) -> Response {
    receiver.requests.fetch_add(1, Ordering::SeqCst);
    (
        StatusCode::TEMPORARY_REDIRECT,
        [(header::LOCATION, "/hook")],
    )
        .into_response()
}

/// A URL on 127.0.0.1 where nothing listens.
async fn dead_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/hook")
}

// ---- vault and events ----

async fn open_vault(dir: &Path) -> Vault {
    let kek = LocalKek::from_hex(KEK_HEX).unwrap();
    Vault::open(&mpc_server::config::sqlite_url(dir), Arc::new(kek))
        .await
        .unwrap()
}

/// The server's share of a fresh key.
fn dkg() -> KeyShare {
    let (_, server, _) = run_pair(
        &mut OsRng,
        &mut Dkg::new(Role::A, CONTEXT),
        &mut Dkg::new(Role::B, CONTEXT),
    )
    .unwrap();
    server
}

fn event(name: &str) -> Event<'_> {
    Event {
        name,
        detail: json!({}),
    }
}

/// Makes a key with events created, backed_up, `exports` x exported,
/// banned and revoked; returns its events in id order.
async fn key_events(vault: &Vault, exports: usize) -> Vec<OutboxEvent> {
    let share = tokio::task::spawn_blocking(dkg).await.unwrap();
    let key = vault.create_key("alice", &share, now_ms()).await.unwrap();
    vault
        .record_backup(&key, 0, &[2u8; 33], b"backup", now_ms())
        .await
        .unwrap();
    for _ in 0..exports {
        vault
            .mark_exported(&key.key_id, event("key.exported"), now_ms())
            .await
            .unwrap();
    }
    vault
        .set_status(
            &key.key_id,
            KeyStatus::Banned,
            event("key.banned"),
            now_ms(),
        )
        .await
        .unwrap();
    vault
        .revoke(&key.key_id, event("key.revoked"), now_ms())
        .await
        .unwrap();
    let mut events: Vec<OutboxEvent> = pending(vault)
        .await
        .into_iter()
        .filter(|e| e.key_id == key.key_id)
        .collect();
    events.sort_by_key(|e| e.id);
    assert_eq!(events.len(), 4 + exports);
    events
}

/// Makes `keys` keys with [`key_events`]; returns all undelivered events
/// in id order.
async fn make_events(vault: &Vault, keys: usize, exports: usize) -> Vec<OutboxEvent> {
    for _ in 0..keys {
        key_events(vault, exports).await;
    }
    let mut events = pending(vault).await;
    events.sort_by_key(|e| e.id);
    assert_eq!(events.len(), keys * (4 + exports));
    events
}

/// Undelivered events (due or not).
async fn pending(vault: &Vault) -> Vec<OutboxEvent> {
    vault.due_events(i64::MAX, 100_000).await.unwrap()
}

// ---- deliverers ----

fn config(url: &str) -> WebhookConfig {
    let mut config = WebhookConfig::new(url, SECRET.to_vec());
    config.retry_base = Duration::from_millis(20);
    config.retry_max = Duration::from_millis(200);
    config.poll_interval = Duration::from_millis(20);
    config.request_timeout = Duration::from_secs(5);
    config
}

struct Deliverer {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    stats: Arc<DeliveryStats>,
}

impl Deliverer {
    fn start(vault: &Vault, config: WebhookConfig) -> Self {
        let (stop, shutdown) = watch::channel(false);
        let (task, stats) = webhook::spawn(vault.clone(), config, shutdown).unwrap();
        Self { stop, task, stats }
    }

    fn delivered(&self) -> u64 {
        self.stats.delivered.load(Ordering::Relaxed)
    }

    fn failed(&self) -> u64 {
        self.stats.failed.load(Ordering::Relaxed)
    }

    /// Requests shutdown and waits (bounded) for the task to end.
    async fn stop(self) -> Arc<DeliveryStats> {
        self.stop.send_replace(true);
        timeout(STOP_LIMIT, self.task)
            .await
            .expect("the deliverer did not stop promptly")
            .unwrap();
        self.stats
    }
}

/// Polls `condition` until it holds; panics after `limit`.
async fn wait_until<F, Fut>(what: &str, limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the outbox has no undelivered event.
async fn wait_all_delivered(vault: &Vault) {
    wait_until("every event to be delivered", DELIVERY_LIMIT, || async {
        pending(vault).await.is_empty()
    })
    .await;
}

/// Checks every received request (headers, signature, body) against the
/// expected events and that each expected event arrived; returns the
/// received event ids in arrival order.
fn check_received(received: &[Received], expected: &[OutboxEvent]) -> Vec<String> {
    let by_id: HashMap<&str, &OutboxEvent> =
        expected.iter().map(|e| (e.event_id.as_str(), e)).collect();
    let now = now_ms() / 1000;
    let mut arrived = Vec::new();
    for request in received {
        let header = |name: &str| {
            request
                .headers
                .get(name)
                .unwrap_or_else(|| panic!("missing header {name}"))
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(header("content-type"), "application/json");
        let timestamp: i64 = header("mpc-webhook-timestamp").parse().unwrap();
        let signature = header("mpc-webhook-signature");
        assert!(signature.starts_with("v1="), "{signature}");
        assert!(
            webhook::verify(SECRET, &signature, timestamp, &request.body, now, TOLERANCE),
            "invalid signature"
        );
        assert!(!webhook::verify(
            b"another secret",
            &signature,
            timestamp,
            &request.body,
            now,
            TOLERANCE
        ));
        assert_eq!(signature, webhook::sign(SECRET, timestamp, &request.body));

        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        let id = body["id"].as_str().unwrap();
        assert_eq!(header("mpc-webhook-id"), id);
        let event = by_id
            .get(id)
            .unwrap_or_else(|| panic!("unexpected event {id}"));
        assert_eq!(
            body,
            json!({
                "id": event.event_id,
                "type": event.event_type,
                "created_at": event.created_at,
                "key_id": hex::encode(event.key_id.0),
                "data": event.payload,
            })
        );
        arrived.push(id.to_owned());
    }
    let unique: HashSet<&str> = arrived.iter().map(String::as_str).collect();
    let wanted: HashSet<&str> = by_id.keys().copied().collect();
    assert_eq!(unique, wanted, "not every event arrived");
    arrived
}

/// Asserts that each key's events arrived in outbox order: the first
/// arrival of each event, per key, is that key's events sorted by row id.
/// Returns how many arrivals repeat an event already received.
fn assert_in_order_per_key(arrived: &[String], expected: &[OutboxEvent]) -> usize {
    let key_of: HashMap<&str, [u8; 32]> = expected
        .iter()
        .map(|e| (e.event_id.as_str(), e.key_id.0))
        .collect();
    let mut want: HashMap<[u8; 32], Vec<&str>> = HashMap::new();
    let mut sorted: Vec<&OutboxEvent> = expected.iter().collect();
    sorted.sort_by_key(|e| e.id);
    for event in sorted {
        want.entry(event.key_id.0)
            .or_default()
            .push(event.event_id.as_str());
    }
    let mut got: HashMap<[u8; 32], Vec<&str>> = HashMap::new();
    let mut seen = HashSet::new();
    let mut repeats = 0;
    for id in arrived {
        if !seen.insert(id.as_str()) {
            repeats += 1;
            continue;
        }
        got.entry(key_of[id.as_str()])
            .or_default()
            .push(id.as_str());
    }
    assert_eq!(got, want, "a key's events arrived out of order");
    repeats
}

fn duplicates(arrived: &[String]) -> usize {
    let unique: HashSet<&String> = arrived.iter().collect();
    arrived.len() - unique.len()
}

/// Bounds a test's run time; its logs show with `--nocapture` or on failure.
async fn bounded(test: impl Future<Output = ()>) {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    timeout(TEST_LIMIT, test).await.expect("test timed out");
}

// ---- tests ----

/// Every event arrives once, signed, with the expected body, each key's in
/// outbox order; the outbox is then empty and the counters match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_every_event_signed_and_in_order() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let vault = open_vault(dir.path()).await;
        let expected = make_events(&vault, 2, 2).await;
        let types: HashSet<&str> = expected.iter().map(|e| e.event_type.as_str()).collect();
        let want: HashSet<&str> = [
            "key.created",
            "key.backed_up",
            "key.exported",
            "key.banned",
            "key.revoked",
        ]
        .into();
        assert_eq!(types, want);

        let receiver = Receiver::default();
        let url = receiver.start().await;
        let deliverer = Deliverer::start(&vault, config(&url));
        wait_all_delivered(&vault).await;
        let stats = deliverer.stop().await;

        let arrived = check_received(&receiver.take(), &expected);
        assert_eq!(
            assert_in_order_per_key(&arrived, &expected),
            0,
            "one deliverer, no failures: once each"
        );
        assert_eq!(
            stats.delivered.load(Ordering::Relaxed),
            expected.len() as u64
        );
        assert_eq!(stats.failed.load(Ordering::Relaxed), 0);
        assert_eq!(receiver.requests(), expected.len());
    })
    .await;
}

/// A receiver that answers 500 to its first requests still gets every
/// event once it recovers; each refusal counts as a failed attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_until_a_failing_receiver_recovers() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let vault = open_vault(dir.path()).await;
        let expected = make_events(&vault, 1, 3).await;

        let refusals = 12;
        let receiver = Receiver::failing(refusals);
        let url = receiver.start().await;
        let deliverer = Deliverer::start(&vault, config(&url));
        wait_all_delivered(&vault).await;
        assert_eq!(deliverer.failed(), refusals as u64);
        assert_eq!(deliverer.delivered(), expected.len() as u64);
        deliverer.stop().await;

        let arrived = check_received(&receiver.take(), &expected);
        assert_eq!(duplicates(&arrived), 0);
        assert_eq!(receiver.requests(), expected.len() + refusals);
    })
    .await;
}

/// A redirect is a failed attempt and is not followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let vault = open_vault(dir.path()).await;
        let expected = make_events(&vault, 1, 0).await;

        let receiver = Receiver::default();
        let url = receiver.start().await.replace("/hook", "/redirect");
        let deliverer = Deliverer::start(&vault, config(&url));
        wait_until("failed attempts", DELIVERY_LIMIT, || async {
            deliverer.failed() >= 2 * expected.len() as u64
        })
        .await;
        deliverer.stop().await;

        assert!(receiver.take().is_empty(), "the redirect was followed");
        assert_eq!(pending(&vault).await.len(), expected.len());
    })
    .await;
}

/// A deliverer stopped while events are pending (its receiver unreachable)
/// stops promptly; a new one started later on the same database, as after
/// a server restart, delivers them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_delivers_what_was_pending() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let expected = {
            let vault = open_vault(dir.path()).await;
            let expected = make_events(&vault, 1, 2).await;
            let first = Deliverer::start(&vault, config(&dead_url().await));
            wait_until("failed attempts", DELIVERY_LIMIT, || async {
                first.failed() >= expected.len() as u64
            })
            .await;
            let stats = first.stop().await;
            assert_eq!(stats.delivered.load(Ordering::Relaxed), 0);
            assert_eq!(pending(&vault).await.len(), expected.len());
            expected
        };

        // "Restart": a new vault (pool) on the same file, a new deliverer.
        let vault = open_vault(dir.path()).await;
        let receiver = Receiver::default();
        let url = receiver.start().await;
        let second = Deliverer::start(&vault, config(&url));
        wait_all_delivered(&vault).await;
        second.stop().await;
        let arrived = check_received(&receiver.take(), &expected);
        assert_eq!(duplicates(&arrived), 0);
    })
    .await;
}

/// A deliverer stopped in the middle of a request (the receiver does not
/// answer) stops promptly and gives its claim back: the next deliverer
/// sends that event at once rather than after the claim's lease (request
/// timeout + 15 s = 75 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_request_releases_the_event() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let vault = open_vault(dir.path()).await;
        let expected = make_events(&vault, 1, 1).await;

        let receiver = Receiver::default();
        receiver.hang_first.store(1, Ordering::SeqCst);
        let url = receiver.start().await;
        let mut slow = config(&url);
        slow.request_timeout = Duration::from_secs(60);
        let first = Deliverer::start(&vault, slow.clone());
        wait_until("the first request", DELIVERY_LIMIT, || async {
            receiver.requests() >= 1
        })
        .await;
        let stats = first.stop().await;
        assert_eq!(stats.delivered.load(Ordering::Relaxed), 0);
        assert_eq!(stats.failed.load(Ordering::Relaxed), 0);
        // The abandoned event is due again right away.
        assert_eq!(
            vault.due_events(now_ms(), 100).await.unwrap().len(),
            expected.len()
        );

        let second = Deliverer::start(&vault, slow);
        wait_all_delivered(&vault).await;
        second.stop().await;
        let arrived = check_received(&receiver.take(), &expected);
        assert_eq!(duplicates(&arrived), 0);
    })
    .await;
}

/// Two deliverers (two pools, as two processes) on one database deliver
/// every event exactly once (no crash, so no repeat), both take part,
/// never two events of one key at once, and each key's events in order.
async fn two_deliverers(vault_a: Vault, vault_b: Vault) {
    let expected = make_events(&vault_a, 3, 10).await;

    let refusals = 5;
    let mut receiver = Receiver::failing(refusals);
    // A slow receiver, so that each deliverer claims events while the
    // other is busy sending.
    receiver.delay = Duration::from_millis(10);
    let url = receiver.start().await;
    // One request at a time each: with its pool of 16, one deliverer can
    // hold all three keys' events in flight and leave the other nothing to
    // claim; with one, the keys it is not sending are due for the other.
    let mut config = config(&url);
    config.concurrency = 1;
    let a = Deliverer::start(&vault_a, config.clone());
    let b = Deliverer::start(&vault_b, config);
    wait_all_delivered(&vault_b).await;
    let stats_a = a.stop().await;
    let stats_b = b.stop().await;

    let arrived = check_received(&receiver.take(), &expected);
    let delivered_a = stats_a.delivered.load(Ordering::Relaxed);
    let delivered_b = stats_b.delivered.load(Ordering::Relaxed);
    let failed = stats_a.failed.load(Ordering::Relaxed) + stats_b.failed.load(Ordering::Relaxed);
    eprintln!(
        "two deliverers: {} events, {} received; delivered by a: {delivered_a}, \
         by b: {delivered_b}; failed attempts: {failed}",
        expected.len(),
        arrived.len(),
    );
    assert_eq!(assert_in_order_per_key(&arrived, &expected), 0);
    assert_eq!(delivered_a + delivered_b, arrived.len() as u64);
    assert!(
        delivered_a > 0 && delivered_b > 0,
        "both deliverers took part"
    );
    assert_eq!(failed, refusals as u64);
    assert_eq!(receiver.requests(), arrived.len() + refusals);
    assert_eq!(
        receiver.concurrency.lock().unwrap().most_per_key,
        1,
        "two requests for one key at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_deliverers_share_one_database() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let vault_a = open_vault(dir.path()).await;
        let vault_b = open_vault(dir.path()).await;
        two_deliverers(vault_a, vault_b).await;
    })
    .await;
}

/// The same on PostgreSQL (skipped when `MPC_TEST_POSTGRES_URL` is unset):
/// claims are row updates that PostgreSQL re-checks under the row lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_deliverers_share_one_postgres_database() {
    bounded(async {
        let Ok(admin) = std::env::var("MPC_TEST_POSTGRES_URL") else {
            eprintln!("skipped: MPC_TEST_POSTGRES_URL is not set");
            return;
        };
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
        let name = format!("mpc_hooks_{}", hex::encode(now_ms().to_be_bytes()));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let (base, _) = admin.rsplit_once('/').unwrap();
        let url = format!("{base}/{name}");
        let kek = || Arc::new(LocalKek::from_hex(KEK_HEX).unwrap());
        let vault_a = Vault::open(&url, kek()).await.unwrap();
        let vault_b = Vault::open(&url, kek()).await.unwrap();
        two_deliverers(vault_a, vault_b).await;
    })
    .await;
}

/// A receiver that takes 150 ms for every event of key A, which has a
/// backlog of 40, does not hold up key B: B's events, written while A's
/// are being delivered, all arrive within the stated bound (poll interval,
/// here 20 ms, plus a query; checked against 1.5 s) and long before A's
/// backlog drains (one at a time, B would wait 6 s). A's events all
/// arrive, in order, never two at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_key_does_not_delay_other_keys() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let vault = open_vault(dir.path()).await;
        let slow = key_events(&vault, 36).await;
        let slow_key = hex::encode(slow[0].key_id.0);
        let receiver = Receiver {
            slow_key: Some(slow_key.clone()),
            slow_delay: Duration::from_millis(150),
            ..Receiver::default()
        };
        let url = receiver.start().await;
        let deliverer = Deliverer::start(&vault, config(&url));
        wait_until("key A's first delivery", DELIVERY_LIMIT, || async {
            deliverer.delivered() >= 1
        })
        .await;

        let other = key_events(&vault, 0).await;
        let written = Instant::now();
        let other_ids: HashSet<String> = other.iter().map(|e| e.event_id.clone()).collect();
        let arrived_ids = || -> Vec<String> {
            receiver
                .received
                .lock()
                .unwrap()
                .iter()
                .map(|r| {
                    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                    body["id"].as_str().unwrap().to_owned()
                })
                .collect()
        };
        wait_until("key B's events", DELIVERY_LIMIT, || async {
            let arrived = arrived_ids();
            other_ids.iter().all(|id| arrived.contains(id))
        })
        .await;
        let latency = written.elapsed();
        let slow_done = arrived_ids()
            .iter()
            .filter(|id| !other_ids.contains(*id))
            .count();
        eprintln!(
            "key B's 4 events arrived {latency:?} after being written; \
             key A had {slow_done} of {} delivered",
            slow.len()
        );
        assert!(
            latency < Duration::from_millis(1500),
            "key B waited {latency:?}"
        );
        assert!(
            slow_done + 10 < slow.len(),
            "key B waited for key A's backlog"
        );

        wait_all_delivered(&vault).await;
        deliverer.stop().await;
        let expected: Vec<OutboxEvent> = slow.into_iter().chain(other).collect();
        let arrived = check_received(&receiver.take(), &expected);
        assert_eq!(assert_in_order_per_key(&arrived, &expected), 0);
        assert_eq!(receiver.concurrency.lock().unwrap().most_per_key, 1);
    })
    .await;
}

/// Six keys of 8 events, a receiver that takes 20 ms and refuses every
/// 4th request, concurrency 4: several keys are in flight at once, never
/// more than 4, never two events of one key; each key's events arrive in
/// order (a refused event holds its key's later events back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_go_out_in_parallel_each_in_order_despite_failures() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let vault = open_vault(dir.path()).await;
        let expected = make_events(&vault, 6, 4).await;
        let receiver = Receiver {
            delay: Duration::from_millis(20),
            fail_every: 4,
            ..Receiver::default()
        };
        let url = receiver.start().await;
        let mut config = config(&url);
        config.concurrency = 4;
        let deliverer = Deliverer::start(&vault, config);
        wait_all_delivered(&vault).await;
        let stats = deliverer.stop().await;

        let arrived = check_received(&receiver.take(), &expected);
        assert_eq!(assert_in_order_per_key(&arrived, &expected), 0);
        assert!(stats.failed.load(Ordering::Relaxed) >= 10);
        let c = receiver.concurrency.lock().unwrap();
        assert_eq!(c.most_per_key, 1, "two requests for one key at once");
        assert!(c.most >= 2, "no two keys were ever delivered at once");
        assert!(c.most <= 4, "{} requests at once, above the limit", c.most);
    })
    .await;
}

/// A deliverer that dies mid-delivery (its task aborted: no claim given
/// back) loses nothing: after a restart on the same database, the events
/// it had claimed are sent again once their lease runs out (request
/// timeout + lease margin), each key's events still arrive in order, and
/// the only repeats are of events in flight at the crash (at most one per
/// key), with the same event id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_delivery_loses_nothing_and_keeps_order() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let receiver = Receiver {
            delay: Duration::from_millis(40),
            ..Receiver::default()
        };
        let url = receiver.start().await;
        let mut config = config(&url);
        config.request_timeout = Duration::from_secs(1);
        config.lease_margin = Duration::from_millis(200);
        let keys = 3;
        let expected = {
            let vault = open_vault(dir.path()).await;
            let expected = make_events(&vault, keys, 4).await;
            let first = Deliverer::start(&vault, config.clone());
            wait_until("a third of the events", DELIVERY_LIMIT, || async {
                receiver.requests() >= expected.len() / 3
            })
            .await;
            first.task.abort();
            let _ = first.task.await;
            expected
        };
        let in_flight_at_crash = pending(&open_vault(dir.path()).await)
            .await
            .iter()
            .filter(|e| e.attempts == 0)
            .count();
        assert!(in_flight_at_crash > 0, "nothing left to deliver");

        let vault = open_vault(dir.path()).await;
        let second = Deliverer::start(&vault, config);
        wait_all_delivered(&vault).await;
        second.stop().await;
        let arrived = check_received(&receiver.take(), &expected);
        let repeats = assert_in_order_per_key(&arrived, &expected);
        eprintln!("crash and restart: {repeats} repeated events");
        assert!(repeats <= keys, "{repeats} repeats for {keys} keys");
    })
    .await;
}
