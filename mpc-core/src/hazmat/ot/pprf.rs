//! All-but-one seeds from GGM trees: the SoftSpokenOT setup
//! (PROTOCOL.md §5).
//!
//! The OT-extension receiver (the base-OT *sender*) builds `TREES` GGM trees
//! of depth `k` from its base-OT key pairs and learns every leaf. The
//! OT-extension sender (the base-OT *receiver*) learns every leaf but one per
//! tree, at a position fixed by its base-OT choice bits: that position is its
//! share of the correlation `Delta`. A proof over all leaves (a hash of
//! per-leaf proof values) commits the builder to one consistent tree.
//!
//! The evaluator never branches on or indexes memory with the punctured
//! position: every node and leaf is visited and merged under `subtle` masks.

use alloc::vec;
use alloc::vec::Vec;

use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::base::{BaseOtReceiverOutput, BaseOtSenderOutput};
use crate::ct::declassify;
use crate::error::{Error, Result};
use crate::hazmat::prg::Seed;
use crate::params::{LAMBDA_C_BYTES, LEAVES, SOFTSPOKEN_K, TREES};
use crate::transcript::{tags, WideTranscript};

/// Bytes per tree in the setup message: `2*(k-1)` correction words, the
/// XOR of the leaf proofs and the proof digest.
pub const TREE_MSG_BYTES: usize = 2 * (SOFTSPOKEN_K - 1) * LAMBDA_C_BYTES + 2 * PROOF_BYTES;
/// Bytes of the whole setup message.
pub const PPRF_MSG_BYTES: usize = TREES * TREE_MSG_BYTES;
const PROOF_BYTES: usize = 2 * LAMBDA_C_BYTES;

type Node = u128;
type Proof = [u128; 2];

fn u32_of(value: usize) -> u32 {
    // Tree and leaf indices are below TREES * LEAVES = 512.
    #[allow(clippy::cast_possible_truncation)]
    let v = value as u32;
    v
}

fn expand(sid: &[u8; 32], tree: usize, level: usize, node: Node) -> (Node, Node) {
    let mut hx = WideTranscript::<1>::new(tags::PPRF_EXPAND);
    hx.append(sid);
    hx.append_u32(u32_of(tree));
    #[allow(clippy::cast_possible_truncation)]
    hx.append(&[level as u8]);
    hx.append(&node.to_le_bytes());
    let out: [u8; 32] = hx.finalize_array();
    let (left, right) = out.split_at(16);
    (le_u128(left), le_u128(right))
}

fn le_u128(bytes: &[u8]) -> u128 {
    let mut array = [0u8; 16];
    array.copy_from_slice(&bytes[..16]);
    u128::from_le_bytes(array)
}

fn leaf_proof(sid: &[u8; 32], tree: usize, leaf: usize, node: Node) -> Proof {
    let mut hx = WideTranscript::<1>::new(tags::PPRF_LEAF_PROOF);
    hx.append(sid);
    hx.append_u32(u32_of(tree));
    hx.append_u32(u32_of(leaf));
    hx.append(&node.to_le_bytes());
    let out: [u8; PROOF_BYTES] = hx.finalize_array();
    [le_u128(&out[..16]), le_u128(&out[16..])]
}

fn leaf_seed(sid: &[u8; 32], tree: usize, leaf: usize, node: Node) -> Seed {
    let mut hx = WideTranscript::<1>::new(tags::PPRF_LEAF_SEED);
    hx.append(sid);
    hx.append_u32(u32_of(tree));
    hx.append_u32(u32_of(leaf));
    hx.append(&node.to_le_bytes());
    hx.finalize_array()
}

fn tree_digest(sid: &[u8; 32], tree: usize, proofs: &[Proof; LEAVES]) -> [u8; PROOF_BYTES] {
    let mut all = [0u8; LEAVES * PROOF_BYTES];
    for (chunk, proof) in all.chunks_exact_mut(PROOF_BYTES).zip(proofs) {
        chunk[..16].copy_from_slice(&proof[0].to_le_bytes());
        chunk[16..].copy_from_slice(&proof[1].to_le_bytes());
    }
    let mut hx = WideTranscript::<1>::new(tags::PPRF_CHECK);
    hx.append(sid);
    hx.append_u32(u32_of(tree));
    hx.append(&all);
    hx.finalize_array()
}

/// Every leaf seed of every tree: the OT-extension receiver's long-term
/// secret for one direction. Not `Clone`: a copy would be one more place the
/// seeds must be wiped from.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct AllSeeds {
    /// `seeds[i][y]`: leaf `y` of tree `i`.
    pub seeds: Vec<[Seed; LEAVES]>,
}

/// All leaf seeds but one per tree: the OT-extension sender's long-term
/// secret for one direction. Not `Clone`, like [`AllSeeds`].
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct PuncturedSeeds {
    /// `punctured[i]`: the leaf of tree `i` this party does not know
    /// (`k` bits; its share of `Delta`).
    pub punctured: [u8; TREES],
    /// `seeds[i][y]` for `y != punctured[i]`; zero at the punctured leaf.
    pub seeds: Vec<[Seed; LEAVES]>,
}

/// Builds the trees from the base-OT sender's key pairs (PROTOCOL.md §5.1).
/// Returns the leaf seeds and the setup message (`PPRF_MSG_BYTES` bytes).
#[must_use]
pub fn build(sid: &[u8; 32], base: &BaseOtSenderOutput) -> (AllSeeds, Vec<u8>) {
    let mut message = Vec::with_capacity(PPRF_MSG_BYTES);
    let mut all_seeds = Vec::with_capacity(TREES);
    for tree in 0..TREES {
        let ot =
            |level: usize, branch: usize| le_u128(&base.keys[tree * SOFTSPOKEN_K + level][branch]);
        let mut level_nodes = vec![ot(0, 0), ot(0, 1)];
        for level in 1..SOFTSPOKEN_K {
            let mut next = vec![0u128; 2 * level_nodes.len()];
            let mut sums = [0u128; 2];
            for (y, node) in level_nodes.iter().enumerate() {
                let (left, right) = expand(sid, tree, level, *node);
                next[2 * y] = left;
                next[2 * y + 1] = right;
                sums[0] ^= left;
                sums[1] ^= right;
            }
            for (branch, sum) in sums.iter().enumerate() {
                message.extend_from_slice(&(sum ^ ot(level, branch)).to_le_bytes());
            }
            sums.zeroize();
            level_nodes.zeroize();
            level_nodes = next;
        }
        let mut proofs = [[0u128; 2]; LEAVES];
        let mut proof_sum = [0u128; 2];
        let mut seeds = [[0u8; LAMBDA_C_BYTES]; LEAVES];
        for (y, leaf) in level_nodes.iter().enumerate() {
            proofs[y] = leaf_proof(sid, tree, y, *leaf);
            proof_sum[0] ^= proofs[y][0];
            proof_sum[1] ^= proofs[y][1];
            seeds[y] = leaf_seed(sid, tree, y, *leaf);
        }
        level_nodes.zeroize();
        message.extend_from_slice(&proof_sum[0].to_le_bytes());
        message.extend_from_slice(&proof_sum[1].to_le_bytes());
        message.extend_from_slice(&tree_digest(sid, tree, &proofs));
        all_seeds.push(seeds);
        // Stack copies: the leaf proofs reveal the leaves' images, the seeds
        // are the secret itself (the pushed copy lives on in AllSeeds).
        seeds.zeroize();
        proofs.zeroize();
        proof_sum.zeroize();
    }
    (AllSeeds { seeds: all_seeds }, message)
}

/// Evaluates the punctured trees from the base-OT receiver's keys and the
/// builder's setup message, and checks the builder's proof for every tree
/// (PROTOCOL.md §5.2).
///
/// # Errors
///
/// [`Error::WrongLength`] for a message of the wrong size;
/// [`Error::PprfProofFailed`] if any tree's proof fails (all trees are
/// processed first, and the error does not say which failed).
pub fn evaluate(
    sid: &[u8; 32],
    base: &BaseOtReceiverOutput,
    message: &[u8],
) -> Result<PuncturedSeeds> {
    if message.len() != PPRF_MSG_BYTES {
        return Err(Error::WrongLength);
    }
    let mut ok = Choice::from(1u8);
    let mut punctured = [0u8; TREES];
    let mut all_seeds = Vec::with_capacity(TREES);
    for (tree, tree_msg) in message.chunks_exact(TREE_MSG_BYTES).enumerate() {
        let ot_index = |level: usize| tree * SOFTSPOKEN_K + level;
        let choice = |level: usize| {
            let t = ot_index(level);
            Choice::from((base.choices[t / 8] >> (t % 8)) & 1)
        };
        let key = |level: usize| le_u128(&base.keys[ot_index(level)]);

        // Level 1: the chosen node is known; the other is the unknown one.
        let c0 = choice(0);
        let mut level_nodes = vec![
            Node::conditional_select(&key(0), &0, c0),
            Node::conditional_select(&0, &key(0), c0),
        ];
        // `unknown` is secret: only ever compared in constant time.
        let mut unknown = u8::conditional_select(&1, &0, c0);
        for level in 1..SOFTSPOKEN_K {
            let cl = choice(level);
            let mut next = vec![0u128; 2 * level_nodes.len()];
            for (y, node) in level_nodes.iter().enumerate() {
                let (left, right) = expand(sid, tree, level, *node);
                next[2 * y] = left;
                next[2 * y + 1] = right;
            }
            let corrections =
                &tree_msg[(level - 1) * 2 * LAMBDA_C_BYTES..level * 2 * LAMBDA_C_BYTES];
            let correction = Node::conditional_select(
                &le_u128(&corrections[..LAMBDA_C_BYTES]),
                &le_u128(&corrections[LAMBDA_C_BYTES..]),
                cl,
            );
            let mut value = correction ^ key(level);
            for y in 0..level_nodes.len() {
                let side_node = Node::conditional_select(&next[2 * y], &next[2 * y + 1], cl);
                let known = !small_eq(y, unknown);
                value ^= Node::conditional_select(&0, &side_node, known);
            }
            let target = 2 * unknown + cl.unwrap_u8();
            for (idx, node) in next.iter_mut().enumerate() {
                node.conditional_assign(&value, small_eq(idx, target));
            }
            unknown = 2 * unknown + (1 - cl.unwrap_u8());
            value.zeroize();
            level_nodes.zeroize();
            level_nodes = next;
        }

        let mut proofs = [[0u128; 2]; LEAVES];
        let proof_offset = 2 * (SOFTSPOKEN_K - 1) * LAMBDA_C_BYTES;
        let mut missing = [
            le_u128(&tree_msg[proof_offset..proof_offset + 16]),
            le_u128(&tree_msg[proof_offset + 16..proof_offset + 32]),
        ];
        let mut seeds = [[0u8; LAMBDA_C_BYTES]; LEAVES];
        for (y, leaf) in level_nodes.iter().enumerate() {
            proofs[y] = leaf_proof(sid, tree, y, *leaf);
            let known = !small_eq(y, unknown);
            missing[0] ^= u128::conditional_select(&0, &proofs[y][0], known);
            missing[1] ^= u128::conditional_select(&0, &proofs[y][1], known);
            let mut seed = leaf_seed(sid, tree, y, *leaf);
            for (dst, src) in seeds[y].iter_mut().zip(seed) {
                *dst = u8::conditional_select(&0, &src, known);
            }
            seed.zeroize();
        }
        level_nodes.zeroize();
        for (y, proof) in proofs.iter_mut().enumerate() {
            let is_unknown = small_eq(y, unknown);
            proof[0].conditional_assign(&missing[0], is_unknown);
            proof[1].conditional_assign(&missing[1], is_unknown);
        }
        let digest = tree_digest(sid, tree, &proofs);
        ok &= digest.ct_eq(&tree_msg[proof_offset + PROOF_BYTES..]);
        punctured[tree] = unknown;
        all_seeds.push(seeds);
        // Stack copies of the seeds, of the proofs and of the punctured
        // position (a piece of Delta).
        seeds.zeroize();
        proofs.zeroize();
        missing.zeroize();
        unknown.zeroize();
    }
    // The proof's verdict is public: the setup aborts on it.
    if !declassify(ok) {
        punctured.zeroize();
        all_seeds.zeroize();
        return Err(Error::PprfProofFailed);
    }
    Ok(PuncturedSeeds {
        punctured,
        seeds: all_seeds,
    })
}

/// `index == secret` in constant time, for indices below 256.
fn small_eq(index: usize, secret: u8) -> Choice {
    #[allow(clippy::cast_possible_truncation)]
    let index = index as u8;
    index.ct_eq(&secret)
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::needless_range_loop)]
mod tests {
    use super::super::base::{self, BaseOtReceiver};
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    /// Every PPRF hash is tweaked by the tree (and leaf) it is for: one node
    /// value in two positions gives unrelated outputs, so a peer repeating a
    /// root or a node across trees gets no repeated expansion, leaf, proof
    /// or check digest (PROTOCOL.md §5.1). Both parties share these hashes,
    /// so a lost tweak keeps them agreeing and only this test notices.
    #[test]
    fn pprf_hashes_are_tweaked_by_position() {
        let sid = [3u8; 32];
        let node = 0x1234_u128;
        let positions = [(0, 0), (0, 1), (1, 0), (1, 1), (TREES - 1, LEAVES - 1)];
        for (i, &(tree, leaf)) in positions.iter().enumerate() {
            for &(other_tree, other_leaf) in &positions[i + 1..] {
                assert_ne!(
                    leaf_seed(&sid, tree, leaf, node),
                    leaf_seed(&sid, other_tree, other_leaf, node)
                );
                assert_ne!(
                    leaf_proof(&sid, tree, leaf, node),
                    leaf_proof(&sid, other_tree, other_leaf, node)
                );
            }
        }
        assert_ne!(expand(&sid, 0, 0, node), expand(&sid, 1, 0, node));
        assert_ne!(expand(&sid, 0, 0, node), expand(&sid, 0, 1, node));
        let proofs = [[0u128; 2]; LEAVES];
        assert_ne!(tree_digest(&sid, 0, &proofs), tree_digest(&sid, 1, &proofs));
    }

    fn base_pair(seed: u64) -> (BaseOtReceiverOutput, BaseOtSenderOutput) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let sid = [seed as u8; 32];
        let (receiver, msg) = BaseOtReceiver::start(&mut rng, &sid);
        let (sender_out, reply) = base::send(&mut rng, &sid, &msg).unwrap();
        (receiver.finish(&reply).unwrap(), sender_out)
    }

    #[test]
    fn punctured_leaves_match_except_at_delta() {
        let sid = [3u8; 32];
        let (recv, send) = base_pair(1);
        let (all, msg) = build(&sid, &send);
        assert_eq!(msg.len(), PPRF_MSG_BYTES);
        let punct = evaluate(&sid, &recv, &msg).unwrap();
        for tree in 0..TREES {
            // p's bit (k-1-l) is 1 - c[tree*k + l] (PROTOCOL.md §5.2).
            let mut expected = 0u8;
            for level in 0..SOFTSPOKEN_K {
                let t = tree * SOFTSPOKEN_K + level;
                let c = (recv.choices[t / 8] >> (t % 8)) & 1;
                expected = 2 * expected + (1 - c);
            }
            assert_eq!(punct.punctured[tree], expected);
            for y in 0..LEAVES {
                if y == usize::from(expected) {
                    assert_eq!(punct.seeds[tree][y], [0u8; 16]);
                    assert_ne!(all.seeds[tree][y], [0u8; 16]);
                } else {
                    assert_eq!(punct.seeds[tree][y], all.seeds[tree][y]);
                }
            }
        }
    }

    #[test]
    fn every_punctured_position_is_reachable() {
        // Over several runs every leaf index shows up as a punctured position
        // (the choice bits are uniform), and evaluation agrees at each.
        let mut seen = [false; LEAVES];
        for seed in 0..3 {
            let (recv, send) = base_pair(100 + seed);
            let (_, msg) = build(&[1; 32], &send);
            let punct = evaluate(&[1; 32], &recv, &msg).unwrap();
            for p in punct.punctured {
                seen[usize::from(p)] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn tampered_setup_is_caught() {
        let sid = [4u8; 32];
        let (recv, send) = base_pair(2);
        let (_, msg) = build(&sid, &send);
        for tree in [0, TREES - 1] {
            // A correction word is used only on the evaluator's chosen branch:
            // tampering fails iff that branch was chosen. This is the bounded
            // selective-failure leak of PROTOCOL.md §5.3; setup aborts.
            for level in 1..SOFTSPOKEN_K {
                let t = tree * SOFTSPOKEN_K + level;
                let chosen = usize::from((recv.choices[t / 8] >> (t % 8)) & 1);
                for branch in 0..2 {
                    let mut bad = msg.clone();
                    bad[tree * TREE_MSG_BYTES + ((level - 1) * 2 + branch) * LAMBDA_C_BYTES] ^= 1;
                    let result = evaluate(&sid, &recv, &bad);
                    if branch == chosen {
                        assert_eq!(result.err(), Some(Error::PprfProofFailed));
                    } else {
                        assert!(result.is_ok());
                    }
                }
            }
            // The proof sum and the digest: always caught.
            let proof_offset = 2 * (SOFTSPOKEN_K - 1) * LAMBDA_C_BYTES;
            for offset in [
                proof_offset,
                proof_offset + 31,
                proof_offset + 32,
                TREE_MSG_BYTES - 1,
            ] {
                let mut bad = msg.clone();
                bad[tree * TREE_MSG_BYTES + offset] ^= 0x80;
                assert_eq!(
                    evaluate(&sid, &recv, &bad).err(),
                    Some(Error::PprfProofFailed)
                );
            }
        }
        assert_eq!(
            evaluate(&sid, &recv, &msg[1..]).err(),
            Some(Error::WrongLength)
        );
        // Another session id: the proof fails.
        assert_eq!(
            evaluate(&[5u8; 32], &recv, &msg).err(),
            Some(Error::PprfProofFailed)
        );
    }

    #[test]
    fn seeds_differ_from_proofs_and_leaves() {
        let sid = [6u8; 32];
        let node = 0x1234_5678u128;
        let seed = leaf_seed(&sid, 0, 0, node);
        let proof = leaf_proof(&sid, 0, 0, node);
        assert_ne!(seed, node.to_le_bytes());
        assert_ne!(seed, proof[0].to_le_bytes());
    }
}
