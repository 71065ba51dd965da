//! A malicious key-generation or refresh peer (PROTOCOL.md §13, §18) for the
//! first two rounds: it commits to a point it knows the log of, then opens it
//! with a Schnorr proof whose challenge it computes over a chosen list of
//! inputs. Its OT message is an honest `SenderSetup` message, so the only
//! deviation is the proof.

use k256::elliptic_curve::Field;
use k256::Scalar;
use mpc_core::hazmat::ot::setup::SenderSetup;
use mpc_core::transcript::{tags, Tag};
use mpc_core::wire::{encode_point, encode_scalar, ProtocolId, Role};
use mpc_core::{Error, Protocol, Step};
use rand_chacha::rand_core::RngCore;
use rand_chacha::ChaCha20Rng;

use super::peer::{payload, seal};
use super::spec::{self, g_mul};

/// Key generation or refresh: the tags and what differs between them.
#[derive(Clone, Copy)]
pub struct Mode {
    pub protocol: ProtocolId,
    pub commit: Tag,
    pub sid: Tag,
    pub schnorr: Tag,
    /// The epoch of the new material (§9 `sid_bot`).
    pub epoch: u64,
    /// Refresh keeps the chain code: its contribution is zero.
    pub chain_contribution: bool,
}

pub const DKG: Mode = Mode {
    protocol: ProtocolId::Dkg,
    commit: tags::DKG_COMMIT,
    sid: tags::DKG_SID,
    schnorr: tags::DKG_SCHNORR,
    epoch: 0,
    chain_contribution: true,
};

pub fn refresh(old_epoch: u64) -> Mode {
    Mode {
        protocol: ProtocolId::Refresh,
        commit: tags::REFRESH_COMMIT,
        sid: tags::REFRESH_SID,
        schnorr: tags::REFRESH_SCHNORR,
        epoch: old_epoch + 1,
        chain_contribution: false,
    }
}

/// Which challenge the malicious prover uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// The specified one: `H2S(tag; sid, role, G, X, K)`.
    Honest,
    /// The session id left out.
    NoSid,
    /// Bound to the setup id instead of the joint session id.
    SetupInsteadOfSid,
    /// The prover's role left out.
    NoRole,
    /// Bound to the other party's role.
    OtherRole,
    /// The generator left out.
    NoGenerator,
    /// The statement `X` left out.
    NoStatement,
    /// The commitment `K` left out.
    NoCommitment,
    /// Under the other protocol's tag (DKG vs refresh).
    OtherTag,
}

pub const ALL_CHALLENGES: [Challenge; 9] = [
    Challenge::Honest,
    Challenge::NoSid,
    Challenge::SetupInsteadOfSid,
    Challenge::NoRole,
    Challenge::OtherRole,
    Challenge::NoGenerator,
    Challenge::NoStatement,
    Challenge::NoCommitment,
    Challenge::OtherTag,
];

pub struct EvilKeygen {
    mode: Mode,
    role: Role,
    setup: [u8; 32],
    nonce: [u8; 32],
    secret: Scalar,
    public: [u8; 33],
    chain: [u8; 32],
    salt: [u8; 32],
    rng: ChaCha20Rng,
}

impl EvilKeygen {
    pub fn new(mode: Mode, role: Role, setup: [u8; 32], mut rng: ChaCha20Rng) -> Self {
        let secret = Scalar::random(&mut rng);
        let mut nonce = [0u8; 32];
        let mut chain = [0u8; 32];
        let mut salt = [0u8; 32];
        rng.fill_bytes(&mut nonce);
        if mode.chain_contribution {
            rng.fill_bytes(&mut chain);
        }
        rng.fill_bytes(&mut salt);
        Self {
            mode,
            role,
            setup,
            nonce,
            public: encode_point(&g_mul(&secret)),
            secret,
            chain,
            salt,
            rng,
        }
    }

    pub fn round1(&self) -> Vec<u8> {
        let commit = spec::hash(
            self.mode.commit,
            &[
                &self.setup,
                &[self.role.as_u8()],
                &self.nonce,
                &self.public,
                &self.chain,
                &self.salt,
            ],
        );
        seal(
            self.mode.protocol,
            self.setup,
            1,
            self.role,
            [self.nonce.as_slice(), &commit].concat(),
        )
    }

    /// Round 2 after the peer's round 1: the opening, a proof with the given
    /// challenge, and an honest base-OT receiver message.
    pub fn round2(&mut self, peer_round1: &[u8], challenge: Challenge) -> Vec<u8> {
        let peer = payload(peer_round1);
        let (a, b) = spec::ordered(self.role, &self.nonce, &peer[..32]);
        let sid = spec::hash(self.mode.sid, &[&self.setup, a, b]);
        let k = Scalar::random(&mut self.rng);
        let big_k = encode_point(&g_mul(&k));
        let g = spec::generator_bytes();
        let role = [self.role.as_u8()];
        let other_role = [self.role.peer().as_u8()];
        let other_tag = if self.mode.schnorr == tags::DKG_SCHNORR {
            tags::REFRESH_SCHNORR
        } else {
            tags::DKG_SCHNORR
        };
        let (tag, inputs): (Tag, Vec<&[u8]>) = match challenge {
            Challenge::Honest => (
                self.mode.schnorr,
                vec![&sid, &role, &g, &self.public, &big_k],
            ),
            Challenge::NoSid => (self.mode.schnorr, vec![&role, &g, &self.public, &big_k]),
            Challenge::NoRole => (self.mode.schnorr, vec![&sid, &g, &self.public, &big_k]),
            Challenge::OtherRole => (
                self.mode.schnorr,
                vec![&sid, &other_role, &g, &self.public, &big_k],
            ),
            Challenge::SetupInsteadOfSid => (
                self.mode.schnorr,
                vec![&self.setup, &role, &g, &self.public, &big_k],
            ),
            Challenge::NoGenerator => (self.mode.schnorr, vec![&sid, &role, &self.public, &big_k]),
            Challenge::NoStatement => (self.mode.schnorr, vec![&sid, &role, &g, &big_k]),
            Challenge::NoCommitment => (self.mode.schnorr, vec![&sid, &role, &g, &self.public]),
            Challenge::OtherTag => (other_tag, vec![&sid, &role, &g, &self.public, &big_k]),
        };
        let e = spec::challenge(tag, &inputs);
        let z = k + e * self.secret;
        let (_, bot_recv_msg) = SenderSetup::start(
            &mut self.rng,
            &spec::base_ot_sid(&sid, self.role, self.mode.epoch),
        );
        let body = [
            self.public.as_slice(),
            &self.chain,
            &self.salt,
            &big_k,
            &encode_scalar(&z),
            &bot_recv_msg,
        ]
        .concat();
        seal(self.mode.protocol, sid, 2, self.role, body)
    }
}

/// Runs `honest` (role A) against `evil` (role B) for two rounds and
/// returns what `honest` does with the proof-carrying round-2 message.
pub fn first_two_rounds<P: Protocol>(
    honest: &mut P,
    rng: &mut ChaCha20Rng,
    evil: &mut EvilKeygen,
    challenge: Challenge,
) -> Result<Step<P::Output>, Error> {
    let a1 = honest.start(rng).unwrap();
    match honest.handle(rng, &evil.round1()) {
        Ok(Step::Send(_)) => {}
        _ => panic!("round 1 of the malicious peer was not accepted"),
    }
    let b2 = evil.round2(&a1, challenge);
    honest.handle(rng, &b2)
}
