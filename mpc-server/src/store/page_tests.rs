//! Paged listings over both backends: every key (audit entry) that exists
//! throughout the paging is returned exactly once, in order, with rows
//! inserted between pages (before and after the cursor, with equal
//! creation times), and another owner's (key's) rows never appear.

use std::collections::HashSet;

use mpc_core::KeyId;
use rand_core::{OsRng, RngCore};
use serde_json::json;

use super::queries as q;
use super::testkit::{on_both_backends, vault, TestDb};
use crate::vault::{KeyPosition, KeyRecord, KeyStatus, Vault};

on_both_backends!(keys_are_paged_exactly_once, audit_is_paged_exactly_once);

/// Inserts a key row of `owner` created at `at` (the listing reads public
/// columns only: no share is needed).
async fn insert_key(vault: &Vault, owner: &str, at: i64) -> KeyRecord {
    let mut id = [0u8; 32];
    OsRng.fill_bytes(&mut id);
    let record = KeyRecord {
        key_id: KeyId(id),
        owner: owner.to_owned(),
        public_key: [2; 33],
        chain_code: [0; 32],
        epoch: 0,
        status: KeyStatus::Active,
        created_at: at,
        last_used_at: None,
        exported_at: None,
        backed_up_at: None,
    };
    let mut conn = vault.store().acquire().await.unwrap();
    assert!(q::insert_key(&mut conn, &record).await.unwrap());
    record
}

async fn keys_are_paged_exactly_once(db: TestDb) {
    let vault = vault(&db, 1).await;
    let mut alice = HashSet::new();
    // Equal creation times (three per millisecond) are ordered by key id.
    for i in 0..23 {
        alice.insert(insert_key(&vault, "alice", 1_000 + i / 3).await.key_id);
        insert_key(&vault, "bob", 1_000 + i / 3).await;
    }
    let mut seen = Vec::new();
    let mut after: Option<KeyPosition> = None;
    let mut inserted = HashSet::new();
    for page in 0.. {
        let rows = vault.keys_page("alice", after.as_ref(), 4).await.unwrap();
        assert!(rows.len() <= 4);
        assert!(rows.iter().all(|key| key.owner == "alice"), "{rows:?}");
        seen.extend(rows.iter().map(KeyPosition::of));
        if rows.len() < 4 {
            break;
        }
        after = rows.last().map(KeyPosition::of);
        // Keys created between pages: older than the cursor, at its very
        // time, and newer.
        let at = after.map_or(0, |p| p.created_at);
        for created in [500 + page, at, at, 5_000 + page] {
            inserted.insert(insert_key(&vault, "alice", created).await.key_id);
        }
        assert!(page < 100, "the paging never ends");
    }
    // Strictly increasing: no key twice, and the order is total.
    for pair in seen.windows(2) {
        assert!(
            (pair[0].created_at, pair[0].key_id.0) < (pair[1].created_at, pair[1].key_id.0),
            "{pair:?}"
        );
    }
    let ids: HashSet<KeyId> = seen.iter().map(|p| p.key_id).collect();
    assert_eq!(ids.len(), seen.len());
    assert!(
        alice.is_subset(&ids),
        "a key that existed throughout is missing"
    );
    assert!(ids.is_subset(&alice.union(&inserted).copied().collect()));
    // The keys created after the cursor with a later time are all found.
    assert!(seen.iter().filter(|p| p.created_at >= 5_000).count() >= 5);
    // Another owner's listing, and an empty one.
    let bob = vault.keys_page("bob", None, 200).await.unwrap();
    assert_eq!(bob.len(), 23);
    assert!(vault.keys_page("carol", None, 10).await.unwrap().is_empty());
}

async fn audit_is_paged_exactly_once(db: TestDb) {
    let vault = vault(&db, 1).await;
    let mine = insert_key(&vault, "alice", 1).await;
    let other = insert_key(&vault, "alice", 2).await;
    let event = |n: i64| crate::vault::Event {
        name: "sign",
        detail: json!({ "n": n }),
    };
    for n in 0..10 {
        vault
            .audit(&mine.key_id, "alice", event(n), n)
            .await
            .unwrap();
        vault
            .audit(&other.key_id, "alice", event(n), n)
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut after = None;
    for n in 10.. {
        let rows = vault.audit_page(&mine.key_id, after, 3).await.unwrap();
        assert!(rows.iter().all(|e| e.key_id == mine.key_id), "{rows:?}");
        seen.extend(rows.iter().map(|e| e.detail["n"].as_i64().unwrap()));
        if rows.len() < 3 {
            break;
        }
        after = rows.last().map(|e| e.id);
        if n < 14 {
            // Entries appended while paging are found, once.
            vault
                .audit(&mine.key_id, "alice", event(n), n)
                .await
                .unwrap();
        }
        assert!(n < 100, "the paging never ends");
    }
    assert_eq!(seen, (0..14).collect::<Vec<_>>());
}
