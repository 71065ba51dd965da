//! SoftSpokenOT extension: one batch of `XI` random OTs per signature and
//! direction, with the malicious-security consistency check
//! (PROTOCOL.md §6).
//!
//! The receiver R (who knows every leaf seed) sends the correction matrix `U`
//! and the check values; the sender S (who knows all seeds but one per tree,
//! and hence `Delta`) verifies the check and derives both OT outputs per
//! instance. A failed check is a ban: a receiver that deviated learns bits of
//! `Delta` from whether the check passed.

use alloc::vec;
use alloc::vec::Vec;

use aes::cipher::{BlockEncrypt, KeyInit};
use aes::{Aes128, Block};
use k256::Scalar;
use rand_core::CryptoRngCore;
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::matrix::{columns, row_from_bytes, row_to_bytes, Row, EXT_BLOCKS};
use super::pprf::{AllSeeds, PuncturedSeeds};
use crate::ct::declassify;
use crate::error::{Error, Result};
use crate::hazmat::gf128::{check_hash, FieldBytes};
use crate::hazmat::prg;
use crate::params::{EXT_ROW_BYTES, LAMBDA_C, LEAVES, RVOLE_WIDTH, SOFTSPOKEN_K, TREES, XI};
use crate::transcript::{reduce_wide, tags, Transcript, WideTranscript};

/// Bytes of the receiver's extension message: `U`, `x_chk`, `t_chk`.
pub const OTE_MSG_BYTES: usize = TREES * EXT_ROW_BYTES + 16 + 16 * LAMBDA_C;
/// Bytes of the receiver's choice bits.
pub const CHOICE_BYTES: usize = XI / 8;

/// One random-OT output: `RVOLE_WIDTH` scalars.
pub type RotOutput = [Scalar; RVOLE_WIDTH];

/// The receiver's outputs: for each OT `j`, the output of branch `choice_j`.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct ExtReceiverOutput {
    /// `outputs[j]` = `alpha_{choice_j}[j]`.
    pub outputs: Vec<RotOutput>,
}

/// The sender's outputs: both branches of every OT.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct ExtSenderOutput {
    /// `outputs[j][b]` = `alpha_b[j]`.
    pub outputs: Vec<[RotOutput; 2]>,
}

/// A deviation a test makes the receiver commit (PROTOCOL.md §6.4).
#[cfg(any(test, fuzzing))]
#[derive(Clone, Copy)]
pub(crate) struct ReceiverDeviation {
    /// Tree whose `U` block is built from a different `xhat`.
    pub(crate) tree: usize,
    /// The receiver's guess of that tree's punctured leaf, used to patch
    /// `t_chk` so the check passes iff the guess is right.
    pub(crate) guess: u8,
}

/// `Hrot(sid_ext, j, Z)`: tweakable correlation-robust hash from a 128-bit
/// column to `RVOLE_WIDTH` scalars (PROTOCOL.md §6.5).
///
/// `pi` is AES-128 under the public per-batch key
/// `Hx(mpc/ot/ext/rot/v1; sid_ext; 16)`; output block `l` of OT `j` is the
/// TCCR hash of Guo-Katz-Wang-Yu (ePrint 2019/074)
/// `pi(pi(Z) ^ tweak(j, l)) ^ pi(Z)`, and scalar `t` is the wide reduction of
/// blocks `4t..4t+4`.
struct RotHasher {
    cipher: Aes128,
    /// Scratch reused by every output and wiped on drop, so no per-output
    /// copy of secret hash blocks outlives the batch.
    blocks: [Block; ROT_BLOCKS],
    wide: [u8; 64],
}

const ROT_BLOCKS: usize = 4 * RVOLE_WIDTH;

impl RotHasher {
    fn new(sid_ext: &[u8; 32]) -> Self {
        let key: [u8; 16] = WideTranscript::<1>::new(tags::OT_EXT_ROT)
            .chain(sid_ext)
            .finalize_array();
        Self {
            cipher: Aes128::new(&key.into()),
            blocks: Default::default(),
            wide: [0u8; 64],
        }
    }

    fn output(&mut self, index: usize, column: u128) -> RotOutput {
        let first = &mut self.blocks[0];
        first.copy_from_slice(&column.to_le_bytes());
        self.cipher.encrypt_block(first);
        let masked = u128::from_le_bytes((*first).into());
        for (l, block) in self.blocks.iter_mut().enumerate() {
            // tweak(j, l) = j * 2^64 + l, little-endian.
            let tweak = ((index as u128) << 64) | l as u128;
            block.copy_from_slice(&(masked ^ tweak).to_le_bytes());
        }
        self.cipher.encrypt_blocks(&mut self.blocks);
        core::array::from_fn(|t| {
            for (chunk, block) in self
                .wide
                .chunks_exact_mut(16)
                .zip(&self.blocks[4 * t..4 * t + 4])
            {
                let value = u128::from_le_bytes((*block).into()) ^ masked;
                chunk.copy_from_slice(&value.to_le_bytes());
            }
            reduce_wide(&self.wide)
        })
    }
}

impl Drop for RotHasher {
    fn drop(&mut self) {
        for block in &mut self.blocks {
            block[..].zeroize();
        }
        self.wide[..].zeroize();
    }
}

fn batch_iv(sid_ext: &[u8; 32]) -> [u8; 16] {
    WideTranscript::<1>::new(tags::OT_EXT_IV)
        .chain(sid_ext)
        .finalize_array()
}

fn challenge(sid_ext: &[u8; 32], u_bytes: &[u8]) -> FieldBytes {
    let h_u = Transcript::new(tags::OT_EXT_U)
        .chain(sid_ext)
        .chain(u_bytes)
        .finalize();
    WideTranscript::<1>::new(tags::OT_EXT_CHI)
        .chain(&h_u)
        .finalize_array()
}

fn row_check(challenge: &FieldBytes, row: &Row) -> FieldBytes {
    let blocks: [FieldBytes; EXT_BLOCKS] = core::array::from_fn(|u| row[u].to_le_bytes());
    check_hash(challenge, &blocks)
}

fn expand_seed(seed: &prg::Seed, iv: &[u8; 16]) -> Row {
    let mut bytes = [0u8; EXT_ROW_BYTES];
    prg::fill(seed, iv, &mut bytes);
    let row = row_from_bytes(&bytes);
    bytes[..].zeroize();
    row
}

fn xor_row(acc: &mut Row, other: &Row) {
    for (a, b) in acc.iter_mut().zip(other) {
        *a ^= b;
    }
}

/// `h_ote = H(mpc/ot/ext/msg/v1; sid_ext, OteMsg)`, bound into the RVOLE.
#[must_use]
pub fn message_digest(sid_ext: &[u8; 32], message: &[u8]) -> [u8; 32] {
    Transcript::new(tags::OT_EXT_MSG)
        .chain(sid_ext)
        .chain(message)
        .finalize()
}

/// Runs the receiver R of one batch (PROTOCOL.md §6.2): returns the
/// extension message (`OTE_MSG_BYTES` bytes) and R's outputs for `choices`.
pub fn receive(
    rng: &mut impl CryptoRngCore,
    seeds: &AllSeeds,
    sid_ext: &[u8; 32],
    choices: &[u8; CHOICE_BYTES],
) -> (Vec<u8>, ExtReceiverOutput) {
    receive_inner(rng, seeds, sid_ext, choices, None)
}

pub(crate) fn receive_inner(
    rng: &mut impl CryptoRngCore,
    seeds: &AllSeeds,
    sid_ext: &[u8; 32],
    choices: &[u8; CHOICE_BYTES],
    #[cfg(any(test, fuzzing))] deviation: Option<ReceiverDeviation>,
    #[cfg(not(any(test, fuzzing)))] _deviation: Option<core::convert::Infallible>,
) -> (Vec<u8>, ExtReceiverOutput) {
    let iv = batch_iv(sid_ext);
    let mut xhat_bytes = [0u8; EXT_ROW_BYTES];
    xhat_bytes[..CHOICE_BYTES].copy_from_slice(choices);
    rng.fill_bytes(&mut xhat_bytes[CHOICE_BYTES..]);
    let mut xhat = row_from_bytes(&xhat_bytes);
    xhat_bytes.zeroize();

    let mut rows: Vec<Row> = vec![[0u128; EXT_BLOCKS]; LAMBDA_C];
    let mut message = Vec::with_capacity(OTE_MSG_BYTES);
    for (tree, tree_seeds) in seeds.seeds.iter().enumerate() {
        let mut sum = [0u128; EXT_BLOCKS];
        for (leaf, seed) in tree_seeds.iter().enumerate() {
            let mut e = expand_seed(seed, &iv);
            xor_row(&mut sum, &e);
            for bit in 0..SOFTSPOKEN_K {
                // `leaf` is a public loop index: no secret-dependent branch.
                if (leaf >> bit) & 1 == 1 {
                    xor_row(&mut rows[tree * SOFTSPOKEN_K + bit], &e);
                }
            }
            e[..].zeroize();
        }
        xor_row(&mut sum, &xhat);
        #[cfg(any(test, fuzzing))]
        if let Some(dev) = deviation {
            if dev.tree == tree {
                sum[0] ^= 1;
            }
        }
        message.extend_from_slice(&row_to_bytes(&sum));
    }
    let chal = challenge(sid_ext, &message);
    message.extend_from_slice(&row_check(&chal, &xhat));
    #[cfg_attr(not(any(test, fuzzing)), allow(unused_variables))]
    for (r, row) in rows.iter().enumerate() {
        #[allow(unused_mut)]
        let mut t_chk = row_check(&chal, row);
        #[cfg(any(test, fuzzing))]
        if let Some(dev) = deviation {
            // Rows of the tampered tree pick up Delta_r * check(err) at S;
            // patch with the guessed Delta bits.
            let bit = r % SOFTSPOKEN_K;
            if r / SOFTSPOKEN_K == dev.tree && (dev.guess >> bit) & 1 == 1 {
                let mut err = [0u128; EXT_BLOCKS];
                err[0] = 1;
                t_chk = crate::hazmat::gf128::xor16(&t_chk, &row_check(&chal, &err));
            }
        }
        message.extend_from_slice(&t_chk);
    }
    xhat.zeroize();

    let mut hasher = RotHasher::new(sid_ext);
    let mut psi = columns(&rows);
    rows.zeroize();
    let outputs = psi
        .iter()
        .enumerate()
        .map(|(j, col)| hasher.output(j, *col))
        .collect();
    psi.zeroize();
    (message, ExtReceiverOutput { outputs })
}

/// `Delta` as a 128-bit value: bit `i*k + b` is bit `b` of the punctured
/// leaf of tree `i`.
pub(crate) fn delta(seeds: &PuncturedSeeds) -> u128 {
    seeds
        .punctured
        .iter()
        .enumerate()
        .fold(0u128, |acc, (tree, p)| {
            acc | (u128::from(*p) << (tree * SOFTSPOKEN_K))
        })
}

/// Runs the sender S of one batch (PROTOCOL.md §6.3): checks the receiver's
/// message and returns both outputs of every OT.
///
/// # Errors
///
/// [`Error::WrongLength`] (abort) for a message of the wrong size;
/// [`Error::OtExtensionCheckFailed`] (ban) if the consistency check fails.
pub fn send(seeds: &PuncturedSeeds, sid_ext: &[u8; 32], message: &[u8]) -> Result<ExtSenderOutput> {
    if message.len() != OTE_MSG_BYTES {
        return Err(Error::WrongLength);
    }
    let (u_bytes, checks) = message.split_at(TREES * EXT_ROW_BYTES);
    let iv = batch_iv(sid_ext);
    let mut rows: Vec<Row> = vec![[0u128; EXT_BLOCKS]; LAMBDA_C];
    for (tree, tree_seeds) in seeds.seeds.iter().enumerate() {
        let p = seeds.punctured[tree];
        for (leaf, seed) in tree_seeds.iter().enumerate() {
            // The punctured leaf's placeholder seed expands to garbage whose
            // coefficient bit_b(p ^ p) is zero for every b.
            let mut e = expand_seed(seed, &iv);
            #[allow(clippy::cast_possible_truncation)]
            let diff = (leaf as u8) ^ p;
            for bit in 0..SOFTSPOKEN_K {
                let take = Choice::from((diff >> bit) & 1);
                let row = &mut rows[tree * SOFTSPOKEN_K + bit];
                for (acc, block) in row.iter_mut().zip(&e) {
                    *acc ^= u128::conditional_select(&0, block, take);
                }
            }
            e[..].zeroize();
        }
        let u = row_from_bytes(&u_bytes[tree * EXT_ROW_BYTES..]);
        for bit in 0..SOFTSPOKEN_K {
            let take = Choice::from((p >> bit) & 1);
            let row = &mut rows[tree * SOFTSPOKEN_K + bit];
            for (acc, block) in row.iter_mut().zip(&u) {
                *acc ^= u128::conditional_select(&0, block, take);
            }
        }
    }

    let mut delta = delta(seeds);
    let chal = challenge(sid_ext, u_bytes);
    let x_chk = &checks[..16];
    let mut ok = Choice::from(1u8);
    for (r, row) in rows.iter().enumerate() {
        let q_chk = u128::from_le_bytes(row_check(&chal, row));
        let t_chk = &checks[16 * (r + 1)..16 * (r + 2)];
        let expected = read_u128(t_chk)
            ^ u128::conditional_select(&0, &read_u128(x_chk), Choice::from(bit_u8(delta, r)));
        ok &= q_chk.ct_eq(&expected);
    }
    // The check's verdict is public: a failure bans the peer.
    if !declassify(ok) {
        rows.zeroize();
        delta.zeroize();
        return Err(Error::OtExtensionCheckFailed);
    }

    let mut hasher = RotHasher::new(sid_ext);
    let mut zeta = columns(&rows);
    rows.zeroize();
    let outputs = zeta
        .iter()
        .enumerate()
        .map(|(j, col)| [hasher.output(j, *col), hasher.output(j, col ^ delta)])
        .collect();
    zeta.zeroize();
    delta.zeroize();
    Ok(ExtSenderOutput { outputs })
}

fn bit_u8(value: u128, bit: usize) -> u8 {
    // Masked to one bit.
    #[allow(clippy::cast_possible_truncation)]
    let b = ((value >> bit) & 1) as u8;
    b
}

fn read_u128(bytes: &[u8]) -> u128 {
    let mut array = [0u8; 16];
    array.copy_from_slice(&bytes[..16]);
    u128::from_le_bytes(array)
}

// Leaf indices are cast to u8 in `send`.
const _: () = assert!(LEAVES <= 256);

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::needless_range_loop)]
mod tests {
    use super::super::setup::tests::key_pair;
    use super::*;
    use rand_chacha::rand_core::{RngCore, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    fn bit(bytes: &[u8], j: usize) -> usize {
        usize::from((bytes[j / 8] >> (j % 8)) & 1)
    }

    /// `Hrot` is the construction of PROTOCOL.md §6.5, recomputed here from
    /// the `aes` crate and the spec's arithmetic (`j * 2^64 + l`, not the
    /// code's shifts): block `l` is `pi(pi(Z) ^ tweak) ^ pi(Z)` and scalar
    /// `t` reduces blocks `4t..4t+4`. Both parties share `RotHasher`, so a
    /// change to it keeps them agreeing and only this comparison notices.
    #[test]
    fn rot_hash_is_the_spec_tccr_construction() {
        let sid_ext = [7u8; 32];
        let key: [u8; 16] = WideTranscript::<1>::new(tags::OT_EXT_ROT)
            .chain(&sid_ext)
            .finalize_array();
        let pi = Aes128::new(&key.into());
        let permute = |x: u128| {
            let mut block = Block::from(x.to_le_bytes());
            pi.encrypt_block(&mut block);
            u128::from_le_bytes(block.into())
        };
        let mut hasher = RotHasher::new(&sid_ext);
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        for index in [0, 1, 2, XI / 2, XI - 1] {
            let column = (u128::from(rng.next_u64()) << 64) ^ u128::from(rng.next_u64());
            let pz = permute(column);
            let blocks: Vec<[u8; 16]> = (0..ROT_BLOCKS)
                .map(|l| {
                    let tweak = (index as u128) * (1u128 << 64) + l as u128;
                    (permute(pz ^ tweak) ^ pz).to_le_bytes()
                })
                .collect();
            let expected: RotOutput = core::array::from_fn(|t| {
                let mut wide = [0u8; 64];
                for (chunk, block) in wide.chunks_exact_mut(16).zip(&blocks[4 * t..4 * t + 4]) {
                    chunk.copy_from_slice(block);
                }
                reduce_wide(&wide)
            });
            assert_eq!(hasher.output(index, column), expected, "OT {index}");
        }
    }

    /// `h_ote` binds the session and every byte of the extension message.
    #[test]
    fn message_digest_binds_session_and_message() {
        let message = [5u8; 64];
        let digest = message_digest(&[1; 32], &message);
        assert_ne!(digest, message_digest(&[2; 32], &message));
        let mut changed = message;
        changed[63] ^= 1;
        assert_ne!(digest, message_digest(&[1; 32], &changed));
    }

    #[test]
    fn outputs_are_correlated() {
        let (sender, receiver) = key_pair(1);
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        for session in 0..3u8 {
            let sid = [session; 32];
            let mut choices = [0u8; CHOICE_BYTES];
            rng.fill_bytes(&mut choices);
            let (msg, r_out) = receive(&mut rng, receiver.seeds(), &sid, &choices);
            assert_eq!(msg.len(), OTE_MSG_BYTES);
            let s_out = send(sender.seeds(), &sid, &msg).unwrap();
            for j in 0..XI {
                let c = bit(&choices, j);
                assert_eq!(r_out.outputs[j], s_out.outputs[j][c]);
                assert_ne!(r_out.outputs[j], s_out.outputs[j][1 - c]);
            }
        }
    }

    #[test]
    fn flipped_u_bit_is_caught_as_ban() {
        let (sender, receiver) = key_pair(3);
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let sid = [9u8; 32];
        let (msg, _) = receive(&mut rng, receiver.seeds(), &sid, &[0x5a; CHOICE_BYTES]);
        // A flip in U[i] is seen by S only if p[i] != 0 (W ignores U[i]
        // otherwise); pick a tree with p != 0.
        let tree = sender
            .seeds()
            .punctured
            .iter()
            .position(|p| *p != 0)
            .unwrap();
        for byte in [0, 37, EXT_ROW_BYTES - 1] {
            let mut bad = msg.clone();
            bad[tree * EXT_ROW_BYTES + byte] ^= 0x10;
            let err = send(sender.seeds(), &sid, &bad).err().unwrap();
            assert_eq!(err, Error::OtExtensionCheckFailed);
            assert_eq!(err.class(), crate::AbortClass::Ban);
        }
    }

    #[test]
    fn flipped_check_values_are_caught() {
        let (sender, receiver) = key_pair(5);
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let sid = [1u8; 32];
        let (msg, _) = receive(&mut rng, receiver.seeds(), &sid, &[0xa5; CHOICE_BYTES]);
        let checks = TREES * EXT_ROW_BYTES;
        for r in [0, 1, 77, LAMBDA_C - 1] {
            let mut bad = msg.clone();
            bad[checks + 16 * (r + 1) + 3] ^= 1;
            assert_eq!(
                send(sender.seeds(), &sid, &bad).err(),
                Some(Error::OtExtensionCheckFailed)
            );
        }
        // x_chk matters for every row with Delta_r = 1; Delta != 0 here.
        assert_ne!(delta(sender.seeds()), 0);
        let mut bad = msg.clone();
        bad[checks] ^= 1;
        assert_eq!(
            send(sender.seeds(), &sid, &bad).err(),
            Some(Error::OtExtensionCheckFailed)
        );
        // Wrong length: abort, not ban.
        assert_eq!(
            send(sender.seeds(), &sid, &msg[..OTE_MSG_BYTES - 1]).err(),
            Some(Error::WrongLength)
        );
    }

    #[test]
    fn replay_into_another_session_is_caught() {
        let (sender, receiver) = key_pair(7);
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let (msg, _) = receive(&mut rng, receiver.seeds(), &[1; 32], &[0; CHOICE_BYTES]);
        assert_eq!(
            send(sender.seeds(), &[2; 32], &msg).err(),
            Some(Error::OtExtensionCheckFailed)
        );
    }

    #[test]
    fn consistent_cheating_passes_only_with_the_right_guess() {
        // R changes xhat in one tree and patches t_chk with a guess of that
        // tree's Delta bits: exactly the right guess passes (probability
        // 2^-k), and that pass tells R those k bits of Delta. This is the leak
        // the ban rule bounds.
        let (sender, receiver) = key_pair(9);
        let tree = 5;
        let mut passes = Vec::new();
        for guess in 0..LEAVES as u8 {
            let mut rng = ChaCha20Rng::seed_from_u64(10);
            let deviation = Some(ReceiverDeviation { tree, guess });
            let (msg, _) = receive_inner(
                &mut rng,
                receiver.seeds(),
                &[3; 32],
                &[0x0f; CHOICE_BYTES],
                deviation,
            );
            if send(sender.seeds(), &[3; 32], &msg).is_ok() {
                passes.push(guess);
            }
        }
        assert_eq!(passes, vec![sender.seeds().punctured[tree]]);
    }

    #[test]
    fn sessions_give_independent_batches() {
        let (sender, receiver) = key_pair(11);
        let choices = [0x33; CHOICE_BYTES];
        let mut rng = ChaCha20Rng::seed_from_u64(12);
        let (msg_a, out_a) = receive(&mut rng, receiver.seeds(), &[1; 32], &choices);
        let mut rng = ChaCha20Rng::seed_from_u64(12);
        let (msg_b, out_b) = receive(&mut rng, receiver.seeds(), &[2; 32], &choices);
        assert_ne!(
            msg_a[..TREES * EXT_ROW_BYTES],
            msg_b[..TREES * EXT_ROW_BYTES]
        );
        let s_a = send(sender.seeds(), &[1; 32], &msg_a).unwrap();
        let s_b = send(sender.seeds(), &[2; 32], &msg_b).unwrap();
        for j in 0..XI {
            assert_ne!(out_a.outputs[j], out_b.outputs[j]);
            assert_ne!(s_a.outputs[j][0], s_b.outputs[j][0]);
        }
    }
}
