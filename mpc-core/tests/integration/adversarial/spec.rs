//! The public formulas of PROTOCOL.md, re-implemented from the spec with the
//! crate's public hashing API, and the documented storage encoding of a key
//! share (§13.5) read back into its parts. A malicious peer needs nothing
//! else: everything here is public knowledge or its own share.

use k256::elliptic_curve::ops::MulByGenerator;
use k256::elliptic_curve::sec1::ToEncodedPoint;
use k256::{ProjectivePoint, Scalar};
use mpc_core::hazmat::ot::pprf::{AllSeeds, PuncturedSeeds};
use mpc_core::hazmat::ot::setup::{OtReceiverKey, OtSenderKey, SetupContext};
use mpc_core::params::{LEAVES, TREES};
use mpc_core::transcript::{hash_to_scalar, tags, Tag, Transcript, WideTranscript};
use mpc_core::wire::{decode_point, decode_scalar, encode_point, encode_scalar, ProtocolId, Role};
use mpc_core::KeyShare;
use serde::{Deserialize, Serialize};

/// The key-share record of PROTOCOL.md §13.5, field by field.
#[derive(Serialize, Deserialize, Clone)]
pub struct ShareRecord {
    pub version: u16,
    pub role: u8,
    pub key_id: [u8; 32],
    pub epoch: u64,
    pub secret: [u8; 32],
    pub public_a: Vec<u8>,
    pub public_b: Vec<u8>,
    pub public_key: Vec<u8>,
    pub chain_code: [u8; 32],
    pub transcript: [u8; 32],
    pub sender_fingerprint: [u8; 32],
    pub sender_keyctx: [u8; 32],
    pub sender_punctured: [u8; TREES],
    pub sender_seeds: Vec<[u8; 16]>,
    pub receiver_fingerprint: [u8; 32],
    pub receiver_keyctx: [u8; 32],
    pub receiver_seeds: Vec<[u8; 16]>,
    pub ot_burned: bool,
}

impl ShareRecord {
    pub fn of(share: &KeyShare) -> Self {
        let record: Self = postcard::from_bytes(&share.to_bytes()).unwrap();
        // The mirror must be exact: it re-encodes to the stored bytes.
        assert_eq!(
            postcard::to_allocvec(&record).unwrap(),
            share.to_bytes().as_slice()
        );
        record
    }
}

fn trees(flat: &[[u8; 16]]) -> Vec<[[u8; 16]; LEAVES]> {
    flat.chunks_exact(LEAVES)
        .map(|chunk| chunk.try_into().unwrap())
        .collect()
}

/// What a party knows: its share's secret, public data and OT material.
pub struct Parts {
    pub role: Role,
    pub key_id: [u8; 32],
    pub epoch: u64,
    pub secret: Scalar,
    pub transcript: [u8; 32],
    /// `enc33(PK)`, from the record.
    pub public_key: [u8; 33],
    /// This party as RVOLE sender (S) of its own direction.
    pub sender: OtSenderKey,
    /// This party as RVOLE receiver (R) of the peer's direction.
    pub receiver: OtReceiverKey,
}

impl Parts {
    pub fn of(share: &KeyShare) -> Self {
        let r = ShareRecord::of(share);
        Self {
            role: Role::from_u8(r.role).unwrap(),
            key_id: r.key_id,
            epoch: r.epoch,
            secret: decode_scalar(&r.secret).unwrap(),
            transcript: r.transcript,
            public_key: r.public_key.as_slice().try_into().unwrap(),
            sender: OtSenderKey::from_parts(
                PuncturedSeeds {
                    punctured: r.sender_punctured,
                    seeds: trees(&r.sender_seeds),
                },
                SetupContext {
                    fingerprint: r.sender_fingerprint,
                    keyctx: r.sender_keyctx,
                },
            ),
            receiver: OtReceiverKey::from_parts(
                AllSeeds {
                    seeds: trees(&r.receiver_seeds),
                },
                SetupContext {
                    fingerprint: r.receiver_fingerprint,
                    keyctx: r.receiver_keyctx,
                },
            ),
        }
    }
}

pub fn hash(tag: Tag, parts: &[&[u8]]) -> [u8; 32] {
    parts
        .iter()
        .fold(Transcript::new(tag), |t, p| t.chain(p))
        .finalize()
}

pub fn g_mul(s: &Scalar) -> ProjectivePoint {
    ProjectivePoint::mul_by_generator(s)
}

pub fn point(bytes: &[u8]) -> ProjectivePoint {
    decode_point(bytes).unwrap()
}

pub fn uncompressed(p: &ProjectivePoint) -> Vec<u8> {
    p.to_affine().to_encoded_point(false).as_bytes().to_vec()
}

/// `(own, peer)` ordered as `(A's, B's)`.
pub fn ordered<'a>(role: Role, own: &'a [u8], peer: &'a [u8]) -> (&'a [u8], &'a [u8]) {
    match role {
        Role::A => (own, peer),
        Role::B => (peer, own),
    }
}

// ---- signing (§14) ----

/// The root-key signing setup id of §14 (empty path, zero tweak).
pub fn sign_setup(p: &Parts, protocol: ProtocolId) -> [u8; 32] {
    hash(
        tags::SIGN_SETUP,
        &[
            &p.transcript,
            &p.key_id,
            &p.epoch.to_be_bytes(),
            &[],
            &encode_scalar(&Scalar::ZERO),
            &[protocol.as_u8()],
        ],
    )
}

/// The round-4 nonce offset for the root key (§14.3):
/// `delta = H2S(mpc/sign/rerandomize/v1; enc33(PK'), enc32(t), prehash, sid)`
/// with `t = 0`, `PK' = PK`.
pub fn nonce_offset(p: &Parts, prehash: &[u8; 32], sid: &[u8; 32]) -> Scalar {
    hash_to_scalar(
        tags::SIGN_RERANDOMIZE,
        &[&p.public_key, &encode_scalar(&Scalar::ZERO), prehash, sid],
    )
}

pub fn sign_commit(setup: &[u8; 32], role: Role, big_r: &[u8], salt: &[u8; 32]) -> [u8; 32] {
    hash(tags::SIGN_COMMIT, &[setup, &[role.as_u8()], big_r, salt])
}

pub fn sign_sid(setup: &[u8; 32], nonce_a: &[u8], nonce_b: &[u8]) -> [u8; 32] {
    hash(tags::SIGN_SID, &[setup, nonce_a, nonce_b])
}

/// `sid_ext = H(mpc/ot/ext/sid/v1; keyctx, sid_sign)` (§9).
pub fn ext_sid(keyctx: &[u8; 32], sid_sign: &[u8; 32]) -> [u8; 32] {
    hash(tags::OT_EXT_SID, &[keyctx, sid_sign])
}

// ---- key generation and refresh (§13, §18) ----

pub fn dkg_setup(context: &[u8]) -> [u8; 32] {
    hash(tags::DKG_SETUP, &[context])
}

pub fn refresh_setup(old: &Parts, context: &[u8]) -> [u8; 32] {
    hash(
        tags::REFRESH_SETUP,
        &[
            &old.transcript,
            &old.key_id,
            &old.epoch.to_be_bytes(),
            context,
        ],
    )
}

/// `sid_bot` of the direction whose RVOLE sender is `sender` (§9).
pub fn base_ot_sid(parent: &[u8; 32], sender: Role, epoch: u64) -> [u8; 32] {
    hash(
        tags::OT_BASE_SID,
        &[
            parent,
            &[sender.as_u8()],
            &[sender.peer().as_u8()],
            &epoch.to_be_bytes(),
        ],
    )
}

/// `setup_fp` of one direction (§5.4).
pub fn setup_fp(sid_bot: &[u8; 32], recv: &[u8], send: &[u8], pprf: &[u8]) -> [u8; 32] {
    hash(tags::OT_SETUP_FP, &[sid_bot, recv, send, pprf])
}

/// `Hp(sid, t, P)` of §2.2, on the 65-byte encoding of `P`.
pub fn hash_point(sid_bot: &[u8; 32], t: u32, encoded: &[u8]) -> ProjectivePoint {
    for counter in 0u32.. {
        let mut hx = WideTranscript::<2>::new(tags::OT_BASE_H2C);
        hx.append(sid_bot);
        hx.append_u32(t);
        hx.append(encoded);
        hx.append_u32(counter);
        let wide: [u8; 64] = hx.finalize_array();
        let mut candidate = [0u8; 33];
        candidate[0] = 0x02 | (wide[32] & 1);
        candidate[1..].copy_from_slice(&wide[..32]);
        if let Ok(p) = decode_point(&candidate) {
            return p;
        }
    }
    unreachable!()
}

/// The Schnorr challenge of §12.2 over an explicit list of inputs, so that a
/// test can drop or change one of them.
pub fn challenge(tag: Tag, inputs: &[&[u8]]) -> Scalar {
    hash_to_scalar(tag, inputs)
}

pub fn generator_bytes() -> [u8; 33] {
    encode_point(&ProjectivePoint::GENERATOR)
}
