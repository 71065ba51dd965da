//! Authentication and ownership on the WebSocket: no token, an expired
//! one, a wrong audience, a wrong signature, another user's token on my key.
//! Each is rejected and nothing is created or changed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::common;

use std::sync::{Arc, Mutex};

use common::*;
use mpc_core::sign::ClaimSet;
use mpc_core::{DerivationPath, Prehash};
use mpc_server::auth::TokenBuilder;
use mpc_transport_ws::{Client, CloseCode, Operation, TransportError};

fn client_with(server: &TestServer, token: Option<String>) -> Client {
    let client = Client::new(server.ws_url.clone()).with_config(client_config());
    match token {
        Some(token) => client.with_bearer_token(token),
        None => client,
    }
}

/// Everything the store holds about `owner`'s keys, in a comparable form.
async fn snapshot(db: &Db, owner: &str) -> String {
    let kek = Arc::new(mpc_server::seal::LocalKek::from_hex(MASTER_KEY).unwrap());
    let vault = mpc_server::vault::Vault::open(&db.url(), kek)
        .await
        .unwrap();
    let mut out = String::new();
    for key in vault.keys_of(owner).await.unwrap() {
        let epochs = vault.epochs(&key.key_id).await.unwrap();
        let audit = vault.audit_log(&key.key_id).await.unwrap();
        out.push_str(&format!("{key:?} {epochs:?} {}\n", audit.len()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_before_the_upgrade() {
    bounded(async {
        let db = Db::sqlite();
        let server = Launch::new(&db).start();
        let now = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap();
        let expired = TokenBuilder::new("mallory", AUDIENCE)
            .issued_at(now - 7200)
            .expires_at(now - 3600)
            .sign_hs256(JWT_SECRET.as_bytes())
            .unwrap();
        let wrong_audience = TokenBuilder::new("mallory", "another-service")
            .expires_in(600)
            .sign_hs256(JWT_SECRET.as_bytes())
            .unwrap();
        let wrong_signature = TokenBuilder::new("mallory", AUDIENCE)
            .expires_in(600)
            .sign_hs256(b"not-the-server-secret-not-the-server-secret")
            .unwrap();
        let cases = [
            ("no token", None),
            ("expired", Some(expired)),
            ("wrong audience", Some(wrong_audience)),
            ("wrong signature", Some(wrong_signature)),
            ("garbage", Some("not.a.jwt".to_owned())),
        ];
        for (name, token) in cases {
            let error = client_with(&server, token).keygen().await.unwrap_err();
            assert_eq!(
                error,
                TransportError::UpgradeRefused { status: 401 },
                "{name}"
            );
        }
        assert_eq!(snapshot(&db, "mallory").await, "");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_token_cannot_use_my_key() {
    bounded(async {
        let db = Db::sqlite();
        let server = Launch::new(&db).start();
        let alice = server.client("alice");
        let share = alice.keygen().await.unwrap();
        let presignature = alice.presign(&share).await.unwrap();
        let before = snapshot(&db, "alice").await;

        let mallory = server.client("mallory");
        let key_id = *share.key_id();
        let prehash = Prehash::sha256(b"not yours");
        let e = mallory.sign(&share, prehash).await.unwrap_err();
        assert_eq!(e.close_code(), Some(CloseCode::NOT_FOUND), "{e}");
        let e = mallory.presign(&share).await.unwrap_err();
        assert_eq!(e.close_code(), Some(CloseCode::NOT_FOUND), "{e}");
        let shares = Arc::new(Mutex::new(ClientShares::new(&share)));
        let e = ClientShares::refresh(&shares, &mallory).await.unwrap_err();
        assert_eq!(e.close_code(), Some(CloseCode::NOT_FOUND), "{e}");
        let session_id = presignature.session_id();
        let online =
            mpc_core::OnlineSign::new(&share, presignature, prehash, &mut ClaimSet::new()).unwrap();
        let e = mallory
            .run(
                Operation::OnlineSign {
                    key_id,
                    presignature: session_id,
                    prehash,
                },
                move |_| online,
            )
            .await
            .unwrap_err();
        assert_eq!(e.close_code(), Some(CloseCode::NOT_FOUND), "{e}");
        // A key id that does not exist at all looks the same.
        let e = mallory
            .run(
                Operation::Presign {
                    key_id: mpc_core::KeyId([7; 32]),
                    epoch: 0,
                    path: DerivationPath::root(),
                },
                |_| mpc_core::Presign::new(&share),
            )
            .await
            .unwrap_err();
        assert_eq!(e.close_code(), Some(CloseCode::NOT_FOUND), "{e}");

        assert_eq!(snapshot(&db, "alice").await, before);
        assert_eq!(snapshot(&db, "mallory").await, "");
        // Alice's presignature was not consumed by the foreign attempt...
        // (the client-side half was, so she makes a new one) and her key
        // still signs.
        sign_and_verify(&alice, &share, b"still mine").await;
    })
    .await;
}
