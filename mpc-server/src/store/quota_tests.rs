//! The per-owner quotas where keys and presignatures are stored, over both
//! backends (see [`super::testkit`]): of many stores racing for the last
//! units, on two vaults over one database (two server processes), exactly
//! the quota's worth succeed and the others leave no row.

use futures_util::future::join_all;

use super::testkit::{dkg, on_both_backends, presign, vault, TestDb};
use crate::vault::{Quota, Vault, VaultError};

on_both_backends!(
    key_quota_holds_across_two_vaults,
    presignature_quota_counts_unused_ones
);

async fn rows(vault: &Vault, sql: &str, owner: &str) -> i64 {
    let mut conn = vault.store().acquire().await.unwrap();
    sqlx::query_scalar(sql)
        .bind(owner)
        .fetch_one(&mut *conn)
        .await
        .unwrap()
}

async fn key_quota_holds_across_two_vaults(db: TestDb) {
    const LIMIT: u64 = 2;
    let first = vault(&db, 1).await;
    let second = vault(&db, 1).await;
    let shares: Vec<_> = (0..6).map(|_| dkg().1).collect();
    let stores = shares.iter().enumerate().map(|(i, share)| {
        let vault = if i % 2 == 0 { &first } else { &second };
        vault.create_pending_key_within("alice", share, LIMIT, 1_000)
    });
    let results = join_all(stores).await;
    let stored = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(stored, 2, "{results:?}");
    for result in &results {
        if let Err(e) = result {
            assert!(matches!(e, VaultError::QuotaReached(Quota::Keys)), "{e:?}");
        }
    }
    // The refused stores left nothing: no key row, no share, no audit row.
    let count = |sql| rows(&first, sql, "alice");
    assert_eq!(count("SELECT COUNT(*) FROM keys WHERE owner = $1").await, 2);
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM shares s JOIN keys k ON k.key_id = s.key_id WHERE k.owner = $1"
        )
        .await,
        2
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM audit_log WHERE owner = $1").await,
        2
    );
    assert_eq!(first.live_keys_of("alice").await.unwrap(), 2);
    // Another owner is not affected.
    let bob = dkg().1;
    second
        .create_pending_key_within("bob", &bob, LIMIT, 2_000)
        .await
        .unwrap();
    // A revoked key frees its unit.
    let alice_keys = first.keys_of("alice").await.unwrap();
    let event = crate::vault::Event {
        name: "key.revoked",
        detail: serde_json::json!({}),
    };
    first
        .revoke(&alice_keys[0].key_id, event, 3_000)
        .await
        .unwrap();
    let again = dkg().1;
    second
        .create_pending_key_within("alice", &again, LIMIT, 4_000)
        .await
        .unwrap();
    assert!(matches!(
        first
            .create_pending_key_within("alice", &dkg().1, LIMIT, 5_000)
            .await,
        Err(VaultError::QuotaReached(Quota::Keys))
    ));
}

async fn presignature_quota_counts_unused_ones(db: TestDb) {
    const LIMIT: u64 = 3;
    let first = vault(&db, 1).await;
    let second = vault(&db, 1).await;
    let (a1, b1) = dkg();
    let (a2, b2) = dkg();
    let key1 = first.create_key("alice", &b1, 1_000).await.unwrap();
    let key2 = first.create_key("alice", &b2, 1_000).await.unwrap();
    // Both keys' presignatures count against one quota, from two vaults.
    let presignatures: Vec<_> = (0..8)
        .map(|i| {
            if i % 2 == 0 {
                (&key1, presign(&a1, &b1))
            } else {
                (&key2, presign(&a2, &b2))
            }
        })
        .collect();
    let stores = presignatures.iter().enumerate().map(|(i, (key, p))| {
        let vault = if i % 2 == 0 { &first } else { &second };
        vault.store_presignature_within(key, p, LIMIT, 2_000)
    });
    let results = join_all(stores).await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        3,
        "{results:?}"
    );
    assert!(results.iter().all(|r| matches!(
        r,
        Ok(()) | Err(VaultError::QuotaReached(Quota::Presignatures))
    )));
    assert_eq!(
        rows(
            &first,
            "SELECT COUNT(*) FROM presignatures p JOIN keys k ON k.key_id = p.key_id \
             WHERE k.owner = $1",
            "alice"
        )
        .await,
        3
    );
    // Claiming one frees its unit: one more is stored, then none.
    let stored: Vec<_> = presignatures
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.is_ok())
        .map(|((key, p), _)| (*key, p.session_id()))
        .collect();
    let (key, session) = &stored[0];
    assert!(first
        .take_presignature(key, session, 3_000)
        .await
        .unwrap()
        .is_some());
    assert_eq!(first.unused_presignatures_of("alice").await.unwrap(), 2);
    second
        .store_presignature_within(&key1, &presign(&a1, &b1), LIMIT, 4_000)
        .await
        .unwrap();
    assert!(matches!(
        first
            .store_presignature_within(&key2, &presign(&a2, &b2), LIMIT, 5_000)
            .await,
        Err(VaultError::QuotaReached(Quota::Presignatures))
    ));
    // Another owner's are not counted.
    let (ab, bb) = dkg();
    let bob = first.create_key("bob", &bb, 1_000).await.unwrap();
    first
        .store_presignature_within(&bob, &presign(&ab, &bb), LIMIT, 6_000)
        .await
        .unwrap();
}
