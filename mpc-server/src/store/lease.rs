//! The refresh lease's statements (PROTOCOL.md §18.1), written once for
//! SQLite and PostgreSQL like [`super::queries`].
//!
//! A lease is a row `(key_id, holder, expires_at)`. Each statement is one
//! conditional write, so it is atomic on its own on both backends: on
//! PostgreSQL a concurrent writer of the same row waits for the row lock
//! and then re-evaluates the condition on the row as committed; SQLite runs
//! writers one at a time. A row rather than an advisory lock: it does not
//! vanish with the connection that took it, and it expires on its own when
//! its holder crashed.

use mpc_core::KeyId;
use sqlx::AnyConnection;

use super::db_error;
use super::queries::key_id_text;
use crate::vault::VaultError;

/// Takes the lease of `key_id` for `holder` until `expires_at`: inserts the
/// row, or takes over a row whose lease has expired at `now`. `false` if
/// another holder's lease is still running (or `holder` already holds it:
/// a session takes its lease once).
pub(crate) async fn take(
    conn: &mut AnyConnection,
    key_id: &KeyId,
    holder: &str,
    now: i64,
    expires_at: i64,
) -> Result<bool, VaultError> {
    let done = sqlx::query(
        "INSERT INTO refresh_leases (key_id, holder, expires_at) VALUES ($1, $2, $3) \
         ON CONFLICT (key_id) DO UPDATE SET holder = $2, expires_at = $3 \
         WHERE refresh_leases.expires_at <= $4",
    )
    .bind(key_id_text(key_id))
    .bind(holder)
    .bind(expires_at)
    .bind(now)
    .execute(conn)
    .await
    .map_err(|e| db_error("taking a refresh lease", &e))?;
    Ok(done.rows_affected() == 1)
}

/// Extends `holder`'s lease of `key_id` to `expires_at`; `false` if
/// `holder` no longer holds it (another session took it over after it
/// expired, or it was released).
///
/// A lease that expired but that nobody took over is still `holder`'s: a
/// takeover changes the holder, so matching on the holder alone is enough,
/// and within a transaction the updated row stays locked against a
/// takeover until the commit.
pub(crate) async fn renew(
    conn: &mut AnyConnection,
    key_id: &KeyId,
    holder: &str,
    expires_at: i64,
) -> Result<bool, VaultError> {
    let done =
        sqlx::query("UPDATE refresh_leases SET expires_at = $3 WHERE key_id = $1 AND holder = $2")
            .bind(key_id_text(key_id))
            .bind(holder)
            .bind(expires_at)
            .execute(conn)
            .await
            .map_err(|e| db_error("renewing a refresh lease", &e))?;
    Ok(done.rows_affected() == 1)
}

/// Releases `holder`'s lease of `key_id`; `false` if `holder` did not hold
/// it (another holder's lease is never released).
pub(crate) async fn release(
    conn: &mut AnyConnection,
    key_id: &KeyId,
    holder: &str,
) -> Result<bool, VaultError> {
    let done = sqlx::query("DELETE FROM refresh_leases WHERE key_id = $1 AND holder = $2")
        .bind(key_id_text(key_id))
        .bind(holder)
        .execute(conn)
        .await
        .map_err(|e| db_error("releasing a refresh lease", &e))?;
    Ok(done.rows_affected() == 1)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::testkit::{dkg, lease_at, on_both_backends, refresh, vault, TestDb};
    use crate::vault::{Event, ShareState, VaultError};

    on_both_backends!(
        lease_rules,
        one_winner_across_processes,
        a_lost_lease_writes_nothing,
        confirm_refuses_another_sessions_share,
    );

    fn refreshed() -> Event<'static> {
        Event {
            name: "key.refreshed",
            detail: json!({ "test": true }),
        }
    }

    async fn lease_rules(db: TestDb) {
        let vault = vault(&db, 1).await;
        let (_, share) = dkg();
        let key = vault.create_key("alice", &share, 0).await.unwrap();
        let id = &key.key_id;
        let mut conn = vault.store().acquire().await.unwrap();

        assert!(take(&mut conn, id, "a", 100, 200).await.unwrap());
        // Held: neither another session nor the holder itself takes it.
        assert!(!take(&mut conn, id, "b", 150, 250).await.unwrap());
        assert!(!take(&mut conn, id, "a", 150, 250).await.unwrap());
        // Only the holder renews or releases it.
        assert!(!renew(&mut conn, id, "b", 400).await.unwrap());
        assert!(!release(&mut conn, id, "b").await.unwrap());
        assert!(renew(&mut conn, id, "a", 300).await.unwrap());
        // Renewed to 300: still held at 250, which the old expiry had passed.
        assert!(!take(&mut conn, id, "b", 250, 350).await.unwrap());
        // Expired: taken over, and the old holder can no longer renew.
        assert!(take(&mut conn, id, "b", 300, 400).await.unwrap());
        assert!(!renew(&mut conn, id, "a", 500).await.unwrap());
        assert!(!release(&mut conn, id, "a").await.unwrap());
        // Released: free at once, whatever the expiry said.
        assert!(release(&mut conn, id, "b").await.unwrap());
        assert!(take(&mut conn, id, "c", 301, 401).await.unwrap());
        // Another key's lease is independent.
        let (_, other) = dkg();
        let other = vault.create_key("alice", &other, 0).await.unwrap();
        assert!(take(&mut conn, &other.key_id, "d", 301, 401).await.unwrap());
        // A lease names an existing key.
        assert!(take(&mut conn, &KeyId([7; 32]), "e", 0, 1).await.is_err());
    }

    /// Many sessions on two "processes" (two pools on one database) race
    /// for a free lease, then for an expired one: exactly one wins each.
    async fn one_winner_across_processes(db: TestDb) {
        let first = vault(&db, 1).await;
        let second = vault(&db, 1).await;
        let (_, share) = dkg();
        let key = first.create_key("alice", &share, 0).await.unwrap();
        for (now, expires_at) in [(1_000, 2_000), (2_000, 3_000)] {
            let mut racers = Vec::new();
            for i in 0..8 {
                let vault = if i % 2 == 0 {
                    first.clone()
                } else {
                    second.clone()
                };
                let id = key.key_id;
                racers.push(tokio::spawn(async move {
                    let mut conn = vault.store().acquire().await.unwrap();
                    take(
                        &mut conn,
                        &id,
                        &format!("holder-{now}-{i}"),
                        now,
                        expires_at,
                    )
                    .await
                    .unwrap()
                }));
            }
            let mut winners = 0;
            for racer in racers {
                winners += usize::from(racer.await.unwrap());
            }
            assert_eq!(winners, 1, "lease race at {now}");
        }
    }

    /// A session whose lease expired and was taken over can neither store,
    /// confirm nor finalize anything, and leaves the new holder's share
    /// alone.
    async fn a_lost_lease_writes_nothing(db: TestDb) {
        let vault = vault(&db, 1).await;
        let (a0, b0) = dkg();
        let key = vault.create_key("alice", &b0, 0).await.unwrap();
        let (_, slow) = refresh(&a0, &b0);
        let (_, fast) = refresh(&a0, &b0);
        let stale = lease_at(&vault, &key.key_id, 0, 10).await;
        // Still held at 5: no takeover.
        assert!(vault
            .take_refresh_lease(&key.key_id, std::time::Duration::from_secs(1), 5)
            .await
            .unwrap()
            .is_none());
        let lease = lease_at(&vault, &key.key_id, 10, 3_600_000).await;
        assert!(matches!(
            vault.store_refreshed(&stale, &key, &slow, 11).await,
            Err(VaultError::Conflict(_))
        ));
        assert_eq!(
            vault.epochs(&key.key_id).await.unwrap(),
            vec![(0, ShareState::Final)]
        );
        vault
            .store_refreshed(&lease, &key, &fast, 12)
            .await
            .unwrap();
        assert!(matches!(
            vault.confirm_refreshed(&stale, &fast, 13).await,
            Err(VaultError::Conflict(_))
        ));
        assert!(matches!(
            vault
                .finalize_refreshed(&stale, &fast, refreshed(), 13)
                .await,
            Err(VaultError::Conflict(_))
        ));
        assert_eq!(
            vault.epochs(&key.key_id).await.unwrap(),
            vec![(0, ShareState::Final), (1, ShareState::Ready)]
        );
        // The stale session's release leaves the new holder's lease.
        stale.release().await.unwrap();
        vault.confirm_refreshed(&lease, &fast, 14).await.unwrap();
        vault
            .finalize_refreshed(&lease, &fast, refreshed(), 15)
            .await
            .unwrap();
        assert_eq!(
            vault.epochs(&key.key_id).await.unwrap(),
            vec![(1, ShareState::Final)]
        );
        let stored = vault.share(&key, 1).await.unwrap().unwrap();
        assert!(stored.share.transcript_hash() == fast.transcript_hash());
    }

    /// The race at the storage level: session B's ready share
    /// replaced A's; A must not confirm B's share as its own.
    async fn confirm_refuses_another_sessions_share(db: TestDb) {
        let vault = vault(&db, 1).await;
        let (a0, b0) = dkg();
        let key = vault.create_key("alice", &b0, 0).await.unwrap();
        let (_, mine) = refresh(&a0, &b0);
        let (_, theirs) = refresh(&a0, &b0);
        let lease = lease_at(&vault, &key.key_id, 0, 3_600_000).await;
        vault
            .store_refreshed(&lease, &key, &theirs, 1)
            .await
            .unwrap();
        assert!(matches!(
            vault.confirm_refreshed(&lease, &mine, 2).await,
            Err(VaultError::Conflict(_))
        ));
        assert_eq!(
            vault.epochs(&key.key_id).await.unwrap(),
            vec![(0, ShareState::Final), (1, ShareState::Ready)]
        );
        // A share of another key is refused before anything is read.
        let (_, other) = dkg();
        assert!(matches!(
            vault.confirm_refreshed(&lease, &other, 3).await,
            Err(VaultError::Conflict(_))
        ));
        vault.confirm_refreshed(&lease, &theirs, 4).await.unwrap();
        assert_eq!(
            vault.epochs(&key.key_id).await.unwrap(),
            vec![(0, ShareState::Final), (1, ShareState::Confirmed)]
        );
    }
}
