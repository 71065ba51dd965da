//! Key uses (a signature's last-use time and audit entry), committed in
//! groups: the uses that arrive while one group is being written share the
//! next transaction, so concurrent signatures share one commit, and one
//! fsync, instead of queueing on the database's write lock one by one
//! (PROTOCOL.md §18.5). Each caller still returns only once its own use is
//! durable, exactly as with a transaction of its own.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use mpc_core::KeyId;
use tokio::sync::oneshot;
use tracing::warn;

use super::{Vault, VaultError};
use crate::store::queries::{self as q, KeyTime};
use crate::store::{commit, Store};

/// Uses written in one transaction at most: bounds the time the write lock
/// is held and a caller's wait behind a large group.
const MAX_GROUP: usize = 128;

/// The uses waiting for the next group, and whether a writer is running.
#[derive(Default)]
pub(super) struct UseLog {
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<PendingUse>,
    writing: bool,
}

struct PendingUse {
    key_id: KeyId,
    owner: String,
    event: String,
    detail: serde_json::Value,
    at: i64,
    done: oneshot::Sender<Result<(), VaultError>>,
}

impl Vault {
    /// Records a use of the key: `last_used_at = now` and the audit `event`,
    /// together or not at all, in a transaction it may share with other
    /// uses that arrive meanwhile (one commit, so one fsync with SQLite's
    /// `synchronous=FULL`, for all of them). Returns once the use is
    /// committed.
    ///
    /// # Errors
    ///
    /// [`VaultError::NotFound`] if the key does not exist (nothing is
    /// written for it); [`VaultError::Database`].
    pub async fn record_use(
        &self,
        key_id: &KeyId,
        owner: &str,
        event: super::Event<'_>,
        now: i64,
    ) -> Result<(), VaultError> {
        let (done, outcome) = oneshot::channel();
        let start_writer = {
            let mut queue = self.inner.uses.lock();
            queue.waiting.push_back(PendingUse {
                key_id: *key_id,
                owner: owner.to_owned(),
                event: event.name.to_owned(),
                detail: event.detail,
                at: now,
                done,
            });
            !std::mem::replace(&mut queue.writing, true)
        };
        if start_writer {
            // Made before the task: a task dropped before it first runs
            // (the runtime shutting down) still clears the flag.
            let writing = Writing {
                log: Arc::clone(&self.inner),
                armed: true,
            };
            // A task of its own: a caller cancelled while it writes (its
            // session timed out) must not strand the others' uses.
            let vault = self.clone();
            tokio::spawn(async move { vault.write_uses(writing).await });
        }
        outcome.await.unwrap_or_else(|_| {
            Err(VaultError::Database(
                "the key-use writer stopped before committing".into(),
            ))
        })
    }

    /// Writes groups of waiting uses until none is left.
    async fn write_uses(&self, mut writing: Writing) {
        loop {
            let mut group = {
                let mut queue = self.inner.uses.lock();
                if queue.waiting.is_empty() {
                    queue.writing = false;
                    queue.waiting.shrink_to(MAX_GROUP);
                    writing.armed = false;
                    return;
                }
                let take = queue.waiting.len().min(MAX_GROUP);
                queue.waiting.drain(..take).collect::<Vec<_>>()
            };
            // Rows locked in one order by every group, so that two
            // replicas' groups cannot deadlock on PostgreSQL (stable: each
            // key's uses stay in arrival order).
            group.sort_by_key(|pending| pending.key_id.0);
            let store = self.store();
            match write_group(store, &group).await {
                Ok(found) => {
                    for (pending, found) in group.into_iter().zip(found) {
                        let _ = pending.done.send(found_or_not(found));
                    }
                }
                // A statement failed: it may be one use's, which must not
                // fail the others.
                Err(GroupError::Statement(e)) if group.len() > 1 => {
                    warn!(uses = group.len(), error = %e, "a group of key uses failed; writing each alone");
                    write_each(store, group).await;
                }
                // The database itself failed (no transaction, or a commit
                // whose outcome is unknown: retrying could write twice).
                // Each caller logs its failure.
                Err(e) => fail_all(group, &e.into_inner()),
            }
        }
    }
}

/// Writes each use of `group` in a transaction of its own. If the database
/// itself fails meanwhile, the rest fail with it rather than wait for it
/// once per use.
async fn write_each(store: &Store, group: Vec<PendingUse>) {
    let mut rest = group.into_iter();
    while let Some(pending) = rest.next() {
        match write_group(store, std::slice::from_ref(&pending)).await {
            Ok(found) => {
                let _ = pending
                    .done
                    .send(found_or_not(found.first() == Some(&true)));
            }
            Err(GroupError::Statement(e)) => {
                let _ = pending.done.send(Err(e));
            }
            Err(GroupError::Database(e)) => {
                fail_all(std::iter::once(pending).chain(rest), &e);
                return;
            }
        }
    }
}

/// A written use's result: its key existed, or nothing was written.
fn found_or_not(found: bool) -> Result<(), VaultError> {
    if found {
        Ok(())
    } else {
        Err(VaultError::NotFound)
    }
}

/// Fails every use of `uses` with `e`.
fn fail_all(uses: impl IntoIterator<Item = PendingUse>, e: &VaultError) {
    for pending in uses {
        let _ = pending.done.send(Err(same_error(e)));
    }
}

/// Where a group's transaction failed.
enum GroupError {
    /// Starting it or committing it.
    Database(VaultError),
    /// One of its statements.
    Statement(VaultError),
}

impl GroupError {
    fn into_inner(self) -> VaultError {
        match self {
            Self::Database(e) | Self::Statement(e) => e,
        }
    }
}

/// `e` again, for each use of a failed group.
fn same_error(e: &VaultError) -> VaultError {
    match e {
        VaultError::Database(message) => VaultError::Database(message.clone()),
        other => VaultError::Database(other.to_string()),
    }
}

/// Writes `group` in one transaction; for each use, whether its key exists
/// (a missing key's use writes nothing).
async fn write_group(store: &Store, group: &[PendingUse]) -> Result<Vec<bool>, GroupError> {
    let mut tx = store.begin().await.map_err(GroupError::Database)?;
    let mut found = Vec::with_capacity(group.len());
    for pending in group {
        let exists = q::set_time(&mut tx, &pending.key_id, KeyTime::LastUsed, pending.at)
            .await
            .map_err(GroupError::Statement)?;
        if exists {
            q::insert_audit(
                &mut tx,
                &pending.key_id,
                &pending.owner,
                pending.at,
                &pending.event,
                &pending.detail,
            )
            .await
            .map_err(GroupError::Statement)?;
        }
        found.push(exists);
    }
    commit(tx).await.map_err(GroupError::Database)?;
    Ok(found)
}

impl UseLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // The queue holds no invariant a panic could break halfway.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Resets the writer flag if the writer task ends early (its runtime shut
/// down): the uses still waiting are failed, and the next use starts a
/// writer again.
struct Writing {
    log: Arc<super::Inner>,
    /// False once the writer has cleared the flag itself.
    armed: bool,
}

impl Drop for Writing {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let waiting = {
            let mut queue = self.log.uses.lock();
            queue.writing = false;
            std::mem::take(&mut queue.waiting)
        };
        drop(waiting);
    }
}
