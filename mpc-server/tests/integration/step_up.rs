//! Step-up on the real binary (PROTOCOL.md §19): a step-up token is spent
//! by its first successful backup, export or revocation and refused after
//! that (on one server, concurrently, and across two servers sharing
//! PostgreSQL); revocation needs step-up and the key named again, and a
//! refused revocation leaves a key that still signs; `amr`, `jti` and the
//! binding claims are enforced; a backup to a request-supplied key is an
//! export; and every refused token gets the same 401, whatever check
//! failed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use k256::elliptic_curve::sec1::ToEncodedPoint;
use mpc_core::{KeyShare, Prehash};
use mpc_server::auth::TokenBuilder;
use mpc_transport_ws::CloseCode;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn fresh_jti() -> String {
    use rand_core::{OsRng, RngCore};
    let mut jti = [0u8; 16];
    OsRng.fill_bytes(&mut jti);
    hex::encode(jti)
}

/// A step-up token builder: second factor 10 s ago, a fresh `jti`.
fn step_up(subject: &str) -> TokenBuilder {
    TokenBuilder::new(subject, AUDIENCE)
        .expires_in(600)
        .amr(&["pwd", "otp"])
        .auth_time(now() - 10)
        .token_id(fresh_jti())
}

fn sign(builder: TokenBuilder) -> String {
    builder.sign_hs256(JWT_SECRET.as_bytes()).unwrap()
}

fn onetime_hex() -> String {
    let secret = k256::SecretKey::random(&mut rand_core::OsRng);
    hex::encode(secret.public_key().to_encoded_point(true).as_bytes())
}

fn export_body() -> Value {
    json!({ "onetime_public_key": onetime_hex() })
}

const RECOVERY_SECRET: [u8; 32] = [0x42; 32];

fn recovery_hex() -> String {
    let secret = k256::SecretKey::from_slice(&RECOVERY_SECRET).unwrap();
    hex::encode(secret.public_key().to_encoded_point(true).as_bytes())
}

fn launch(db: &Db) -> Launch<'_> {
    Launch::new(db).env("MPC_BACKUP_RECOVERY_KEY", &recovery_hex())
}

/// One REST call: status and JSON body (`Value::Null` if none).
async fn call(
    server: &TestServer,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().request(method, format!("{}{path}", server.rest_url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn key_path(key: &KeyShare, suffix: &str) -> String {
    format!("/v1/keys/{}{suffix}", key.key_id())
}

async fn export(server: &TestServer, key: &KeyShare, token: &str) -> (StatusCode, Value) {
    call(
        server,
        Method::POST,
        &key_path(key, "/export"),
        Some(token),
        Some(export_body()),
    )
    .await
}

async fn revoke(server: &TestServer, key: &KeyShare, token: &str, body: Option<Value>) -> Value {
    let (status, problem) = call(
        server,
        Method::DELETE,
        &key_path(key, ""),
        Some(token),
        body,
    )
    .await;
    let mut problem = problem;
    problem["http_status"] = json!(status.as_u16());
    problem
}

/// The audit events of the key, oldest first.
async fn audit_events(server: &TestServer, key: &KeyShare, owner: &str) -> Vec<String> {
    let (status, audit) = call(
        server,
        Method::GET,
        &key_path(key, "/audit"),
        Some(&token(owner)),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect()
}

fn count(events: &[String], name: &str) -> usize {
    events.iter().filter(|e| *e == name).count()
}

async fn key_view(server: &TestServer, key: &KeyShare, owner: &str) -> Value {
    let (status, view) = call(
        server,
        Method::GET,
        &key_path(key, ""),
        Some(&token(owner)),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    view
}

fn assert_used(status: StatusCode, problem: &Value) {
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(problem["code"], "step_up_token_used", "{problem}");
    assert_eq!(
        problem["type"], "urn:mpc-server:problem:step_up_token_used",
        "{problem}"
    );
}

/// `n` exports with one token at once, spread over `servers`: how many
/// succeeded; every other one must be refused as a used token.
async fn concurrent_exports(
    servers: &[&TestServer],
    key: &KeyShare,
    token: &str,
    n: usize,
) -> usize {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let url = format!(
            "{}{}",
            servers[i % servers.len()].rest_url,
            key_path(key, "/export")
        );
        let token = token.to_owned();
        tasks.spawn(async move {
            let response = reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .json(&export_body())
                .send()
                .await
                .unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        });
    }
    let mut ok = 0;
    while let Some(result) = tasks.join_next().await {
        let (status, body) = result.unwrap();
        if status == StatusCode::OK {
            ok += 1;
        } else {
            assert_used(status, &body);
        }
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_up_token_is_spent_once_on_one_server() {
    bounded(async {
        let db = Db::sqlite();
        let server = launch(&db)
            .env("MPC_SENSITIVE_RATE_LIMIT_PER_HOUR", "100")
            .start();
        let key = server.client("alice").keygen().await.unwrap();

        // A use that fails (no share of epoch 99) does not spend the token.
        let token = sign(step_up("alice"));
        let (status, problem) = call(
            &server,
            Method::POST,
            &key_path(&key, "/export"),
            Some(&token),
            Some(json!({ "onetime_public_key": onetime_hex(), "epoch": 99 })),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "{problem}");
        let (status, view) = export(&server, &key, &token).await;
        assert_eq!(status, StatusCode::OK, "{view}");
        // The second use: refused, and nothing recorded.
        let before = audit_events(&server, &key, "alice").await;
        let (status, problem) = export(&server, &key, &token).await;
        assert_used(status, &problem);
        // Nor can it be spent on another operation, or another key.
        let (status, problem) = call(
            &server,
            Method::POST,
            &key_path(&key, "/backup"),
            Some(&token),
            Some(json!({})),
        )
        .await;
        assert_used(status, &problem);
        let other = server.client("alice").keygen().await.unwrap();
        let (status, problem) = export(&server, &other, &token).await;
        assert_used(status, &problem);
        assert_eq!(audit_events(&server, &key, "alice").await, before);
        assert_eq!(key_view(&server, &other, "alice").await["exported"], false);

        // Eight concurrent uses of one fresh token: exactly one export.
        let token = sign(step_up("alice"));
        assert_eq!(concurrent_exports(&[&server], &key, &token, 8).await, 1);
        let after = audit_events(&server, &key, "alice").await;
        assert_eq!(
            count(&after, "key.exported"),
            count(&before, "key.exported") + 1
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_up_token_is_spent_once_across_two_servers_on_postgres() {
    if skip_postgres() {
        return;
    }
    bounded(async {
        let db = Db::postgres().await;
        let a = launch(&db)
            .env("MPC_SENSITIVE_RATE_LIMIT_PER_HOUR", "100")
            .start();
        let b = launch(&db)
            .env("MPC_SENSITIVE_RATE_LIMIT_PER_HOUR", "100")
            .start();
        let key = a.client("alice").keygen().await.unwrap();

        let token = sign(step_up("alice"));
        let (status, view) = export(&a, &key, &token).await;
        assert_eq!(status, StatusCode::OK, "{view}");
        let (status, problem) = export(&b, &key, &token).await;
        assert_used(status, &problem);
        let (status, problem) = export(&a, &key, &token).await;
        assert_used(status, &problem);

        // Concurrent uses split over both servers: exactly one export.
        let before = count(&audit_events(&a, &key, "alice").await, "key.exported");
        let token = sign(step_up("alice"));
        assert_eq!(concurrent_exports(&[&a, &b], &key, &token, 8).await, 1);
        let after = count(&audit_events(&b, &key, "alice").await, "key.exported");
        assert_eq!(after, before + 1);

        // A revocation token spent on server A is refused on server B for
        // another key, which keeps signing.
        let client = a.client("alice");
        let doomed = client.keygen().await.unwrap();
        let kept = client.keygen().await.unwrap();
        let token = sign(step_up("alice"));
        let done = revoke(
            &a,
            &doomed,
            &token,
            Some(json!({ "confirm": doomed.key_id().to_string() })),
        )
        .await;
        assert_eq!(done["http_status"], 200, "{done}");
        let problem = revoke(
            &b,
            &kept,
            &token,
            Some(json!({ "confirm": kept.key_id().to_string() })),
        )
        .await;
        assert_eq!(problem["http_status"], 403, "{problem}");
        assert_eq!(problem["code"], "step_up_token_used");
        sign_and_verify(&b.client("alice"), &kept, b"still mine").await;
    })
    .await;
}

/// The key is untouched: active, not revoked in the audit log, and it
/// signs (verified by libsecp256k1).
async fn still_signs(server: &TestServer, key: &KeyShare, message: &[u8]) {
    let view = key_view(server, key, "alice").await;
    assert_eq!(view["status"], "active", "{view}");
    let events = audit_events(server, key, "alice").await;
    assert_eq!(count(&events, "key.revoked"), 0, "{events:?}");
    sign_and_verify(&server.client("alice"), key, message).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_needs_step_up_and_the_key_named_again() {
    bounded(async {
        let db = Db::sqlite();
        let server = launch(&db).start();
        let client = server.client("alice");
        let key = client.keygen().await.unwrap();
        let other = client.keygen().await.unwrap();
        let id = key.key_id().to_string();
        let confirm = json!({ "confirm": id });

        // (token, body, status, code): all refused.
        let cases: Vec<(String, Option<Value>, u16, &str)> = vec![
            // No step-up: an ordinary session token.
            (
                token("alice"),
                Some(confirm.clone()),
                403,
                "step_up_required",
            ),
            // A second factor, but no jti: not single-use.
            (
                sign(
                    TokenBuilder::new("alice", AUDIENCE)
                        .amr(&["otp"])
                        .auth_time(now()),
                ),
                Some(confirm.clone()),
                403,
                "step_up_required",
            ),
            // A stale second factor.
            (
                sign(step_up("alice").auth_time(now() - 3600)),
                Some(confirm.clone()),
                403,
                "step_up_required",
            ),
            // Bound to another operation, or another key.
            (
                sign(step_up("alice").step_up_operation("export")),
                Some(confirm.clone()),
                403,
                "step_up_binding_mismatch",
            ),
            (
                sign(
                    step_up("alice")
                        .step_up_operation("revoke")
                        .step_up_key_id(other.key_id().to_string()),
                ),
                Some(confirm.clone()),
                403,
                "step_up_binding_mismatch",
            ),
            // Step-up, but no or a wrong confirmation.
            (
                sign(step_up("alice")),
                Some(json!({})),
                422,
                "invalid_request",
            ),
            (
                sign(step_up("alice")),
                Some(json!({ "confirm": other.key_id().to_string() })),
                422,
                "invalid_request",
            ),
            (
                sign(step_up("alice")),
                Some(json!({ "confirm": id, "force": true })),
                422,
                "invalid_request",
            ),
            (
                sign(step_up("alice")),
                Some(json!({ "confirm": 5 })),
                422,
                "invalid_request",
            ),
            (sign(step_up("alice")), None, 415, "invalid_request"),
        ];
        for (token, body, status, code) in cases {
            let problem = revoke(&server, &key, &token, body.clone()).await;
            assert_eq!(problem["http_status"], status, "{body:?}: {problem}");
            assert_eq!(problem["code"], code, "{body:?}: {problem}");
        }
        still_signs(&server, &key, b"not revoked").await;

        // A token bound to this revocation works once; it is refused on
        // the already revoked key and on the other key.
        let bound = sign(
            step_up("alice")
                .step_up_operation("revoke")
                .step_up_key_id(id.to_uppercase()),
        );
        let view = revoke(&server, &key, &bound, Some(confirm.clone())).await;
        assert_eq!(view["http_status"], 200, "{view}");
        assert_eq!(view["status"], "revoked");
        let e = client
            .sign(&key, Prehash::sha256(b"revoked"))
            .await
            .unwrap_err();
        assert_eq!(e.close_code(), Some(CloseCode(4101)), "{e}");
        let unbound = sign(step_up("alice"));
        let view = revoke(&server, &key, &unbound, Some(confirm.clone())).await;
        assert_eq!(view["http_status"], 200, "{view}");
        // Repeating a revocation spent nothing: the token still works once.
        let done = revoke(
            &server,
            &other,
            &unbound,
            Some(json!({ "confirm": other.key_id().to_string() })),
        )
        .await;
        assert_eq!(done["http_status"], 200, "{done}");
        let problem = revoke(
            &server,
            &other,
            &unbound,
            Some(json!({ "confirm": other.key_id().to_string() })),
        )
        .await;
        assert_eq!(problem["code"], "step_up_token_used", "{problem}");
        let events = audit_events(&server, &key, "alice").await;
        assert_eq!(count(&events, "key.revoked"), 1, "{events:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_claims_and_the_binding_policy() {
    bounded(async {
        let db = Db::sqlite();
        let server = launch(&db)
            .env("MPC_STEP_UP_REQUIRE_BINDING", "true")
            .start();
        let client = server.client("bea");
        let key = client.keygen().await.unwrap();
        let other = client.keygen().await.unwrap();
        let id = key.key_id().to_string();
        let backup = |token: String| {
            let path = key_path(&key, "/backup");
            let server = &server;
            async move { call(server, Method::POST, &path, Some(&token), Some(json!({}))).await }
        };
        // Unbound or half-bound: refused when binding is required.
        for builder in [
            step_up("bea"),
            step_up("bea").step_up_operation("backup"),
            step_up("bea").step_up_key_id(id.clone()),
        ] {
            let (status, problem) = backup(sign(builder)).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
            assert_eq!(problem["code"], "step_up_required", "{problem}");
        }
        // Bound to another operation or key.
        for (op, key_id) in [
            ("export", id.clone()),
            ("revoke", id.clone()),
            ("backup", other.key_id().to_string()),
            ("backup", "ab".repeat(31)),
        ] {
            let (status, problem) = backup(sign(
                step_up("bea")
                    .step_up_operation(op)
                    .step_up_key_id(key_id.clone()),
            ))
            .await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{op} {key_id}: {problem}");
            assert_eq!(problem["code"], "step_up_binding_mismatch");
        }
        assert_eq!(key_view(&server, &key, "bea").await["backed_up"], false);
        // Bound to this backup of this key.
        let (status, view) = backup(sign(
            step_up("bea")
                .step_up_operation("backup")
                .step_up_key_id(id.clone()),
        ))
        .await;
        assert_eq!(status, StatusCode::OK, "{view}");
        assert_eq!(key_view(&server, &key, "bea").await["backed_up"], true);
    })
    .await;
}

/// Rows of the outbox for the key, from the SQLite file.
async fn outbox_events(db: &Db, key: &KeyShare) -> Vec<String> {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&db.url()).await.unwrap();
    sqlx::query_scalar("SELECT event_type FROM outbox WHERE key_id = $1 ORDER BY id")
        .bind(key.key_id().to_string())
        .fetch_all(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_to_a_request_key_is_an_export() {
    bounded(async {
        let db = Db::sqlite();
        let server = launch(&db)
            .env("MPC_BACKUP_ALLOW_REQUEST_KEY", "true")
            .start();
        let client = server.client("carl");
        let key = client.keygen().await.unwrap();
        let path = key_path(&key, "/backup");

        // To the configured key: a backup, not an export.
        let (status, view) = call(
            &server,
            Method::POST,
            &path,
            Some(&sign(step_up("carl"))),
            Some(json!({})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{view}");
        let view = key_view(&server, &key, "carl").await;
        assert_eq!(
            (&view["backed_up"], &view["exported"]),
            (&json!(true), &json!(false))
        );
        assert_eq!(
            outbox_events(&db, &key).await,
            ["key.created", "key.backed_up"]
        );

        // To a key named in the request: the share left the operator's
        // control.
        let (status, backup) = call(
            &server,
            Method::POST,
            &path,
            Some(&sign(step_up("carl"))),
            Some(json!({ "recovery_public_key": onetime_hex() })),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{backup}");
        let view = key_view(&server, &key, "carl").await;
        assert_eq!(view["exported"], true, "{view}");
        assert!(view["exported_at"].is_i64());
        assert_eq!(
            outbox_events(&db, &key).await,
            [
                "key.created",
                "key.backed_up",
                "key.backed_up",
                "key.exported"
            ]
        );
        let events = audit_events(&server, &key, "carl").await;
        assert_eq!(count(&events, "key.exported"), 1, "{events:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refused_token_gets_the_same_401() {
    bounded(async {
        let db = Db::sqlite();
        let server = Launch::new(&db)
            .env("MPC_JWT_ISSUER", "https://issuer.example")
            .env("MPC_JWT_MAX_LIFETIME", "3600")
            .start();
        let base = || {
            TokenBuilder::new("dora", AUDIENCE)
                .issuer("https://issuer.example")
                .expires_in(600)
        };
        // The baseline is accepted, on REST and on the WebSocket.
        let good = sign(base());
        let (status, _) = call(&server, Method::GET, "/v1/keys", Some(&good), None).await;
        assert_eq!(status, StatusCode::OK);
        let t = now();
        let refused: Vec<(&str, Option<String>)> = vec![
            ("no token", None),
            ("garbage", Some("not.a.token".to_owned())),
            (
                "no iss",
                Some(sign(TokenBuilder::new("dora", AUDIENCE).expires_in(600))),
            ),
            (
                "wrong iss",
                Some(sign(
                    TokenBuilder::new("dora", AUDIENCE)
                        .issuer("https://evil.example")
                        .expires_in(600),
                )),
            ),
            ("iat in the future", Some(sign(base().issued_at(t + 300)))),
            ("exp too far ahead", Some(sign(base().expires_in(7200)))),
            (
                "expired",
                Some(sign(base().issued_at(t - 7200).expires_at(t - 3600))),
            ),
            ("nbf ahead", Some(sign(base().not_before(t + 300)))),
            (
                "wrong audience",
                Some(sign(
                    TokenBuilder::new("dora", "other")
                        .issuer("https://issuer.example")
                        .expires_in(600),
                )),
            ),
            (
                "wrong secret",
                Some(
                    base()
                        .sign_hs256(b"another-secret-another-secret-0123456789")
                        .unwrap(),
                ),
            ),
        ];
        let mut bodies = Vec::new();
        for (what, token) in &refused {
            let (status, body) =
                call(&server, Method::GET, "/v1/keys", token.as_deref(), None).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
            bodies.push((what, body));
        }
        let first = &bodies[0].1;
        assert_eq!(first["code"], "unauthorized");
        for (what, body) in &bodies {
            assert_eq!(body, first, "{what}: the 401 says which check failed");
        }
        // The WebSocket upgrade refuses the same tokens.
        for (what, token) in refused.iter().skip(2) {
            let client = mpc_transport_ws::Client::new(server.ws_url.clone())
                .with_bearer_token(token.clone().unwrap())
                .with_config(client_config());
            assert!(client.keygen().await.is_err(), "{what}");
        }
        // No token in any log line.
        let logs = server.logs().join("\n");
        for (_, token) in &refused {
            if let Some(token) = token {
                assert!(!logs.contains(token.as_str()));
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amr_as_a_string_is_refused() {
    bounded(async {
        use jsonwebtoken::{encode, EncodingKey, Header};
        let db = Db::sqlite();
        let server = launch(&db).start();
        let key = server.client("eve").keygen().await.unwrap();
        let claims = |amr: Value| {
            json!({
                "sub": "eve", "aud": AUDIENCE, "exp": now() + 600, "iat": now(),
                "auth_time": now() - 5, "amr": amr, "jti": fresh_jti(),
            })
        };
        let raw = |claims: Value| {
            encode(
                &Header::default(),
                &claims,
                &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
            )
            .unwrap()
        };
        for amr in [json!("otp"), json!("mfa otp")] {
            let (status, problem) = export(&server, &key, &raw(claims(amr))).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
        }
        assert_eq!(key_view(&server, &key, "eve").await["exported"], false);
        let (status, view) = export(&server, &key, &raw(claims(json!(["otp"])))).await;
        assert_eq!(status, StatusCode::OK, "{view}");
    })
    .await;
}
