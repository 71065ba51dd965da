//! Operational hygiene of the real binary: no secret from a URL in any log
//! line or in `--help`, `--dev` refuses production settings, a keygen the
//! client never confirmed leaves no active key, a client is never told of a
//! key the server could not activate, and pending keys outlive their keygen
//! and can be backed up (PROTOCOL.md §18.3), and the SQLite files are
//! private to the server's user.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::common;

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use k256::elliptic_curve::sec1::ToEncodedPoint;
use mpc_core::backup::Backup;
use mpc_core::wire::Role;
use mpc_core::{Dkg, KeyShare, Prehash};
use mpc_transport_ws::opening::{encode_frame, FrameKind};
use mpc_transport_ws::{run_protocol, Frames, Incoming, Opening, Operation};
use rand_core::OsRng;
use serde_json::{json, Value};

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

/// Frame kind byte of an outcome (mpc-transport-ws's framing).
const OUTCOME_FRAME: u8 = 3;

/// A keygen whose client keeps its share but never sends its outcome: it
/// hangs up as soon as the server's outcome has arrived (a client that
/// vanished between the two outcomes, or whose outcome was lost, and that
/// kept the share although its keygen did not succeed). Returns once the
/// server has ended the session.
async fn unconfirmed_keygen(server: &TestServer, owner: &str) -> KeyShare {
    let failed_before = keygen_failures(server);
    let client = server.client(owner);
    let opening = Opening::new(Operation::Keygen, &mut OsRng);
    let mut socket = client.connect().await.unwrap();
    let frame = encode_frame(FrameKind::Opening, &opening.encode());
    socket.send_binary(frame).await.unwrap();
    let mut dkg = Dkg::new(Role::A, opening.context());
    let share = run_protocol(&mut socket, &mut dkg, &mut OsRng, client.config())
        .await
        .unwrap();
    loop {
        match socket.recv().await {
            Some(Ok(Incoming::Binary(frame))) if frame.first() == Some(&OUTCOME_FRAME) => break,
            Some(Ok(Incoming::Binary(_) | Incoming::Ping | Incoming::Pong)) => {}
            other => panic!("expected the server's outcome, got {other:?}"),
        }
    }
    drop(socket);
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
async fn created_events(db: &Db, share: &KeyShare) -> i64 {
    count(
        db,
        "SELECT COUNT(*) FROM outbox WHERE event_type = 'key.created' AND key_id = $1",
        share,
    )
    .await
}

const RECOVERY_SECRET: [u8; 32] = [0x42; 32];
const ONETIME_SECRET: [u8; 32] = [7; 32];

fn public_hex(secret: [u8; 32]) -> String {
    let secret = k256::SecretKey::from_slice(&secret).unwrap();
    hex::encode(secret.public_key().to_encoded_point(true).as_bytes())
}

async fn rest_post(server: &TestServer, owner: &str, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", server.rest_url))
        .bearer_auth(step_up_token(owner))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A pending key is backed up to the configured recovery key (so that the
/// server share survives the reaper), but not exported, nor backed up to a
/// key the request names (which counts as an export).
async fn pending_key_backups(server: &TestServer, owner: &str, pending: &KeyShare) {
    let key = format!("/v1/keys/{}", pending.key_id());
    let onetime = public_hex(ONETIME_SECRET);
    for (path, body) in [
        ("export", json!({ "onetime_public_key": onetime })),
        ("backup", json!({ "recovery_public_key": onetime })),
    ] {
        let (code, problem) = rest_post(server, owner, &format!("{key}/{path}"), body).await;
        assert_eq!(
            (code, problem["code"].as_str()),
            (409, Some("key_pending")),
            "{path}: {problem}"
        );
    }
    let (code, view) = rest_post(server, owner, &format!("{key}/backup"), json!({})).await;
    assert_eq!(code, 200, "{view}");
    let bytes = hex::decode(view["backup"].as_str().unwrap()).unwrap();
    let backup = Backup::from_bytes(&bytes).unwrap();
    let recovery = k256::SecretKey::from_slice(&RECOVERY_SECRET).unwrap();
    let server_public = pending.public_share(Role::B);
    backup
        .verify(&server_public, &recovery.public_key())
        .unwrap();
    let recovered = backup.decrypt(&recovery).unwrap();
    assert_eq!(recovered.public_key().to_projective(), server_public);
    assert_eq!(status_of(server, owner, pending).await, "pending");
}

async fn pending_keys(db: &Db) {
    let server = Launch::new(db)
        .env("MPC_BACKUP_RECOVERY_KEY", &public_hex(RECOVERY_SECRET))
        .env("MPC_BACKUP_ALLOW_REQUEST_KEY", "true")
        .start();
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
    pending_key_backups(&server, "paula", &pending).await;
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
        // The shortest max age allowed for a 5 s session timeout (it must
        // exceed session timeout + 2 x close timeout of 2 s).
        let launch = || {
            Launch::new(&db)
                .env("MPC_SESSION_TIMEOUT", "5")
                .env("MPC_PENDING_KEY_MAX_AGE", "10")
        };
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

/// SQL that makes the activation of a pending key fail, as a database
/// failure at that moment would; and SQL that removes the fault.
fn activation_fault(db: &Db) -> (&'static [&'static str], &'static str) {
    match db {
        Db::Sqlite(_) => (
            &[
                "CREATE TRIGGER refuse_activation BEFORE UPDATE OF status ON keys \
               WHEN OLD.status = 'pending' AND NEW.status = 'active' \
               BEGIN SELECT RAISE(ABORT, 'activation refused by the test'); END",
            ],
            "DROP TRIGGER refuse_activation",
        ),
        Db::Postgres(_) => (
            &[
                "CREATE FUNCTION refuse_activation() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'activation refused by the test'; END $$",
                "CREATE TRIGGER refuse_activation BEFORE UPDATE OF status ON keys \
                 FOR EACH ROW WHEN (OLD.status = 'pending' AND NEW.status = 'active') \
                 EXECUTE FUNCTION refuse_activation()",
            ],
            "DROP TRIGGER refuse_activation ON keys",
        ),
    }
}

async fn execute(db: &Db, statements: &[&str]) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&db.url()).await.unwrap();
    for statement in statements {
        sqlx::query(statement).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();
}

/// The activation after the client's outcome fails: the server closes with
/// 1011 instead of 1000 and the client's keygen fails, so no client holds a
/// key that stays pending (and would be reaped with the funds sent to it).
async fn failed_activation(db: &Db) {
    let server = Launch::new(db).start();
    let client = server.client("fay");
    let (refuse, allow) = activation_fault(db);
    execute(db, refuse).await;
    let error = client.keygen().await.unwrap_err();
    assert_eq!(error.close_code().map(|c| c.0), Some(1011), "{error}");
    let (_, list) = rest_get(&server, "fay", "/v1/keys").await;
    let keys = list["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{list}");
    assert_eq!(keys[0]["status"], "pending", "{list}");
    let id = keys[0]["key_id"].as_str().unwrap();
    let (_, log) = rest_get(&server, "fay", &format!("/v1/keys/{id}/audit")).await;
    assert!(!log.to_string().contains("key.created"), "{log}");
    assert!(server
        .logs()
        .iter()
        .any(|line| line.contains("activate a pending key")));
    // Without the fault, a keygen succeeds and its key is active.
    execute(db, &[allow]).await;
    let share = client.keygen().await.unwrap();
    assert_eq!(status_of(&server, "fay", &share).await, "active");
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_activation_fails_the_keygen_sqlite() {
    bounded(failed_activation(&Db::sqlite())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_activation_fails_the_keygen_postgres() {
    if skip_postgres() {
        return;
    }
    bounded(async { failed_activation(&Db::postgres().await).await }).await;
}

/// A max age that a keygen's server side could outlive (session timeout
/// plus twice the close timeout of 2 s) is a configuration error.
#[test]
fn pending_keys_must_outlive_their_keygen() {
    let db = Db::sqlite();
    let launch = || Launch::new(&db).env("MPC_SESSION_TIMEOUT", "30");
    for age in ["34", "1"] {
        let (code, lines) = launch()
            .env("MPC_PENDING_KEY_MAX_AGE", age)
            .try_start()
            .err()
            .expect("started with a too short max age");
        assert_ne!(code, Some(0));
        let text = lines.join("\n");
        assert!(text.contains("MPC_PENDING_KEY_MAX_AGE"), "{text}");
    }
    launch().env("MPC_PENDING_KEY_MAX_AGE", "35").start().kill();
}

// ---- --help ----

/// `--help` names the variables but prints none of their values (a
/// webhook URL carries credentials).
#[test]
fn help_prints_no_environment_value() {
    let db = Db::sqlite();
    let hook =
        format!("http://hookuser:{HOOK_PASSWORD}@127.0.0.1:9/{HOOK_PATH_TOKEN}?token={HOOK_TOKEN}");
    let output = Launch::new(&db)
        .env("MPC_WEBHOOK_URL", &hook)
        .env("MPC_JWT_ISSUER", HOOK_SECRET)
        .arg("--help")
        .command()
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(help.contains("MPC_WEBHOOK_URL"), "{help}");
    let data_dir = db.data_dir().unwrap().to_str().unwrap();
    for value in [
        HOOK_PASSWORD,
        HOOK_PATH_TOKEN,
        HOOK_TOKEN,
        HOOK_SECRET,
        data_dir,
    ] {
        assert!(!help.contains(value), "{value} in --help:\n{help}");
    }
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
