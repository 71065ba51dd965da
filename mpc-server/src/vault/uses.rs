//! Key uses (a signature's last-use time and audit entry), committed in
//! groups: the uses that arrive while one group is being written share the
//! next transaction, so concurrent signatures share one commit, and one
//! fsync, instead of queueing on the database's write lock one by one
//! (PROTOCOL.md §18.5). Each caller still returns only once its own use is
//! durable, exactly as with a transaction of its own.

use std::sync::{Arc, Mutex, PoisonError};

use mpc_core::KeyId;
use tokio::sync::oneshot;

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
    waiting: Vec<PendingUse>,
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
            queue.waiting.push(PendingUse {
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
            // A task of its own: a caller cancelled while it writes (its
            // session timed out) must not strand the others' uses.
            let vault = self.clone();
            tokio::spawn(async move { vault.write_uses().await });
        }
        outcome.await.unwrap_or_else(|_| {
            Err(VaultError::Database(
                "the key-use writer stopped before committing".into(),
            ))
        })
    }

    /// Writes groups of waiting uses until none is left.
    async fn write_uses(&self) {
        let mut writing = Writing {
            log: Arc::clone(&self.inner),
            armed: true,
        };
        loop {
            let group = {
                let mut queue = writing.log.uses.lock();
                if queue.waiting.is_empty() {
                    queue.writing = false;
                    writing.armed = false;
                    return;
                }
                let take = queue.waiting.len().min(MAX_GROUP);
                queue.waiting.drain(..take).collect::<Vec<_>>()
            };
            let store = self.store();
            match write_group(store, &group).await {
                Ok(found) => {
                    for (pending, found) in group.into_iter().zip(found) {
                        let result = if found {
                            Ok(())
                        } else {
                            Err(VaultError::NotFound)
                        };
                        let _ = pending.done.send(result);
                    }
                }
                // One use's failure must not be the others': each again in
                // a transaction of its own.
                Err(_) if group.len() > 1 => {
                    for pending in group {
                        let result = match write_group(store, std::slice::from_ref(&pending)).await
                        {
                            Ok(found) if found.first() == Some(&true) => Ok(()),
                            Ok(_) => Err(VaultError::NotFound),
                            Err(e) => Err(e),
                        };
                        let _ = pending.done.send(result);
                    }
                }
                Err(e) => {
                    if let Some(pending) = group.into_iter().next() {
                        let _ = pending.done.send(Err(e));
                    }
                }
            }
        }
    }
}

/// Writes `group` in one transaction; for each use, whether its key exists
/// (a missing key's use writes nothing).
async fn write_group(store: &Store, group: &[PendingUse]) -> Result<Vec<bool>, VaultError> {
    let mut tx = store.begin().await?;
    let mut found = Vec::with_capacity(group.len());
    for pending in group {
        let exists = q::set_time(&mut tx, &pending.key_id, KeyTime::LastUsed, pending.at).await?;
        if exists {
            q::insert_audit(
                &mut tx,
                &pending.key_id,
                &pending.owner,
                pending.at,
                &pending.event,
                &pending.detail,
            )
            .await?;
        }
        found.push(exists);
    }
    commit(tx).await?;
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
