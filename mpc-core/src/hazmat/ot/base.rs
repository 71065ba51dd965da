//! Base OT: Masny-Rindal endemic OT over secp256k1 (PROTOCOL.md §4).
//!
//! One message each way; no zero-knowledge proof. The receiver sends two
//! points per OT, one of them "corrected" through a hash of the other, so
//! that it knows the discrete log of exactly one of the two sums
//! `M_j = r_j + Hp(t, j, r_{1-j})`. The sender answers with one point
//! `B = b*G` for the whole batch and derives each key from `b*M_j`, hashing the
//! session id, the OT index and the branch into the key, the condition under
//! which McQuoid-Rosulek-Roy (ePrint 2021/682) prove batching secure.
//!
//! The receiver's scalars are sampled, never derived from peer bytes, and
//! every received point is checked on-curve and non-identity (Devious
//! Transfer, security checklist item 5).

use alloc::vec::Vec;

use k256::elliptic_curve::group::Group;
use k256::elliptic_curve::group::GroupEncoding;
use k256::elliptic_curve::ops::MulByGenerator;
use k256::elliptic_curve::subtle::{Choice, ConditionallySelectable};
use k256::{AffinePoint, ProjectivePoint, Scalar};
use rand_core::CryptoRngCore;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::comb::CombTable;
use crate::ct::{declassify, declassify_bytes, random_nonzero_scalar};
use crate::error::{Error, Result};
use crate::params::{LAMBDA_C, LAMBDA_C_BYTES};
use crate::transcript::{tags, WideTranscript};
use crate::wire::{
    decode_point, decode_point_uncompressed, encode_point, encode_points,
    encode_points_uncompressed, POINT_BYTES, UNCOMPRESSED_POINT_BYTES,
};

/// Number of base OTs per batch (one batch per direction and key).
pub const BASE_OTS: usize = LAMBDA_C;
/// Bytes of one receiver point: uncompressed, so that the sender validates
/// 256 points without 256 square roots (PROTOCOL.md §4.1).
const PAIR_POINT: usize = UNCOMPRESSED_POINT_BYTES;
/// Bytes of the receiver's message: two uncompressed points per OT.
pub const RECEIVER_MSG_BYTES: usize = 2 * PAIR_POINT * BASE_OTS;
/// Bytes of the sender's message: one point for the batch.
pub const SENDER_MSG_BYTES: usize = POINT_BYTES;

/// A base-OT output key.
pub type OtKey = [u8; LAMBDA_C_BYTES];

/// `Hp(t, P)`: hash of (session, index, point) onto the curve by
/// try-and-increment (PROTOCOL.md §4.2). Its inputs are public (the point is
/// on the wire), so the data-dependent number of tries reveals nothing secret.
fn hash_point(sid: &[u8; 32], index: u32, point: &[u8]) -> ProjectivePoint {
    let mut counter = 0u32;
    loop {
        let mut hx = WideTranscript::<2>::new(tags::OT_BASE_H2C);
        hx.append(sid);
        hx.append_u32(index);
        hx.append(point);
        hx.append_u32(counter);
        let wide: [u8; 64] = hx.finalize_array();
        let mut candidate = [0u8; POINT_BYTES];
        candidate[0] = 0x02 | (wide[32] & 1);
        candidate[1..].copy_from_slice(&wide[..32]);
        // About half of all x are on the curve: 2^-128 for 128 misses.
        if let Some(point) =
            Option::<AffinePoint>::from(AffinePoint::from_bytes((&candidate).into()))
        {
            return point.into();
        }
        counter = counter.wrapping_add(1);
    }
}

/// `Key(t, j, D)`: the OT output key (PROTOCOL.md §4.2).
fn derive_key(
    sid: &[u8; 32],
    index: u32,
    branch: u8,
    pair: &[u8],
    sender_point: &[u8; POINT_BYTES],
    shared: &[u8; POINT_BYTES],
) -> OtKey {
    let mut hx = WideTranscript::<1>::new(tags::OT_BASE_KEY);
    hx.append(sid);
    hx.append_u32(index);
    hx.append(&[branch]);
    hx.append(pair);
    hx.append(sender_point);
    hx.append(shared);
    hx.finalize_array()
}

fn index_u32(t: usize) -> u32 {
    // t < BASE_OTS = 128.
    #[allow(clippy::cast_possible_truncation)]
    let index = t as u32;
    index
}

/// A uniform point other than the identity, with a log nobody knows: a
/// random `x` and parity, retried until `x` is on the curve. The retries
/// depend only on values that are published as the point itself, so the
/// candidate is declassified before it is tried.
fn random_point(rng: &mut impl CryptoRngCore) -> ProjectivePoint {
    loop {
        let mut candidate = [0u8; POINT_BYTES];
        rng.fill_bytes(&mut candidate[1..]);
        candidate[0] = 0x02 | (candidate[1] & 1);
        rng.fill_bytes(&mut candidate[1..2]);
        let candidate = declassify_bytes(&candidate);
        if let Some(point) =
            Option::<AffinePoint>::from(AffinePoint::from_bytes((&candidate).into()))
        {
            return point.into();
        }
    }
}

/// The base-OT receiver between its message and the sender's answer.
///
/// Holds the secret choice bits and scalars; zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct BaseOtReceiver {
    sid: [u8; 32],
    choices: [u8; BASE_OTS / 8],
    scalars: Vec<Scalar>,
    message: Vec<u8>,
}

/// The receiver's result: one key per OT, for the chosen branch.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct BaseOtReceiverOutput {
    /// Choice bits, bit `t` = bit `t % 8` of byte `t / 8`.
    pub choices: [u8; BASE_OTS / 8],
    /// `keys[t]` = the key of branch `choices[t]` of OT `t`.
    pub keys: Vec<OtKey>,
}

impl BaseOtReceiver {
    /// Samples choice bits and scalars and returns the receiver's message
    /// (`RECEIVER_MSG_BYTES` bytes: `r[t][0] || r[t][1]` for each OT `t`).
    pub fn start(rng: &mut impl CryptoRngCore, sid: &[u8; 32]) -> (Self, Vec<u8>) {
        let mut choices = [0u8; BASE_OTS / 8];
        rng.fill_bytes(&mut choices);
        // Y uniform with unknown log (a random x on the curve); then
        // X = a*G - Hp(t, Y) (PROTOCOL.md §4.2).
        let ys: Vec<ProjectivePoint> = (0..BASE_OTS).map(|_| random_point(rng)).collect();
        let y_bytes = encode_points_uncompressed(&ys);
        let mut scalars = Vec::with_capacity(BASE_OTS);
        let mut xs = Vec::with_capacity(BASE_OTS);
        for (t, y) in y_bytes.iter().enumerate() {
            let h = hash_point(sid, index_u32(t), y);
            loop {
                let a = random_nonzero_scalar(rng);
                let x = ProjectivePoint::mul_by_generator(&a) - h;
                // X is sent: whether it is the identity is public.
                if !declassify(x.is_identity()) {
                    scalars.push(a);
                    xs.push(x);
                    break;
                }
            }
        }
        let mut pairs = Vec::with_capacity(2 * BASE_OTS);
        for (t, (x, y)) in xs.iter().zip(&ys).enumerate() {
            let swap = Choice::from((choices[t / 8] >> (t % 8)) & 1);
            pairs.push(ProjectivePoint::conditional_select(x, y, swap));
            pairs.push(ProjectivePoint::conditional_select(y, x, swap));
        }
        let message: Vec<u8> = encode_points_uncompressed(&pairs).concat();
        let receiver = Self {
            sid: *sid,
            choices,
            scalars,
            message: message.clone(),
        };
        (receiver, message)
    }

    /// The message this receiver sent, as bound into the output keys.
    #[must_use]
    pub fn message(&self) -> &[u8] {
        &self.message
    }

    /// Derives the chosen keys from the sender's message.
    ///
    /// # Errors
    ///
    /// [`Error::WrongLength`], [`Error::InvalidPoint`] or
    /// [`Error::IdentityPoint`] if the sender's message is malformed.
    pub fn finish(self, sender_message: &[u8]) -> Result<BaseOtReceiverOutput> {
        if sender_message.len() != SENDER_MSG_BYTES {
            return Err(Error::WrongLength);
        }
        let sender_point = decode_point(sender_message)?;
        let sender_bytes = encode_point(&sender_point);
        // One comb table for B serves all 128 products a[t]*B.
        let table = CombTable::new(&sender_point);
        // a[t]*B: Diffie-Hellman values, wiped with their encodings.
        let mut shared: Vec<ProjectivePoint> = self.scalars.iter().map(|a| table.mul(a)).collect();
        let mut shared_bytes = encode_points(&shared);
        shared.zeroize();
        let keys = shared_bytes
            .iter()
            .enumerate()
            .map(|(t, d)| {
                let choice = (self.choices[t / 8] >> (t % 8)) & 1;
                let pair = &self.message[2 * PAIR_POINT * t..2 * PAIR_POINT * (t + 1)];
                derive_key(&self.sid, index_u32(t), choice, pair, &sender_bytes, d)
            })
            .collect();
        shared_bytes.zeroize();
        Ok(BaseOtReceiverOutput {
            choices: self.choices,
            keys,
        })
    }
}

/// The sender's result: both keys of every OT.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct BaseOtSenderOutput {
    /// `keys[t][j]` = the key of branch `j` of OT `t`.
    pub keys: Vec<[OtKey; 2]>,
}

/// Runs the sender: samples `b`, answers the receiver's message with
/// `B = b*G` (`SENDER_MSG_BYTES` bytes) and returns both keys of every OT.
///
/// # Errors
///
/// [`Error::WrongLength`], [`Error::InvalidPoint`] or [`Error::IdentityPoint`]
/// if the receiver's message is malformed; [`Error::DegenerateBaseOt`] if some
/// `M[t][j]` is the identity.
pub fn send(
    rng: &mut impl CryptoRngCore,
    sid: &[u8; 32],
    receiver_message: &[u8],
) -> Result<(BaseOtSenderOutput, Vec<u8>)> {
    if receiver_message.len() != RECEIVER_MSG_BYTES {
        return Err(Error::WrongLength);
    }
    // Parse and validate everything before any secret is used.
    let points = receiver_message
        .chunks_exact(PAIR_POINT)
        .map(decode_point_uncompressed)
        .collect::<Result<Vec<_>>>()?;
    let mut b = random_nonzero_scalar(rng);
    let sender_point = ProjectivePoint::mul_by_generator(&b);
    let sender_bytes = encode_point(&sender_point);
    let mut shared = Vec::with_capacity(2 * BASE_OTS);
    let mut degenerate = false;
    for (t, (pair_points, pair)) in points
        .chunks_exact(2)
        .zip(receiver_message.chunks_exact(2 * PAIR_POINT))
        .enumerate()
    {
        let (r0, r1) = pair.split_at(PAIR_POINT);
        let r_bytes: [&[u8; PAIR_POINT]; 2] = [
            r0.try_into().map_err(|_| Error::WrongLength)?,
            r1.try_into().map_err(|_| Error::WrongLength)?,
        ];
        for j in 0..2 {
            let m = pair_points[j] + hash_point(sid, index_u32(t), r_bytes[1 - j]);
            // M is computed from the receiver's public message.
            degenerate |= bool::from(m.is_identity());
            shared.push(m * b);
        }
    }
    b.zeroize();
    if degenerate {
        shared.zeroize();
        return Err(Error::DegenerateBaseOt);
    }
    // b*M[t][j]: Diffie-Hellman values, wiped with their encodings.
    let mut shared_bytes = encode_points(&shared);
    shared.zeroize();
    let keys = shared_bytes
        .chunks_exact(2)
        .zip(receiver_message.chunks_exact(2 * PAIR_POINT))
        .enumerate()
        .map(|(t, (d, pair))| {
            [0u8, 1].map(|branch| {
                derive_key(
                    sid,
                    index_u32(t),
                    branch,
                    pair,
                    &sender_bytes,
                    &d[usize::from(branch)],
                )
            })
        })
        .collect();
    shared_bytes.zeroize();
    Ok((BaseOtSenderOutput { keys }, sender_bytes.to_vec()))
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::needless_range_loop)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn run(seed: u64, sid: &[u8; 32]) -> (BaseOtReceiverOutput, BaseOtSenderOutput) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let (receiver, msg) = BaseOtReceiver::start(&mut rng, sid);
        let (sender_out, reply) = send(&mut rng, sid, &msg).unwrap();
        (receiver.finish(&reply).unwrap(), sender_out)
    }

    #[test]
    fn correlations_hold() {
        for seed in 0..4 {
            let (r, s) = run(seed, &[seed as u8; 32]);
            let mut ones = 0;
            for t in 0..BASE_OTS {
                let c = usize::from((r.choices[t / 8] >> (t % 8)) & 1);
                ones += c;
                assert_eq!(r.keys[t], s.keys[t][c]);
                assert_ne!(r.keys[t], s.keys[t][1 - c]);
            }
            assert!(ones > 0 && ones < BASE_OTS);
        }
    }

    /// The attack on a biased `Y`: each pair is `(X, Y)` in the order of the
    /// secret choice bit, and `X = a*G - Hp(t, Y)` has a uniform `y` parity.
    /// If `Y`'s parity were fixed (say always odd), the sender would read
    /// the choice off every pair whose other point has the other parity.
    /// `Y`'s parity must be as uniform as `X`'s.
    #[test]
    fn the_random_point_of_a_pair_does_not_reveal_the_choice_by_its_parity() {
        let mut odd = [0usize; 2];
        for seed in 0..4u8 {
            let mut rng = ChaCha20Rng::seed_from_u64(u64::from(seed));
            let (receiver, message) = BaseOtReceiver::start(&mut rng, &[seed; 32]);
            for (t, pair) in message.chunks_exact(2 * PAIR_POINT).enumerate() {
                let choice = usize::from((receiver.choices[t / 8] >> (t % 8)) & 1);
                // Y is first for choice 1, second for choice 0; y's parity is
                // the low bit of the uncompressed encoding's last byte.
                let (y_slot, x_slot) = (1 - choice, choice);
                let parity = |slot: usize| usize::from(pair[(slot + 1) * PAIR_POINT - 1] & 1);
                odd[0] += parity(x_slot);
                odd[1] += parity(y_slot);
            }
        }
        // 512 fair coin flips each: within 5.6 standard deviations of 256.
        for (name, count) in ["X", "Y"].iter().zip(odd) {
            assert!((192..=320).contains(&count), "{count} of 512 {name} odd");
        }
    }

    #[test]
    fn session_id_separates_keys() {
        // Same randomness, other session: unrelated keys.
        let (_, a) = run(9, &[1; 32]);
        let (_, b) = run(9, &[2; 32]);
        for t in 0..BASE_OTS {
            assert_ne!(a.keys[t][0], b.keys[t][0]);
            assert_ne!(a.keys[t][1], b.keys[t][1]);
        }
    }

    #[test]
    fn index_separates_keys() {
        // Swapping two OTs' points in the receiver message changes both keys
        // of both positions: outputs cannot be moved across indices.
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let sid = [5; 32];
        let (_, msg) = BaseOtReceiver::start(&mut rng, &sid);
        let mut swapped = msg.clone();
        swapped[..130].copy_from_slice(&msg[130..260]);
        swapped[130..260].copy_from_slice(&msg[..130]);
        let mut rng_a = ChaCha20Rng::seed_from_u64(4);
        let mut rng_b = ChaCha20Rng::seed_from_u64(4);
        let (a, _) = send(&mut rng_a, &sid, &msg).unwrap();
        let (b, _) = send(&mut rng_b, &sid, &swapped).unwrap();
        for j in 0..2 {
            assert_ne!(a.keys[0][j], b.keys[1][j]);
            assert_ne!(a.keys[1][j], b.keys[0][j]);
        }
    }

    #[test]
    fn malformed_messages_rejected() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let sid = [0; 32];
        let (receiver, msg) = BaseOtReceiver::start(&mut rng, &sid);
        // Truncated and over-long.
        assert_eq!(
            send(&mut rng, &sid, &msg[1..]).err(),
            Some(Error::WrongLength)
        );
        let mut long = msg.clone();
        long.push(0);
        assert_eq!(send(&mut rng, &sid, &long).err(), Some(Error::WrongLength));
        // Identity, uncompressed prefix, off-curve x.
        let mut identity = msg.clone();
        identity[65..130].fill(0);
        assert_eq!(
            send(&mut rng, &sid, &identity).err(),
            Some(Error::IdentityPoint)
        );
        let mut prefix = msg.clone();
        prefix[0] = 0x02;
        assert_eq!(
            send(&mut rng, &sid, &prefix).err(),
            Some(Error::InvalidPoint)
        );
        let mut off_curve = msg.clone();
        off_curve[194] ^= 1; // y of the second OT's first point
        assert_eq!(
            send(&mut rng, &sid, &off_curve).err(),
            Some(Error::InvalidPoint)
        );
        // Sender side: identity and wrong length.
        assert_eq!(
            BaseOtReceiver::start(&mut rng, &sid)
                .0
                .finish(&[0u8; 33])
                .err(),
            Some(Error::IdentityPoint)
        );
        assert_eq!(receiver.finish(&[2u8; 32]).err(), Some(Error::WrongLength));
    }

    #[test]
    fn equal_points_give_receiver_no_second_key() {
        // A cheating receiver sending r[t][0] = r[t][1] = a*G knows neither
        // M value's log: its guess a*B matches neither key.
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let sid = [8; 32];
        let a = random_nonzero_scalar(&mut rng);
        let p = encode_points_uncompressed(&[ProjectivePoint::mul_by_generator(&a)])[0];
        let msg: Vec<u8> = (0..2 * BASE_OTS).flat_map(|_| p).collect();
        let (out, reply) = send(&mut rng, &sid, &msg).unwrap();
        let b_point = decode_point(&reply).unwrap();
        for t in 0..BASE_OTS {
            for branch in 0..2u8 {
                let guess = derive_key(
                    &sid,
                    index_u32(t),
                    branch,
                    &msg[130 * t..130 * (t + 1)],
                    &encode_point(&b_point),
                    &encode_point(&(b_point * a)),
                );
                assert_ne!(guess, out.keys[t][usize::from(branch)]);
            }
        }
    }
}
