//! One direction's OT setup: base OT, then GGM trees (PROTOCOL.md §5.4).
//!
//! ```text
//! S (base-OT receiver)                    R (base-OT sender, tree builder)
//! SenderSetup::start   -- BotRecvMsg -->  receiver_setup
//!                      <-- BotSendMsg, PprfMsg --
//! SenderSetup::finish
//! ```
//!
//! Both ends derive the same setup fingerprint and key context, which bind
//! every later extension batch and the gadget vector to this setup.

use alloc::vec::Vec;

use rand_core::CryptoRngCore;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::base::{self, BaseOtReceiver};
use super::pprf::{self, AllSeeds, PuncturedSeeds};
use crate::error::Result;
use crate::hazmat::vole::Gadget;
use crate::transcript::{tags, Transcript};

/// Public context of one direction's setup.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SetupContext {
    /// `setup_fp = H(mpc/ot/setup-fp/v1; sid_bot, BotRecvMsg, BotSendMsg, PprfMsg)`.
    pub fingerprint: [u8; 32],
    /// `keyctx = H(mpc/ot/keyctx/v1; sid_bot, setup_fp)`.
    pub keyctx: [u8; 32],
}

impl SetupContext {
    fn derive(sid_bot: &[u8; 32], recv_msg: &[u8], send_msg: &[u8], pprf_msg: &[u8]) -> Self {
        let fingerprint = Transcript::new(tags::OT_SETUP_FP)
            .chain(sid_bot)
            .chain(recv_msg)
            .chain(send_msg)
            .chain(pprf_msg)
            .finalize();
        let keyctx = Transcript::new(tags::OT_KEYCTX)
            .chain(sid_bot)
            .chain(&fingerprint)
            .finalize();
        Self {
            fingerprint,
            keyctx,
        }
    }
}

/// `sid_pprf = H(mpc/ot/pprf/sid/v1; sid_bot)`.
fn pprf_sid(sid_bot: &[u8; 32]) -> [u8; 32] {
    Transcript::new(tags::PPRF_SID).chain(sid_bot).finalize()
}

/// S's long-term OT secret for one direction: all-but-one seeds (and so
/// `Delta`), with the public context and the gadget vector.
#[derive(ZeroizeOnDrop)]
pub struct OtSenderKey {
    seeds: PuncturedSeeds,
    #[zeroize(skip)]
    context: SetupContext,
    #[zeroize(skip)]
    gadget: Gadget,
}

/// R's long-term OT secret for one direction: every leaf seed, with the
/// public context and the gadget vector.
#[derive(ZeroizeOnDrop)]
pub struct OtReceiverKey {
    seeds: AllSeeds,
    #[zeroize(skip)]
    context: SetupContext,
    #[zeroize(skip)]
    gadget: Gadget,
}

impl OtSenderKey {
    /// Wipes the seeds (the key is burned; see PROTOCOL.md §8).
    pub(crate) fn wipe(&mut self) {
        self.seeds.zeroize();
        self.seeds.seeds = alloc::vec![[[0u8; 16]; crate::params::LEAVES]; crate::params::TREES];
    }

    /// Rebuilds a key from stored parts (the gadget is re-derived).
    #[must_use]
    pub fn from_parts(seeds: PuncturedSeeds, context: SetupContext) -> Self {
        Self::from_parts_reusing(seeds, context, &[])
    }

    /// [`from_parts`](Self::from_parts), taking the gadget from `known` if
    /// one there was derived from this context.
    #[must_use]
    pub fn from_parts_reusing(
        seeds: PuncturedSeeds,
        context: SetupContext,
        known: &[Gadget],
    ) -> Self {
        let gadget = Gadget::reuse_or_derive(&context.keyctx, known);
        Self {
            seeds,
            context,
            gadget,
        }
    }

    /// The punctured seeds.
    #[must_use]
    pub fn seeds(&self) -> &PuncturedSeeds {
        &self.seeds
    }

    /// The public setup context.
    #[must_use]
    pub fn context(&self) -> &SetupContext {
        &self.context
    }

    /// The gadget vector of this direction.
    #[must_use]
    pub fn gadget(&self) -> &Gadget {
        &self.gadget
    }
}

impl OtReceiverKey {
    /// Wipes the seeds (the key is burned; see PROTOCOL.md §8).
    pub(crate) fn wipe(&mut self) {
        self.seeds.zeroize();
        self.seeds.seeds = alloc::vec![[[0u8; 16]; crate::params::LEAVES]; crate::params::TREES];
    }

    /// Rebuilds a key from stored parts (the gadget is re-derived).
    #[must_use]
    pub fn from_parts(seeds: AllSeeds, context: SetupContext) -> Self {
        Self::from_parts_reusing(seeds, context, &[])
    }

    /// [`from_parts`](Self::from_parts), taking the gadget from `known` if
    /// one there was derived from this context.
    #[must_use]
    pub fn from_parts_reusing(seeds: AllSeeds, context: SetupContext, known: &[Gadget]) -> Self {
        let gadget = Gadget::reuse_or_derive(&context.keyctx, known);
        Self {
            seeds,
            context,
            gadget,
        }
    }

    /// All leaf seeds.
    #[must_use]
    pub fn seeds(&self) -> &AllSeeds {
        &self.seeds
    }

    /// The public setup context.
    #[must_use]
    pub fn context(&self) -> &SetupContext {
        &self.context
    }

    /// The gadget vector of this direction.
    #[must_use]
    pub fn gadget(&self) -> &Gadget {
        &self.gadget
    }
}

/// S's side of the setup between its message and R's answer (its secrets
/// live in the base-OT receiver, which zeroizes itself).
pub struct SenderSetup {
    sid_bot: [u8; 32],
    base: BaseOtReceiver,
}

impl SenderSetup {
    /// Starts S's side: returns the base-OT receiver message (`BotRecvMsg`).
    pub fn start(rng: &mut impl CryptoRngCore, sid_bot: &[u8; 32]) -> (Self, Vec<u8>) {
        let (base, message) = BaseOtReceiver::start(rng, sid_bot);
        (
            Self {
                sid_bot: *sid_bot,
                base,
            },
            message,
        )
    }

    /// Finishes S's side from R's `BotSendMsg` and `PprfMsg`.
    ///
    /// # Errors
    ///
    /// Abort-class errors if R's messages are malformed or the tree proof
    /// fails ([`Error::PprfProofFailed`](crate::Error::PprfProofFailed)).
    pub fn finish(self, send_msg: &[u8], pprf_msg: &[u8]) -> Result<OtSenderKey> {
        let context = SetupContext::derive(&self.sid_bot, self.base.message(), send_msg, pprf_msg);
        let sid_bot = self.sid_bot;
        let base_out = self.base.finish(send_msg)?;
        let seeds = pprf::evaluate(&pprf_sid(&sid_bot), &base_out, pprf_msg)?;
        Ok(OtSenderKey::from_parts(seeds, context))
    }
}

/// R's side of the setup: answers S's `BotRecvMsg` with `BotSendMsg` and
/// `PprfMsg` and returns R's key.
///
/// # Errors
///
/// Abort-class errors if S's message is malformed.
pub fn receiver_setup(
    rng: &mut impl CryptoRngCore,
    sid_bot: &[u8; 32],
    recv_msg: &[u8],
) -> Result<(OtReceiverKey, Vec<u8>, Vec<u8>)> {
    let (base_out, send_msg) = base::send(rng, sid_bot, recv_msg)?;
    let (seeds, pprf_msg) = pprf::build(&pprf_sid(sid_bot), &base_out);
    let context = SetupContext::derive(sid_bot, recv_msg, &send_msg, &pprf_msg);
    Ok((
        OtReceiverKey::from_parts(seeds, context),
        send_msg,
        pprf_msg,
    ))
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::needless_range_loop)]
pub(crate) mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    /// The PPRF's session id is bound to the base OT's, so no two setups
    /// hash their trees under one id (both parties derive it, so a constant
    /// would keep them agreeing and only this test notices).
    #[test]
    fn pprf_sid_binds_the_base_ot_session() {
        assert_ne!(pprf_sid(&[1; 32]), pprf_sid(&[2; 32]));
        assert_ne!(pprf_sid(&[1; 32]), [1; 32]);
    }

    /// Runs one direction's setup in-process.
    pub(crate) fn key_pair(seed: u64) -> (OtSenderKey, OtReceiverKey) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let sid = [seed as u8; 32];
        let (s, recv_msg) = SenderSetup::start(&mut rng, &sid);
        let (r_key, send_msg, pprf_msg) = receiver_setup(&mut rng, &sid, &recv_msg).unwrap();
        (s.finish(&send_msg, &pprf_msg).unwrap(), r_key)
    }

    #[test]
    fn both_sides_agree_on_context() {
        let (s, r) = key_pair(1);
        assert_eq!(s.context(), r.context());
        assert_eq!(s.gadget(), r.gadget());
        let (s2, _) = key_pair(2);
        assert_ne!(s.context(), s2.context());
    }

    #[test]
    fn tampered_pprf_message_aborts() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let sid = [3; 32];
        let (s, recv_msg) = SenderSetup::start(&mut rng, &sid);
        let (_, send_msg, mut pprf_msg) = receiver_setup(&mut rng, &sid, &recv_msg).unwrap();
        let last = pprf_msg.len() - 1;
        pprf_msg[last] ^= 1;
        assert_eq!(
            s.finish(&send_msg, &pprf_msg).err(),
            Some(crate::Error::PprfProofFailed)
        );
    }
}
