//! The single-use guard of presignatures (PROTOCOL.md §14.3).
//!
//! Two prehashes signed with one presignature reveal the key share. Taking the
//! [`Presignature`](crate::Presignature) by value stops one process from
//! using one value twice, but not a storage layer that restores its bytes
//! (a backup, a replica, a crash before the delete). So the only constructor
//! of [`OnlineSign`](crate::OnlineSign) also takes a [`PresignatureGuard`]
//! and asks it to claim the presignature's session id before any round-4
//! byte exists; a refused claim ends the step with
//! [`Error::PresignatureClaimRefused`](crate::Error::PresignatureClaimRefused).

use alloc::collections::BTreeSet;
use core::fmt;

use crate::keyshare::KeyId;
use crate::wire::SessionId;

/// Why a [`PresignatureGuard`] refused a claim.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClaimRefused {
    /// The presignature was claimed before (or its claim is unknown to the
    /// store, e.g. a row restored from a backup after its use).
    AlreadyClaimed,
    /// The store could not record the claim; the step must not go on.
    Unavailable,
}

impl fmt::Display for ClaimRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AlreadyClaimed => "presignature claimed before",
            Self::Unavailable => "presignature store could not record the claim",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ClaimRefused {}

/// The durable record of which presignatures were used (PROTOCOL.md §14.3).
///
/// # Contract
///
/// [`claim`](Self::claim) returns `Ok(())` for a given
/// `(key_id, epoch, session)` at most once, ever, across every process that
/// may sign with copies of the same presignature, and only after the claim
/// is durable: a crash after `Ok` must leave the presignature claimed. It
/// returns [`ClaimRefused`] in every other case, including when it cannot
/// tell. [`OnlineSign::new`](crate::OnlineSign::new) calls it after its
/// share checks and before it can produce the round-4 message; nothing else
/// in this crate produces that message from a stored presignature.
///
/// The call is synchronous and must not block an async executor. A store
/// whose claim is async (a database) claims first, in its own code, and
/// passes a guard that only confirms that claim: the server claims the row
/// (marks it used, deletes the ciphertext and tombstones the session id in
/// one transaction) and hands `OnlineSign` a guard that answers `Ok` once,
/// for exactly that session id.
///
/// What the guard does not prevent: a guard that lies (always `Ok`, or a
/// claim that is not durable, or two replicas with separate claim sets)
/// gives no protection, and nothing in this crate can tell. Nor does it stop
/// the peer from reusing its own copy; the peer's reuse only exposes the
/// peer's guard, and each party holds its own.
pub trait PresignatureGuard {
    /// Claims the presignature `session` of key `key_id` at `epoch`.
    ///
    /// # Errors
    ///
    /// [`ClaimRefused`] if it was claimed before, or the claim could not be
    /// made durable.
    fn claim(
        &mut self,
        key_id: &KeyId,
        epoch: u64,
        session: &SessionId,
    ) -> Result<(), ClaimRefused>;
}

impl<G: PresignatureGuard + ?Sized> PresignatureGuard for &mut G {
    fn claim(
        &mut self,
        key_id: &KeyId,
        epoch: u64,
        session: &SessionId,
    ) -> Result<(), ClaimRefused> {
        (**self).claim(key_id, epoch, session)
    }
}

/// An in-memory [`PresignatureGuard`]: claims last as long as the value.
///
/// Honest for presignatures that themselves live only in this process's
/// memory (tests, a device that never persists them). A process that stores
/// presignatures must record claims as durably as it stores them; this set
/// forgets every claim when dropped.
#[derive(Default)]
pub struct ClaimSet {
    claimed: BTreeSet<(KeyId, u64, [u8; 32])>,
}

impl ClaimSet {
    /// An empty set.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `session` of `key_id` at `epoch` was claimed.
    #[must_use]
    pub fn is_claimed(&self, key_id: &KeyId, epoch: u64, session: &SessionId) -> bool {
        self.claimed.contains(&(*key_id, epoch, session.0))
    }
}

impl fmt::Debug for ClaimSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClaimSet")
            .field("claimed", &self.claimed.len())
            .finish()
    }
}

impl PresignatureGuard for ClaimSet {
    fn claim(
        &mut self,
        key_id: &KeyId,
        epoch: u64,
        session: &SessionId,
    ) -> Result<(), ClaimRefused> {
        if self.claimed.insert((*key_id, epoch, session.0)) {
            Ok(())
        } else {
            Err(ClaimRefused::AlreadyClaimed)
        }
    }
}
