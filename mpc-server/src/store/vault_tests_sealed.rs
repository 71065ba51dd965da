//! Tests of the [`Vault`]'s sealed records over both backends (see
//! [`super::testkit`]): presignatures taken exactly once, the master key
//! check, and ciphertexts that were tampered with or moved between rows.

use mpc_core::wire::SessionId;
use mpc_core::KeyId;

use super::testkit::{dkg, kek, on_both_backends, presign, refresh, vault, TestDb};
use crate::vault::{Vault, VaultError};

on_both_backends!(
    presignature_is_taken_once,
    concurrent_takes_give_one_presignature,
    wrong_master_key_is_refused,
    ciphertext_moved_between_rows_is_corrupt,
    tampered_byte_is_corrupt,
);

async fn raw_share(vault: &Vault, key_id: &KeyId, epoch: i64) -> Vec<u8> {
    sqlx::query_scalar("SELECT sealed FROM shares WHERE key_id = $1 AND epoch = $2")
        .bind(key_id.to_string())
        .bind(epoch)
        .fetch_one(vault.store().pool())
        .await
        .unwrap()
}

async fn set_raw_share(vault: &Vault, key_id: &KeyId, epoch: i64, sealed: Vec<u8>) {
    let done = sqlx::query("UPDATE shares SET sealed = $1 WHERE key_id = $2 AND epoch = $3")
        .bind(sealed)
        .bind(key_id.to_string())
        .bind(epoch)
        .execute(vault.store().pool())
        .await
        .unwrap();
    assert_eq!(done.rows_affected(), 1);
}

async fn raw_presignature(vault: &Vault, session: &SessionId) -> Vec<u8> {
    sqlx::query_scalar("SELECT sealed FROM presignatures WHERE session_id = $1")
        .bind(hex::encode(session.0))
        .fetch_one(vault.store().pool())
        .await
        .unwrap()
}

async fn set_raw_presignature(vault: &Vault, session: &SessionId, sealed: Vec<u8>) {
    sqlx::query("UPDATE presignatures SET sealed = $1 WHERE session_id = $2")
        .bind(sealed)
        .bind(hex::encode(session.0))
        .execute(vault.store().pool())
        .await
        .unwrap();
}

async fn presignature_is_taken_once(db: TestDb) {
    let vault = vault(&db, 1).await;
    let (a, b) = dkg();
    let key = vault.create_key("alice", &b, 1).await.unwrap();
    let (oa, ob) = dkg();
    let other = vault.create_key("alice", &ob, 1).await.unwrap();
    let presig = presign(&a, &b);
    let session = presig.session_id();
    vault.store_presignature(&key, &presig, 2).await.unwrap();
    assert!(matches!(
        vault.store_presignature(&key, &presig, 3).await,
        Err(VaultError::Conflict(_))
    ));
    assert!(matches!(
        vault
            .store_presignature(&other, &presign(&oa, &ob), 3)
            .await,
        Ok(())
    ));
    assert!(matches!(
        vault.store_presignature(&other, &presig, 3).await,
        Err(VaultError::Conflict(_))
    ));

    assert!(vault
        .take_presignature(&other, &session, 4)
        .await
        .unwrap()
        .is_none());
    assert!(vault
        .take_presignature(&key, &SessionId([5; 32]), 4)
        .await
        .unwrap()
        .is_none());
    let taken = vault
        .take_presignature(&key, &session, 4)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(*taken.to_bytes(), *presig.to_bytes());
    assert!(vault
        .take_presignature(&key, &session, 5)
        .await
        .unwrap()
        .is_none());
    // The used row keeps no ciphertext, and its session id stays taken.
    let sealed: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT sealed FROM presignatures WHERE session_id = $1")
            .bind(hex::encode(session.0))
            .fetch_one(vault.store().pool())
            .await
            .unwrap();
    assert!(sealed.is_none());
    assert!(matches!(
        vault.store_presignature(&key, &presig, 6).await,
        Err(VaultError::Conflict(_))
    ));
}

async fn concurrent_takes_give_one_presignature(db: TestDb) {
    // Two vaults on one database stand for two server processes.
    let first = vault(&db, 1).await;
    let second = vault(&db, 1).await;
    let (a, b) = dkg();
    let key = first.create_key("alice", &b, 1).await.unwrap();
    for round in 0..3 {
        let presig = presign(&a, &b);
        let session = presig.session_id();
        first.store_presignature(&key, &presig, 2).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..20 {
            let vault = if i % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                vault.take_presignature(&key, &session, 3).await
            }));
        }
        let mut won = 0;
        for task in tasks {
            if task.await.unwrap().unwrap().is_some() {
                won += 1;
            }
        }
        assert_eq!(won, 1, "round {round}");
    }
}

async fn wrong_master_key_is_refused(db: TestDb) {
    let (_, share) = dkg();
    let key = {
        let vault = vault(&db, 1).await;
        vault.create_key("alice", &share, 1).await.unwrap()
    };
    let wrong = Vault::open(&db.url, kek(2)).await;
    assert!(
        matches!(wrong, Err(VaultError::WrongMasterKey)),
        "{wrong:?}"
    );
    assert_eq!(
        VaultError::WrongMasterKey.to_string(),
        "MPC_MASTER_KEY does not match the key this database was created with"
    );
    let right = vault(&db, 1).await;
    let stored = right.share(&key, 0).await.unwrap().unwrap();
    assert_eq!(*stored.share.to_bytes(), *share.to_bytes());
}

async fn ciphertext_moved_between_rows_is_corrupt(db: TestDb) {
    let vault = vault(&db, 1).await;
    let (a1, b1) = dkg();
    let (_, b2) = dkg();
    let k1 = vault.create_key("alice", &b1, 1).await.unwrap();
    let k2 = vault.create_key("alice", &b2, 1).await.unwrap();
    let sealed1 = raw_share(&vault, &k1.key_id, 0).await;
    let sealed2 = raw_share(&vault, &k2.key_id, 0).await;
    set_raw_share(&vault, &k1.key_id, 0, sealed2.clone()).await;
    set_raw_share(&vault, &k2.key_id, 0, sealed1.clone()).await;
    for key in [&k1, &k2] {
        let result = vault.share(key, 0).await;
        assert!(
            matches!(result, Err(VaultError::CorruptRecord(_))),
            "{result:?}"
        );
    }
    set_raw_share(&vault, &k1.key_id, 0, sealed1.clone()).await;
    assert!(vault.share(&k1, 0).await.unwrap().is_some());

    // The same share's record moved to another epoch's row.
    let (_, b1_next) = refresh(&a1, &b1);
    let lease = super::testkit::lease_at(&vault, &k1.key_id, 0, 3_600_000).await;
    vault
        .store_refreshed(&lease, &k1, &b1_next, 2)
        .await
        .unwrap();
    set_raw_share(&vault, &k1.key_id, 1, sealed1).await;
    assert!(matches!(
        vault.share(&k1, 1).await,
        Err(VaultError::CorruptRecord(_))
    ));

    // Presignatures of one key swapped between sessions.
    let p = presign(&a1, &b1);
    let q = presign(&a1, &b1);
    let (sp, sq) = (p.session_id(), q.session_id());
    vault.store_presignature(&k1, &p, 3).await.unwrap();
    vault.store_presignature(&k1, &q, 3).await.unwrap();
    let (rp, rq) = (
        raw_presignature(&vault, &sp).await,
        raw_presignature(&vault, &sq).await,
    );
    set_raw_presignature(&vault, &sp, rq).await;
    set_raw_presignature(&vault, &sq, rp).await;
    for session in [sp, sq] {
        let result = vault.take_presignature(&k1, &session, 4).await;
        assert!(
            matches!(result, Err(VaultError::CorruptRecord(_))),
            "{result:?}"
        );
        // Claimed all the same: never handed out later.
        assert!(vault
            .take_presignature(&k1, &session, 5)
            .await
            .unwrap()
            .is_none());
    }
}

async fn tampered_byte_is_corrupt(db: TestDb) {
    let vault = vault(&db, 1).await;
    let (a, b) = dkg();
    let key = vault.create_key("alice", &b, 1).await.unwrap();
    let sealed = raw_share(&vault, &key.key_id, 0).await;
    for position in [0, 1, 3, 40, sealed.len() / 2, sealed.len() - 1] {
        let mut bad = sealed.clone();
        bad[position] ^= 0x40;
        set_raw_share(&vault, &key.key_id, 0, bad).await;
        let result = vault.share(&key, 0).await;
        assert!(
            matches!(result, Err(VaultError::CorruptRecord(_))),
            "{position}: {result:?}"
        );
    }
    set_raw_share(&vault, &key.key_id, 0, sealed[..sealed.len() - 1].to_vec()).await;
    assert!(matches!(
        vault.share(&key, 0).await,
        Err(VaultError::CorruptRecord(_))
    ));

    let presig = presign(&a, &b);
    let session = presig.session_id();
    vault.store_presignature(&key, &presig, 2).await.unwrap();
    let mut bad = raw_presignature(&vault, &session).await;
    let last = bad.len() - 1;
    bad[last] ^= 1;
    set_raw_presignature(&vault, &session, bad).await;
    assert!(matches!(
        vault.take_presignature(&key, &session, 3).await,
        Err(VaultError::CorruptRecord(_))
    ));
}
