//! Share refresh (rotation): new shares of the same key, fresh OT material,
//! epoch + 1 (PROTOCOL.md §18).
//!
//! Five rounds: the four of key generation with a fresh offset `a_i` instead
//! of a fresh share (`x_A' = x_A + delta`, `x_B' = x_B - delta`, `delta` from
//! both offsets and their Diffie-Hellman value), then an acknowledgement.
//! Storage follows three states so that an interruption never loses the key
//! and the parties always share an epoch they can sign with:
//!
//! | state | reached when | storage must | signing requests use |
//! |---|---|---|---|
//! | ready | [`Refresh::ready_share`] first returns `Some` (before the round-4 message leaves) | keep old and new | old |
//! | confirmed | [`Refresh::is_confirmed`] turns true (before the round-5 message leaves) | keep old and new | new |
//! | finalized | `handle` returns `Finished` | may delete old | new |
//!
//! A party answers a signing request for any epoch it still holds. A party
//! is confirmed only after the peer proved it is ready with the same public
//! state, and deletes the old epoch only after the peer proved it is
//! confirmed: whatever epoch a requester picks, the responder still holds it.

use crate::keygen::{KeygenState, Mode};
use crate::keyshare::KeyShare;
use crate::protocol::{impl_protocol, Driver};
use crate::transcript::{tags, Transcript};

/// Refresh of one party's share.
///
/// Output: the new [`KeyShare`] (epoch + 1, fresh OT material, not burned).
pub struct Refresh<'a> {
    driver: Driver<KeygenState<'a, true>>,
}

impl<'a> Refresh<'a> {
    /// Refreshes `old`. `context` is public data both parties agree on
    /// beforehand. Works on a share whose OT material is burned.
    #[must_use]
    pub fn new(old: &'a KeyShare, context: &[u8]) -> Self {
        let setup = Transcript::new(tags::REFRESH_SETUP)
            .chain(old.transcript_hash())
            .chain(&old.key_id().0)
            .chain(&old.epoch().to_be_bytes())
            .chain(context)
            .finalize();
        Self {
            driver: Driver::new(KeygenState::new(Mode::Refresh(old), old.role(), setup)),
        }
    }

    /// The new share once it exists ("ready"): persist it next to the old
    /// one before sending the message that [`Protocol::handle`](crate::Protocol::handle) just returned.
    #[must_use]
    pub fn ready_share(&self) -> Option<&KeyShare> {
        self.driver.machine().and_then(KeygenState::ready_share)
    }

    /// Whether the peer confirmed the new share ("confirmed"): persist that
    /// before sending the message that [`Protocol::handle`](crate::Protocol::handle) just returned.
    #[must_use]
    pub fn is_confirmed(&self) -> bool {
        self.driver.machine().is_some_and(KeygenState::confirmed)
    }
}

impl_protocol!(Refresh<'_> => KeyShare);
