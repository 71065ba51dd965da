//! Operational hygiene of the real binary: no secret from a URL in any log
//! line, `--dev` refuses production settings, a keygen the client never
//! confirmed leaves no active key (PROTOCOL.md §18.3), and the SQLite files
//! are private to the server's user.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use mpc_core::wire::Role;
use mpc_core::{Dkg, KeyShare, Prehash};
use mpc_transport_ws::{FrameError, Frames, Incoming, Opening, Operation};
use rand_core::OsRng;
use serde_json::Value;

/// Polls `condition` every 50 ms until it holds (a bound on the wait, not
/// a timing assertion: the test's own bound stops a condition that never
/// comes).
async fn eventually<F: Fn() -> bool>(what: &str, condition: F) {
    for _ in 0..1200 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}

// ---- secrets in URLs ----

const DB_PASSWORD: &str = "hunter2-db-pw";
const HOOK_PASSWORD: &str = "hook-pw-5ecret";
const HOOK_TOKEN: &str = "t0k3n-in-query";
const HOOK_PATH_TOKEN: &str = "p4th-t0k3n";
const HOOK_SECRET: &str = "webhook-hmac-secret-value";

/// A server whose database URL carries `?password=` and whose webhook URL
/// carries user info, a token in its path and one in its query; the webhook
/// points at a closed port so that delivery fails and logs. Returns every
/// stderr line once the deliverer has logged a failed attempt.
async fn secret_url_logs(format: &str) -> Vec<String> {
    // The test PostgreSQL trusts local connections: the password is
    // accepted and ignored, and the server starts for real.
    let db = Db::postgres().await;
    let url = format!("{}?password={DB_PASSWORD}", db.url());
    let hook =
        format!("http://hookuser:{HOOK_PASSWORD}@127.0.0.1:9/{HOOK_PATH_TOKEN}?token={HOOK_TOKEN}");
    let launch = Launch::new(&db)
        .env("MPC_DATABASE_URL", &url)
        .env("MPC_WEBHOOK_URL", &hook)
        .env("MPC_WEBHOOK_SECRET", HOOK_SECRET)
        .env("MPC_WEBHOOK_RETRY_BASE_MS", "50")
        .env("MPC_LOG", "debug")
        .env("MPC_LOG_FORMAT", format);
    let mut child = launch.command().spawn().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let mut keygen_done = false;
    loop {
        let line = tokio::task::block_in_place(|| rx.recv_timeout(Duration::from_secs(60)))
            .unwrap_or_else(|e| panic!("{e:?}; the server logged:\n{}", lines.join("\n")));
        let line = strip_ansi(&line);
        let ws = ws_addr(&line);
        let failed = line.contains("webhook delivery failed");
        lines.push(line);
        if let Some(ws) = ws {
            // A key makes an outbox event for the deliverer to try.
            let client = mpc_transport_ws::Client::new(format!("ws://{ws}"))
                .with_bearer_token(token("ursula"))
                .with_config(client_config());
            client.keygen().await.unwrap();
            keygen_done = true;
        }
        if failed && keygen_done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines.extend(rx.try_iter().map(|line| strip_ansi(&line)));
    lines
}

/// `line` without ANSI colour sequences (the text format colours field
/// names), so that a secret split by one would still be found.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC '[' parameters, then a final byte in '@'..='~'.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The WebSocket address of a "listening" line, text or JSON.
fn ws_addr(line: &str) -> Option<String> {
    if !line.contains("listening") {
        return None;
    }
    if let Ok(value) = serde_json::from_str::<Value>(line) {
        return Some(value["fields"]["ws_addr"].as_str()?.to_owned());
    }
    let start = line.find("ws_addr=")? + "ws_addr=".len();
    Some(line[start..].split_whitespace().next()?.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_line_holds_a_secret_from_a_url() {
    if skip_postgres() {
        return;
    }
    bounded(async {
        for format in ["json", "text"] {
            let lines = secret_url_logs(format).await;
            let all = lines.join("\n");
            // The check finds what is there: the start-up line and the
            // deliverer's failure, with the URLs' harmless parts.
            assert!(all.contains("starting"), "{format}: {all}");
            assert!(all.contains("127.0.0.1:9"), "{format}: {all}");
            for secret in [
                DB_PASSWORD,
                HOOK_PASSWORD,
                HOOK_TOKEN,
                HOOK_PATH_TOKEN,
                HOOK_SECRET,
                JWT_SECRET,
                MASTER_KEY,
            ] {
                assert!(!all.contains(secret), "{format}: {secret} logged:\n{all}");
            }
        }
    })
    .await;
}

// ---- --dev ----

fn dev_refusal(launch: Launch<'_>) -> String {
    let (code, lines) = launch
        .arg("--dev")
        .try_start()
        .err()
        .expect("--dev started");
    assert_ne!(code, Some(0));
    lines.join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_refuses_production_secrets_and_public_listeners() {
    let db = Db::sqlite();
    // The harness sets MPC_JWT_SECRET and MPC_MASTER_KEY.
    let text = dev_refusal(Launch::new(&db));
    assert!(text.contains("MPC_JWT_SECRET"), "{text}");
    assert!(!text.contains(JWT_SECRET), "{text}");
    let dev = || {
        Launch::new(&db)
            .without_env("MPC_JWT_SECRET")
            .without_env("MPC_MASTER_KEY")
    };
    let text = dev_refusal(dev().env("MPC_MASTER_KEY", MASTER_KEY));
    assert!(text.contains("MPC_MASTER_KEY"), "{text}");
    let text = dev_refusal(dev().env("MPC_DATABASE_URL", "postgres://u@127.0.0.1:1/x"));
    assert!(text.contains("MPC_DATABASE_URL"), "{text}");
    let text = dev_refusal(dev().env("MPC_WEBHOOK_SECRET_FILE", "/nonexistent"));
    assert!(text.contains("MPC_WEBHOOK_SECRET_FILE"), "{text}");
    let text = dev_refusal(dev().env("MPC_WS_ADDR", "0.0.0.0:0"));
    assert!(
        text.contains("0.0.0.0:0") && text.contains("loopback"),
        "{text}"
    );
    let text = dev_refusal(dev().env("MPC_REST_ADDR", "[::]:0"));
    assert!(text.contains("REST") && text.contains("loopback"), "{text}");
    // Refused before anything was written to the data directory.
    assert!(!db.data_dir().unwrap().join("dev-secrets.json").exists());
    // The loopback default with no production secret still starts.
    dev().arg("--dev").start().kill();
}

// ---- pending keys ----

/// A client socket that never sends its outcome and hangs up as soon as
/// the server's has arrived: a client that vanished between the two
/// outcomes (or whose outcome was lost). The client's side completes.
struct VanishAfterServerOutcome<F> {
    inner: F,
    server_outcome_seen: bool,
}

/// Frame kind byte of an outcome (mpc-transport-ws's framing).
const OUTCOME_FRAME: u8 = 3;

impl<F: Frames> Frames for VanishAfterServerOutcome<F> {
    async fn send_binary(&mut self, data: Vec<u8>) -> Result<(), FrameError> {
        if data.first() == Some(&OUTCOME_FRAME) {
            return Ok(());
        }
        self.inner.send_binary(data).await
    }

    async fn send_ping(&mut self) -> Result<(), FrameError> {
        self.inner.send_ping().await
    }

    async fn recv(&mut self) -> Option<Result<Incoming, FrameError>> {
        if self.server_outcome_seen {
            return None;
        }
        let incoming = self.inner.recv().await;
        if let Some(Ok(Incoming::Binary(data))) = &incoming {
            self.server_outcome_seen |= data.first() == Some(&OUTCOME_FRAME);
        }
        incoming
    }

    async fn flush(&mut self) -> Result<(), FrameError> {
        self.inner.flush().await
    }

    async fn close(&mut self, _code: u16, _reason: &str) -> Result<(), FrameError> {
        Ok(())
    }
}

/// A keygen whose client keeps its share but never sends its outcome;
/// returns once the server has ended the session.
async fn unconfirmed_keygen(server: &TestServer, owner: &str) -> KeyShare {
    let failed_before = keygen_failures(server);
    let client = server.client(owner);
    let opening = Opening::new(Operation::Keygen, &mut OsRng);
    let frames = VanishAfterServerOutcome {
        inner: client.connect().await.unwrap(),
        server_outcome_seen: false,
    };
    let mut dkg = Dkg::new(Role::A, opening.context());
    let (share, _) =
        mpc_transport_ws::run_client(frames, &opening, &mut dkg, &mut OsRng, client.config())
            .await
            .unwrap();
    eventually("the server ends the unconfirmed keygen", || {
        keygen_failures(server) > failed_before
    })
    .await;
    share
}

fn keygen_failures(server: &TestServer) -> usize {
    server
        .logs()
        .iter()
        .filter(|line| line.contains("session failed") && line.contains("keygen"))
        .count()
}

async fn rest_get(server: &TestServer, owner: &str, path: &str) -> (u16, Value) {
    rest_call(server, owner, reqwest::Method::GET, path).await
}

async fn rest_call(
    server: &TestServer,
    owner: &str,
    method: reqwest::Method,
    path: &str,
) -> (u16, Value) {
    let response = reqwest::Client::new()
        .request(method, format!("{}{path}", server.rest_url))
        .bearer_auth(token(owner))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn status_of(server: &TestServer, owner: &str, share: &KeyShare) -> Value {
    let (code, key) = rest_get(server, owner, &format!("/v1/keys/{}", share.key_id())).await;
    assert_eq!(code, 200, "{key}");
    key["status"].clone()
}

async fn audit_events(server: &TestServer, owner: &str, share: &KeyShare) -> Vec<String> {
    let (code, log) = rest_get(server, owner, &format!("/v1/keys/{}/audit", share.key_id())).await;
    assert_eq!(code, 200, "{log}");
    log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["event"].as_str().unwrap().to_owned())
        .collect()
}

/// Rows of the database, read directly (the outbox has no REST view).
async fn count(db: &Db, sql: &str, share: &KeyShare) -> i64 {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&db.url()).await.unwrap();
    let n: i64 = sqlx::query_scalar(sql)
        .bind(hex::encode(share.key_id().0))
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    n
}

async fn created_events(db: &Db, share: &KeyShare) -> i64 {
    count(
        db,
        "SELECT COUNT(*) FROM outbox WHERE event_type = 'key.created' AND key_id = $1",
        share,
    )
    .await
}

async fn pending_keys(db: &Db) {
    let server = Launch::new(db).start();
    // A confirmed keygen: active at once, one key.created.
    let client = server.client("paula");
    let confirmed = client.keygen().await.unwrap();
    assert_eq!(status_of(&server, "paula", &confirmed).await, "active");
    assert_eq!(created_events(db, &confirmed).await, 1);

    // The client vanishes after the server's outcome: pending, not listed
    // as active, no key.created anywhere, refused where it needs both
    // parties to hold the key.
    let pending = unconfirmed_keygen(&server, "paula").await;
    assert_eq!(status_of(&server, "paula", &pending).await, "pending");
    let (_, list) = rest_get(&server, "paula", "/v1/keys").await;
    let statuses: Vec<&str> = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["active", "pending"], "{list}");
    assert_eq!(created_events(db, &pending).await, 0);
    assert!(!audit_events(&server, "paula", &pending)
        .await
        .contains(&"key.created".to_owned()));
    let rotate = format!("/v1/keys/{}/rotate", pending.key_id());
    let (code, problem) = rest_call(&server, "paula", reqwest::Method::POST, &rotate).await;
    assert_eq!((code, problem["code"].as_str()), (409, Some("key_pending")));
    let refresh = client
        .refresh(&pending, &mut |_: &mpc_core::Refresh<'_>| {
            std::future::ready(Ok::<(), mpc_transport_ws::Rejection>(()))
        })
        .await
        .unwrap_err();
    assert_eq!(refresh.close_code().map(|c| c.0), Some(4107), "{refresh}");
    // Another owner cannot activate it: their signature is refused as for
    // a missing key.
    assert!(server
        .client("mallory")
        .sign(&pending, Prehash::sha256(b"not mine"))
        .await
        .is_err());
    assert_eq!(status_of(&server, "paula", &pending).await, "pending");

    // The owner's first signature activates it, once, with one key.created;
    // two concurrent first signatures still make one.
    let other = server.client("paula");
    tokio::join!(
        sign_and_verify(&client, &pending, b"first"),
        sign_and_verify(&other, &pending, b"first too"),
    );
    assert_eq!(status_of(&server, "paula", &pending).await, "active");
    assert_eq!(created_events(db, &pending).await, 1);
    let events = audit_events(&server, "paula", &pending).await;
    assert_eq!(
        events.iter().filter(|e| *e == "key.created").count(),
        1,
        "{events:?}"
    );
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfirmed_keygen_stays_pending_until_signed_sqlite() {
    bounded(pending_keys(&Db::sqlite())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfirmed_keygen_stays_pending_until_signed_postgres() {
    if skip_postgres() {
        return;
    }
    bounded(async { pending_keys(&Db::postgres().await).await }).await;
}

/// The reaper deletes an old pending key with its share, and leaves active
/// keys alone; two server processes on one PostgreSQL reap it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_pending_keys_are_reaped() {
    if skip_postgres() {
        return;
    }
    bounded(async {
        let db = Db::postgres().await;
        let launch = || Launch::new(&db).env("MPC_PENDING_KEY_MAX_AGE", "1");
        let one = launch().start();
        let two = launch().start();
        let active = one.client("rita").keygen().await.unwrap();
        let pending = unconfirmed_keygen(&two, "rita").await;
        eventually("a reaper deletes the pending key", || {
            one.logs()
                .iter()
                .chain(two.logs().iter())
                .any(|line| line.contains("pending key reaped"))
        })
        .await;
        let (code, _) = rest_get(&one, "rita", &format!("/v1/keys/{}", pending.key_id())).await;
        assert_eq!(code, 404);
        let shares = "SELECT COUNT(*) FROM shares WHERE key_id = $1";
        assert_eq!(count(&db, shares, &pending).await, 0);
        let reaped = "SELECT COUNT(*) FROM audit_log WHERE event = 'key.reaped' AND key_id = $1";
        assert_eq!(count(&db, reaped, &pending).await, 1);
        assert_eq!(created_events(&db, &pending).await, 0);
        // Its client can no longer sign with it; the active key still signs.
        assert!(one
            .client("rita")
            .sign(&pending, Prehash::sha256(b"gone"))
            .await
            .is_err());
        sign_and_verify(&two.client("rita"), &active, b"still here").await;
        assert_eq!(status_of(&one, "rita", &active).await, "active");
    })
    .await;
}

// ---- SQLite file modes ----

#[cfg(unix)]
fn modes(db: &Db) -> Vec<(String, u32)> {
    use std::os::unix::fs::PermissionsExt;
    ["mpc.db", "mpc.db-wal", "mpc.db-shm"]
        .iter()
        .map(|name| {
            let path = db.data_dir().unwrap().join(name);
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            ((*name).to_owned(), mode)
        })
        .collect()
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_files_are_private_to_the_server() {
    use std::os::unix::fs::PermissionsExt;
    bounded(async {
        let db = Db::sqlite();
        let server = Launch::new(&db).start();
        let share = server.client("sam").keygen().await.unwrap();
        for (name, mode) in modes(&db) {
            assert_eq!(mode, 0o600, "{name} is {mode:o}");
        }
        // Files left readable by an older version are tightened at start.
        server.kill();
        for name in ["mpc.db", "mpc.db-wal", "mpc.db-shm"] {
            let path = db.data_dir().unwrap().join(name);
            if path.exists() {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            }
        }
        let server = Launch::new(&db).start();
        sign_and_verify(&server.client("sam"), &share, b"after chmod").await;
        for (name, mode) in modes(&db) {
            assert_eq!(mode, 0o600, "{name} is {mode:o}");
        }
        assert!(server
            .logs()
            .iter()
            .any(|line| line.contains("permissions set to 0600")));
    })
    .await;
}
