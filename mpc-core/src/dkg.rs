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

use alloc::vec::Vec;

use k256::elliptic_curve::group::Group;
use k256::elliptic_curve::ops::MulByGenerator;
use k256::elliptic_curve::Field;
use k256::{ProjectivePoint, Scalar};
use rand_core::CryptoRngCore;
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use crate::error::{Error, Result};
use crate::hazmat::ot::base::{RECEIVER_MSG_BYTES, SENDER_MSG_BYTES};
use crate::hazmat::ot::pprf::PPRF_MSG_BYTES;
use crate::hazmat::ot::setup::{receiver_setup, OtReceiverKey, SenderSetup};
use crate::keyshare::{KeyId, KeyShare};
use crate::proof::{SchnorrProof, SCHNORR_BYTES};
use crate::protocol::{Driver, Expect, Machine, Protocol, Step, Transition};
use crate::transcript::{tags, Transcript};
use crate::wire::{encode_point, ProtocolId, Reader, Role, SessionId, POINT_BYTES};

/// Payload bytes of each DKG round.
pub const ROUND_BYTES: [usize; 4] = [
    32 + 32,
    POINT_BYTES + 32 + 32 + SCHNORR_BYTES + RECEIVER_MSG_BYTES,
    SENDER_MSG_BYTES + PPRF_MSG_BYTES,
    32,
];

/// `sid_bot` of the direction where `sender` is the RVOLE sender
/// (PROTOCOL.md §9).
pub(crate) fn base_ot_sid(parent: &[u8; 32], sender: Role, epoch: u64) -> [u8; 32] {
    Transcript::new(tags::OT_BASE_SID)
        .chain(parent)
        .chain(&[sender.as_u8()])
        .chain(&[sender.peer().as_u8()])
        .chain(&epoch.to_be_bytes())
        .finalize()
}

/// Two-party key generation for one party.
///
/// Output: this party's [`KeyShare`]. Drive it with [`Protocol`].
pub struct Dkg {
    driver: Driver<DkgState>,
}

impl Dkg {
    /// Key generation as `role`. `context` is public data both parties agree
    /// on beforehand (e.g. the transport's session handle and the owner); it
    /// addresses the first round's messages.
    #[must_use]
    pub fn new(role: Role, context: &[u8]) -> Self {
        let setup = Transcript::new(tags::DKG_SETUP).chain(context).finalize();
        Self {
            driver: Driver::new(DkgState::Init(Init { role, setup })),
        }
    }
}

impl Protocol for Dkg {
    type Output = KeyShare;

    fn start<R: CryptoRngCore>(&mut self, rng: &mut R) -> Result<Vec<u8>> {
        self.driver.start(rng)
    }

    fn handle<R: CryptoRngCore>(&mut self, rng: &mut R, incoming: &[u8]) -> Result<Step<KeyShare>> {
        self.driver.handle(rng, incoming)
    }
}

struct Init {
    role: Role,
    setup: [u8; 32],
}

/// Secrets and openings of this party's round 1.
struct Own {
    role: Role,
    nonce: [u8; 32],
    secret: Scalar,
    public: ProjectivePoint,
    chain_part: [u8; 32],
    salt: [u8; 32],
}

impl Drop for Own {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

fn commitment(
    setup: &[u8; 32],
    role: Role,
    nonce: &[u8; 32],
    public: &[u8],
    chain_part: &[u8; 32],
    salt: &[u8; 32],
) -> [u8; 32] {
    Transcript::new(tags::DKG_COMMIT)
        .chain(setup)
        .chain(&[role.as_u8()])
        .chain(nonce)
        .chain(public)
        .chain(chain_part)
        .chain(salt)
        .finalize()
}

struct AwaitRound1 {
    setup: [u8; 32],
    own: Own,
}

struct AwaitRound2 {
    sid: [u8; 32],
    own: Own,
    peer_nonce: [u8; 32],
    peer_commitment: [u8; 32],
    setup_id: [u8; 32],
    ot_sender: SenderSetup,
}

struct Agreed {
    sid: [u8; 32],
    role: Role,
    secret: Scalar,
    public_shares: [ProjectivePoint; 2],
    public_key: k256::PublicKey,
    chain_code: [u8; 32],
}

impl Drop for Agreed {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

struct AwaitRound3 {
    agreed: Agreed,
    ot_sender: SenderSetup,
    ot_receiver: OtReceiverKey,
}

struct AwaitRound4 {
    agreed: Agreed,
    ot_sender: crate::hazmat::ot::setup::OtSenderKey,
    ot_receiver: OtReceiverKey,
    transcript: [u8; 32],
}

enum DkgState {
    Init(Init),
    Round1(AwaitRound1),
    Round2(AwaitRound2),
    Round3(AwaitRound3),
    Round4(AwaitRound4),
}

fn role_index(role: Role) -> usize {
    match role {
        Role::A => 0,
        Role::B => 1,
    }
}

fn confirmation(transcript: &[u8; 32], role: Role) -> [u8; 32] {
    Transcript::new(tags::DKG_CONFIRM_ROLE)
        .chain(transcript)
        .chain(&[role.as_u8()])
        .finalize()
}

impl DkgState {
    fn role(&self) -> Role {
        match self {
            Self::Init(s) => s.role,
            Self::Round1(s) => s.own.role,
            Self::Round2(s) => s.own.role,
            Self::Round3(s) => s.agreed.role,
            Self::Round4(s) => s.agreed.role,
        }
    }
}

impl Machine for DkgState {
    type Output = KeyShare;
    const PROTOCOL: ProtocolId = ProtocolId::Dkg;

    fn role(&self) -> Role {
        DkgState::role(self)
    }

    fn begin<R: CryptoRngCore>(self, rng: &mut R) -> Result<(Self, SessionId, u8, Vec<u8>)> {
        let Self::Init(init) = self else {
            return Err(Error::AlreadyStarted);
        };
        let mut secret = Scalar::random(&mut *rng);
        while bool::from(secret.is_zero()) {
            secret = Scalar::random(&mut *rng);
        }
        let mut own = Own {
            role: init.role,
            nonce: [0; 32],
            public: ProjectivePoint::mul_by_generator(&secret),
            secret,
            chain_part: [0; 32],
            salt: [0; 32],
        };
        rng.fill_bytes(&mut own.nonce);
        rng.fill_bytes(&mut own.chain_part);
        rng.fill_bytes(&mut own.salt);
        let commit = commitment(
            &init.setup,
            own.role,
            &own.nonce,
            &encode_point(&own.public),
            &own.chain_part,
            &own.salt,
        );
        let mut payload = Vec::with_capacity(ROUND_BYTES[0]);
        payload.extend_from_slice(&own.nonce);
        payload.extend_from_slice(&commit);
        let session = SessionId(init.setup);
        Ok((
            Self::Round1(AwaitRound1 {
                setup: init.setup,
                own,
            }),
            session,
            1,
            payload,
        ))
    }

    fn expect(&self) -> Expect {
        let (session, round) = match self {
            Self::Init(s) => (s.setup, 0),
            Self::Round1(s) => (s.setup, 1),
            Self::Round2(s) => (s.sid, 2),
            Self::Round3(s) => (s.agreed.sid, 3),
            Self::Round4(s) => (s.agreed.sid, 4),
        };
        let max_payload = ROUND_BYTES
            .get(usize::from(round).saturating_sub(1))
            .copied()
            .unwrap_or(0);
        Expect {
            session: SessionId(session),
            round,
            max_payload,
        }
    }

    fn advance<R: CryptoRngCore>(
        self,
        rng: &mut R,
        payload: &[u8],
    ) -> Result<Transition<Self, KeyShare>> {
        match self {
            Self::Init(_) => Err(Error::NotStarted),
            Self::Round1(state) => round1(rng, state, payload),
            Self::Round2(state) => round2(rng, state, payload),
            Self::Round3(state) => round3(state, payload),
            Self::Round4(state) => round4(state, payload),
        }
    }
}

fn round1<R: CryptoRngCore>(
    rng: &mut R,
    state: AwaitRound1,
    payload: &[u8],
) -> Result<Transition<DkgState, KeyShare>> {
    let mut reader = Reader::exact(payload, ROUND_BYTES[0])?;
    let peer_nonce: [u8; 32] = reader.array()?;
    let peer_commitment: [u8; 32] = reader.array()?;
    let own = state.own;
    let (nonce_a, nonce_b) = match own.role {
        Role::A => (&own.nonce, &peer_nonce),
        Role::B => (&peer_nonce, &own.nonce),
    };
    let sid = Transcript::new(tags::DKG_SID)
        .chain(&state.setup)
        .chain(nonce_a)
        .chain(nonce_b)
        .finalize();
    let proof = SchnorrProof::prove(
        rng,
        tags::DKG_SCHNORR,
        &sid,
        own.role,
        &own.secret,
        &own.public,
    );
    let (ot_sender, bot_recv_msg) = SenderSetup::start(rng, &base_ot_sid(&sid, own.role, 0));
    let mut out = Vec::with_capacity(ROUND_BYTES[1]);
    out.extend_from_slice(&encode_point(&own.public));
    out.extend_from_slice(&own.chain_part);
    out.extend_from_slice(&own.salt);
    proof.encode_into(&mut out);
    out.extend_from_slice(&bot_recv_msg);
    let next = AwaitRound2 {
        sid,
        own,
        peer_nonce,
        peer_commitment,
        setup_id: state.setup,
        ot_sender,
    };
    Ok(Transition::Next {
        state: DkgState::Round2(next),
        session: SessionId(sid),
        round: 2,
        payload: out,
    })
}

fn round2<R: CryptoRngCore>(
    rng: &mut R,
    state: AwaitRound2,
    payload: &[u8],
) -> Result<Transition<DkgState, KeyShare>> {
    let mut reader = Reader::exact(payload, ROUND_BYTES[1])?;
    let peer_public_bytes = reader.take(POINT_BYTES)?;
    let peer_public = crate::wire::decode_point(peer_public_bytes)?;
    let peer_chain: [u8; 32] = reader.array()?;
    let peer_salt: [u8; 32] = reader.array()?;
    let proof = SchnorrProof::read(&mut reader)?;
    let bot_recv_msg = reader.take(RECEIVER_MSG_BYTES)?;

    let own = &state.own;
    let peer = own.role.peer();
    let expected = commitment(
        &state.setup_id,
        peer,
        &state.peer_nonce,
        peer_public_bytes,
        &peer_chain,
        &peer_salt,
    );
    if !bool::from(expected.ct_eq(&state.peer_commitment)) {
        return Err(Error::CommitmentMismatch);
    }
    proof.verify(tags::DKG_SCHNORR, &state.sid, peer, &peer_public)?;
    let mut public_shares = [own.public; 2];
    public_shares[role_index(peer)] = peer_public;
    let sum = public_shares[0] + public_shares[1];
    if bool::from(sum.is_identity()) {
        return Err(Error::IdentityPoint);
    }
    let public_key =
        k256::PublicKey::from_affine(sum.to_affine()).map_err(|_| Error::IdentityPoint)?;
    let (chain_a, chain_b) = match own.role {
        Role::A => (&own.chain_part, &peer_chain),
        Role::B => (&peer_chain, &own.chain_part),
    };
    let chain_code = Transcript::new(tags::DKG_CHAIN_CODE)
        .chain(&state.sid)
        .chain(chain_a)
        .chain(chain_b)
        .finalize();

    // The peer's direction: this party is R (base-OT sender, tree builder).
    let (ot_receiver, bot_send_msg, pprf_msg) =
        receiver_setup(rng, &base_ot_sid(&state.sid, peer, 0), bot_recv_msg)?;
    let mut out = Vec::with_capacity(ROUND_BYTES[2]);
    out.extend_from_slice(&bot_send_msg);
    out.extend_from_slice(&pprf_msg);
    let agreed = Agreed {
        sid: state.sid,
        role: own.role,
        secret: own.secret,
        public_shares,
        public_key,
        chain_code,
    };
    let sid = state.sid;
    let next = AwaitRound3 {
        agreed,
        ot_sender: state.ot_sender,
        ot_receiver,
    };
    Ok(Transition::Next {
        state: DkgState::Round3(next),
        session: SessionId(sid),
        round: 3,
        payload: out,
    })
}

fn round3(state: AwaitRound3, payload: &[u8]) -> Result<Transition<DkgState, KeyShare>> {
    let mut reader = Reader::exact(payload, ROUND_BYTES[2])?;
    let bot_send_msg = reader.take(SENDER_MSG_BYTES)?;
    let pprf_msg = reader.take(PPRF_MSG_BYTES)?;
    let ot_sender = state.ot_sender.finish(bot_send_msg, pprf_msg)?;
    let agreed = state.agreed;
    // Fingerprints ordered by direction: A as sender first.
    let (fp_a_to_b, fp_b_to_a) = match agreed.role {
        Role::A => (
            ot_sender.context().fingerprint,
            state.ot_receiver.context().fingerprint,
        ),
        Role::B => (
            state.ot_receiver.context().fingerprint,
            ot_sender.context().fingerprint,
        ),
    };
    let transcript = Transcript::new(tags::DKG_CONFIRM)
        .chain(&agreed.sid)
        .chain(&encode_point(&agreed.public_key.to_projective()))
        .chain(&encode_point(&agreed.public_shares[0]))
        .chain(&encode_point(&agreed.public_shares[1]))
        .chain(&agreed.chain_code)
        .chain(&fp_a_to_b)
        .chain(&fp_b_to_a)
        .finalize();
    let out = confirmation(&transcript, agreed.role).to_vec();
    let sid = agreed.sid;
    let next = AwaitRound4 {
        agreed,
        ot_sender,
        ot_receiver: state.ot_receiver,
        transcript,
    };
    Ok(Transition::Next {
        state: DkgState::Round4(next),
        session: SessionId(sid),
        round: 4,
        payload: out,
    })
}

fn round4(state: AwaitRound4, payload: &[u8]) -> Result<Transition<DkgState, KeyShare>> {
    let mut reader = Reader::exact(payload, ROUND_BYTES[3])?;
    let peer_confirmation: [u8; 32] = reader.array()?;
    let expected = confirmation(&state.transcript, state.agreed.role.peer());
    if !bool::from(expected.ct_eq(&peer_confirmation)) {
        return Err(Error::KeyConfirmationFailed);
    }
    let key_id = KeyId(
        Transcript::new(tags::DKG_KEY_ID)
            .chain(&state.transcript)
            .finalize(),
    );
    let agreed = &state.agreed;
    Ok(Transition::Done(KeyShare {
        role: agreed.role,
        key_id,
        epoch: 0,
        secret: agreed.secret,
        public_shares: agreed.public_shares,
        public_key: agreed.public_key,
        chain_code: agreed.chain_code,
        transcript: state.transcript,
        ot_sender: state.ot_sender,
        ot_receiver: state.ot_receiver,
    }))
}
