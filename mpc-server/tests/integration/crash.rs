//! The server process dies (abort at a named crash point: no destructors,
//! no clean shutdown) at every storage step of keygen, signing, presigning,
//! the online step and refresh. After a restart the client and the server
//! still sign with a common epoch, and no presignature is used twice.
//!
//! Needs the `fault-injection` feature (the test command builds with
//! `--all-features`).
#![cfg(feature = "fault-injection")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::common;

use std::sync::{Arc, Mutex};

use common::*;
use mpc_core::sign::ClaimSet;
use mpc_core::{KeyShare, OnlineSign, Prehash, Presignature};
use mpc_transport_ws::{CloseCode, Operation};

fn crashing(db: &Db, point: &str) -> TestServer {
    Launch::new(db).env("MPC_CRASH_AT", point).start()
}

/// A key made on a server without crash points.
async fn fresh_key(db: &Db, owner: &str) -> KeyShare {
    let server = Launch::new(db).start();
    let share = server.client(owner).keygen().await.unwrap();
    server.kill();
    share
}

async fn keygen_crashes(db: &Db) {
    for point in ["keygen:before-store", "keygen:after-store"] {
        let server = crashing(db, point);
        let result = server.client("kim").keygen().await;
        assert!(result.is_err(), "{point}: keygen succeeded");
        assert!(server.wait_crashed(), "{point}: not reached");
        // After a restart a new keygen works and signs.
        let server = Launch::new(db).start();
        let client = server.client("kim");
        let share = client.keygen().await.unwrap();
        sign_and_verify(&client, &share, point.as_bytes()).await;
    }
}

async fn signing_crashes(db: &Db) {
    let share = fresh_key(db, "lee").await;
    let server = crashing(db, "sign:after-run");
    assert!(server
        .client("lee")
        .sign(&share, Prehash::sha256(b"x"))
        .await
        .is_err());
    assert!(server.wait_crashed());
    let server = Launch::new(db).start();
    sign_and_verify(&server.client("lee"), &share, b"after sign crash").await;
    server.kill();

    for point in ["presign:before-store", "presign:after-store"] {
        let server = crashing(db, point);
        assert!(
            server.client("lee").presign(&share).await.is_err(),
            "{point}"
        );
        assert!(server.wait_crashed(), "{point}: not reached");
        let server = Launch::new(db).start();
        let client = server.client("lee");
        let presignature = client.presign(&share).await.unwrap();
        let prehash = Prehash::sha256(point.as_bytes());
        let out = client
            .online_sign(&share, presignature, prehash, &mut ClaimSet::new())
            .await
            .unwrap();
        verify_with_libsecp(&share.public_key(), &prehash, &out);
    }

    // The online step: the server claims the presignature, then dies before
    // its message leaves. After the restart the same presignature is
    // refused: it is never used twice.
    let server = Launch::new(db).start();
    let presignature = server.client("lee").presign(&share).await.unwrap();
    server.kill();
    let kept = presignature.to_bytes();
    let server = crashing(db, "online:after-take");
    let prehash = Prehash::sha256(b"online crash");
    assert!(server
        .client("lee")
        .online_sign(&share, presignature, prehash, &mut ClaimSet::new())
        .await
        .is_err());
    assert!(server.wait_crashed());
    let server = Launch::new(db).start();
    let again = Presignature::from_bytes(&kept).unwrap();
    let other = Prehash::sha256(b"a different message");
    // The client's own store lies (a fresh set): the server's claim is what
    // refuses the replay.
    let session_id = again.session_id();
    let online = OnlineSign::new(&share, again, other, &mut ClaimSet::new()).unwrap();
    let replay = server
        .client("lee")
        .run(
            Operation::OnlineSign {
                key_id: *share.key_id(),
                presignature: session_id,
                prehash: other,
            },
            move |_| online,
        )
        .await
        .unwrap_err();
    assert_eq!(replay.close_code(), Some(CloseCode::NOT_FOUND), "{replay}");
    sign_and_verify(&server.client("lee"), &share, b"after online crash").await;
}

const REFRESH_POINTS: [&str; 5] = [
    "refresh:before-ready",
    "refresh:after-ready",
    "refresh:after-confirm",
    "refresh:before-finalize",
    "refresh:after-finalize",
];

/// Refresh crashes run with a short refresh lease (seconds; longer than the
/// session timeout + 2 × the 2 s close timeout): the crashed session's lease outlives the process
/// (PROTOCOL.md §18.1), so the next refresh of the key waits for it.
fn short_lease(launch: Launch<'_>) -> Launch<'_> {
    launch
        .env("MPC_SESSION_TIMEOUT", "3")
        .env("MPC_MESSAGE_TIMEOUT", "3")
        .env("MPC_REFRESH_LEASE", "8")
}

async fn refresh_crashes(db: &Db) {
    for point in REFRESH_POINTS {
        let share = fresh_key(db, "max").await;
        let shares = Arc::new(Mutex::new(ClientShares::new(&share)));
        let server = short_lease(Launch::new(db))
            .env("MPC_CRASH_AT", point)
            .start();
        let result = ClientShares::refresh(&shares, &server.client("max")).await;
        assert!(result.is_err(), "{point}: refresh succeeded");
        assert!(server.wait_crashed(), "{point}: not reached");

        // The client signs with the epoch its storage rules picked; the
        // restarted server holds it.
        let server = short_lease(Launch::new(db)).start();
        let client = server.client("max");
        let current = shares.lock().unwrap().current();
        sign_and_verify(&client, &current, point.as_bytes()).await;
        // And a new refresh from there completes (once the dead session's
        // lease expired: 4106 until then) and signs.
        let refreshed = loop {
            match ClientShares::refresh(&shares, &client).await {
                Ok(refreshed) => break refreshed,
                Err(e) => {
                    assert_eq!(e.close_code(), Some(CloseCode(4106)), "{point}: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
        };
        assert!(refreshed.epoch() > current.epoch());
        assert_eq!(refreshed.public_key(), share.public_key());
        sign_and_verify(&client, &refreshed, b"refreshed after the crash").await;
        server.kill();
    }
}

#[test]
fn every_crash_point_is_exercised() {
    let mut covered = vec![
        "keygen:before-store",
        "keygen:after-store",
        "sign:after-run",
        "presign:before-store",
        "presign:after-store",
        "online:after-take",
    ];
    covered.extend(REFRESH_POINTS);
    covered.sort_unstable();
    let mut all = mpc_server::crash::POINTS.to_vec();
    all.sort_unstable();
    assert_eq!(covered, all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_on_sqlite() {
    bounded(async {
        let db = Db::sqlite();
        keygen_crashes(&db).await;
        signing_crashes(&db).await;
        refresh_crashes(&db).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_on_postgres() {
    if skip_postgres() {
        return;
    }
    bounded(async {
        let db = Db::postgres().await;
        keygen_crashes(&db).await;
        signing_crashes(&db).await;
        refresh_crashes(&db).await;
    })
    .await;
}
