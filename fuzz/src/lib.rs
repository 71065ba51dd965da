//! Shared code of the fuzz targets and of the corpus generator: here the
//! OT-stack fixtures (`base_ot`, `ot_setup`, `ot_extension`, `rvole`); in
//! [`protocols`] the recorded protocol runs, key shares, presignatures and
//! the backup (`protocol_rounds`, `keyshare_decode`, `backup_verify`).
//!
//! Every fixture is an honest protocol run from fixed seeds, built once per
//! process (`OnceLock`) and checked for correctness when it is built. The
//! targets re-create the honest party under test from the same seed for every
//! input, so that party's state always matches the fixture's valid messages.
//!
//! Input format of every OT-stack target: byte 0 selects the mode, the rest
//! is the body. In *raw* modes the body is the message (or messages) handed
//! to the honest party. In *tamper* modes the body is a list of 3-byte
//! records `offset_lo, offset_hi, xor`, each XORing `xor` into the valid
//! message at `offset mod len` (see [`tamper`]).

use std::sync::OnceLock;

use k256::Scalar;
use mpc_core::error::Result;
use mpc_core::hazmat::ot::base::{
    self, BaseOtReceiver, BaseOtReceiverOutput, BaseOtSenderOutput, BASE_OTS,
};
use mpc_core::hazmat::ot::extension::{self, ExtReceiverOutput, CHOICE_BYTES};
use mpc_core::hazmat::ot::pprf::TREE_MSG_BYTES;
use mpc_core::hazmat::ot::setup::{receiver_setup, OtReceiverKey, OtSenderKey, SenderSetup};
use mpc_core::hazmat::vole::{self, RvoleReceiver};
use mpc_core::params::{LAMBDA_C_BYTES, RVOLE_INPUTS, SOFTSPOKEN_K, XI};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

pub mod protocols;

/// A deterministic RNG: every party under test is seeded, so every fuzz input
/// replays exactly.
#[must_use]
pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

// ---- input format ----

/// Mode byte of a raw input (`mode & MODE_TAMPER == 0`).
pub const MODE_RAW: u8 = 0;
/// Mode bit of a tamper input.
pub const MODE_TAMPER: u8 = 1;
/// Mode bit of `base_ot`: the receiver side (else the sender side).
pub const MODE_BASE_RECEIVER: u8 = 2;
/// Bytes per tamper record: offset (u16, little-endian) and XOR mask.
pub const TAMPER_RECORD_BYTES: usize = 3;

/// `valid` with every complete record of `records` applied: record
/// `(lo, hi, x)` XORs `x` into byte `u16(lo, hi) mod valid.len()`.
#[must_use]
pub fn tamper(valid: &[u8], records: &[u8]) -> Vec<u8> {
    let mut out = valid.to_vec();
    if out.is_empty() {
        return out;
    }
    for record in records.chunks_exact(TAMPER_RECORD_BYTES) {
        let offset = usize::from(u16::from_le_bytes([record[0], record[1]])) % out.len();
        out[offset] ^= record[2];
    }
    out
}

/// One tamper record (for the corpus generator); `offset` must fit a u16.
#[must_use]
pub fn tamper_record(offset: usize, xor: u8) -> [u8; TAMPER_RECORD_BYTES] {
    let offset = u16::try_from(offset).expect("tamper offsets are 16-bit");
    let [lo, hi] = offset.to_le_bytes();
    [lo, hi, xor]
}

/// Offsets where two equally long messages differ.
#[must_use]
pub fn changed_offsets(a: &[u8], b: &[u8]) -> Vec<usize> {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .map(|(i, _)| i)
        .collect()
}

/// Bit `j` of a little-endian bit string (choice-bit layout of the crate).
#[must_use]
pub fn bit(bytes: &[u8], j: usize) -> usize {
    usize::from((bytes[j / 8] >> (j % 8)) & 1)
}

// ---- base OT ----

/// Session id of the base-OT fixture.
pub const BASE_SID: [u8; 32] = [0xb0; 32];
const BASE_RECEIVER_SEED: u64 = 0xba5e_0001;
const BASE_SENDER_SEED: u64 = 0xba5e_0002;

/// An honest base-OT run.
pub struct BaseFixture {
    /// The honest receiver's message (`RECEIVER_MSG_BYTES`).
    pub receiver_msg: Vec<u8>,
    /// The honest sender's answer (`SENDER_MSG_BYTES`).
    pub sender_msg: Vec<u8>,
    /// The honest sender's keys.
    pub sender_out: BaseOtSenderOutput,
    /// The honest receiver's keys.
    pub receiver_out: BaseOtReceiverOutput,
}

/// The honest base-OT receiver of the fixture, freshly started.
#[must_use]
pub fn base_receiver() -> (BaseOtReceiver, Vec<u8>) {
    BaseOtReceiver::start(&mut rng(BASE_RECEIVER_SEED), &BASE_SID)
}

/// The honest base-OT sender of the fixture, answering `receiver_msg`.
///
/// # Errors
///
/// As [`base::send`].
pub fn base_send(receiver_msg: &[u8]) -> Result<(BaseOtSenderOutput, Vec<u8>)> {
    base::send(&mut rng(BASE_SENDER_SEED), &BASE_SID, receiver_msg)
}

/// The base-OT fixture (built on first use).
pub fn base_fixture() -> &'static BaseFixture {
    static FIXTURE: OnceLock<BaseFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let (receiver, receiver_msg) = base_receiver();
        let (sender_out, sender_msg) =
            base_send(&receiver_msg).expect("honest base-OT receiver message rejected");
        let receiver_out = receiver
            .finish(&sender_msg)
            .expect("honest base-OT sender message rejected");
        for t in 0..BASE_OTS {
            let c = bit(&receiver_out.choices, t);
            assert_eq!(receiver_out.keys[t], sender_out.keys[t][c]);
            assert_ne!(receiver_out.keys[t], sender_out.keys[t][1 - c]);
        }
        BaseFixture {
            receiver_msg,
            sender_msg,
            sender_out,
            receiver_out,
        }
    })
}

// ---- OT setup (base OT + GGM trees) and the key pair ----

/// `sid_bot` of the setup fixture.
pub const SETUP_SID: [u8; 32] = [0x5e; 32];
const SETUP_SENDER_SEED: u64 = 0x5e7_0001;
const SETUP_RECEIVER_SEED: u64 = 0x5e7_0002;

/// An honest setup of one direction: its messages and the key pair.
pub struct SetupFixture {
    /// S's `BotRecvMsg`.
    pub recv_msg: Vec<u8>,
    /// R's `BotSendMsg`.
    pub send_msg: Vec<u8>,
    /// R's `PprfMsg`.
    pub pprf_msg: Vec<u8>,
    /// S's key.
    pub sender_key: OtSenderKey,
    /// R's key.
    pub receiver_key: OtReceiverKey,
}

/// The honest setup sender S of the fixture, freshly started.
#[must_use]
pub fn sender_setup() -> (SenderSetup, Vec<u8>) {
    SenderSetup::start(&mut rng(SETUP_SENDER_SEED), &SETUP_SID)
}

/// The setup fixture (built on first use): also the key pair of the
/// `ot_extension` and `rvole` targets.
pub fn setup_fixture() -> &'static SetupFixture {
    static FIXTURE: OnceLock<SetupFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let (setup, recv_msg) = sender_setup();
        let (receiver_key, send_msg, pprf_msg) =
            receiver_setup(&mut rng(SETUP_RECEIVER_SEED), &SETUP_SID, &recv_msg)
                .expect("honest BotRecvMsg rejected");
        let sender_key = setup
            .finish(&send_msg, &pprf_msg)
            .expect("honest setup messages rejected");
        assert_eq!(sender_key.context(), receiver_key.context());
        assert_eq!(sender_key.gadget(), receiver_key.gadget());
        // Delta != 0, so every part of the extension check is live.
        assert!(sender_key.seeds().punctured.iter().any(|p| *p != 0));
        SetupFixture {
            recv_msg,
            send_msg,
            pprf_msg,
            sender_key,
            receiver_key,
        }
    })
}

/// Bytes of the correction words at the start of each tree's part of the
/// PPRF message; the rest of the tree's part is the proof sum and digest.
pub const CORRECTION_BYTES: usize = 2 * (SOFTSPOKEN_K - 1) * LAMBDA_C_BYTES;

/// Where byte `offset` of a PPRF message lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PprfByte {
    /// In the correction word of `branch` at `level` (1..k) of `tree`.
    CorrectionWord {
        /// GGM tree.
        tree: usize,
        /// Tree level, 1..SOFTSPOKEN_K.
        level: usize,
        /// 0 or 1.
        branch: usize,
    },
    /// In the proof sum or the proof digest of `tree`.
    Proof {
        /// GGM tree.
        tree: usize,
    },
}

/// Classifies byte `offset` of a PPRF message.
#[must_use]
pub fn pprf_byte(offset: usize) -> PprfByte {
    let tree = offset / TREE_MSG_BYTES;
    let within = offset % TREE_MSG_BYTES;
    if within < CORRECTION_BYTES {
        PprfByte::CorrectionWord {
            tree,
            level: within / (2 * LAMBDA_C_BYTES) + 1,
            branch: (within % (2 * LAMBDA_C_BYTES)) / LAMBDA_C_BYTES,
        }
    } else {
        PprfByte::Proof { tree }
    }
}

/// The branch whose correction word the evaluator uses at `level` of a tree
/// punctured at `punctured`: its base-OT choice bit `c`, where bit
/// `k-1-level` of the punctured leaf is `1 - c` (PROTOCOL.md §5.2).
#[must_use]
pub fn used_branch(punctured: u8, level: usize) -> usize {
    1 - usize::from((punctured >> (SOFTSPOKEN_K - 1 - level)) & 1)
}

// ---- OT extension ----

/// `sid_ext` of the extension fixture.
pub const EXT_SID: [u8; 32] = [0xe7; 32];
const EXT_RECEIVER_SEED: u64 = 0xe7_0001;

/// An honest extension batch under the setup fixture's keys.
pub struct ExtFixture {
    /// R's choice bits.
    pub choices: [u8; CHOICE_BYTES],
    /// R's message (`OTE_MSG_BYTES`).
    pub message: Vec<u8>,
    /// R's outputs.
    pub receiver_out: ExtReceiverOutput,
}

/// The extension fixture (built on first use).
pub fn ext_fixture() -> &'static ExtFixture {
    static FIXTURE: OnceLock<ExtFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let keys = setup_fixture();
        let mut rng = rng(EXT_RECEIVER_SEED);
        let mut choices = [0u8; CHOICE_BYTES];
        rng.fill_bytes(&mut choices);
        let (message, receiver_out) =
            extension::receive(&mut rng, keys.receiver_key.seeds(), &EXT_SID, &choices);
        let sender_out = extension::send(keys.sender_key.seeds(), &EXT_SID, &message)
            .expect("honest extension message rejected");
        for j in 0..XI {
            let c = bit(&choices, j);
            assert!(receiver_out.outputs[j] == sender_out.outputs[j][c]);
            assert!(receiver_out.outputs[j] != sender_out.outputs[j][1 - c]);
        }
        ExtFixture {
            choices,
            message,
            receiver_out,
        }
    })
}

// ---- RVOLE ----

/// `sid_sign` of the RVOLE fixture.
pub const SIGN_SID: [u8; 32] = [0x51; 32];
const RVOLE_RECEIVER_SEED: u64 = 0x701e_0001;
const RVOLE_SENDER_SEED: u64 = 0x701e_0002;

/// An honest RVOLE under the setup fixture's keys.
pub struct RvoleFixture {
    /// R's extension message.
    pub ote_msg: Vec<u8>,
    /// S's RVOLE message (`VOLE_MSG_BYTES`).
    pub vole_msg: Vec<u8>,
    /// S's inputs `a`.
    pub inputs: [Scalar; RVOLE_INPUTS],
    /// S's output `c`.
    pub c: [Scalar; RVOLE_INPUTS],
    /// R's `chi`.
    pub chi: Scalar,
}

/// The honest RVOLE receiver R of the fixture, freshly started.
#[must_use]
pub fn rvole_receiver() -> (RvoleReceiver, Vec<u8>) {
    let keys = setup_fixture();
    RvoleReceiver::start(&mut rng(RVOLE_RECEIVER_SEED), &keys.receiver_key, &SIGN_SID)
}

/// The RVOLE fixture (built on first use).
pub fn rvole_fixture() -> &'static RvoleFixture {
    static FIXTURE: OnceLock<RvoleFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let keys = setup_fixture();
        let (receiver, ote_msg) = rvole_receiver();
        let chi = *receiver.chi();
        let inputs = [
            Scalar::from(0x0123_4567_89ab_cdef_u64),
            -Scalar::from(42u64),
        ];
        let (sender_out, vole_msg) = vole::send(
            &mut rng(RVOLE_SENDER_SEED),
            &keys.sender_key,
            &SIGN_SID,
            &ote_msg,
            &inputs,
        )
        .expect("honest RVOLE extension message rejected");
        let out = receiver
            .finish(&keys.receiver_key, &vole_msg)
            .expect("honest RVOLE message rejected");
        assert!(out.chi == chi);
        for ((c, d), a) in sender_out.c.iter().zip(&out.d).zip(&inputs) {
            assert!(*c + d == a * &chi);
        }
        RvoleFixture {
            ote_msg,
            vole_msg,
            inputs,
            c: sender_out.c,
            chi,
        }
    })
}
