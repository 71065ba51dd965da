//! The real server binary against rows written back by SQL while it runs
//! (PROTOCOL.md §18.4), on SQLite and on PostgreSQL (there across two
//! server processes): a claimed presignature's row restored does not give a
//! second online signature (which, with the same `r`, would give away the
//! private key), and a refreshed-away epoch restored together with the key
//! row does not sign. The client gets no signature; the server logs the
//! incident; the key keeps signing with its current epoch.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::common;

use std::sync::{Arc, Mutex};

use common::*;
use mpc_core::sign::ClaimSet;
use mpc_core::{Prehash, Presignature};
use mpc_transport_ws::CloseCode;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Connection, Row};

async fn raw(db: &Db) -> AnyConnection {
    sqlx::any::install_default_drivers();
    AnyConnection::connect(&db.url()).await.unwrap()
}

/// A copy of the row `sql` selects (its `$n` bound to `keys` in order),
/// as a backup holds it.
async fn copy_row(conn: &mut AnyConnection, sql: &str, keys: &[&str]) -> AnyRow {
    let mut query = sqlx::query(sql);
    for key in keys {
        query = query.bind(*key);
    }
    query.fetch_one(conn).await.unwrap()
}

async fn execute(conn: &mut AnyConnection, sql: &str, binds: Vec<Bind>) {
    let mut query = sqlx::query(sql);
    for bind in binds {
        query = match bind {
            Bind::Text(v) => query.bind(v),
            Bind::Int(v) => query.bind(v),
            Bind::Bytes(v) => query.bind(v),
        };
    }
    query.execute(conn).await.unwrap();
}

enum Bind {
    Text(String),
    Int(i64),
    Bytes(Vec<u8>),
}

/// Whether one of the servers logs the incident; polled for a bounded time
/// (its stderr is read by another thread, possibly after the close).
async fn rollback_logged(servers: &[&TestServer]) -> bool {
    for _ in 0..200 {
        let logged = servers
            .iter()
            .any(|s| s.logs().iter().any(|l| l.contains("ROLLBACK DETECTED")));
        if logged {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

async fn restored_rows_do_not_sign(db: &Db, first: &TestServer, second: &TestServer) {
    let mut conn = raw(db).await;
    let client = first.client("alice");
    let share = client.keygen().await.unwrap();
    let key_id = share.key_id().to_string();

    // --- a claimed presignature's row written back ---
    let presignature = client.presign(&share).await.unwrap();
    let session = hex::encode(presignature.session_id().0);
    // The client keeps a copy of its half, as a replaying client would.
    let client_copy = presignature.to_bytes().to_vec();
    let backup = copy_row(
        &mut conn,
        "SELECT session_id, key_id, epoch, sealed, created_at FROM presignatures \
         WHERE session_id = $1",
        &[&session],
    )
    .await;
    let first_hash = Prehash::sha256(b"first online signature");
    let out = client
        .online_sign(&share, presignature, first_hash, &mut ClaimSet::new())
        .await
        .unwrap();
    verify_with_libsecp(&share.public_key(), &first_hash, &out);

    execute(
        &mut conn,
        "DELETE FROM presignatures WHERE session_id = $1",
        vec![Bind::Text(session.clone())],
    )
    .await;
    execute(
        &mut conn,
        "INSERT INTO presignatures (session_id, key_id, epoch, sealed, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
        vec![
            Bind::Text(backup.get("session_id")),
            Bind::Text(backup.get("key_id")),
            Bind::Int(backup.get("epoch")),
            Bind::Bytes(backup.get("sealed")),
            Bind::Int(backup.get("created_at")),
        ],
    )
    .await;
    let replayed = Presignature::from_bytes(&client_copy).unwrap();
    let second_hash = Prehash::sha256(b"second online signature, same r");
    let refused = second
        .client("alice")
        .online_sign(&share, replayed, second_hash, &mut ClaimSet::new())
        .await;
    let error = refused.expect_err("a restored presignature signed a second time");
    assert_eq!(error.close_code(), Some(CloseCode::NOT_FOUND), "{error}");
    assert!(rollback_logged(&[first, second]).await);
    // The refused claim erased the restored ciphertext again.
    let sealed: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT sealed FROM presignatures WHERE session_id = $1")
            .bind(session.as_str())
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(sealed.is_none());

    // --- a refreshed-away epoch written back with the key row ---
    let epoch0 = copy_row(
        &mut conn,
        "SELECT state, sealed, created_at FROM shares WHERE key_id = $1 AND epoch = 0",
        &[&key_id],
    )
    .await;
    let shares = Arc::new(Mutex::new(ClientShares::new(&share)));
    let refreshed = ClientShares::refresh(&shares, &client).await.unwrap();
    assert_eq!(refreshed.epoch(), 1);
    execute(
        &mut conn,
        "UPDATE keys SET epoch = 0 WHERE key_id = $1",
        vec![Bind::Text(key_id.clone())],
    )
    .await;
    execute(
        &mut conn,
        "INSERT INTO shares (key_id, epoch, state, sealed, created_at) VALUES ($1, 0, $2, $3, $4)",
        vec![
            Bind::Text(key_id.clone()),
            Bind::Text(epoch0.get("state")),
            Bind::Bytes(epoch0.get("sealed")),
            Bind::Int(epoch0.get("created_at")),
        ],
    )
    .await;
    let old_hash = Prehash::sha256(b"with the old epoch");
    let error = second
        .client("alice")
        .sign(&share, old_hash)
        .await
        .expect_err("a restored old epoch signed");
    assert_eq!(error.close_code(), Some(CloseCode::NOT_FOUND), "{error}");

    // The current epoch still signs, with the key row still rolled back.
    sign_and_verify(&first.client("alice"), &refreshed, b"after the incident").await;
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_rows_do_not_sign_on_sqlite() {
    bounded(async {
        let db = Db::sqlite();
        let server = Launch::new(&db).start();
        restored_rows_do_not_sign(&db, &server, &server).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_rows_do_not_sign_on_postgres_across_two_servers() {
    if skip_postgres() {
        return;
    }
    bounded(async {
        let db = Db::postgres().await;
        let one = Launch::new(&db).start();
        let two = Launch::new(&db).start();
        restored_rows_do_not_sign(&db, &one, &two).await;
    })
    .await;
}
