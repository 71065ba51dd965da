//! Two-party distributed key generation (PROTOCOL.md §13).
//!
//! Four rounds, both parties send in each:
//!
//! 1. a fresh nonce and a commitment to the public share and the chain-code
//!    contribution;
//! 2. the opening, a Schnorr proof bound to the joint session id and the role,
//!    and the base-OT receiver message of the party's own OT direction;
//! 3. the base-OT sender message and the GGM setup message of the peer's
//!    direction;
//! 4. key confirmation: a hash of the public key, both public shares, the
//!    chain code and both OT setup fingerprints. Nothing is output unless both
//!    sides confirm the same values.

use crate::keygen::{KeygenState, Mode};
use crate::keyshare::KeyShare;
use crate::protocol::{impl_protocol, Driver};
use crate::transcript::{tags, Transcript};
use crate::wire::Role;

/// Payload bytes of each DKG round.
pub const ROUND_BYTES: [usize; 4] = [
    crate::keygen::ROUND_BYTES[0],
    crate::keygen::ROUND_BYTES[1],
    crate::keygen::ROUND_BYTES[2],
    crate::keygen::ROUND_BYTES[3],
];

/// Two-party key generation for one party.
///
/// Output: this party's [`KeyShare`] (epoch 0). Drive it with
/// [`Protocol`](crate::Protocol).
pub struct Dkg {
    driver: Driver<KeygenState<'static, false>>,
}

impl Dkg {
    /// Key generation as `role`. `context` is public data both parties agree
    /// on beforehand (e.g. the transport's session handle and the owner); it
    /// addresses the first round's messages.
    #[must_use]
    pub fn new(role: Role, context: &[u8]) -> Self {
        let setup = Transcript::new(tags::DKG_SETUP).chain(context).finalize();
        Self {
            driver: Driver::new(KeygenState::new(Mode::Dkg, role, setup)),
        }
    }
}

impl_protocol!(Dkg => KeyShare);
