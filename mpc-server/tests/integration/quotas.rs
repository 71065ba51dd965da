//! The admission rules and rate limits of PROTOCOL.md §18.5 attacked on the
//! real binary: keygens opened and left stalled (4111, per owner and per
//! client address), keys and presignatures hoarded (4108, 4109, also by
//! many keygens at once, and across two replicas on PostgreSQL), operations
//! repeated too fast (4110), WebSocket upgrades held open (HTTP 429) and
//! session slots hogged (the fair share).
//!
//! The unit tests (`admission_tests.rs`, `store/quota_tests.rs`,
//! `rate_limits.rs`) prove the rules as functions; here each is shown to
//! be wired into the running server, in the order the server spends its
//! resources: a refused opening gets its close code before the server has
//! sent a single protocol message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::*;
use mpc_core::sign::ClaimSet;
use mpc_core::wire::Role;
use mpc_core::{Dkg, KeyShare, Prehash, Protocol};
use mpc_transport_ws::client::ClientSocket;
use mpc_transport_ws::opening::{decode_frame, encode_frame, FrameKind};
use mpc_transport_ws::{Frames, Incoming, Opening, Operation, Outcome, TransportError};
use rand_core::OsRng;
use serde_json::{json, Value};

/// The owner has `MPC_MAX_KEYS_PER_OWNER` keys that are not revoked.
const KEY_QUOTA: u16 = 4108;
/// The owner has `MPC_MAX_PRESIGNATURES_PER_OWNER` unused presignatures.
const PRESIGNATURE_QUOTA: u16 = 4109;
/// A rate limit of the subject is reached.
const RATE_LIMITED: u16 = 4110;
/// Too many keygen-class sessions in progress (owner or address).
const KEYGENS_IN_PROGRESS: u16 = 4111;

fn code(error: &TransportError) -> Option<u16> {
    error.close_code().map(|code| code.0)
}

fn reason(error: &TransportError) -> &str {
    match error {
        TransportError::RejectedByPeer { reason, .. } => reason,
        _ => "",
    }
}

// ---- metrics ----

async fn refusals(server: &TestServer, reason: &str) -> u64 {
    let series = format!("mpc_admission_refusals_total{{reason=\"{reason}\"}}");
    server.metric(&series).await
}

/// Waits (bounded: 400 reads, 25 ms apart) until the server has `open`
/// WebSocket sessions. A session's admission ticket is released before
/// its slot, so once the gauge shows a session gone, so is its count of
/// keygens in progress.
async fn open_sessions_reach(server: &TestServer, open: u64) {
    let mut now = 0;
    for _ in 0..400 {
        now = server.metric("mpc_open_sessions").await;
        if now == open {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the server still has {now} open sessions, not {open}");
}

/// Waits until the server has ended every session: a session the client
/// dropped (a stalled one) counts as in progress until the server has seen
/// its socket close.
async fn settled(server: &TestServer) {
    open_sessions_reach(server, 0).await;
}

// ---- raw sessions ----

/// A keygen the server admitted and runs, left stalled by its client: the
/// client sent its opening and first message, read the server's first
/// message, and sends nothing more.
struct Stalled {
    socket: ClientSocket,
}

async fn stall_keygen(server: &TestServer, owner: &str) -> Stalled {
    let mut socket = server.client(owner).connect().await.unwrap();
    let opening = Opening::new(Operation::Keygen, &mut OsRng);
    let first = Dkg::new(Role::A, opening.context())
        .start(&mut OsRng)
        .unwrap();
    socket
        .send_binary(encode_frame(FrameKind::Opening, &opening.encode()))
        .await
        .unwrap();
    socket
        .send_binary(encode_frame(FrameKind::Message, &first))
        .await
        .unwrap();
    // The server's first DKG message: it admitted the session.
    loop {
        match socket.recv().await {
            Some(Ok(Incoming::Binary(frame))) => match decode_frame(&frame) {
                Some((FrameKind::Message, _)) => return Stalled { socket },
                other => panic!("{owner}'s keygen was not admitted: {other:?}"),
            },
            Some(Ok(Incoming::Ping | Incoming::Pong)) => {}
            other => panic!("{owner}'s keygen was not admitted: {other:?}"),
        }
    }
}

impl Stalled {
    /// The client gives up: a close frame, then the rest of the handshake.
    async fn close(mut self) {
        let _ = Frames::close(&mut self.socket, 1000, "gave up").await;
        while let Some(Ok(_)) = self.socket.recv().await {}
    }
}

/// What the server sent on a session the test opened and then only read.
#[derive(Debug, Default)]
struct Refused {
    /// Protocol messages received: none means no protocol work was done.
    messages: usize,
    /// The code of the server's failed outcome.
    outcome: Option<u16>,
    /// The close frame's code and reason.
    close: Option<(u16, String)>,
}

/// Opens a session of `operation` as `owner`, sends only the opening and
/// records every frame until the server closes. The server starts its side
/// of a protocol as soon as it admits the opening (its first message needs
/// none of ours), so an admitted session always shows a message here.
async fn open_only(server: &TestServer, owner: &str, operation: Operation) -> Refused {
    let mut socket = server.client(owner).connect().await.unwrap();
    let opening = Opening::new(operation, &mut OsRng);
    socket
        .send_binary(encode_frame(FrameKind::Opening, &opening.encode()))
        .await
        .unwrap();
    let mut seen = Refused::default();
    while let Some(Ok(incoming)) = socket.recv().await {
        match incoming {
            Incoming::Binary(frame) => match decode_frame(&frame) {
                Some((FrameKind::Message, _)) => {
                    seen.messages += 1;
                    // Admitted: stop here rather than stall the server.
                    let _ = Frames::close(&mut socket, 1000, "test done").await;
                }
                Some((FrameKind::Outcome, body)) => {
                    if let Ok(Outcome::Failed { code, .. }) = Outcome::decode(body) {
                        seen.outcome = Some(code.0);
                    }
                }
                _ => panic!("unexpected frame"),
            },
            Incoming::Close(frame) => {
                seen.close = frame;
                let _ = Frames::flush(&mut socket).await;
                break;
            }
            _ => {}
        }
    }
    seen
}

/// The session was refused with `code` at its opening: a failed outcome
/// and a close with that code, and not one protocol message before them.
fn assert_refused_at_opening(seen: &Refused, code: u16) {
    assert_eq!(
        seen.messages, 0,
        "protocol work before the refusal: {seen:?}"
    );
    assert_eq!(seen.outcome, Some(code), "{seen:?}");
    assert_eq!(seen.close.as_ref().map(|(c, _)| *c), Some(code), "{seen:?}");
}

// ---- REST ----

/// `owner`'s keys that count against the key quota, as `GET /v1/keys`
/// lists them (every status but revoked).
async fn live_keys(server: &TestServer, owner: &str) -> usize {
    let response = reqwest::Client::new()
        .get(format!("{}/v1/keys?limit=100", server.rest_url))
        .bearer_auth(token(owner))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let list: Value = response.json().await.unwrap();
    assert!(list["next_cursor"].is_null(), "{list}");
    list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|key| key["status"] != "revoked")
        .count()
}

async fn revoke(server: &TestServer, owner: &str, key: &KeyShare) {
    let id = key.key_id().to_string();
    let response = reqwest::Client::new()
        .delete(format!("{}/v1/keys/{id}", server.rest_url))
        .bearer_auth(step_up_token(owner))
        .json(&json!({ "confirm": id }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

// ---- 4111: keygens in progress ----

/// An owner parks keygens (opened, first message sent, then silence) to
/// pin the server's OT-setup budget. At its limit the next keygen is
/// closed with 4111 before the server sends anything, without taking a
/// keygen from the owner's rate budget; another owner is not affected;
/// once the stalled sessions end the owner may keygen again.
#[tokio::test(flavor = "multi_thread")]
async fn stalled_keygens_block_only_their_owner() {
    bounded(async {
        let db = Db::sqlite();
        let server = Launch::new(&db)
            .env("MPC_MAX_HALF_OPEN_PER_OWNER", "2")
            .env("MPC_MAX_HALF_OPEN_PER_IP", "16")
            // Two keygens for the stalled ones, one for the last: a refused
            // opening that took from the budget would leave none for it.
            .env("MPC_KEYGEN_RATE_PER_HOUR", "3")
            .start();
        let stalled = [
            stall_keygen(&server, "hoarder").await,
            stall_keygen(&server, "hoarder").await,
        ];
        let refused = open_only(&server, "hoarder", Operation::Keygen).await;
        assert_refused_at_opening(&refused, KEYGENS_IN_PROGRESS);
        assert_eq!(refusals(&server, "keygens_in_progress_owner").await, 1);
        // The client library reports the same code.
        let e = server.client("hoarder").keygen().await.unwrap_err();
        assert_eq!(code(&e), Some(KEYGENS_IN_PROGRESS), "{e}");
        assert_eq!(refusals(&server, "keygens_in_progress_owner").await, 2);

        // Another owner from the same address runs a whole keygen.
        let other = server.client("bystander").keygen().await.unwrap();
        sign_and_verify(&server.client("bystander"), &other, b"unaffected").await;

        for session in stalled {
            session.close().await;
        }
        open_sessions_reach(&server, 0).await;
        let share = server.client("hoarder").keygen().await.unwrap();
        sign_and_verify(&server.client("hoarder"), &share, b"after the stall").await;
        assert_eq!(refusals(&server, "keygens_in_progress_ip").await, 0);
    })
    .await;
}

/// Many owners from one address (one client or a botnet behind one NAT
/// would look alike) each stay under the per-owner limit and together
/// reach the per-address one: the next keygen from the address is closed
/// with 4111 whoever's it is, signing is not limited, and a slot freed by
/// a stalled session ending is usable again.
#[tokio::test(flavor = "multi_thread")]
async fn stalled_keygens_of_many_owners_block_their_address() {
    bounded(async {
        let db = Db::sqlite();
        let server = Launch::new(&db)
            .env("MPC_MAX_HALF_OPEN_PER_OWNER", "2")
            .env("MPC_MAX_HALF_OPEN_PER_IP", "3")
            .start();
        // Made before the address fills up: signing needs no keygen slot.
        let signer = server.client("owner-4");
        let share = signer.keygen().await.unwrap();
        // Its keygen no longer counts against the address.
        settled(&server).await;
        let mut stalled = Vec::new();
        for owner in ["owner-1", "owner-2", "owner-3"] {
            stalled.push(stall_keygen(&server, owner).await);
        }
        // A fresh owner, and one with a single keygen in progress: both
        // below the per-owner limit, both refused for the address.
        for owner in ["owner-4", "owner-1"] {
            let refused = open_only(&server, owner, Operation::Keygen).await;
            assert_refused_at_opening(&refused, KEYGENS_IN_PROGRESS);
        }
        assert_eq!(refusals(&server, "keygens_in_progress_ip").await, 2);
        assert_eq!(refusals(&server, "keygens_in_progress_owner").await, 0);
        sign_and_verify(&signer, &share, b"signing is not keygen-class").await;

        stalled.pop().unwrap().close().await;
        open_sessions_reach(&server, 2).await;
        server.client("owner-4").keygen().await.unwrap();
        for session in stalled {
            session.close().await;
        }
    })
    .await;
}

// ---- 4108: keys per owner ----

/// Key hoarding: at `MPC_MAX_KEYS_PER_OWNER` keys the next keygen is closed
/// with 4108 before any protocol work; another owner is not affected;
/// revoking a key frees its place. Keygens run back to back, each opened
/// as soon as the previous one returned: a finished session no longer
/// counts as in progress once its key is stored (it did until its closing
/// handshake ended, and a client filling its quota was refused the last
/// place about half the time).
#[tokio::test(flavor = "multi_thread")]
async fn key_quota_refuses_the_next_keygen_until_a_revocation() {
    bounded(async {
        let db = Db::sqlite();
        let server = Launch::new(&db)
            .env("MPC_MAX_KEYS_PER_OWNER", "2")
            .env("MPC_KEYGEN_RATE_PER_HOUR", "0")
            .start();
        let client = server.client("kate");
        let first = client.keygen().await.unwrap();
        client.keygen().await.unwrap();
        let refused = open_only(&server, "kate", Operation::Keygen).await;
        assert_refused_at_opening(&refused, KEY_QUOTA);
        let e = client.keygen().await.unwrap_err();
        assert_eq!(code(&e), Some(KEY_QUOTA), "{e}");
        assert_eq!(refusals(&server, "key_quota").await, 2);
        assert_eq!(live_keys(&server, "kate").await, 2);
        // The quota is per owner.
        server.client("other").keygen().await.unwrap();

        revoke(&server, "kate", &first).await;
        assert_eq!(live_keys(&server, "kate").await, 1);
        client.keygen().await.unwrap();
        let e = client.keygen().await.unwrap_err();
        assert_eq!(code(&e), Some(KEY_QUOTA), "{e}");
        assert_eq!(live_keys(&server, "kate").await, 2);
    })
    .await;
}

/// Runs `attempts` keygens of `owner` at once. Returns how many
/// succeeded; every other one must have been refused with 4108.
async fn keygens_at_once(server: &TestServer, owner: &str, attempts: usize) -> usize {
    let runs = (0..attempts).map(|_| {
        let client = server.client(owner);
        tokio::spawn(async move { client.keygen().await })
    });
    let mut succeeded = 0;
    for run in futures_util::future::join_all(runs).await {
        match run.unwrap() {
            Ok(_) => succeeded += 1,
            Err(e) => assert_eq!(code(&e), Some(KEY_QUOTA), "{e}"),
        }
    }
    succeeded
}

/// Concurrency attack on one process: with room for one more key, six
/// keygens at once store exactly one (the opening counts keygens in
/// progress as stored), the others are refused with 4108.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_keygens_store_at_most_the_quota() {
    bounded(async {
        let db = Db::sqlite();
        let server = Launch::new(&db)
            .env("MPC_MAX_KEYS_PER_OWNER", "2")
            // Room for all six to be in progress at once: the key quota,
            // not the keygens-in-progress limit, must be what stops them.
            .env("MPC_MAX_HALF_OPEN_PER_OWNER", "8")
            .env("MPC_KEYGEN_RATE_PER_HOUR", "0")
            .start();
        server.client("rush").keygen().await.unwrap();
        settled(&server).await;
        let succeeded = keygens_at_once(&server, "rush", 6).await;
        assert_eq!(succeeded, 1);
        assert_eq!(live_keys(&server, "rush").await, 2);
        assert_eq!(refusals(&server, "key_quota").await, 5);
    })
    .await;
}

/// The same attack on two replicas sharing one PostgreSQL database, with
/// the stores forced to overlap. Each process counts only its own keygens
/// in progress, so each admits one of its three: two keygens run the whole
/// protocol for the one place left. The test holds a lock on `audit_log`
/// (reads go on, inserts wait), so each store stops at its audit entry, in
/// its transaction, after counting the owner's keys, and both are released
/// together. Only the owner's lock, taken by the storing transaction before
/// it counts, makes the second count wait for the first commit: without it
/// both count one key and both insert.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_keygens_on_two_replicas_store_at_most_the_quota() {
    use sqlx::Connection;
    if skip_postgres() {
        return;
    }
    bounded(async {
        let db = Db::postgres().await;
        let launch = || {
            Launch::new(&db)
                .env("MPC_MAX_KEYS_PER_OWNER", "2")
                .env("MPC_MAX_HALF_OPEN_PER_OWNER", "8")
                .env("MPC_KEYGEN_RATE_PER_HOUR", "0")
        };
        let one = launch().start();
        let two = launch().start();
        one.client("rush").keygen().await.unwrap();
        settled(&one).await;

        let mut blocker = sqlx::PgConnection::connect(&db.url()).await.unwrap();
        sqlx::query("BEGIN").execute(&mut blocker).await.unwrap();
        sqlx::query("LOCK TABLE audit_log IN EXCLUSIVE MODE")
            .execute(&mut blocker)
            .await
            .unwrap();
        let attack = tokio::spawn({
            let (one, two) = (one.client("rush"), two.client("rush"));
            async move {
                let runs = (0..6).map(|i| {
                    let client = if i % 2 == 0 { one.clone() } else { two.clone() };
                    async move { client.keygen().await }
                });
                futures_util::future::join_all(runs).await
            }
        });
        // Wait until both admitted keygens are stopped in their storing
        // transactions (on the table, or on the owner's lock); the other
        // four are refused at their openings.
        let mut monitor = sqlx::PgConnection::connect(&db.url()).await.unwrap();
        let mut waiting = 0;
        for _ in 0..400 {
            waiting = sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&mut monitor)
            .await
            .unwrap();
            if waiting == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(waiting, 2, "two stores never waited together");
        sqlx::query("COMMIT").execute(&mut blocker).await.unwrap();

        let results = attack.await.unwrap();
        let succeeded = results.iter().filter(|r| r.is_ok()).count();
        for result in &results {
            if let Err(e) = result {
                assert_eq!(code(e), Some(KEY_QUOTA), "{e}");
            }
        }
        assert_eq!(succeeded, 1, "the quota did not hold across replicas");
        // Four at the openings; the fifth where its key was to be stored.
        let at_opening = refusals(&one, "key_quota").await + refusals(&two, "key_quota").await;
        assert_eq!(at_opening, 4);
        assert_eq!(live_keys(&one, "rush").await, 2);
        assert_eq!(live_keys(&two, "rush").await, 2);
    })
    .await;
}

// ---- 4109: presignatures per owner ----

/// Presignature hoarding: at `MPC_MAX_PRESIGNATURES_PER_OWNER` unused
/// presignatures the next presign is closed with 4109 before any protocol
/// work; the online step uses one up and so frees a place.
#[tokio::test(flavor = "multi_thread")]
async fn presignature_quota_refuses_until_one_is_used() {
    bounded(async {
        let db = Db::sqlite();
        let server = Launch::new(&db)
            .env("MPC_MAX_PRESIGNATURES_PER_OWNER", "2")
            .start();
        let client = server.client("pia");
        let share = client.keygen().await.unwrap();
        let first = client.presign(&share).await.unwrap();
        client.presign(&share).await.unwrap();
        let presign = Operation::Presign {
            key_id: *share.key_id(),
            epoch: share.epoch(),
            path: mpc_core::DerivationPath::root(),
        };
        let refused = open_only(&server, "pia", presign).await;
        assert_refused_at_opening(&refused, PRESIGNATURE_QUOTA);
        let e = client.presign(&share).await.unwrap_err();
        assert_eq!(code(&e), Some(PRESIGNATURE_QUOTA), "{e}");
        assert_eq!(refusals(&server, "presignature_quota").await, 2);
        // The quota is per owner.
        let other = server.client("other");
        let theirs = other.keygen().await.unwrap();
        other.presign(&theirs).await.unwrap();

        let prehash = Prehash::sha256(b"uses one up");
        let signed = client
            .online_sign(&share, first, prehash, &mut ClaimSet::new())
            .await
            .unwrap();
        verify_with_libsecp(&share.public_key(), &prehash, &signed);
        client.presign(&share).await.unwrap();
        let e = client.presign(&share).await.unwrap_err();
        assert_eq!(code(&e), Some(PRESIGNATURE_QUOTA), "{e}");
    })
    .await;
}

// ---- 4110: rate limits ----

/// Keygens and signing sessions repeated beyond the subject's rates: the
/// next is closed with 4110 whose reason says when to retry; another
/// subject is not affected; the keygen and signing budgets are separate.
#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_close_with_4110_per_subject_and_operation() {
    bounded(async {
        let db = Db::sqlite();
        let server = Launch::new(&db)
            .env("MPC_KEYGEN_RATE_PER_HOUR", "2")
            .env("MPC_SIGN_RATE_PER_MINUTE", "3")
            .start();
        let client = server.client("rapid");
        let share = client.keygen().await.unwrap();
        client.keygen().await.unwrap();
        let e = client.keygen().await.unwrap_err();
        assert_eq!(code(&e), Some(RATE_LIMITED), "{e}");
        assert!(reason(&e).contains("retry in"), "{e}");
        // The refusal is not an admission rule's: no protocol work either.
        // (Once the refused session is over: it counted as a keygen in
        // progress, and two would be the owner's limit of those.)
        settled(&server).await;
        let refused = open_only(&server, "rapid", Operation::Keygen).await;
        assert_refused_at_opening(&refused, RATE_LIMITED);
        let other = server.client("patient");
        other.keygen().await.unwrap();

        // Signing has its own budget: three, then 4110.
        for message in [&b"one"[..], b"two", b"three"] {
            sign_and_verify(&client, &share, message).await;
        }
        let e = client
            .sign(&share, Prehash::sha256(b"four"))
            .await
            .unwrap_err();
        assert_eq!(code(&e), Some(RATE_LIMITED), "{e}");
        assert!(reason(&e).contains("retry in"), "{e}");
        // Every signing form draws on it: presign too.
        let e = client.presign(&share).await.unwrap_err();
        assert_eq!(code(&e), Some(RATE_LIMITED), "{e}");
    })
    .await;
}

// ---- HTTP 429: upgrades per address ----

/// An upgrade request as a browser-less WebSocket client sends it, made
/// with reqwest so that its source address can be chosen; the response
/// status (101 when the server upgrades).
async fn upgrade_from(server: &TestServer, source: IpAddr, owner: &str) -> u16 {
    let http = reqwest::Client::builder()
        .local_address(source)
        .build()
        .unwrap();
    let response = http
        .get(server.ws_url.replace("ws://", "http://"))
        .bearer_auth(token(owner))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    response.status().as_u16()
}

/// Connects as `owner`; the upgrade's HTTP status if it was refused.
async fn connect(server: &TestServer, owner: &str) -> Result<ClientSocket, u16> {
    match server.client(owner).connect().await {
        Ok(socket) => Ok(socket),
        Err(TransportError::UpgradeRefused { status }) => Err(status),
        Err(e) => panic!("{e}"),
    }
}

/// One address holds WebSocket sessions open (no opening sent: the cheapest
/// way to hold a connection): at `MPC_MAX_UPGRADES_PER_IP` the next upgrade
/// from it gets 429, whoever's token it carries and before the token is
/// looked at, while another address still upgrades; once the sessions end
/// the address may upgrade again.
#[tokio::test(flavor = "multi_thread")]
async fn upgrades_per_address_are_capped() {
    bounded(async {
        let db = Db::sqlite();
        let server = Launch::new(&db).env("MPC_MAX_UPGRADES_PER_IP", "2").start();
        let held = [
            connect(&server, "u1").await.unwrap(),
            connect(&server, "u2").await.unwrap(),
        ];
        assert_eq!(connect(&server, "u3").await.err(), Some(429));
        // Refused before the token check: not even a 401 to learn from.
        let anonymous = mpc_transport_ws::Client::new(server.ws_url.clone());
        match anonymous.connect().await {
            Err(TransportError::UpgradeRefused { status }) => assert_eq!(status, 429),
            other => panic!("{:?}", other.map(|_| ())),
        }
        assert_eq!(refusals(&server, "upgrades_per_ip").await, 2);
        let elsewhere = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(upgrade_from(&server, elsewhere, "u3").await, 101);

        drop(held);
        // The count drops when the server has ended the sessions; the
        // bound is only for that.
        let mut again = None;
        for _ in 0..200 {
            match connect(&server, "u3").await {
                Ok(socket) => {
                    again = Some(socket);
                    break;
                }
                Err(status) => assert_eq!(status, 429),
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(again.is_some(), "the address never got an upgrade again");
    })
    .await;
}

// ---- fair share of session slots ----

/// One owner grabs every session slot it can (upgrades held open). It
/// stops one short of a full server (the reserve: `MPC_MAX_SESSIONS / 16`,
/// at least 1) with 429, although below its per-owner cap, and a newcomer
/// gets the reserved slot. When the greedy owner lets one go, it does not
/// get it back (it holds more than its share), a third owner does.
#[tokio::test(flavor = "multi_thread")]
async fn one_owner_cannot_take_every_slot() {
    bounded(async {
        let db = Db::sqlite();
        let server = Launch::new(&db)
            .env("MPC_MAX_SESSIONS", "4")
            .env("MPC_MAX_SESSIONS_PER_OWNER", "16")
            .start();
        let mut hog = Vec::new();
        for _ in 0..3 {
            hog.push(connect(&server, "hog").await.unwrap());
        }
        assert_eq!(connect(&server, "hog").await.err(), Some(429));
        let newcomer = connect(&server, "newcomer").await.unwrap();
        // Full now: everyone waits.
        assert_eq!(connect(&server, "third").await.err(), Some(503));

        drop(hog.pop());
        open_sessions_reach(&server, 3).await;
        assert_eq!(connect(&server, "hog").await.err(), Some(429));
        let third = connect(&server, "third").await.unwrap();
        assert_eq!(server.metric("mpc_open_sessions").await, 4);
        drop((hog, newcomer, third));
    })
    .await;
}
