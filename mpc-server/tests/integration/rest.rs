//! The REST service on the real binary: every route without a token, with
//! an expired one, with another owner's, and (backup, export, revoke)
//! without step-up; backup, export, rotation and revocation end to end;
//! rate limits; the OpenAPI document, and every response code it documents
//! reached here. The step-up rules themselves (single use, binding, the
//! revoke confirmation) are attacked in `step_up.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use k256::elliptic_curve::sec1::ToEncodedPoint;
use mpc_core::backup::Backup;
use mpc_core::export::{import_export, ExportCiphertext};
use mpc_core::wire::Role;
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

fn expired_token(subject: &str) -> String {
    TokenBuilder::new(subject, AUDIENCE)
        .issued_at(now() - 7200)
        .expires_at(now() - 3600)
        .amr(&["otp"])
        .auth_time(now() - 7200)
        .sign_hs256(JWT_SECRET.as_bytes())
        .unwrap()
}

/// (method, route template, status) of every response seen.
type Seen = Arc<Mutex<BTreeSet<(String, String, u16)>>>;

/// A REST client that records (method, route template, status) of every
/// response.
struct Rest {
    base: String,
    http: reqwest::Client,
    seen: Seen,
}

enum Body {
    None,
    Json(Value),
    Raw(&'static str, Vec<u8>),
}

impl Rest {
    fn new(server: &TestServer, seen: &Seen) -> Self {
        Self {
            base: server.rest_url.clone(),
            http: reqwest::Client::new(),
            seen: Arc::clone(seen),
        }
    }

    async fn call(
        &self,
        method: Method,
        template: &str,
        key_id: &str,
        token: Option<&str>,
        body: Body,
    ) -> (StatusCode, Value) {
        let path = template.replace("{key_id}", key_id);
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request = match body {
            Body::None => request,
            Body::Json(value) => request.json(&value),
            Body::Raw(content_type, bytes) => {
                let request = request.body(bytes);
                if content_type.is_empty() {
                    request
                } else {
                    request.header("content-type", content_type)
                }
            }
        };
        let response = request.send().await.unwrap();
        let status = response.status();
        let problem = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
        let text = response.text().await.unwrap();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            assert!(
                problem,
                "{method} {path}: {status} is not a problem: {value}"
            );
            assert_eq!(value["status"], status.as_u16(), "{value}");
            assert!(value["code"].is_string(), "{value}");
        }
        // The route, without the query.
        let route = template.split('?').next().unwrap_or(template);
        self.seen.lock().unwrap().insert((
            method.as_str().to_lowercase(),
            route.to_owned(),
            status.as_u16(),
        ));
        (status, value)
    }

    async fn get(&self, template: &str, key_id: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call(Method::GET, template, key_id, token, Body::None)
            .await
    }

    async fn post(
        &self,
        template: &str,
        key_id: &str,
        token: Option<&str>,
        body: Value,
    ) -> (StatusCode, Value) {
        self.call(Method::POST, template, key_id, token, Body::Json(body))
            .await
    }
}

const KEY: &str = "/v1/keys/{key_id}";
const BACKUP: &str = "/v1/keys/{key_id}/backup";
const EXPORT: &str = "/v1/keys/{key_id}/export";
const ROTATE: &str = "/v1/keys/{key_id}/rotate";
const AUDIT: &str = "/v1/keys/{key_id}/audit";

/// Every keyed route, with a harmless body.
fn keyed_routes(key_id: &str) -> Vec<(Method, &'static str, Body)> {
    vec![
        (Method::GET, KEY, Body::None),
        (
            Method::DELETE,
            KEY,
            Body::Json(json!({ "confirm": key_id })),
        ),
        (Method::POST, ROTATE, Body::None),
        (Method::GET, AUDIT, Body::None),
        (Method::POST, BACKUP, Body::Json(json!({}))),
        (
            Method::POST,
            EXPORT,
            Body::Json(json!({ "onetime_public_key": onetime_hex() })),
        ),
    ]
}

fn onetime_hex() -> String {
    let secret = k256::SecretKey::from_slice(&[7u8; 32]).unwrap();
    hex::encode(secret.public_key().to_encoded_point(true).as_bytes())
}

const RECOVERY_SECRET: [u8; 32] = [0x42; 32];

fn recovery_key_hex() -> String {
    let secret = k256::SecretKey::from_slice(&RECOVERY_SECRET).unwrap();
    hex::encode(secret.public_key().to_encoded_point(true).as_bytes())
}

fn launch(db: &Db) -> Launch<'_> {
    Launch::new(db).env("MPC_BACKUP_RECOVERY_KEY", &recovery_key_hex())
}

async fn key_view(rest: &Rest, key: &KeyShare, owner: &str) -> Value {
    let (status, view) = rest
        .get(KEY, &key.key_id().to_string(), Some(&token(owner)))
        .await;
    assert_eq!(status, StatusCode::OK);
    view
}

/// Nothing about a key changed: the same view and the same audit log.
async fn state_of(rest: &Rest, key: &KeyShare, owner: &str) -> (Value, Value) {
    let view = key_view(rest, key, owner).await;
    let (_, audit) = rest
        .get(AUDIT, &key.key_id().to_string(), Some(&token(owner)))
        .await;
    (view, audit)
}

async fn refused_without_valid_tokens(rest: &Rest, key: &KeyShare) {
    let id = key.key_id().to_string();
    let before = state_of(rest, key, "alice").await;
    let (status, _) = rest.get("/v1/keys", "", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = rest
        .get("/v1/keys", "", Some(&expired_token("alice")))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for (method, route, body) in keyed_routes(&id) {
        let body_again = || match &body {
            Body::Json(v) => Body::Json(v.clone()),
            _ => Body::None,
        };
        let (status, problem) = rest
            .call(method.clone(), route, &id, None, body_again())
            .await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {route}: {problem}"
        );
        let expired = expired_token("alice");
        let (status, _) = rest
            .call(method.clone(), route, &id, Some(&expired), body_again())
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {route}");
        // Another owner, even with step-up: the key does not exist for them.
        let mallory = step_up_token("mallory");
        let (status, problem) = rest
            .call(method.clone(), route, &id, Some(&mallory), body_again())
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {route}: {problem}");
        assert_eq!(problem["code"], "key_not_found");
    }
    // Backup, export and revoke without step-up.
    for (method, route, body) in [
        (Method::POST, BACKUP, json!({})),
        (
            Method::POST,
            EXPORT,
            json!({ "onetime_public_key": onetime_hex() }),
        ),
        (Method::DELETE, KEY, json!({ "confirm": id })),
    ] {
        let (status, problem) = rest
            .call(method, route, &id, Some(&token("alice")), Body::Json(body))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{route}");
        assert_eq!(problem["code"], "step_up_required");
    }
    // A second factor too old is no step-up either.
    let stale = TokenBuilder::new("alice", AUDIENCE)
        .expires_in(600)
        .amr(&["otp"])
        .auth_time(now() - 3600)
        .sign_hs256(JWT_SECRET.as_bytes())
        .unwrap();
    let (status, _) = rest.post(BACKUP, &id, Some(&stale), json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(state_of(rest, key, "alice").await, before);
}

async fn backup_verifies_and_decrypts(rest: &Rest, key: &KeyShare) -> k256::SecretKey {
    let id = key.key_id().to_string();
    let (status, view) = rest
        .post(BACKUP, &id, Some(&step_up_token("alice")), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    let bytes = hex::decode(view["backup"].as_str().unwrap()).unwrap();
    let backup = Backup::from_bytes(&bytes).unwrap();
    let recovery = k256::SecretKey::from_slice(&RECOVERY_SECRET).unwrap();
    let server_public = key.public_share(Role::B);
    backup
        .verify(&server_public, &recovery.public_key())
        .unwrap();
    assert_eq!(
        view["public_share"],
        hex::encode(mpc_core::wire::encode_point(&server_public))
    );
    let recovered = backup.decrypt(&recovery).unwrap();
    assert_eq!(recovered.public_key().to_projective(), server_public);
    let view = key_view(rest, key, "alice").await;
    assert_eq!(view["backed_up"], true);
    recovered
}

async fn export_recomputes_the_public_key(rest: &Rest, key: &KeyShare) -> k256::SecretKey {
    let id = key.key_id().to_string();
    let onetime = k256::SecretKey::random(&mut rand_core::OsRng);
    let onetime_hex = hex::encode(onetime.public_key().to_encoded_point(true).as_bytes());
    let (status, view) = rest
        .post(
            EXPORT,
            &id,
            Some(&step_up_token("alice")),
            json!({ "onetime_public_key": onetime_hex, "epoch": key.epoch() }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    let ciphertext =
        ExportCiphertext::from_bytes(&hex::decode(view["ciphertext"].as_str().unwrap()).unwrap())
            .unwrap();
    let full = import_export(key, &onetime, &ciphertext).unwrap();
    // Checked by libsecp256k1: the exported secret's public key is the key's.
    let secp = secp256k1::Secp256k1::new();
    let secret = secp256k1::SecretKey::from_slice(&full.to_bytes()).unwrap();
    let public = secp256k1::PublicKey::from_secret_key(&secp, &secret);
    assert_eq!(
        public.serialize().to_vec(),
        key.public_key().to_encoded_point(true).as_bytes().to_vec()
    );
    let view = key_view(rest, key, "alice").await;
    assert_eq!(view["exported"], true);
    full
}

/// The recovered server share, with the client's, is the signing key: the
/// client's part (full - recovered) matches its public share, and the sum
/// signs a message that libsecp256k1 verifies under the public key.
fn recovered_share_signs(key: &KeyShare, recovered: &k256::SecretKey, full: &k256::SecretKey) {
    let x_b = *recovered.to_nonzero_scalar();
    let x_a = *full.to_nonzero_scalar() - x_b;
    assert_eq!(
        k256::ProjectivePoint::GENERATOR * x_a,
        key.public_share(Role::A)
    );
    let signing = k256::ecdsa::SigningKey::from_bytes(&(x_a + x_b).to_bytes()).unwrap();
    let prehash = Prehash::sha256(b"signed with the recovered share");
    let (signature, recovery_id) = signing
        .sign_prehash_recoverable(prehash.as_bytes())
        .unwrap();
    verify_with_libsecp(
        &key.public_key(),
        &prehash,
        &mpc_core::SignatureOutput {
            signature,
            recovery_id,
        },
    );
}

async fn body_errors(rest: &Rest, key: &KeyShare) {
    let id = key.key_id().to_string();
    let step_up = step_up_token("alice");
    for (method, route) in [
        (Method::POST, BACKUP),
        (Method::POST, EXPORT),
        (Method::DELETE, KEY),
    ] {
        let cases: Vec<(Body, u16)> = vec![
            (Body::Raw("application/json", b"{".to_vec()), 400),
            (Body::Raw("", b"{}".to_vec()), 415),
            (
                Body::Json(json!({ "onetime_public_key": 5, "recovery_public_key": 5 })),
                422,
            ),
            (
                Body::Raw(
                    "application/json",
                    vec![b' '; mpc_server::rest::MAX_BODY_BYTES + 1],
                ),
                413,
            ),
        ];
        for (body, want) in cases {
            let (status, problem) = rest
                .call(method.clone(), route, &id, Some(&step_up), body)
                .await;
            assert_eq!(status.as_u16(), want, "{method} {route}: {problem}");
        }
    }
    // Revocation names the key again.
    for confirm in ["not-hex".to_owned(), "ab".repeat(32)] {
        let (status, problem) = rest
            .call(
                Method::DELETE,
                KEY,
                &id,
                Some(&step_up),
                Body::Json(json!({ "confirm": confirm })),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert_eq!(problem["code"], "invalid_request");
    }
    let (status, problem) = rest
        .post(
            EXPORT,
            &id,
            Some(&step_up),
            json!({ "onetime_public_key": "zz" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["code"], "invalid_request");
    let (status, problem) = rest
        .post(
            BACKUP,
            &id,
            Some(&step_up),
            json!({ "recovery_public_key": onetime_hex() }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(problem["code"], "recovery_key_not_allowed");
    let (status, problem) = rest
        .post(
            EXPORT,
            &id,
            Some(&step_up),
            json!({ "onetime_public_key": onetime_hex(), "epoch": 99 }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(problem["code"], "epoch_unavailable");
    let (status, problem) = rest.get(KEY, "not-hex", Some(&token("alice"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(problem["code"], "key_not_found");
}

async fn rotation_then_refresh(rest: &Rest, server: &TestServer, key: &KeyShare) -> KeyShare {
    let id = key.key_id().to_string();
    let client = server.client("alice");
    let (status, view) = rest
        .post(ROTATE, &id, Some(&token("alice")), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["status"], "rotation_required");
    let e = client
        .sign(key, Prehash::sha256(b"refused"))
        .await
        .unwrap_err();
    assert_eq!(e.close_code(), Some(CloseCode(4103)), "{e}");
    let e = client.presign(key).await.unwrap_err();
    assert_eq!(e.close_code(), Some(CloseCode(4103)), "{e}");
    let shares = Arc::new(Mutex::new(ClientShares::new(key)));
    let refreshed = ClientShares::refresh(&shares, &client).await.unwrap();
    sign_and_verify(&client, &refreshed, b"after rotation").await;
    let view = key_view(rest, key, "alice").await;
    assert_eq!(view["status"], "active");
    assert_eq!(view["epoch"], 1);
    refreshed
}

async fn revocation(rest: &Rest, server: &TestServer) {
    let client = server.client("alice");
    let doomed = client.keygen().await.unwrap();
    let id = doomed.key_id().to_string();
    let (status, view) = rest
        .call(
            Method::DELETE,
            KEY,
            &id,
            Some(&step_up_token("alice")),
            Body::Json(json!({ "confirm": id })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["status"], "revoked");
    let e = client
        .sign(&doomed, Prehash::sha256(b"revoked"))
        .await
        .unwrap_err();
    assert_eq!(e.close_code(), Some(CloseCode(4101)), "{e}");
    let step_up = step_up_token("alice");
    for (route, body) in [
        (BACKUP, json!({})),
        (EXPORT, json!({ "onetime_public_key": onetime_hex() })),
        (ROTATE, json!({})),
    ] {
        let (status, problem) = rest.post(route, &id, Some(&step_up), body).await;
        assert_eq!(status, StatusCode::CONFLICT, "{route}");
        assert_eq!(problem["code"], "key_revoked");
    }
}

async fn rate_limits(seen: &Seen) {
    let db = Db::sqlite();
    let server = launch(&db)
        .env("MPC_RATE_LIMIT_PER_MINUTE", "60")
        .env("MPC_SENSITIVE_RATE_LIMIT_PER_HOUR", "1")
        .start();
    let rest = Rest::new(&server, seen);
    let key = server.client("rita").keygen().await.unwrap();
    let id = key.key_id().to_string();
    // The stricter backup / export quota.
    let step_up = step_up_token("rita");
    let (status, _) = rest.post(BACKUP, &id, Some(&step_up), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, problem) = rest.post(BACKUP, &id, Some(&step_up), json!({})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(problem["code"], "rate_limited");
    let (status, _) = rest
        .post(
            EXPORT,
            &id,
            Some(&step_up),
            json!({ "onetime_public_key": onetime_hex() }),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // The per-subject quota, on every route.
    let rita = token("rita");
    let mut limited = None;
    for _ in 0..70 {
        let (status, problem) = rest.get("/v1/keys", "", Some(&rita)).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(problem);
            break;
        }
    }
    let problem = limited.expect("no 429 within the quota + 10 requests");
    let retry_after = problem["retry_after"].as_u64().unwrap();
    assert!((1..=2).contains(&retry_after), "{problem}");
    for (method, route, body) in keyed_routes(&id) {
        let (status, _) = rest.call(method, route, &id, Some(&rita), body).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{route}");
    }
    // Other users are unaffected, and the limit recovers after Retry-After.
    let (status, _) = rest.get("/v1/keys", "", Some(&token("other"))).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_secs(retry_after + 1)).await;
    let (status, _) = rest.get("/v1/keys", "", Some(&rita)).await;
    assert_eq!(status, StatusCode::OK);
    server.kill();

    // The per-IP quota applies before authentication.
    let server = launch(&db)
        .env("MPC_RATE_LIMIT_IP_PER_MINUTE", "30")
        .start();
    let rest = Rest::new(&server, seen);
    let mut statuses = Vec::new();
    for _ in 0..40 {
        statuses.push(rest.get("/v1/keys", "", None).await.0);
    }
    assert!(statuses.contains(&StatusCode::UNAUTHORIZED));
    assert_eq!(statuses.last(), Some(&StatusCode::TOO_MANY_REQUESTS));
}

/// Follows `next_cursor` through a listing at `limit` rows a page; the
/// rows' `field` values in order.
async fn all_pages(
    rest: &Rest,
    template: &str,
    key_id: &str,
    owner: &str,
    limit: u32,
    field: &str,
) -> Vec<Value> {
    let list = if template == AUDIT { "entries" } else { "keys" };
    let mut rows = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(cursor) => format!("?limit={limit}&cursor={cursor}"),
            None => format!("?limit={limit}"),
        };
        let (status, page) = rest
            .get(&format!("{template}{query}"), key_id, Some(&token(owner)))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let page_rows = page[list].as_array().unwrap();
        assert!(page_rows.len() <= usize::try_from(limit).unwrap());
        rows.extend(page_rows.iter().map(|row| row[field].clone()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => {
                assert!(page["next_cursor"].is_null(), "{page}");
                return rows;
            }
        }
        assert!(rows.len() < 1000, "the paging never ends");
    }
}

/// `GET /v1/keys` and the audit log are paged: following the cursors
/// returns every key (entry) once, in order, including a key created
/// between pages; another owner's keys never appear; `limit` beyond 1..200
/// and malformed cursors (including one of the other listing) are 400s.
async fn pagination(seen: &Seen) {
    let db = Db::sqlite();
    let server = launch(&db).start();
    let rest = Rest::new(&server, seen);
    let client = server.client("paula");
    let mut keys = Vec::new();
    for _ in 0..3 {
        let key = client.keygen().await.unwrap();
        sign_and_verify(&client, &key, b"pages").await;
        keys.push(key.key_id().to_string());
    }
    let other = server.client("otto").keygen().await.unwrap();
    let listed = all_pages(&rest, "/v1/keys", "", "paula", 2, "key_id").await;
    assert_eq!(listed, keys.iter().map(|k| json!(k)).collect::<Vec<_>>());
    // A key created between pages appears once, after the others.
    let (_, first) = rest
        .get("/v1/keys?limit=2", "", Some(&token("paula")))
        .await;
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let late = client.keygen().await.unwrap();
    sign_and_verify(&client, &late, b"late").await;
    let (_, rest_of_it) = rest
        .get(
            &format!("/v1/keys?limit=2&cursor={cursor}"),
            "",
            Some(&token("paula")),
        )
        .await;
    let tail: Vec<&Value> = rest_of_it["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["key_id"])
        .collect();
    assert_eq!(tail, [&json!(keys[2]), &json!(late.key_id().to_string())]);
    assert!(!listed.contains(&json!(other.key_id().to_string())));
    // The audit log, one entry a page, is the whole log.
    let whole = all_pages(&rest, AUDIT, &keys[0], "paula", 200, "id").await;
    let paged = all_pages(&rest, AUDIT, &keys[0], "paula", 1, "id").await;
    assert!(whole.len() >= 2, "{whole:?}");
    assert_eq!(paged, whole);
    // Refusals.
    let audit_cursor = {
        let (_, page) = rest
            .get(&format!("{AUDIT}?limit=1"), &keys[0], Some(&token("paula")))
            .await;
        page["next_cursor"].as_str().unwrap().to_owned()
    };
    for (template, key_id, query, code) in [
        ("/v1/keys", "", "?limit=201".to_owned(), "invalid_request"),
        ("/v1/keys", "", "?limit=0".to_owned(), "invalid_request"),
        ("/v1/keys", "", "?limit=-1".to_owned(), "invalid_request"),
        (
            "/v1/keys",
            "",
            "?cursor=not-a-cursor".to_owned(),
            "invalid_cursor",
        ),
        (
            "/v1/keys",
            "",
            format!("?cursor={audit_cursor}"),
            "invalid_cursor",
        ),
        (
            AUDIT,
            keys[0].as_str(),
            format!("?cursor={cursor}"),
            "invalid_cursor",
        ),
        (
            AUDIT,
            keys[0].as_str(),
            "?limit=1000".to_owned(),
            "invalid_request",
        ),
    ] {
        let (status, problem) = rest
            .get(&format!("{template}{query}"), key_id, Some(&token("paula")))
            .await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{template}{query}: {problem}"
        );
        assert_eq!(problem["code"], code, "{template}{query}");
    }
}

async fn readiness_follows_the_database(seen: &Seen) -> bool {
    if skip_postgres() {
        return false;
    }
    let db = Db::postgres().await;
    let server = launch(&db).start();
    let rest = Rest::new(&server, seen);
    assert_eq!(rest.get("/readyz", "", None).await.0, StatusCode::OK);
    // The database disappears under the running server.
    let Db::Postgres(url) = &db else {
        unreachable!()
    };
    let (base, name) = url.rsplit_once('/').unwrap();
    use sqlx::Connection;
    let admin = format!("{base}/mpc_test");
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .unwrap();
    let (status, problem) = rest.get("/readyz", "", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert_eq!(problem["code"], "unavailable");
    // Liveness is not readiness.
    assert_eq!(rest.get("/healthz", "", None).await.0, StatusCode::OK);
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_and_every_documented_response() {
    bounded(async {
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        let db = Db::sqlite();
        let server = launch(&db).start();
        let rest = Rest::new(&server, &seen);
        assert_eq!(rest.get("/healthz", "", None).await.0, StatusCode::OK);
        assert_eq!(rest.get("/readyz", "", None).await.0, StatusCode::OK);
        let client = server.client("alice");
        let key = client.keygen().await.unwrap();
        sign_and_verify(&client, &key, b"before REST").await;
        let (status, list) = rest.get("/v1/keys", "", Some(&token("alice"))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list["keys"][0]["key_id"], key.key_id().to_string());
        assert_eq!(list["keys"][0]["xpub"], key.xpub().to_string());
        assert!(list["keys"][0]["last_used_at"].is_i64());

        refused_without_valid_tokens(&rest, &key).await;
        let recovered = backup_verifies_and_decrypts(&rest, &key).await;
        let full = export_recomputes_the_public_key(&rest, &key).await;
        recovered_share_signs(&key, &recovered, &full);
        body_errors(&rest, &key).await;
        let _refreshed = rotation_then_refresh(&rest, &server, &key).await;
        revocation(&rest, &server).await;
        let (status, audit) = rest
            .get(AUDIT, &key.key_id().to_string(), Some(&token("alice")))
            .await;
        assert_eq!(status, StatusCode::OK);
        let events: Vec<&str> = audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event"].as_str().unwrap())
            .collect();
        for want in [
            "key.created",
            "sign",
            "key.backed_up",
            "key.exported",
            "key.rotation_requested",
            "key.refreshed",
        ] {
            assert!(events.contains(&want), "{want} missing from {events:?}");
        }
        // Unknown routes and methods are problems too.
        let (status, _) = rest.get("/v2/nothing", "", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = rest
            .call(Method::PUT, "/v1/keys", "", None, Body::None)
            .await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

        // The served document is the committed one.
        let served = reqwest::get(format!("{}/openapi.json", server.rest_url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let committed =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json"))
                .unwrap();
        assert_eq!(
            served.trim(),
            committed.trim(),
            "docs/openapi.json is stale: regenerate with \
             `cargo run -p mpc-server -- --print-openapi > docs/openapi.json`"
        );
        server.kill();

        rate_limits(&seen).await;
        pagination(&seen).await;
        let readiness_checked = readiness_follows_the_database(&seen).await;

        // Every response the document promises was produced above.
        let spec: Value = serde_json::from_str(&served).unwrap();
        let seen = seen.lock().unwrap().clone();
        let mut missing = Vec::new();
        for (path, operations) in spec["paths"].as_object().unwrap() {
            for (method, operation) in operations.as_object().unwrap() {
                for status in operation["responses"].as_object().unwrap().keys() {
                    let status: u16 = status.parse().unwrap();
                    if !readiness_checked && path == "/readyz" && status == 503 {
                        continue;
                    }
                    if !seen.contains(&(method.clone(), path.clone(), status)) {
                        missing.push(format!("{method} {path} {status}"));
                    }
                }
            }
        }
        assert!(
            missing.is_empty(),
            "documented but never reached: {missing:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_sessions_by_protocol_and_outcome() {
    bounded(async {
        let db = Db::sqlite();
        let server = launch(&db).start();
        let client = server.client("mia");
        let key = client.keygen().await.unwrap();
        sign_and_verify(&client, &key, b"metrics").await;
        let _ = client
            .sign(
                &KeyShare::from_bytes(&key.to_bytes()).unwrap(),
                Prehash::sha256(b"x"),
            )
            .await
            .unwrap();
        let e = server
            .client("nobody")
            .sign(&key, Prehash::sha256(b"y"))
            .await
            .unwrap_err();
        assert_eq!(e.close_code(), Some(CloseCode::NOT_FOUND));
        let wants = [
            r#"mpc_sessions_total{protocol="keygen",outcome="ok"} 1"#,
            r#"mpc_sessions_total{protocol="sign",outcome="ok"} 2"#,
            r#"mpc_sessions_total{protocol="sign",outcome="rejected"} 1"#,
            "mpc_open_sessions 0",
            "mpc_session_duration_seconds_count{protocol=\"sign\"} 2",
            r#"mpc_session_bytes_total{protocol="sign",direction="sent"}"#,
        ];
        // The server counts a session as it closes, just after the client
        // returned: wait (bounded) until the counts show.
        let mut text = String::new();
        for _ in 0..200 {
            text = reqwest::get(format!("{}/metrics", server.rest_url))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if wants.iter().all(|want| text.contains(want)) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        for want in wants {
            assert!(text.contains(want), "{want} not in:\n{text}");
        }
        // No log line carries a token.
        let token = token("mia");
        assert!(server.logs().iter().all(|line| !line.contains(&token)));
    })
    .await;
}
