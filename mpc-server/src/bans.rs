//! A ban stops every session of the key before anyone is told
//! (PROTOCOL.md §18.2).
//!
//! A ban-class failure means the peer may have learnt something about the
//! key's OT material from whether a check passed (a selective-failure
//! probe). One probe is unavoidable; a second must never be evaluated.
//! So, in this process:
//!
//! - every session of a key registers in [`KeyGuards`] for its lifetime
//!   (the entry goes away with the key's last session);
//! - each protocol step of a key's sessions runs under the key's step lock
//!   (in this process, and on PostgreSQL across replicas, in a READ
//!   COMMITTED transaction) and only after a fresh look at the key: this
//!   process's bans, then the stored status and epoch, which another
//!   replica or a refresh may have changed. Two sessions of one key never
//!   evaluate checks at the same time, none evaluates one after a ban, and
//!   none of an epoch a refresh finalized away evaluates one at all;
//! - a ban marks the key banned in memory, cancels every other open session
//!   of the key (they end with 4102 at once; one queued for the step lock
//!   is refused when it gets it), and stores the status (banned, audit
//!   row, `key.banned` event) on the failed step's own transaction before
//!   the step lock is released, all before the failed outcome of the
//!   banning session leaves. If that write fails the step lock stays held
//!   (here and across replicas) and the key refused in memory while the
//!   write is retried. Only then is the epoch's share re-sealed with its
//!   OT material burned (this needs the master-key backend), retried until
//!   done.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mpc_core::KeyId;
use mpc_transport_ws::{Rejection, SessionHooks};
use serde_json::json;
use tokio::sync::{oneshot, watch, OwnedMutexGuard};
use tracing::{error, info, warn};

use crate::crash;
use crate::server::now_ms;
use crate::session::{codes, refusal, Purpose};
use crate::store::{commit, db_error, Backend, Tx};
use crate::vault::{Event, KeyStatus, Vault, VaultError};

/// The first retry of a failed ban write waits this long; each next one
/// twice as long, up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// The per-key state of this process's open sessions and pending bans.
pub(crate) struct KeyGuards {
    vault: Vault,
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Keys with open sessions: their entry and how many sessions hold it.
    keys: Mutex<HashMap<KeyId, (Arc<Entry>, usize)>>,
    /// Keys banned in this process whose ban is not yet stored, with how
    /// many of their bans are: one ban's end (stored, or nothing left to
    /// ban) never lifts another's refusal.
    pending: Mutex<HashMap<KeyId, usize>>,
}

struct Entry {
    /// Held while one session of the key runs a protocol step.
    step: Arc<tokio::sync::Mutex<()>>,
    /// Counts the bans of the key while the entry lives; a change cancels
    /// every open session.
    bans: watch::Sender<u64>,
}

impl Inner {
    fn is_pending(&self, key_id: &KeyId) -> bool {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(key_id)
    }

    /// Counts one more (`pending`) or one fewer unstored ban of the key.
    fn set_pending(&self, key_id: &KeyId, pending: bool) {
        let mut map = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending {
            *map.entry(*key_id).or_insert(0) += 1;
        } else if let Some(count) = map.get_mut(key_id) {
            *count -= 1;
            if *count == 0 {
                map.remove(key_id);
            }
        }
    }
}

impl KeyGuards {
    pub(crate) fn new(vault: Vault) -> Self {
        Self {
            vault,
            inner: Arc::default(),
        }
    }

    /// Registers a session of `key_id` until the returned handle drops.
    /// Call it before the key's status is read, so that a ban from then on
    /// reaches the session.
    pub(crate) fn join(&self, key_id: &KeyId) -> KeySession {
        let mut keys = self
            .inner
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (entry, count) = keys.entry(*key_id).or_insert_with(|| {
            let (bans, _) = watch::channel(0);
            (
                Arc::new(Entry {
                    step: Arc::default(),
                    bans,
                }),
                0,
            )
        });
        *count += 1;
        let entry = Arc::clone(entry);
        // Subscribed now: only bans from here on cancel this session.
        let bans = entry.bans.subscribe();
        KeySession {
            inner: Arc::clone(&self.inner),
            key_id: *key_id,
            entry,
            bans,
        }
    }

    /// Whether `key_id` is banned in this process but not yet in storage.
    pub(crate) fn is_pending(&self, key_id: &KeyId) -> bool {
        self.inner.is_pending(key_id)
    }

    /// Keys with registered sessions (for tests: entries must not leak).
    #[cfg(test)]
    fn open_keys(&self) -> usize {
        self.inner
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Bans `key_id` after a ban-class failure of a session of `epoch`,
    /// handed the failed step's `guard`: refuses the key in memory, cancels
    /// its other sessions, stores the status (banned, audit row,
    /// `key.banned`) on the guard's transaction and only then releases the
    /// step lock, then re-seals the epoch's share with its OT material
    /// burned. Returns once the first status write attempt is done; a task
    /// retries failed writes, still holding the step lock (in this process
    /// and across replicas) until the status is stored, and the key stays
    /// refused in memory meanwhile.
    pub(crate) async fn ban(&self, key_id: &KeyId, epoch: u64, reason: String, guard: StepGuard) {
        self.inner.set_pending(key_id, true);
        if let Some((entry, _)) = self
            .inner
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key_id)
        {
            entry.bans.send_modify(|bans| *bans += 1);
        }
        warn!(%key_id, epoch, reason, "ban-class failure: banning the key");
        // A task of its own: the writes must go on even if this session's
        // future is dropped (timeout, shutdown).
        let (first, first_done) = oneshot::channel();
        let vault = self.vault.clone();
        let inner = Arc::clone(&self.inner);
        let key_id = *key_id;
        tokio::spawn(async move {
            let mut guard = guard;
            let mut first = Some(first);
            let mut delay = FIRST_RETRY_DELAY;
            let stored = loop {
                let result = write_status(&vault, &mut guard, &key_id, epoch, &reason).await;
                let done = match &result {
                    Ok(()) => {
                        info!(%key_id, epoch, "ban stored");
                        true
                    }
                    // Nothing left to ban: the key was revoked or deleted,
                    // or a refresh replaced the epoch (and its OT material).
                    Err(e @ (VaultError::NotFound | VaultError::Conflict(_))) => {
                        warn!(%key_id, epoch, error = %e, "ban not stored: nothing left to ban");
                        true
                    }
                    Err(e) => {
                        error!(%key_id, epoch, error = %e, "could not store the ban: key refused in memory, step lock held, retrying");
                        false
                    }
                };
                if let Some(first) = first.take() {
                    let _ = first.send(());
                }
                if done {
                    // The stored status refuses the key from here on, on
                    // every replica: the step lock may go.
                    drop(guard);
                    inner.set_pending(&key_id, false);
                    break result.is_ok();
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            };
            if stored {
                burn_until_done(&vault, &key_id, epoch).await;
            }
        });
        let _ = first_done.await;
    }
}

/// The status half of the ban: on the step lock's transaction, then
/// committed (which releases the replicas' lock with the status stored);
/// without one (SQLite: the local lock is the lock), in a transaction of
/// its own. A failed write on the step lock's transaction is rolled back
/// to a savepoint so that the lock stays held for the retry.
async fn write_status(
    vault: &Vault,
    guard: &mut StepGuard,
    key_id: &KeyId,
    epoch: u64,
    reason: &str,
) -> Result<(), VaultError> {
    if crash::fails("ban:status") {
        return Err(VaultError::Database("injected failure (ban:status)".into()));
    }
    let event = Event {
        name: "key.banned",
        detail: json!({ "epoch": epoch, "reason": reason }),
    };
    let Some(mut tx) = guard.shared.take() else {
        let mut tx = vault.store().begin().await?;
        vault
            .ban_in(&mut tx, key_id, epoch, event, now_ms())
            .await?;
        return commit(tx).await;
    };
    // If the savepoint fails the transaction (and its lock) is lost: the
    // retry writes in a transaction of its own, under the local lock.
    execute(&mut tx, "SAVEPOINT ban_status").await?;
    match vault.ban_in(&mut tx, key_id, epoch, event, now_ms()).await {
        Ok(()) => commit(tx).await,
        Err(e) => {
            if execute(&mut tx, "ROLLBACK TO SAVEPOINT ban_status")
                .await
                .is_ok()
            {
                guard.shared = Some(tx);
            }
            Err(e)
        }
    }
}

async fn execute(tx: &mut Tx, sql: &'static str) -> Result<(), VaultError> {
    sqlx::query(sql)
        .execute(&mut **tx)
        .await
        .map(|_| ())
        .map_err(|e| db_error("a ban's savepoint", &e))
}

/// Re-seals the epoch's share with its OT material burned, retrying until
/// it is stored or there is nothing left to burn. The key is already
/// banned in storage, so a slow or failing master-key backend delays only
/// this.
async fn burn_until_done(vault: &Vault, key_id: &KeyId, epoch: u64) {
    let mut delay = FIRST_RETRY_DELAY;
    loop {
        match burn(vault, key_id, epoch).await {
            Ok(()) => {
                info!(%key_id, epoch, "OT material burned");
                return;
            }
            Err(e @ (VaultError::NotFound | VaultError::Conflict(_))) => {
                warn!(%key_id, epoch, error = %e, "OT material not burned: nothing left to burn");
                return;
            }
            Err(e) => {
                error!(%key_id, epoch, error = %e, "could not burn the OT material: key banned, retrying");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_RETRY_DELAY);
    }
}

/// One write: the epoch's share with its OT material burned, with the
/// audit row `key.ot_burned`, in one transaction
/// ([`Vault::replace_share`]); the status stays banned.
async fn burn(vault: &Vault, key_id: &KeyId, epoch: u64) -> Result<(), VaultError> {
    if crash::fails("ban:persist") {
        return Err(VaultError::Database(
            "injected failure (ban:persist)".into(),
        ));
    }
    let record = vault.key(key_id).await?.ok_or(VaultError::NotFound)?;
    if record.epoch > epoch || record.status != KeyStatus::Banned {
        // Refreshed since: the epoch is gone or about to be.
        return Err(VaultError::NotFound);
    }
    let mut share = vault
        .share(&record, epoch)
        .await?
        .ok_or(VaultError::NotFound)?
        .share;
    share.burn_ot_material();
    let event = Event {
        name: "key.ot_burned",
        detail: json!({ "epoch": epoch }),
    };
    vault
        .replace_share(&record, &share, KeyStatus::Banned, event, now_ms())
        .await
}

/// One session's registration with its key; leaves on drop.
pub(crate) struct KeySession {
    inner: Arc<Inner>,
    key_id: KeyId,
    entry: Arc<Entry>,
    bans: watch::Receiver<u64>,
}

impl Drop for KeySession {
    fn drop(&mut self) {
        let mut keys = self
            .inner
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((_, count)) = keys.get_mut(&self.key_id) {
            *count -= 1;
            if *count == 0 {
                keys.remove(&self.key_id);
            }
        }
    }
}

/// The [`SessionHooks`] of a session that uses a key's share (sign,
/// presign, online sign): the key's step lock and a fresh status check
/// before each step, the ban after a ban-class failure, and cancellation
/// by a ban from another session.
pub(crate) struct BanHooks<'a> {
    guards: &'a KeyGuards,
    session: KeySession,
    epoch: u64,
}

impl<'a> BanHooks<'a> {
    pub(crate) fn new(guards: &'a KeyGuards, session: KeySession, epoch: u64) -> Self {
        Self {
            guards,
            session,
            epoch,
        }
    }
}

/// The key's step lock: this process's, and on PostgreSQL every replica's
/// (a transaction-scoped advisory lock, released when the transaction is
/// dropped, i.e. rolled back, at the end of the step).
pub(crate) struct StepGuard {
    // Dropped first: the replicas' lock goes before this process's.
    shared: Option<Tx>,
    _local: OwnedMutexGuard<()>,
}

/// The advisory lock of `key_id` across replicas (key ids are hashes: the
/// first 8 bytes are as good as any; a collision only serializes two keys).
async fn lock_across_replicas(vault: &Vault, key_id: &KeyId) -> Result<Option<Tx>, VaultError> {
    let store = vault.store();
    if store.backend() != Backend::Postgres {
        // One process per SQLite file: the local lock is the lock.
        return Ok(None);
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&key_id.0[..8]);
    let mut tx = store.begin().await?;
    // The status read after the lock must see what the previous holder
    // committed: under REPEATABLE READ or SERIALIZABLE (a database default
    // may say so) the snapshot would be taken by the lock statement itself,
    // before it blocks. Must be the transaction's first statement.
    sqlx::query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("setting a step's isolation level", &e))?;
    // The function returns `void`, which the `Any` driver cannot decode:
    // select a constant from it instead.
    sqlx::query("SELECT CAST(1 AS INTEGER) FROM (SELECT pg_advisory_xact_lock($1)) AS l")
        .bind(i64::from_be_bytes(id))
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("taking a key's step lock", &e))?;
    Ok(Some(tx))
}

impl BanHooks<'_> {
    /// Refused by this process's memory: the key has an unstored ban, or
    /// was banned since this session joined (whatever became of that
    /// ban's write).
    fn refused_in_memory(&self) -> Result<(), Rejection> {
        if self.guards.is_pending(&self.session.key_id)
            || self.session.bans.has_changed().unwrap_or(true)
        {
            return Err(codes::KEY_BANNED);
        }
        Ok(())
    }
}

impl<P> SessionHooks<P> for BanHooks<'_> {
    type Guard = StepGuard;

    async fn before_step(&mut self) -> Result<StepGuard, Rejection> {
        // Checked before the wait too: a key whose ban holds the step lock
        // (its write being retried) refuses at once instead of timing out.
        self.refused_in_memory()?;
        let local = Arc::clone(&self.session.entry.step).lock_owned().await;
        // Checked again under the lock: a session that queued for the lock
        // behind the banning step was not reached by the cancel signal
        // (that only interrupts waits for the peer).
        self.refused_in_memory()?;
        let key_id = &self.session.key_id;
        let mut shared = match lock_across_replicas(&self.guards.vault, key_id).await {
            Ok(shared) => shared,
            Err(e) => {
                error!(%key_id, error = %e, "storage failed: key step lock");
                return Err(Rejection::INTERNAL);
            }
        };
        // The stored status, fresh: another replica may have banned or
        // revoked the key since this session started. Read on the lock's
        // connection when there is one: a step holds at most one pooled
        // connection, so concurrent steps cannot starve each other.
        let stored = match shared.as_mut() {
            Some(tx) => crate::store::queries::key(tx, key_id).await,
            None => self.guards.vault.key(key_id).await,
        };
        let refused = match stored {
            // A refresh finalized a later epoch: this session's share (and
            // any ban of it) is gone, its OT material must not be probed
            // again (PROTOCOL.md §18.2).
            Ok(Some(record)) if record.epoch > self.epoch => Some(codes::UNKNOWN_EPOCH),
            Ok(Some(record)) => refusal(record.status, Purpose::Sign),
            Ok(None) => Some(Rejection::NOT_FOUND),
            Err(e) => {
                error!(%key_id, error = %e, "storage failed: re-check key status");
                Some(Rejection::INTERNAL)
            }
        };
        match refused {
            Some(rejection) => Err(rejection),
            None => Ok(StepGuard {
                shared,
                _local: local,
            }),
        }
    }

    async fn on_protocol_error(&mut self, guard: StepGuard, error: &mpc_core::Error) {
        if error.class() == mpc_core::AbortClass::Ban {
            let reason = format!("ban-class failure: {}", error.as_str());
            self.guards
                .ban(&self.session.key_id, self.epoch, reason, guard)
                .await;
        }
    }

    async fn cancelled(&mut self) -> Rejection {
        match self.session.bans.changed().await {
            Ok(()) => codes::KEY_BANNED,
            // The sender lives as long as the entry this session holds.
            Err(_) => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::testkit::{self, Kind, TestDb};
    use futures_util::FutureExt;

    async fn guards() -> (KeyGuards, TestDb) {
        let db = testkit::test_db(Kind::Sqlite)
            .await
            .unwrap_or_else(|| panic!("no SQLite test database"));
        let vault = testkit::vault(&db, 1).await;
        (KeyGuards::new(vault), db)
    }

    /// Entries live exactly as long as a session of the key does.
    #[tokio::test]
    async fn entries_do_not_leak() {
        let (guards, _dir) = guards().await;
        let a = KeyId([1; 32]);
        let b = KeyId([2; 32]);
        let one = guards.join(&a);
        let two = guards.join(&a);
        let three = guards.join(&b);
        assert_eq!(guards.open_keys(), 2);
        drop(one);
        assert_eq!(guards.open_keys(), 2);
        drop(two);
        assert_eq!(guards.open_keys(), 1);
        drop(three);
        assert_eq!(guards.open_keys(), 0);
    }

    /// A ban cancels the key's open sessions, not those of other keys nor
    /// those that join after it; a ban whose write fails (no such key here)
    /// does not stay pending forever.
    #[tokio::test]
    async fn a_ban_cancels_open_sessions_of_the_key_only() {
        let (guards, _dir) = guards().await;
        let a = KeyId([1; 32]);
        let b = KeyId([2; 32]);
        let mut open = BanHooks::new(&guards, guards.join(&a), 0);
        let mut other = BanHooks::new(&guards, guards.join(&b), 0);
        let step = Arc::new(tokio::sync::Mutex::new(())).lock_owned().await;
        let guard = StepGuard {
            shared: None,
            _local: step,
        };
        guards.ban(&a, 0, "test".into(), guard).await;
        // The ban's signal was sent before `ban` returned: no waiting.
        let cancelled = SessionHooks::<mpc_core::Sign<'_>>::cancelled(&mut open).now_or_never();
        assert_eq!(cancelled, Some(codes::KEY_BANNED));
        let mut later = BanHooks::new(&guards, guards.join(&a), 0);
        for hooks in [&mut other, &mut later] {
            let cancelled = SessionHooks::<mpc_core::Sign<'_>>::cancelled(hooks).now_or_never();
            assert_eq!(cancelled, None, "cancelled without a ban of its key");
        }
        // The key does not exist: nothing to ban, so not pending.
        assert!(!guards.is_pending(&a));
    }
}
