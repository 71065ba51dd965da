//! Key uses committed in groups (`crate::vault` uses, PROTOCOL.md §18.5):
//! uses that arrive together share one commit, and each is durable, with
//! its own audit entry, when its caller returns.

use futures_util::future::join_all;
use mpc_core::KeyId;
use serde_json::json;

use super::testkit::{dkg, test_db, vault, Kind};
use crate::vault::{Event, VaultError};

#[path = "../../tests/integration/shared/wal.rs"]
mod wal;

/// On one thread, every use below is queued before the writer first runs:
/// 24 uses of two keys and one of a missing key are one commit. Each use
/// of an existing key has its entry and the last time; the missing key's
/// use alone fails, with `NotFound`, and writes nothing.
#[tokio::test(flavor = "current_thread")]
async fn uses_that_arrive_together_share_one_commit() {
    let db = test_db(Kind::Sqlite).await.unwrap();
    let file = db.sqlite_path.clone().unwrap();
    let vault = vault(&db, 1).await;
    let (_, one) = dkg();
    let (_, two) = dkg();
    let one = vault.create_key("alice", &one, 1).await.unwrap();
    let two = vault.create_key("bob", &two, 1).await.unwrap();
    let missing = KeyId([0x77; 32]);
    let (salt, before) = wal::wal_commits(&file);

    let uses = (0..24i64).map(|n| {
        let (key, owner) = if n % 2 == 0 {
            (&one.key_id, "alice")
        } else {
            (&two.key_id, "bob")
        };
        let event = Event {
            name: "sign",
            detail: json!({ "n": n }),
        };
        vault.record_use(key, owner, event, 100 + n)
    });
    let lost = Event {
        name: "sign",
        detail: json!({ "n": "missing" }),
    };
    let (results, lost) = tokio::join!(
        join_all(uses),
        vault.record_use(&missing, "carol", lost, 500)
    );
    for result in results {
        result.unwrap();
    }
    assert!(matches!(lost, Err(VaultError::NotFound)), "{lost:?}");

    let (salt_after, after) = wal::wal_commits(&file);
    assert_eq!(
        salt_after, salt,
        "the WAL was restarted: counts not comparable"
    );
    assert_eq!(
        after - before,
        1,
        "commits for 25 uses that arrived together"
    );
    for (key, parity, last) in [(&one.key_id, 0, 122), (&two.key_id, 1, 123)] {
        let record = vault.key(key).await.unwrap().unwrap();
        assert_eq!(record.last_used_at, Some(last));
        let signed: Vec<i64> = vault
            .audit_log(key)
            .await
            .unwrap()
            .into_iter()
            .filter(|entry| entry.event == "sign")
            .map(|entry| entry.detail["n"].as_i64().unwrap())
            .collect();
        let expected: Vec<i64> = (0..24).filter(|n| n % 2 == parity).collect();
        assert_eq!(signed, expected);
    }
    assert!(vault.audit_log(&missing).await.unwrap().is_empty());
}

/// Uses one after another: each is its own commit (a caller never waits
/// for a group to fill), and a use after the writer went idle starts it
/// again (on one thread the writer has stopped before its caller resumes,
/// so each use here needs a new writer).
#[tokio::test(flavor = "current_thread")]
async fn a_use_alone_commits_at_once_and_the_writer_restarts() {
    let db = test_db(Kind::Sqlite).await.unwrap();
    let file = db.sqlite_path.clone().unwrap();
    let vault = vault(&db, 1).await;
    let (_, share) = dkg();
    let key = vault.create_key("alice", &share, 1).await.unwrap();
    for n in 0..3i64 {
        let (salt, before) = wal::wal_commits(&file);
        let event = Event {
            name: "sign",
            detail: json!({ "n": n }),
        };
        vault
            .record_use(&key.key_id, "alice", event, 10 + n)
            .await
            .unwrap();
        let (salt_after, after) = wal::wal_commits(&file);
        assert_eq!(
            salt_after, salt,
            "the WAL was restarted: counts not comparable"
        );
        assert_eq!(after - before, 1);
        let record = vault.key(&key.key_id).await.unwrap().unwrap();
        assert_eq!(record.last_used_at, Some(10 + n));
    }
}

/// One use's statement fails inside a group (PostgreSQL refuses a NUL in
/// text): that use alone fails, and the others of its group are still
/// committed, each with its entry.
#[tokio::test(flavor = "current_thread")]
async fn a_failing_use_does_not_fail_its_group() {
    let Some(db) = test_db(Kind::Postgres).await else {
        return;
    };
    let vault = vault(&db, 1).await;
    let (_, share) = dkg();
    let key = vault.create_key("alice", &share, 1).await.unwrap();
    let event = |name: &'static str, n: i64| Event {
        name,
        detail: json!({ "n": n }),
    };
    let (first, bad, last) = tokio::join!(
        vault.record_use(&key.key_id, "alice", event("sign", 1), 10),
        vault.record_use(&key.key_id, "alice", event("sign\0", 2), 11),
        vault.record_use(&key.key_id, "alice", event("sign", 3), 12),
    );
    first.unwrap();
    last.unwrap();
    assert!(matches!(bad, Err(VaultError::Database(_))), "{bad:?}");
    let signed: Vec<i64> = vault
        .audit_log(&key.key_id)
        .await
        .unwrap()
        .into_iter()
        .filter(|entry| entry.event == "sign")
        .map(|entry| entry.detail["n"].as_i64().unwrap())
        .collect();
    assert_eq!(signed, [1, 3]);
    let record = vault.key(&key.key_id).await.unwrap().unwrap();
    assert_eq!(record.last_used_at, Some(12));
}
