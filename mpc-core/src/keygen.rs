//! The round machine shared by key generation (PROTOCOL.md §13) and
//! refresh (§18): both commit to a fresh point, open it with a proof, set up
//! fresh OT material in both directions, and confirm the new public state
//! before anything is output. Refresh adds an acknowledgement round so that
//! storage can tell when the old epoch may go.

use alloc::vec::Vec;

use k256::elliptic_curve::ops::MulByGenerator;
use k256::{ProjectivePoint, Scalar};
use rand_core::CryptoRngCore;
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use crate::ct::{declassify, random_nonzero_scalar};
use crate::error::{Error, Result};
use crate::hazmat::ot::base::{RECEIVER_MSG_BYTES, SENDER_MSG_BYTES};
use crate::hazmat::ot::pprf::PPRF_MSG_BYTES;
use crate::hazmat::ot::setup::{receiver_setup, OtReceiverKey, OtSenderKey, SenderSetup};
use crate::keyshare::{KeyId, KeyShare};
use crate::proof::{SchnorrProof, SCHNORR_BYTES};
use crate::protocol::{Expect, Machine, Transition};
use crate::transcript::{tags, Tag, Transcript};
use crate::wire::{decode_point, encode_point, ProtocolId, Reader, Role, SessionId, POINT_BYTES};

/// Payload bytes of each round (round 5 exists for refresh only).
pub(crate) const ROUND_BYTES: [usize; 5] = [
    32 + 32,
    POINT_BYTES + 32 + 32 + SCHNORR_BYTES + RECEIVER_MSG_BYTES,
    SENDER_MSG_BYTES + PPRF_MSG_BYTES,
    32,
    32,
];

/// `sid_bot` of the direction where `sender` is the RVOLE sender (§9).
pub(crate) fn base_ot_sid(parent: &[u8; 32], sender: Role, epoch: u64) -> [u8; 32] {
    Transcript::new(tags::OT_BASE_SID)
        .chain(parent)
        .chain(&[sender.as_u8()])
        .chain(&[sender.peer().as_u8()])
        .chain(&epoch.to_be_bytes())
        .finalize()
}

/// Per-mode tags.
struct Tags {
    commit: Tag,
    sid: Tag,
    schnorr: Tag,
    confirm: Tag,
}

const DKG_TAGS: Tags = Tags {
    commit: tags::DKG_COMMIT,
    sid: tags::DKG_SID,
    schnorr: tags::DKG_SCHNORR,
    confirm: tags::DKG_CONFIRM,
};
const REFRESH_TAGS: Tags = Tags {
    commit: tags::REFRESH_COMMIT,
    sid: tags::REFRESH_SID,
    schnorr: tags::REFRESH_SCHNORR,
    confirm: tags::REFRESH_CONFIRM,
};

/// What the machine generates: a new key, or new shares of an old one.
#[derive(Clone, Copy)]
pub(crate) enum Mode<'a> {
    Dkg,
    Refresh(&'a KeyShare),
}

impl Mode<'_> {
    fn tags(&self) -> &'static Tags {
        match self {
            Mode::Dkg => &DKG_TAGS,
            Mode::Refresh(_) => &REFRESH_TAGS,
        }
    }

    fn epoch(&self) -> u64 {
        match self {
            Mode::Dkg => 0,
            Mode::Refresh(old) => old.epoch().saturating_add(1),
        }
    }
}

/// Secrets and openings of this party's round 1: the DKG share `x_i`, or the
/// refresh offset `a_i`.
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
    tag: Tag,
    setup: &[u8; 32],
    role: Role,
    nonce: &[u8; 32],
    public: &[u8],
    chain_part: &[u8; 32],
    salt: &[u8; 32],
) -> [u8; 32] {
    Transcript::new(tag)
        .chain(setup)
        .chain(&[role.as_u8()])
        .chain(nonce)
        .chain(public)
        .chain(chain_part)
        .chain(salt)
        .finalize()
}

fn confirmation(transcript: &[u8; 32], role: Role, tag: Tag) -> [u8; 32] {
    Transcript::new(tag)
        .chain(transcript)
        .chain(&[role.as_u8()])
        .finalize()
}

pub(crate) struct Init<'a> {
    mode: Mode<'a>,
    role: Role,
    setup: [u8; 32],
}

pub(crate) struct AwaitRound1<'a> {
    mode: Mode<'a>,
    setup: [u8; 32],
    own: Own,
}

pub(crate) struct AwaitRound2<'a> {
    mode: Mode<'a>,
    setup: [u8; 32],
    sid: [u8; 32],
    own: Own,
    peer_nonce: [u8; 32],
    peer_commitment: [u8; 32],
    ot_sender: SenderSetup,
}

/// The new public state and this party's new secret share.
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

pub(crate) struct AwaitRound3<'a> {
    mode: Mode<'a>,
    agreed: Agreed,
    ot_sender: SenderSetup,
    ot_receiver: OtReceiverKey,
}

pub(crate) struct AwaitConfirmation {
    share: KeyShare,
    sid: [u8; 32],
    refresh: bool,
}

pub(crate) struct AwaitAcknowledgement {
    share: KeyShare,
    sid: [u8; 32],
}

pub(crate) enum KeygenState<'a, const REFRESH: bool> {
    Init(Init<'a>),
    Round1(AwaitRound1<'a>),
    Round2(AwaitRound2<'a>),
    Round3(AwaitRound3<'a>),
    /// The new share exists; the peer has not confirmed it yet.
    Round4(AwaitConfirmation),
    /// Refresh only: confirmed by the peer; waiting for its acknowledgement.
    Round5(AwaitAcknowledgement),
}

impl<'a, const REFRESH: bool> KeygenState<'a, REFRESH> {
    pub(crate) fn new(mode: Mode<'a>, role: Role, setup: [u8; 32]) -> Self {
        Self::Init(Init { mode, role, setup })
    }

    /// The new share, once it exists (after round 3).
    pub(crate) fn ready_share(&self) -> Option<&KeyShare> {
        match self {
            Self::Round4(s) => Some(&s.share),
            Self::Round5(s) => Some(&s.share),
            _ => None,
        }
    }

    /// Whether the peer confirmed the new share (refresh round 4 done).
    pub(crate) fn confirmed(&self) -> bool {
        matches!(self, Self::Round5(_))
    }
}

impl<'a, const REFRESH: bool> Machine for KeygenState<'a, REFRESH> {
    type Output = KeyShare;
    const PROTOCOL: ProtocolId = if REFRESH {
        ProtocolId::Refresh
    } else {
        ProtocolId::Dkg
    };

    fn role(&self) -> Role {
        match self {
            Self::Init(s) => s.role,
            Self::Round1(s) => s.own.role,
            Self::Round2(s) => s.own.role,
            Self::Round3(s) => s.agreed.role,
            Self::Round4(s) => s.share.role(),
            Self::Round5(s) => s.share.role(),
        }
    }

    fn begin<R: CryptoRngCore>(self, rng: &mut R) -> Result<(Self, SessionId, u8, Vec<u8>)> {
        let Self::Init(init) = self else {
            return Err(Error::AlreadyStarted);
        };
        let secret = random_nonzero_scalar(rng);
        let mut own = Own {
            role: init.role,
            nonce: [0; 32],
            public: ProjectivePoint::mul_by_generator(&secret),
            secret,
            chain_part: [0; 32],
            salt: [0; 32],
        };
        rng.fill_bytes(&mut own.nonce);
        if matches!(init.mode, Mode::Dkg) {
            // Refresh keeps the chain code; its contribution stays zero.
            rng.fill_bytes(&mut own.chain_part);
        }
        rng.fill_bytes(&mut own.salt);
        let tags = init.mode.tags();
        let commit = commitment(
            tags.commit,
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
                mode: init.mode,
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
            Self::Round4(s) => (s.sid, 4),
            Self::Round5(s) => (s.sid, 5),
        };
        Expect::round(session, round, &ROUND_BYTES)
    }

    fn advance<R: CryptoRngCore>(
        self,
        rng: &mut R,
        payload: &[u8],
    ) -> Result<Transition<Self, KeyShare>> {
        match self {
            Self::Init(_) => Err(Error::NotStarted),
            Self::Round1(state) => {
                let (next, out) = round1(rng, state, payload)?;
                Ok(Transition::Next {
                    session: SessionId(next.sid),
                    state: Self::Round2(next),
                    round: 2,
                    payload: out,
                })
            }
            Self::Round2(state) => {
                let (next, out) = round2(rng, state, payload)?;
                Ok(Transition::Next {
                    session: SessionId(next.agreed.sid),
                    state: Self::Round3(next),
                    round: 3,
                    payload: out,
                })
            }
            Self::Round3(state) => {
                let (next, out) = round3(state, payload)?;
                Ok(Transition::Next {
                    session: SessionId(next.sid),
                    state: Self::Round4(next),
                    round: 4,
                    payload: out,
                })
            }
            Self::Round4(state) => {
                let mut reader = Reader::exact(payload, ROUND_BYTES[3])?;
                let peer_confirmation: [u8; 32] = reader.array()?;
                let tag = tags::DKG_CONFIRM_ROLE;
                let expected = confirmation(
                    state.share.transcript_hash(),
                    state.share.role().peer(),
                    tag,
                );
                if !bool::from(expected.ct_eq(&peer_confirmation)) {
                    return Err(Error::KeyConfirmationFailed);
                }
                if !state.refresh {
                    return Ok(Transition::Done(state.share));
                }
                let ack = confirmation(
                    state.share.transcript_hash(),
                    state.share.role(),
                    tags::REFRESH_ACK,
                )
                .to_vec();
                let sid = state.sid;
                Ok(Transition::Next {
                    state: Self::Round5(AwaitAcknowledgement {
                        share: state.share,
                        sid,
                    }),
                    session: SessionId(sid),
                    round: 5,
                    payload: ack,
                })
            }
            Self::Round5(state) => {
                let mut reader = Reader::exact(payload, ROUND_BYTES[4])?;
                let peer_ack: [u8; 32] = reader.array()?;
                let expected = confirmation(
                    state.share.transcript_hash(),
                    state.share.role().peer(),
                    tags::REFRESH_ACK,
                );
                if !bool::from(expected.ct_eq(&peer_ack)) {
                    return Err(Error::KeyConfirmationFailed);
                }
                Ok(Transition::Done(state.share))
            }
        }
    }
}

fn round1<'a, R: CryptoRngCore>(
    rng: &mut R,
    state: AwaitRound1<'a>,
    payload: &[u8],
) -> Result<(AwaitRound2<'a>, Vec<u8>)> {
    let mut reader = Reader::exact(payload, ROUND_BYTES[0])?;
    let peer_nonce: [u8; 32] = reader.array()?;
    let peer_commitment: [u8; 32] = reader.array()?;
    let own = state.own;
    let tags = state.mode.tags();
    let (nonce_a, nonce_b) = own.role.order(&own.nonce, &peer_nonce);
    let sid = Transcript::new(tags.sid)
        .chain(&state.setup)
        .chain(nonce_a)
        .chain(nonce_b)
        .finalize();
    let proof = SchnorrProof::prove(rng, tags.schnorr, &sid, own.role, &own.secret, &own.public);
    let (ot_sender, bot_recv_msg) =
        SenderSetup::start(rng, &base_ot_sid(&sid, own.role, state.mode.epoch()));
    let mut out = Vec::with_capacity(ROUND_BYTES[1]);
    out.extend_from_slice(&encode_point(&own.public));
    out.extend_from_slice(&own.chain_part);
    out.extend_from_slice(&own.salt);
    proof.encode_into(&mut out);
    out.extend_from_slice(&bot_recv_msg);
    let next = AwaitRound2 {
        mode: state.mode,
        setup: state.setup,
        sid,
        own,
        peer_nonce,
        peer_commitment,
        ot_sender,
    };
    Ok((next, out))
}

/// The new public state from both opened points (PROTOCOL.md §13, §18).
fn agree(
    mode: Mode<'_>,
    sid: &[u8; 32],
    own: &Own,
    peer_public: ProjectivePoint,
    peer_chain: &[u8; 32],
) -> Result<Agreed> {
    let peer = own.role.peer();
    let (part_a, part_b) = own.role.order(&own.chain_part, peer_chain);
    match mode {
        Mode::Dkg => {
            let mut public_shares = [own.public; 2];
            public_shares[peer.index()] = peer_public;
            let sum = public_shares[0] + public_shares[1];
            let public_key =
                k256::PublicKey::from_affine(sum.to_affine()).map_err(|_| Error::IdentityPoint)?;
            let chain_code = Transcript::new(tags::DKG_CHAIN_CODE)
                .chain(sid)
                .chain(part_a)
                .chain(part_b)
                .finalize();
            Ok(Agreed {
                sid: *sid,
                role: own.role,
                secret: own.secret,
                public_shares,
                public_key,
                chain_code,
            })
        }
        Mode::Refresh(old) => {
            // delta = H2S(sid, a_A*a_B*G, A_A, A_B): x_A' = x_A + delta,
            // x_B' = x_B - delta.
            let (point_a, point_b) = own.role.order(own.public, peer_public);
            let mut shared = encode_point(&(peer_public * own.secret));
            let mut delta = crate::transcript::hash_to_scalar(
                tags::REFRESH_DELTA,
                &[
                    sid,
                    &shared,
                    &encode_point(&point_a),
                    &encode_point(&point_b),
                ],
            );
            shared.zeroize();
            let delta_point = ProjectivePoint::mul_by_generator(&delta);
            let public_shares = [
                old.public_share(Role::A) + delta_point,
                old.public_share(Role::B) - delta_point,
            ];
            let mut secret = match own.role {
                Role::A => old.secret + delta,
                Role::B => old.secret - delta,
            };
            delta.zeroize();
            // The new x_i' must match its public share: a public verdict.
            let matches =
                ProjectivePoint::mul_by_generator(&secret).ct_eq(&public_shares[own.role.index()]);
            if public_shares[0] + public_shares[1] != old.public_key_point() || !declassify(matches)
            {
                secret.zeroize();
                return Err(Error::MalformedKeyShare);
            }
            Ok(Agreed {
                sid: *sid,
                role: own.role,
                secret,
                public_shares,
                public_key: old.public_key(),
                chain_code: *old.chain_code(),
            })
        }
    }
}

fn round2<'a, R: CryptoRngCore>(
    rng: &mut R,
    state: AwaitRound2<'a>,
    payload: &[u8],
) -> Result<(AwaitRound3<'a>, Vec<u8>)> {
    let mut reader = Reader::exact(payload, ROUND_BYTES[1])?;
    let peer_public_bytes = reader.take(POINT_BYTES)?;
    let peer_public = decode_point(peer_public_bytes)?;
    let peer_chain: [u8; 32] = reader.array()?;
    let peer_salt: [u8; 32] = reader.array()?;
    let proof = SchnorrProof::read(&mut reader)?;
    let bot_recv_msg = reader.take(RECEIVER_MSG_BYTES)?;

    let own = &state.own;
    let peer = own.role.peer();
    let tags = state.mode.tags();
    let expected = commitment(
        tags.commit,
        &state.setup,
        peer,
        &state.peer_nonce,
        peer_public_bytes,
        &peer_chain,
        &peer_salt,
    );
    if !bool::from(expected.ct_eq(&state.peer_commitment)) {
        return Err(Error::CommitmentMismatch);
    }
    proof.verify(tags.schnorr, &state.sid, peer, &peer_public)?;
    let agreed = agree(state.mode, &state.sid, own, peer_public, &peer_chain)?;

    // The peer's direction: this party is R (base-OT sender, tree builder).
    let (ot_receiver, bot_send_msg, pprf_msg) = receiver_setup(
        rng,
        &base_ot_sid(&state.sid, peer, state.mode.epoch()),
        bot_recv_msg,
    )?;
    let mut out = Vec::with_capacity(ROUND_BYTES[2]);
    out.extend_from_slice(&bot_send_msg);
    out.extend_from_slice(&pprf_msg);
    Ok((
        AwaitRound3 {
            mode: state.mode,
            agreed,
            ot_sender: state.ot_sender,
            ot_receiver,
        },
        out,
    ))
}

fn round3(state: AwaitRound3<'_>, payload: &[u8]) -> Result<(AwaitConfirmation, Vec<u8>)> {
    let mut reader = Reader::exact(payload, ROUND_BYTES[2])?;
    let bot_send_msg = reader.take(SENDER_MSG_BYTES)?;
    let pprf_msg = reader.take(PPRF_MSG_BYTES)?;
    let ot_sender: OtSenderKey = state.ot_sender.finish(bot_send_msg, pprf_msg)?;
    let agreed = &state.agreed;
    let epoch = state.mode.epoch();
    // Fingerprints ordered by direction: A as sender first.
    let (fp_a_to_b, fp_b_to_a) = agreed.role.order(
        ot_sender.context().fingerprint,
        state.ot_receiver.context().fingerprint,
    );
    let transcript = Transcript::new(state.mode.tags().confirm)
        .chain(&agreed.sid)
        .chain(&epoch.to_be_bytes())
        .chain(&encode_point(&agreed.public_key.to_projective()))
        .chain(&encode_point(&agreed.public_shares[0]))
        .chain(&encode_point(&agreed.public_shares[1]))
        .chain(&agreed.chain_code)
        .chain(&fp_a_to_b)
        .chain(&fp_b_to_a)
        .finalize();
    let key_id = match state.mode {
        Mode::Dkg => KeyId(
            Transcript::new(tags::DKG_KEY_ID)
                .chain(&transcript)
                .finalize(),
        ),
        Mode::Refresh(old) => *old.key_id(),
    };
    let out = confirmation(&transcript, agreed.role, tags::DKG_CONFIRM_ROLE).to_vec();
    let share = KeyShare {
        role: agreed.role,
        key_id,
        epoch,
        secret: agreed.secret,
        public_shares: agreed.public_shares,
        public_key: agreed.public_key,
        chain_code: agreed.chain_code,
        transcript,
        ot_sender,
        ot_receiver: state.ot_receiver,
        ot_burned: false,
    };
    let sid = agreed.sid;
    Ok((
        AwaitConfirmation {
            share,
            sid,
            refresh: matches!(state.mode, Mode::Refresh(_)),
        },
        out,
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::dkg::Dkg;
    use crate::local::run_pair;
    use k256::elliptic_curve::Field;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn own(role: Role, secret: Scalar) -> Own {
        Own {
            role,
            nonce: [0; 32],
            secret,
            public: ProjectivePoint::mul_by_generator(&secret),
            chain_part: [0; 32],
            salt: [0; 32],
        }
    }

    #[test]
    fn refresh_offset_needs_the_diffie_hellman_secret() {
        // PROTOCOL.md §18: delta = H2S(sid, a_A*a_B*G, A_A, A_B). Without
        // the Diffie-Hellman term, anyone holding an old share who saw the
        // refresh (sid and both opened points are in the transcript) would
        // compute the new share.
        let mut rng = ChaCha20Rng::seed_from_u64(71);
        let mut dkg_a = Dkg::new(Role::A, b"refresh offset test");
        let mut dkg_b = Dkg::new(Role::B, b"refresh offset test");
        let (old_a, old_b, _) = run_pair(&mut rng, &mut dkg_a, &mut dkg_b).unwrap();
        let sid = [9u8; 32];
        let (a_a, a_b) = (Scalar::random(&mut rng), Scalar::random(&mut rng));
        let (own_a, own_b) = (own(Role::A, a_a), own(Role::B, a_b));
        let new_a = agree(Mode::Refresh(&old_a), &sid, &own_a, own_b.public, &[0; 32]).unwrap();
        let new_b = agree(Mode::Refresh(&old_b), &sid, &own_b, own_a.public, &[0; 32]).unwrap();
        let delta = new_a.secret - old_a.secret;
        assert_eq!(old_b.secret - new_b.secret, delta);

        let (point_a, point_b) = (encode_point(&own_a.public), encode_point(&own_b.public));
        let shared = encode_point(&(ProjectivePoint::mul_by_generator(&a_a) * a_b));
        let expected = crate::transcript::hash_to_scalar(
            tags::REFRESH_DELTA,
            &[&sid, &shared, &point_a, &point_b],
        );
        assert_eq!(delta, expected);
        let eavesdropped =
            crate::transcript::hash_to_scalar(tags::REFRESH_DELTA, &[&sid, &point_a, &point_b]);
        assert_ne!(delta, eavesdropped);
    }
}
