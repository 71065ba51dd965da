//! The real server binary on 127.0.0.1, with SQLite and with PostgreSQL:
//! keygen, sign, sign under a path, presign + online sign, refresh, sign
//! again; every signature checked with libsecp256k1 under the right key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::common;
#[path = "shared/wal.rs"]
mod wal;

use std::sync::{Arc, Mutex};

use common::*;
use mpc_core::sign::ClaimSet;
use mpc_core::Prehash;
use mpc_transport_ws::{CloseCode, TransportError};

async fn lifecycle(db: &Db) {
    let server = Launch::new(db).start();
    let client = server.client("alice");
    let share = client.keygen().await.unwrap();
    assert_eq!(share.epoch(), 0);
    sign_and_verify(&client, &share, b"first").await;

    // Under a BIP32 path: verifies under the derived child key.
    let child_path = path("m/0/5");
    let prehash = Prehash::sha256(b"child");
    let out = client
        .sign_with_path(&share, prehash, &child_path)
        .await
        .unwrap();
    let (child_key, _) = share.derive(&child_path).unwrap();
    verify_with_libsecp(&child_key, &prehash, &out);

    // Presign, then the online step; the presignature is used once only.
    let presignature = client.presign(&share).await.unwrap();
    let session_id = presignature.session_id();
    let prehash = Prehash::sha256(b"presigned");
    let out = client
        .online_sign(&share, presignature, prehash, &mut ClaimSet::new())
        .await
        .unwrap();
    verify_with_libsecp(&share.public_key(), &prehash, &out);
    let again = client.presign(&share).await.unwrap();
    let online = mpc_core::OnlineSign::new(&share, again, prehash, &mut ClaimSet::new()).unwrap();
    // The same client-side values with the old id cannot be replayed: the
    // server has no unused presignature under that id.
    let replay = client
        .run(
            mpc_transport_ws::Operation::OnlineSign {
                key_id: *share.key_id(),
                presignature: session_id,
                prehash,
            },
            move |_| online,
        )
        .await
        .unwrap_err();
    assert_eq!(replay.close_code(), Some(CloseCode::NOT_FOUND), "{replay}");

    // Refresh; the new epoch signs, the public key is unchanged.
    let shares = Arc::new(Mutex::new(ClientShares::new(&share)));
    let refreshed = ClientShares::refresh(&shares, &client).await.unwrap();
    assert_eq!(refreshed.epoch(), 1);
    assert_eq!(refreshed.public_key(), share.public_key());
    sign_and_verify(&client, &refreshed, b"after refresh").await;
    // The old epoch is gone on the server.
    let old = client
        .sign(&share, Prehash::sha256(b"old epoch"))
        .await
        .unwrap_err();
    assert_eq!(old.close_code(), Some(CloseCode(4104)), "{old}");

    // A presignature made under the new epoch, under a path.
    let presignature = client
        .presign_with_path(&refreshed, &child_path)
        .await
        .unwrap();
    let prehash = Prehash::sha256(b"presigned child");
    let out = client
        .online_sign(&refreshed, presignature, prehash, &mut ClaimSet::new())
        .await
        .unwrap();
    verify_with_libsecp(&child_key, &prehash, &out);
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_on_sqlite() {
    bounded(lifecycle(&Db::sqlite())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_on_postgres() {
    if skip_postgres() {
        return;
    }
    bounded(async { lifecycle(&Db::postgres().await).await }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_postgres() {
    if skip_postgres() {
        return;
    }
    bounded(async {
        let db = Db::postgres().await;
        let one = Launch::new(&db).start();
        let two = Launch::new(&db).start();
        let share = one.client("bob").keygen().await.unwrap();
        sign_and_verify(&two.client("bob"), &share, b"on the other replica").await;
        let presignature = one.client("bob").presign(&share).await.unwrap();
        let prehash = Prehash::sha256(b"presigned on one, used on two");
        let out = two
            .client("bob")
            .online_sign(&share, presignature, prehash, &mut ClaimSet::new())
            .await
            .unwrap();
        verify_with_libsecp(&share.public_key(), &prehash, &out);
        let shares = Arc::new(Mutex::new(ClientShares::new(&share)));
        let refreshed = ClientShares::refresh(&shares, &two.client("bob"))
            .await
            .unwrap();
        sign_and_verify(&one.client("bob"), &refreshed, b"refreshed on two").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_starts_on_a_fresh_directory_and_its_token_works() {
    bounded(async {
        let db = Db::sqlite();
        let server = Launch::new(&db)
            .without_env("MPC_JWT_SECRET")
            .without_env("MPC_MASTER_KEY")
            .arg("--dev")
            .start();
        // The token is printed on stdout, after the banner line.
        let token = {
            let mut token = None;
            for _ in 0..100 {
                let logs = server.logs();
                token = logs
                    .iter()
                    .filter_map(|line| line.strip_prefix("stdout: "))
                    .map(str::trim)
                    .find(|line| line.starts_with("eyJ"))
                    .map(str::to_owned);
                if token.is_some() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            token.expect("dev mode printed no token")
        };
        let client = mpc_transport_ws::Client::new(server.ws_url.clone())
            .with_bearer_token(token.clone())
            .with_config(client_config());
        let share = client.keygen().await.unwrap();
        sign_and_verify(&client, &share, b"dev mode").await;
        // The generated secrets are private to the owner, and no log line
        // carries the token.
        let secrets = db.data_dir().unwrap().join("dev-secrets.json");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secrets).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "dev secrets readable by others: {mode:o}");
        assert!(server
            .logs()
            .iter()
            .filter(|line| !line.starts_with("stdout: "))
            .all(|line| !line.contains(&token)));
        // A restart reuses the stored secrets: the same token still works.
        server.kill();
        let server = Launch::new(&db)
            .without_env("MPC_JWT_SECRET")
            .without_env("MPC_MASTER_KEY")
            .arg("--dev")
            .start();
        let client = mpc_transport_ws::Client::new(server.ws_url.clone())
            .with_bearer_token(token)
            .with_config(client_config());
        sign_and_verify(&client, &share, b"after restart").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_start_without_auth_or_master_key() {
    let db = Db::sqlite();
    let (code, lines) = Launch::new(&db)
        .without_env("MPC_JWT_SECRET")
        .try_start()
        .err()
        .expect("started without auth config");
    assert_ne!(code, Some(0));
    assert!(
        lines.iter().any(|l| l.contains("MPC_JWT_SECRET")),
        "{lines:?}"
    );
    let (code, lines) = Launch::new(&db)
        .without_env("MPC_MASTER_KEY")
        .try_start()
        .err()
        .expect("started without a master key");
    assert_ne!(code, Some(0));
    assert!(
        lines.iter().any(|l| l.contains("MPC_MASTER_KEY")),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_server_cleanly() {
    bounded(async {
        let db = Db::sqlite();
        let server = Launch::new(&db).start();
        let share = server.client("carol").keygen().await.unwrap();
        let status = server.terminate();
        assert!(status.success(), "{status:?}");
        let server = Launch::new(&db).start();
        sign_and_verify(&server.client("carol"), &share, b"after a clean stop").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_master_key_is_a_clear_error_at_start() {
    bounded(async {
        let db = Db::sqlite();
        let server = Launch::new(&db).start();
        server.client("dave").keygen().await.unwrap();
        server.kill();
        let other = "00".repeat(32);
        let (code, lines) = Launch::new(&db)
            .env("MPC_MASTER_KEY", &other)
            .try_start()
            .err()
            .expect("started with the wrong master key");
        assert_ne!(code, Some(0));
        assert!(
            lines
                .iter()
                .any(|l| l.contains("MPC_MASTER_KEY does not match")),
            "{lines:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raw_database_holds_no_share_bytes() {
    bounded(async {
        let db = Db::sqlite();
        let server = Launch::new(&db).start();
        let client = server.client("erin");
        let share = client.keygen().await.unwrap();
        let presignature = client.presign(&share).await.unwrap();
        let client_presignature = presignature.to_bytes();
        let presignature_id = presignature.session_id().0;
        drop(presignature);
        server.kill();

        // The server's own share, read back through the vault.
        let kek = Arc::new(mpc_server::seal::LocalKek::from_hex(MASTER_KEY).unwrap());
        let vault = mpc_server::vault::Vault::open(&db.url(), kek)
            .await
            .unwrap();
        let record = vault.key(share.key_id()).await.unwrap().unwrap();
        let server_share = vault.share(&record, 0).await.unwrap().unwrap().share;
        let secrets = [
            server_share.to_bytes().to_vec(),
            share.to_bytes().to_vec(),
            client_presignature.to_vec(),
        ];
        drop(vault);
        // Public values the key table holds in the clear; a window inside
        // one of them is not a leak.
        use k256::elliptic_curve::sec1::ToEncodedPoint;
        // (The key row stores the public key and chain code side by side,
        // as the share encoding does.)
        let public: Vec<Vec<u8>> = vec![
            [
                share.public_key().to_encoded_point(true).as_bytes(),
                share.chain_code(),
            ]
            .concat(),
            share.key_id().0.to_vec(),
            presignature_id.to_vec(),
        ];
        let is_public = |window: &[u8]| public.iter().any(|p| p.windows(16).any(|w| w == window));
        let mut raw = Vec::new();
        for entry in std::fs::read_dir(db.data_dir().unwrap()).unwrap() {
            let path = entry.unwrap().path();
            if path.to_string_lossy().contains("mpc.db") {
                // The WAL and shared-memory files may vanish as the last
                // connection closes.
                if let Ok(bytes) = std::fs::read(&path) {
                    raw.extend_from_slice(&bytes);
                }
            }
        }
        assert!(raw.len() > 4096);
        for (which, secret) in secrets.iter().enumerate() {
            // No 16-byte window of any share encoding appears on disk
            // (shares hold many 16-byte OT seeds).
            for (offset, window) in secret.windows(16).enumerate().step_by(8) {
                if window.iter().all(|b| *b == 0) || is_public(window) {
                    continue;
                }
                assert!(
                    !raw.windows(16).any(|w| w == window),
                    "bytes {offset}.. of secret {which} (of {}) found in the database file",
                    secret.len()
                );
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_refresh_of_the_same_key_is_refused_while_one_runs() {
    bounded(async {
        let db = Db::sqlite();
        let server = Launch::new(&db).start();
        let client = server.client("frank");
        let share = client.keygen().await.unwrap();
        let one = Arc::new(Mutex::new(ClientShares::new(&share)));
        let two = Arc::new(Mutex::new(ClientShares::new(&share)));
        let (a, b) = tokio::join!(
            ClientShares::refresh(&one, &client),
            ClientShares::refresh(&two, &client)
        );
        // Either both ran one after the other (the second then starts from
        // an epoch the server finalized away) or one was refused; never two
        // different shares of one epoch.
        let ok = [a.is_ok(), b.is_ok()];
        assert!(ok.contains(&true), "{a:?} {b:?}");
        let refused = [&a, &b]
            .into_iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| {
                matches!(
                    e.close_code(),
                    Some(CloseCode(4106)) | Some(CloseCode(4104))
                )
            });
        assert!(refused, "{a:?} {b:?}");
        let winner = if a.is_ok() { one } else { two };
        let current = winner.lock().unwrap().current();
        sign_and_verify(&client, &current, b"after racing refreshes").await;
        let _ = TransportError::Closed;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_key_refuses_to_sign_until_refreshed() {
    bounded(async {
        let db = Db::sqlite();
        let server = Launch::new(&db).start();
        let client = server.client("gina");
        let share = client.keygen().await.unwrap();
        let error = sign_maliciously(&client, &share).await;
        assert!(error.is_ban(), "{error}");
        // Signing and presigning are refused, across a restart too.
        server.kill();
        let server = Launch::new(&db).start();
        let client = server.client("gina");
        let e = client
            .sign(&share, Prehash::sha256(b"banned"))
            .await
            .unwrap_err();
        assert_eq!(e.close_code(), Some(CloseCode(4102)), "{e}");
        let e = client.presign(&share).await.unwrap_err();
        assert_eq!(e.close_code(), Some(CloseCode(4102)), "{e}");
        // A refresh clears the ban; the new epoch signs.
        let shares = Arc::new(Mutex::new(ClientShares::new(&share)));
        let refreshed = ClientShares::refresh(&shares, &client).await.unwrap();
        sign_and_verify(&client, &refreshed, b"after the ban").await;
    })
    .await;
}

/// A signature is one commit (one fsync) on the server's database: its
/// last-use time and audit entry together. An online signature is two:
/// the presignature's claim, durable before the server's only message
/// leaves, then the use (PROTOCOL.md §18.5). Counted in SQLite's WAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_is_one_commit_on_sqlite() {
    bounded(async {
        let db = Db::sqlite();
        let file = db.data_dir().unwrap().join("mpc.db");
        let server = Launch::new(&db).start();
        let client = server.client("alice");
        let share = client.keygen().await.unwrap();
        // Confirmed by the keygen's outcome: the first signature activates
        // nothing.
        sign_and_verify(&client, &share, b"first").await;

        let (salt, before) = wal::wal_commits(&file);
        sign_and_verify(&client, &share, b"one commit").await;
        let (salt_after, after) = wal::wal_commits(&file);
        assert_eq!(
            salt_after, salt,
            "the WAL was restarted: counts not comparable"
        );
        assert_eq!(after - before, 1, "commits for one signature");

        let presignature = client.presign(&share).await.unwrap();
        let (_, before) = wal::wal_commits(&file);
        let prehash = Prehash::sha256(b"online");
        let out = client
            .online_sign(&share, presignature, prehash, &mut ClaimSet::new())
            .await
            .unwrap();
        verify_with_libsecp(&share.public_key(), &prehash, &out);
        let (salt_after, after) = wal::wal_commits(&file);
        assert_eq!(
            salt_after, salt,
            "the WAL was restarted: counts not comparable"
        );
        assert_eq!(after - before, 2, "commits for one online signature");
    })
    .await;
}

/// Signatures that finish together, whose uses are committed in groups
/// (PROTOCOL.md §18.5), are each durable once their client has them: the
/// server is killed (SIGKILL) right after 16 concurrent signatures
/// returned, and every one has its audit entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_returned_signature_is_audited_after_a_kill() {
    bounded(async {
        let db = Db::sqlite();
        let server = Launch::new(&db).start();
        let client = server.client("alice");
        let share = client.keygen().await.unwrap();
        let signatures = futures_util::future::join_all((0..16).map(|i| {
            let (client, share) = (&client, &share);
            async move {
                let prehash = Prehash::sha256(format!("kill {i}").as_bytes());
                client.sign(share, prehash).await
            }
        }))
        .await;
        server.kill();
        for signature in &signatures {
            assert!(signature.is_ok(), "{signature:?}");
        }
        let signed = "SELECT COUNT(*) FROM audit_log WHERE event = 'sign' AND key_id = $1";
        assert_eq!(count(&db, signed, &share).await, 16);
    })
    .await;
}
