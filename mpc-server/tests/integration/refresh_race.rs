//! Refresh across replicas (PROTOCOL.md §18.1, the refresh lease), on the
//! real server binaries: concurrent refreshes of one key from two client
//! sessions of one device, through two server processes on one database,
//! must always leave the device and the server on one common epoch that
//! signs; a foreign owner learns nothing from a running refresh; a crashed
//! holder's lease expires and the key refreshes again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use mpc_core::{KeyId, KeyShare, Refresh};
use mpc_transport_ws::{Client, CloseCode, Operation, Rejection, TransportError};
use tokio::sync::watch;

/// Refresh runs in the race test.
const RUNS: usize = 50;

const REFRESH_IN_PROGRESS: CloseCode = CloseCode(4106);
const UNKNOWN_EPOCH: CloseCode = CloseCode(4104);

/// A device's share storage, shared by all its client sessions, following
/// PROTOCOL.md §18.1: a session records its new share when ready and moves
/// the device to it when confirmed. It only ever moves forward, and never
/// overwrites the share of the epoch it signs with (another session may
/// have confirmed it).
struct Device {
    shares: BTreeMap<u64, Vec<u8>>,
    current: u64,
}

impl Device {
    fn new(share: &KeyShare) -> Arc<Mutex<Self>> {
        let mut shares = BTreeMap::new();
        shares.insert(share.epoch(), share.to_bytes().to_vec());
        Arc::new(Mutex::new(Self {
            shares,
            current: share.epoch(),
        }))
    }

    fn current(&self) -> KeyShare {
        KeyShare::from_bytes(&self.shares[&self.current]).unwrap()
    }

    fn record(&mut self, share: &KeyShare, confirmed: bool) {
        if share.epoch() > self.current {
            self.shares.insert(share.epoch(), share.to_bytes().to_vec());
            if confirmed {
                self.current = share.epoch();
            }
        }
    }
}

/// One refresh session of `device` from the epoch it signs with, sleeping
/// `delays[i]` ms before its `i`-th message leaves.
async fn device_refresh(
    device: &Arc<Mutex<Device>>,
    client: &Client,
    delays: Vec<u64>,
) -> Result<KeyShare, TransportError> {
    let old = device.lock().unwrap().current();
    let hook_device = Arc::clone(device);
    let mut delays = delays.into_iter();
    let mut hook = move |refresh: &Refresh<'_>| {
        if let Some(new) = refresh.ready_share() {
            hook_device
                .lock()
                .unwrap()
                .record(new, refresh.is_confirmed());
        }
        let delay = delays.next().unwrap_or(0);
        async move {
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            Ok::<(), Rejection>(())
        }
    };
    let new = client.refresh(&old, &mut hook).await?;
    device.lock().unwrap().record(&new, true);
    Ok(new)
}

/// SplitMix64: a small seeded generator, so that a failing interleaving
/// can be replayed with `MPC_RACE_SEED`.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    match std::env::var("MPC_RACE_SEED") {
        Ok(text) => text.trim().parse().expect("MPC_RACE_SEED is a u64"),
        Err(_) => {
            use rand_core::{OsRng, RngCore};
            OsRng.next_u64()
        }
    }
}

/// The server's shares of `key` (epoch, state) and its refresh lease rows,
/// read from the database directly.
async fn server_rows(db: &Db, key: &KeyId) -> (Vec<(i64, String)>, i64) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&db.url()).await.unwrap();
    let key = hex::encode(key.0);
    let shares: Vec<(i64, String)> =
        sqlx::query_as("SELECT epoch, state FROM shares WHERE key_id = $1 ORDER BY epoch")
            .bind(key.as_str())
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let leases: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM refresh_leases WHERE key_id = $1")
        .bind(key.as_str())
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    (shares, leases)
}

/// Waits (bounded by the test's bound) until the server holds exactly the
/// final share of `epoch` and no refresh lease of `key`: the lease is
/// released on every exit path, shortly after the client's session ended.
async fn assert_settled_on(db: &Db, key: &KeyId, epoch: u64) {
    let want = vec![(i64::try_from(epoch).unwrap(), "final".to_owned())];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (shares, leases) = server_rows(db, key).await;
        if shares == want && leases == 0 {
            return;
        }
        assert!(
            shares.iter().any(|(e, s)| *e == want[0].0 && s == "final"),
            "the server lost the device's epoch {epoch}: {shares:?}"
        );
        assert!(
            Instant::now() < deadline,
            "not settled on epoch {epoch}: shares {shares:?}, {leases} lease(s)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn code(result: &Result<KeyShare, TransportError>) -> Option<CloseCode> {
    result.as_ref().err().and_then(TransportError::close_code)
}

/// The test: two replicas on one PostgreSQL, two client sessions
/// of one device refreshing one key at once, 50 times with seeded random
/// start offsets, per-message delays and replicas. Each run must refresh
/// at least once, refuse the loser only with 4106 (lease held) or 4104 (its
/// start epoch was finalized away), and end with the device's epoch
/// signing on both replicas and being the server's only, final, epoch.
/// With per-process locks, sessions on different replicas overwrote each
/// other's ready shares and the device confirmed a share the server no
/// longer had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_on_two_replicas_never_strand_the_device() {
    if skip_postgres() {
        return;
    }
    bounded(async {
        let seed = seed();
        eprintln!("refresh_race seed: {seed} (replay with MPC_RACE_SEED={seed})");
        let mut rng = SplitMix64(seed);
        let db = Db::postgres().await;
        let replicas = [Launch::new(&db).start(), Launch::new(&db).start()];
        let clients = [replicas[0].client("alice"), replicas[1].client("alice")];
        let share = clients[0].keygen().await.unwrap();
        let key_id = *share.key_id();
        let device = Device::new(&share);
        let started = Instant::now();
        let mut refreshes = 0;
        let mut refused = BTreeMap::new();
        for run in 0..RUNS {
            let mut plan = || {
                let replica = usize::try_from(rng.below(2)).unwrap();
                // Mostly overlapping sessions, sometimes one after the
                // other (a refresh takes 60 ms on an idle machine, several
                // times that under load).
                let start = if rng.below(4) == 0 {
                    rng.below(800)
                } else {
                    rng.below(30)
                };
                let delays: Vec<u64> = (0..6)
                    .map(|_| if rng.below(2) == 0 { 0 } else { rng.below(8) })
                    .collect();
                (replica, start, delays)
            };
            let (one, two) = (plan(), plan());
            let session = |(replica, start, delays): (usize, u64, Vec<u64>)| {
                let device = Arc::clone(&device);
                let client = &clients[replica];
                async move {
                    tokio::time::sleep(Duration::from_millis(start)).await;
                    device_refresh(&device, client, delays).await
                }
            };
            let (a, b) = tokio::join!(session(one), session(two));
            let context = format!("run {run}, seed {seed}: {a:?} / {b:?}");
            assert!(a.is_ok() || b.is_ok(), "no refresh went through: {context}");
            for result in [&a, &b] {
                if let Err(e) = result {
                    let code = e.close_code();
                    assert!(
                        matches!(code, Some(REFRESH_IN_PROGRESS | UNKNOWN_EPOCH)),
                        "{context}"
                    );
                    *refused.entry(code.unwrap().0).or_insert(0) += 1;
                } else {
                    refreshes += 1;
                }
            }
            // The device signs with its epoch on either replica.
            let current = device.lock().unwrap().current();
            let replica = usize::try_from(rng.below(2)).unwrap();
            sign_and_verify(&clients[replica], &current, format!("run {run}").as_bytes()).await;
            assert_settled_on(&db, &key_id, current.epoch()).await;
        }
        let current = device.lock().unwrap().current();
        assert_eq!(current.epoch(), refreshes, "seed {seed}");
        sign_and_verify(&clients[0], &current, b"replica one").await;
        sign_and_verify(&clients[1], &current, b"replica two").await;
        eprintln!(
            "{RUNS} runs in {:?}: {refreshes} refreshes, refused by code: {refused:?}",
            started.elapsed()
        );
    })
    .await;
}

/// A refresh session of `share` that stops before its first message after
/// the new share is ready (the server then holds the lease and has sent
/// round 3) until `go` turns true; `reached` turns true when it stops.
async fn held_refresh(
    client: &Client,
    share: &KeyShare,
    reached: watch::Sender<bool>,
    go: watch::Receiver<bool>,
) -> Result<KeyShare, TransportError> {
    let mut hook = move |refresh: &Refresh<'_>| {
        let hold = refresh.ready_share().is_some() && !refresh.is_confirmed();
        if hold {
            reached.send_replace(true);
        }
        let mut go = go.clone();
        async move {
            if hold {
                let _ = go.wait_for(|go| *go).await;
            }
            Ok::<(), Rejection>(())
        }
    };
    client.refresh(share, &mut hook).await
}

/// A refresh opening for `key_id` (the session is refused at the opening).
async fn open_refresh(client: &Client, key_id: KeyId, share: &KeyShare) -> Option<CloseCode> {
    let operation = Operation::Refresh { key_id, epoch: 0 };
    let mut hook = |_: &Refresh<'_>| std::future::ready(Ok::<(), Rejection>(()));
    let result = client
        .run_with(
            operation,
            |opening| Refresh::new(share, opening.context()),
            &mut hook,
        )
        .await;
    result.err().and_then(|e| e.close_code())
}

/// While alice's refresh runs on replica one, another owner asking to
/// refresh her key gets 4006 on either replica, exactly as for a key that
/// does not exist (not 4106, which told that the key exists and is being
/// refreshed); alice's own second refresh on replica two gets 4106 (the
/// lease is in the database, not in a process); alice's first refresh then
/// completes.
async fn foreign_owner_learns_nothing(db: &Db) {
    let replicas = [Launch::new(db).start(), Launch::new(db).start()];
    let alice = [replicas[0].client("alice"), replicas[1].client("alice")];
    let share = alice[0].keygen().await.unwrap();
    let (reached_tx, mut reached) = watch::channel(false);
    let (go_tx, go) = watch::channel(false);
    let running = {
        let client = replicas[0].client("alice");
        let share = KeyShare::from_bytes(&share.to_bytes()).unwrap();
        tokio::spawn(async move { held_refresh(&client, &share, reached_tx, go).await })
    };
    reached.wait_for(|reached| *reached).await.unwrap();
    for replica in &replicas {
        let mallory = replica.client("mallory");
        assert_eq!(
            open_refresh(&mallory, *share.key_id(), &share).await,
            Some(CloseCode::NOT_FOUND)
        );
        assert_eq!(
            open_refresh(&mallory, KeyId([0x5a; 32]), &share).await,
            Some(CloseCode::NOT_FOUND)
        );
    }
    let mut hook = |_: &Refresh<'_>| std::future::ready(Ok::<(), Rejection>(()));
    let second = alice[1].refresh(&share, &mut hook).await;
    assert_eq!(code(&second), Some(REFRESH_IN_PROGRESS));
    go_tx.send_replace(true);
    let refreshed = running.await.unwrap().unwrap();
    assert_eq!(refreshed.epoch(), 1);
    sign_and_verify(&alice[1], &refreshed, b"after the held refresh").await;
    assert_settled_on(db, share.key_id(), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_owner_learns_nothing_on_sqlite() {
    bounded(foreign_owner_learns_nothing(&Db::sqlite())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_owner_learns_nothing_on_postgres() {
    if skip_postgres() {
        return;
    }
    bounded(async { foreign_owner_learns_nothing(&Db::postgres().await).await }).await;
}

/// A refresh session gives its lease back before the device hears how it
/// ended. A device whose refresh finished refreshes again at once, and a
/// device refused for an epoch the server no longer holds (4104) retries
/// at once from its newer share: neither may be refused (4106) by the
/// lease of the session that just told it. The server stalls 2 s before
/// each release, so that a release sent after the close would be hit by
/// every retry here, not by one in a thousand as in the suite before.
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_is_free_once_the_device_hears_the_end() {
    bounded(async {
        let db = Db::sqlite();
        let server = Launch::new(&db)
            .env("MPC_STALL_AT", "refresh:release")
            .start();
        let client = server.client("dave");
        let mut hook = |_: &Refresh<'_>| std::future::ready(Ok::<(), Rejection>(()));
        let first = client.keygen().await.unwrap();
        let second = client.refresh(&first, &mut hook).await.unwrap();
        let third = client.refresh(&second, &mut hook).await;
        let third = third.unwrap_or_else(|e| panic!("refresh right after a refresh: {e}"));
        let stale = client.refresh(&second, &mut hook).await;
        assert_eq!(code(&stale), Some(UNKNOWN_EPOCH), "{stale:?}");
        let fourth = client.refresh(&third, &mut hook).await;
        let fourth = fourth.unwrap_or_else(|e| panic!("refresh right after 4104: {e}"));
        assert_eq!(fourth.epoch(), 3);
        sign_and_verify(&client, &fourth, b"after back-to-back refreshes").await;
        assert_settled_on(&db, first.key_id(), 3).await;
    })
    .await;
}

/// Seconds: the session timeout and the (longer) refresh lease of the
/// crash test's servers.
const SHORT_SESSION: u64 = 5;
const SHORT_LEASE: u64 = 10;

fn short_lease(db: &Db) -> Launch<'_> {
    Launch::new(db)
        .env("MPC_SESSION_TIMEOUT", &SHORT_SESSION.to_string())
        .env("MPC_MESSAGE_TIMEOUT", &SHORT_SESSION.to_string())
        .env("MPC_REFRESH_LEASE", &SHORT_LEASE.to_string())
}

/// The lease holder is killed (SIGKILL) mid-refresh, after the new share is
/// ready: its lease row outlives it and a refresh on another process is
/// refused with 4106 until the lease expires; then a refresh from the
/// device's epoch (it never confirmed) goes through, replacing the dead
/// session's leftover, and the device's new epoch signs.
async fn crashed_holder(db: &Db) {
    let first = short_lease(db).start();
    let client = first.client("carol");
    let share = client.keygen().await.unwrap();
    let device = Device::new(&share);
    let (reached_tx, mut reached) = watch::channel(false);
    let (go_tx, go) = watch::channel(false);
    // The lease is taken after this.
    let before = Instant::now();
    let running = {
        let device = Arc::clone(&device);
        tokio::spawn(async move {
            let old = device.lock().unwrap().current();
            held_refresh(&client, &old, reached_tx, go).await
        })
    };
    reached.wait_for(|reached| *reached).await.unwrap();
    first.kill();
    // Let the held session go on: it finds the connection gone.
    drop(go_tx);
    assert!(running.await.unwrap().is_err());

    let second = short_lease(db).start();
    let client = second.client("carol");
    let refused = device_refresh(&device, &client, Vec::new()).await;
    // The lease runs until at least `before + SHORT_LEASE`.
    if before.elapsed() < Duration::from_secs(SHORT_LEASE - 1) {
        assert_eq!(code(&refused), Some(REFRESH_IN_PROGRESS), "{refused:?}");
    } else {
        eprintln!("the restart took longer than the lease: 4106 not checked");
    }
    let refreshed = loop {
        match device_refresh(&device, &client, Vec::new()).await {
            Ok(share) => break share,
            Err(e) => {
                assert_eq!(e.close_code(), Some(REFRESH_IN_PROGRESS), "{e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    assert!(before.elapsed() >= Duration::from_secs(SHORT_LEASE - 1));
    assert_eq!(refreshed.epoch(), 1);
    let current = device.lock().unwrap().current();
    assert_eq!(current.epoch(), 1);
    sign_and_verify(&client, &current, b"after the crashed holder").await;
    assert_settled_on(db, share.key_id(), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_holders_lease_expires_on_sqlite() {
    bounded(crashed_holder(&Db::sqlite())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_holders_lease_expires_on_postgres() {
    if skip_postgres() {
        return;
    }
    bounded(async { crashed_holder(&Db::postgres().await).await }).await;
}
