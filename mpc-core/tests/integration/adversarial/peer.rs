//! A malicious signing peer built from the public API only: its own share
//! (read from the storage encoding), the public hash formulas, and the
//! `hazmat` OT layers. Every message it sends is well-formed and correctly
//! addressed; the deviations are in what it computes.

use k256::elliptic_curve::bigint::U256;
use k256::elliptic_curve::ops::Reduce;
use k256::elliptic_curve::point::AffineCoordinates;
use k256::elliptic_curve::Field;
use k256::Scalar;
use mpc_core::hazmat::gf128::{check_hash, xor16};
use mpc_core::hazmat::ot::extension::{self, CHOICE_BYTES, OTE_MSG_BYTES};
use mpc_core::hazmat::ot::pprf::AllSeeds;
use mpc_core::hazmat::ot::setup::OtSenderKey;
use mpc_core::hazmat::prg;
use mpc_core::hazmat::vole::{RvoleReceiver, VOLE_MSG_BYTES};
use mpc_core::params::{EXT_ROW_BYTES, RVOLE_WIDTH, SOFTSPOKEN_K, TREES};
use mpc_core::transcript::{hash_to_scalar, tags, Transcript, WideTranscript};
use mpc_core::wire::{
    decode_scalar, encode_point, encode_scalar, Envelope, ProtocolId, Role, SessionId,
    MAX_MESSAGE_BYTES, POINT_BYTES,
};
use mpc_core::{Error, Prehash, Protocol, SignatureOutput, Step};
use rand_chacha::rand_core::RngCore;
use rand_chacha::ChaCha20Rng;

use super::spec::{self, g_mul, Parts};

/// The group order `q`, big-endian.
pub const Q: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
    0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41,
];

/// `value + q` as 32 big-endian bytes: a non-canonical encoding of a small
/// `value` (the sum stays below 2^256).
pub fn plus_q(value: u64) -> [u8; 32] {
    let mut out = Q;
    let mut carry = u128::from(value);
    for byte in out.iter_mut().rev() {
        let sum = u128::from(*byte) + (carry & 0xff);
        *byte = u8::try_from(sum & 0xff).unwrap();
        carry = (carry >> 8) + (sum >> 8);
    }
    assert_eq!(carry, 0);
    out
}

pub fn payload(message: &[u8]) -> Vec<u8> {
    Envelope::decode(message, MAX_MESSAGE_BYTES)
        .unwrap()
        .payload
}

pub fn seal(
    protocol: ProtocolId,
    session: [u8; 32],
    round: u8,
    sender: Role,
    body: Vec<u8>,
) -> Vec<u8> {
    Envelope::new(protocol, SessionId(session), round, sender, body).encode()
}

pub fn expect_send<T: std::fmt::Debug>(step: Result<Step<T>, Error>) -> Vec<u8> {
    match step {
        Ok(Step::Send(bytes)) => bytes,
        other => panic!("expected a message, got {other:?}"),
    }
}

fn scalar_at(bytes: &[u8], at: usize) -> Scalar {
    decode_scalar(&bytes[at..at + 32]).unwrap()
}

// ---- SoftSpokenOT receiver (§6.2), with one deviation ----

fn expand(seed: &[u8; 16], iv: &[u8; 16]) -> [u8; EXT_ROW_BYTES] {
    let mut out = [0u8; EXT_ROW_BYTES];
    prg::fill(seed, iv, &mut out);
    out
}

fn xor_into(acc: &mut [u8], other: &[u8]) {
    for (a, b) in acc.iter_mut().zip(other) {
        *a ^= b;
    }
}

fn row_check(chal: &[u8; 16], row: &[u8; EXT_ROW_BYTES]) -> [u8; 16] {
    let blocks: [[u8; 16]; 5] =
        core::array::from_fn(|u| row[16 * u..16 * u + 16].try_into().unwrap());
    check_hash(chal, &blocks)
}

fn batch_iv(sid_ext: &[u8; 32]) -> [u8; 16] {
    WideTranscript::<1>::new(tags::OT_EXT_IV)
        .chain(sid_ext)
        .finalize_array()
}

/// A KOS-style cheat: tree `tree` is built from `xhat` with its first choice
/// bit flipped, and the check values of that tree's rows are patched as if
/// the sender's `Delta` bits there were `guess` (PROTOCOL.md §6.4).
#[derive(Clone, Copy, Debug)]
pub struct InconsistentTree {
    pub tree: usize,
    pub guess: u8,
}

/// The extension receiver's message of §6.2 for `choices` and masking bits
/// `pad`, computed from the receiver's seeds.
pub fn extension_message(
    seeds: &AllSeeds,
    sid_ext: &[u8; 32],
    choices: &[u8; CHOICE_BYTES],
    pad: &[u8; EXT_ROW_BYTES - CHOICE_BYTES],
    cheat: Option<InconsistentTree>,
) -> Vec<u8> {
    let iv = batch_iv(sid_ext);
    let mut xhat = [0u8; EXT_ROW_BYTES];
    xhat[..CHOICE_BYTES].copy_from_slice(choices);
    xhat[CHOICE_BYTES..].copy_from_slice(pad);
    let mut err = [0u8; EXT_ROW_BYTES];
    err[0] = 1;
    let mut u_all = Vec::with_capacity(OTE_MSG_BYTES);
    let mut v_rows = vec![[0u8; EXT_ROW_BYTES]; TREES * SOFTSPOKEN_K];
    for (tree, leaves) in seeds.seeds.iter().enumerate() {
        let mut u = xhat;
        for (leaf, seed) in leaves.iter().enumerate() {
            let e = expand(seed, &iv);
            xor_into(&mut u, &e);
            for bit in 0..SOFTSPOKEN_K {
                if (leaf >> bit) & 1 == 1 {
                    xor_into(&mut v_rows[tree * SOFTSPOKEN_K + bit], &e);
                }
            }
        }
        if cheat.is_some_and(|c| c.tree == tree) {
            xor_into(&mut u, &err);
        }
        u_all.extend_from_slice(&u);
    }
    let h_u = Transcript::new(tags::OT_EXT_U)
        .chain(sid_ext)
        .chain(&u_all)
        .finalize();
    let chal: [u8; 16] = WideTranscript::<1>::new(tags::OT_EXT_CHI)
        .chain(&h_u)
        .finalize_array();
    let mut message = u_all;
    message.extend_from_slice(&row_check(&chal, &xhat));
    for (r, row) in v_rows.iter().enumerate() {
        let mut t_chk = row_check(&chal, row);
        if let Some(c) = cheat {
            if r / SOFTSPOKEN_K == c.tree && (c.guess >> (r % SOFTSPOKEN_K)) & 1 == 1 {
                t_chk = xor16(&t_chk, &row_check(&chal, &err));
            }
        }
        message.extend_from_slice(&t_chk);
    }
    assert_eq!(message.len(), OTE_MSG_BYTES);
    message
}

/// What an oracle holding the receiver's seeds reads off its extension
/// message: the receiver's secret choice bits `beta` (tree 0's `U` block
/// minus its expanded seeds).
pub fn choices_of(seeds: &AllSeeds, sid_ext: &[u8; 32], message: &[u8]) -> [u8; CHOICE_BYTES] {
    let iv = batch_iv(sid_ext);
    let mut xhat = [0u8; EXT_ROW_BYTES];
    xhat.copy_from_slice(&message[..EXT_ROW_BYTES]);
    for seed in &seeds.seeds[0] {
        xor_into(&mut xhat, &expand(seed, &iv));
    }
    xhat[..CHOICE_BYTES].try_into().unwrap()
}

pub fn bit(bytes: &[u8], j: usize) -> u8 {
    (bytes[j / 8] >> (j % 8)) & 1
}

// ---- RVOLE sender (§7.3), with deviations ----

/// Adds `delta` to `a_tilde[row][col]` before the check coefficients are
/// derived: the message stays self-consistent except for that entry.
#[derive(Clone, Copy, Debug)]
pub struct Probe {
    pub row: usize,
    pub col: usize,
    pub delta: Scalar,
}

/// The RVOLE sender's message for `inputs` and check pad `a_hat`; returns
/// `c` and the message.
pub fn vole_message(
    key: &OtSenderKey,
    sid_sign: &[u8; 32],
    ote_msg: &[u8],
    inputs: &[Scalar; 2],
    a_hat: Scalar,
    probe: Option<Probe>,
) -> Result<([Scalar; 2], Vec<u8>), Error> {
    let sid_ext = spec::ext_sid(&key.context().keyctx, sid_sign);
    let ext = extension::send(key.seeds(), &sid_ext, ote_msg)?;
    let sid_rvole = Transcript::new(tags::VOLE_SID).chain(&sid_ext).finalize();
    let h_ote = extension::message_digest(&sid_ext, ote_msg);
    let mut message = Vec::with_capacity(VOLE_MSG_BYTES);
    for (j, [alpha0, alpha1]) in ext.outputs.iter().enumerate() {
        for t in 0..RVOLE_WIDTH {
            let pad = if t < 2 { inputs[t] } else { a_hat };
            let mut value = alpha0[t] - alpha1[t] + pad;
            if let Some(p) = probe {
                if p.row == j && p.col == t {
                    value += p.delta;
                }
            }
            message.extend_from_slice(&encode_scalar(&value));
        }
    }
    let tau = Transcript::new(tags::VOLE_THETA_SEED)
        .chain(&sid_rvole)
        .chain(&h_ote)
        .chain(&message)
        .finalize();
    let theta: [Scalar; 2] = core::array::from_fn(|i| {
        hash_to_scalar(
            tags::VOLE_THETA,
            &[
                &tau,
                &u32::try_from(i).unwrap().to_be_bytes(),
                &0u32.to_be_bytes(),
            ],
        )
    });
    let eta = a_hat + theta[0] * inputs[0] + theta[1] * inputs[1];
    message.extend_from_slice(&encode_scalar(&eta));
    let mut mu = Vec::new();
    for [alpha0, _] in &ext.outputs {
        let value = alpha0[2] + theta[0] * alpha0[0] + theta[1] * alpha0[1];
        mu.extend_from_slice(&encode_scalar(&value));
    }
    let digest: [u8; 32] = WideTranscript::<1>::new(tags::VOLE_MU)
        .chain(&sid_rvole)
        .chain(&mu)
        .finalize_array();
    message.extend_from_slice(&digest);
    let mut c = [Scalar::ZERO; 2];
    for ([alpha0, _], g) in ext.outputs.iter().zip(key.gadget().entries()) {
        c[0] -= g * &alpha0[0];
        c[1] -= g * &alpha0[1];
    }
    assert_eq!(message.len(), VOLE_MSG_BYTES);
    Ok((c, message))
}

// ---- the whole signing peer (§14.1) ----

/// What the malicious signer does differently from the protocol.
#[derive(Clone, Copy, Debug, Default)]
pub struct Deviations {
    /// Added to its RVOLE inputs `(r_i, x_i)` (input substitution).
    pub input_shift: [Scalar; 2],
    /// A change to one entry of its RVOLE message (selective-failure probe).
    pub probe: Option<Probe>,
    /// Picks `phi_i` so that `psi_i = phi_i - chi_i` is this small value.
    pub psi_value: Option<u64>,
    /// Sends `psi_i` as `psi_i + q` (needs `psi_value`).
    pub psi_non_canonical: bool,
    /// Added to `psi_i`.
    pub psi_shift: Scalar,
    /// Added to `w_i`.
    pub w_shift: Scalar,
    /// Waits for the peer's round-4 message and sends `u_i = -u_j`.
    pub rush_zero_u: bool,
    /// Waits for the peer's round-4 message and sends `w_i = -w_j`.
    pub rush_zero_w: bool,
}

struct Nonce {
    r: Scalar,
    big_r: [u8; 33],
    salt: [u8; 32],
    sign_nonce: [u8; 32],
}

pub struct EvilSigner {
    parts: Parts,
    prehash: Prehash,
    setup: [u8; 32],
    dev: Deviations,
    rng: ChaCha20Rng,
    nonce: Nonce,
    sid: [u8; 32],
    phi: Scalar,
    receiver: Option<RvoleReceiver>,
    peer_ote: Vec<u8>,
    c: [Scalar; 2],
    presig: Option<(Scalar, Scalar)>,
}

impl EvilSigner {
    pub fn new(parts: Parts, prehash: Prehash, dev: Deviations, mut rng: ChaCha20Rng) -> Self {
        let setup = spec::sign_setup(&parts, ProtocolId::Sign);
        let r = Scalar::random(&mut rng);
        let mut salt = [0u8; 32];
        rng.fill_bytes(&mut salt);
        let mut sign_nonce = [0u8; 32];
        rng.fill_bytes(&mut sign_nonce);
        let phi = Scalar::random(&mut rng);
        Self {
            nonce: Nonce {
                r,
                big_r: encode_point(&g_mul(&r)),
                salt,
                sign_nonce,
            },
            parts,
            prehash,
            setup,
            dev,
            rng,
            sid: [0; 32],
            phi,
            receiver: None,
            peer_ote: Vec::new(),
            c: [Scalar::ZERO; 2],
            presig: None,
        }
    }

    fn role(&self) -> Role {
        self.parts.role
    }

    fn seal(&self, round: u8, body: Vec<u8>) -> Vec<u8> {
        let session = if round == 1 { self.setup } else { self.sid };
        seal(ProtocolId::Sign, session, round, self.role(), body)
    }

    /// Round 1: the nonce and the commitment to `R_i`.
    pub fn round1(&mut self) -> Vec<u8> {
        let commit = spec::sign_commit(
            &self.setup,
            self.role(),
            &self.nonce.big_r,
            &self.nonce.salt,
        );
        self.seal(1, [self.nonce.sign_nonce.as_slice(), &commit].concat())
    }

    /// The joint session id from the peer's round-1 message.
    pub fn learn_sid(&mut self, peer_round1: &[u8]) -> [u8; 32] {
        let peer = payload(peer_round1);
        let (a, b) = spec::ordered(self.role(), &self.nonce.sign_nonce, &peer[..32]);
        self.sid = spec::sign_sid(&self.setup, a, b);
        self.sid
    }

    /// Round 2: the extension message, as RVOLE receiver of the peer's
    /// direction.
    pub fn on_round1(&mut self, peer_round1: &[u8]) -> Vec<u8> {
        let sid = self.learn_sid(peer_round1);
        let (receiver, ote_msg) = RvoleReceiver::start(&mut self.rng, &self.parts.receiver, &sid);
        if let Some(value) = self.dev.psi_value {
            self.phi = *receiver.chi() + Scalar::from(value);
        }
        self.receiver = Some(receiver);
        self.seal(2, ote_msg)
    }

    /// Round 3: the RVOLE message with inputs `(r_i, x_i)` (plus any
    /// shift), the opening of `R_i`, `Gamma_u`, `Gamma_v` and `psi_i`.
    pub fn on_round2(&mut self, peer_round2: &[u8]) -> Vec<u8> {
        let ote_msg = payload(peer_round2);
        let inputs = [
            self.nonce.r + self.dev.input_shift[0],
            self.parts.secret + self.dev.input_shift[1],
        ];
        let a_hat = Scalar::random(&mut self.rng);
        let (c, vole_msg) = vole_message(
            &self.parts.sender,
            &self.sid,
            &ote_msg,
            &inputs,
            a_hat,
            self.dev.probe,
        )
        .unwrap();
        self.c = c;
        self.peer_ote = ote_msg;
        let chi = *self.receiver.as_ref().unwrap().chi();
        let psi = self.phi - chi + self.dev.psi_shift;
        let psi_bytes = if self.dev.psi_non_canonical {
            let value = self.dev.psi_value.expect("a small psi to re-encode");
            assert_eq!(psi, Scalar::from(value));
            plus_q(value)
        } else {
            encode_scalar(&psi)
        };
        let mut body = vole_msg;
        body.extend_from_slice(&self.nonce.big_r);
        body.extend_from_slice(&self.nonce.salt);
        body.extend_from_slice(&encode_point(&g_mul(&c[0])));
        body.extend_from_slice(&encode_point(&g_mul(&c[1])));
        body.extend_from_slice(&psi_bytes);
        self.seal(3, body)
    }

    /// Finishes its presignature from the peer's round 3 (`u_i`, `v_i`).
    pub fn on_round3(&mut self, peer_round3: &[u8]) {
        let body = payload(peer_round3);
        let d = self
            .receiver
            .take()
            .unwrap()
            .finish(&self.parts.receiver, &body[..VOLE_MSG_BYTES])
            .unwrap();
        let at = VOLE_MSG_BYTES;
        let peer_r = spec::point(&body[at..at + POINT_BYTES]);
        let peer_psi = scalar_at(&body, at + POINT_BYTES + 32 + 2 * POINT_BYTES);
        // Round 4 rerandomizes: k' = k + delta, R' = R + delta*G, and each
        // party adds delta*phi_i to u_i (§14.3).
        let delta = spec::nonce_offset(&self.parts, self.prehash.as_bytes(), &self.sid);
        let big_r = g_mul(&self.nonce.r) + peer_r + g_mul(&delta);
        let r = <Scalar as Reduce<U256>>::reduce_bytes(&big_r.to_affine().x());
        let mask = self.phi + peer_psi;
        let u = self.nonce.r * mask + self.c[0] + d.d[0] + delta * self.phi;
        let v = self.parts.secret * mask + self.c[1] + d.d[1];
        let w = self.prehash_scalar() * self.phi + r * v;
        self.presig = Some((u, w));
    }

    fn prehash_scalar(&self) -> Scalar {
        <Scalar as Reduce<U256>>::reduce_bytes(&(*self.prehash.as_bytes()).into())
    }

    /// Round 4: `u_i`, `w_i` and the prehash; a rushing signer first reads
    /// the peer's round-4 message.
    pub fn round4(&mut self, peer_round4: Option<&[u8]>) -> Vec<u8> {
        let (mut u, mut w) = self.presig.unwrap();
        w += self.dev.w_shift;
        if let Some(peer) = peer_round4 {
            let peer = payload(peer);
            if self.dev.rush_zero_u {
                u = -scalar_at(&peer, 0);
            }
            if self.dev.rush_zero_w {
                w = -scalar_at(&peer, 32);
            }
        }
        let body = [
            encode_scalar(&u).as_slice(),
            &encode_scalar(&w),
            self.prehash.as_bytes(),
        ]
        .concat();
        self.seal(4, body)
    }

    /// The joint session id (after the peer's round 1).
    pub fn sid(&self) -> [u8; 32] {
        self.sid
    }

    /// The peer's extension message (after its round 2).
    pub fn peer_ote_msg(&self) -> &[u8] {
        &self.peer_ote
    }

    pub fn rushes(&self) -> bool {
        self.dev.rush_zero_u || self.dev.rush_zero_w
    }
}

/// Runs an honest signer `honest` (with its own RNG) against `evil` until
/// the honest one finishes or fails.
pub fn run_against<P>(
    honest: &mut P,
    rng: &mut ChaCha20Rng,
    evil: &mut EvilSigner,
) -> Result<SignatureOutput, Error>
where
    P: Protocol<Output = SignatureOutput>,
{
    let a1 = honest.start(rng)?;
    let b1 = evil.round1();
    let a2 = step(honest.handle(rng, &b1))?;
    let b2 = evil.on_round1(&a1);
    let a3 = step(honest.handle(rng, &b2))?;
    let b3 = evil.on_round2(&a2);
    let a4 = step(honest.handle(rng, &b3))?;
    evil.on_round3(&a3);
    let b4 = if evil.rushes() {
        evil.round4(Some(&a4))
    } else {
        evil.round4(None)
    };
    match honest.handle(rng, &b4)? {
        Step::Finished(out) => Ok(out),
        Step::Send(_) => panic!("the honest signer sent a fifth message"),
    }
}

fn step<T>(result: Result<Step<T>, Error>) -> Result<Vec<u8>, Error> {
    match result? {
        Step::Send(bytes) => Ok(bytes),
        Step::Finished(_) => panic!("finished early"),
    }
}
