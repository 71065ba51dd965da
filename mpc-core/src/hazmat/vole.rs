//! Random vector OLE, DKLs23 Protocol 5.2, over one SoftSpokenOT batch
//! (PROTOCOL.md §7).
//!
//! The receiver R obtains a uniform `chi = <g, beta>` before the sender S
//! fixes its inputs `a = (a_0, a_1)`; afterwards `c_i + d_i = a_i * chi` with
//! `c` at S and `d` at R. S proves consistency of its masked inputs with one
//! check column (`rho = 1`) hashed into `mu`; R recomputes it and bans S on
//! mismatch.
//!
//! Indices follow the corrected protocol (Trail of Bits 2024, appendix F):
//! the check-column pad uses `a_hat[k]` and `mu` uses `theta[i][k]`.

use alloc::vec::Vec;

use k256::Scalar;
use rand_core::CryptoRngCore;
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::ct::{declassify, random_scalar};
use crate::error::{Error, Result};
use crate::hazmat::ot::extension::{self, RotOutput, CHOICE_BYTES};
use crate::hazmat::ot::setup::{OtReceiverKey, OtSenderKey};
use crate::params::{RVOLE_CHECKS, RVOLE_INPUTS, RVOLE_WIDTH, XI};
use crate::transcript::{hash_to_scalar, tags, Transcript, WideTranscript};
use crate::wire::{decode_scalar, encode_scalar, SCALAR_BYTES};

/// Bytes of the sender's RVOLE message: `a_tilde`, `eta`, `mu`.
pub const VOLE_MSG_BYTES: usize =
    XI * RVOLE_WIDTH * SCALAR_BYTES + RVOLE_CHECKS * SCALAR_BYTES + MU_BYTES;
const MU_BYTES: usize = 32;

/// The public gadget vector `g_j = H2S(mpc/vole/gadget/v1; keyctx, u32(j))`
/// of one direction.
///
/// It carries the context it was derived from: a gadget can only be made by
/// [`Gadget::derive`], so one whose [`keyctx`](Self::keyctx) matches a
/// direction's is that direction's gadget, and may be reused instead of
/// derived again ([`KeyShare::from_bytes_reusing`]).
///
/// [`KeyShare::from_bytes_reusing`]: crate::KeyShare::from_bytes_reusing
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Gadget {
    keyctx: [u8; 32],
    entries: Vec<Scalar>,
}

impl Gadget {
    /// Derives the gadget vector from a direction's key context.
    #[must_use]
    pub fn derive(keyctx: &[u8; 32]) -> Self {
        // Every entry hashes the same tag and `keyctx` first: that prefix is
        // absorbed once and its state copied, which halves the compression
        // calls (a server derives both directions' gadgets per share load).
        let prefix = WideTranscript::<2>::new(tags::VOLE_GADGET).chain(keyctx);
        Self {
            keyctx: *keyctx,
            entries: (0..XI)
                .map(|j| {
                    // j < XI.
                    #[allow(clippy::cast_possible_truncation)]
                    let index = (j as u32).to_be_bytes();
                    prefix.clone().chain(&index).finalize_scalar()
                })
                .collect(),
        }
    }

    /// The key context this gadget was derived from.
    #[must_use]
    pub fn keyctx(&self) -> &[u8; 32] {
        &self.keyctx
    }

    /// The entries `g_0..g_{XI-1}`.
    #[must_use]
    pub fn entries(&self) -> &[Scalar] {
        &self.entries
    }

    /// The gadget of `keyctx`: a copy of the one in `known` derived from it,
    /// else derived.
    #[must_use]
    pub fn reuse_or_derive(keyctx: &[u8; 32], known: &[Gadget]) -> Self {
        known
            .iter()
            .find(|gadget| gadget.keyctx == *keyctx)
            .cloned()
            .unwrap_or_else(|| Self::derive(keyctx))
    }
}

/// `sid_ext = H(mpc/ot/ext/sid/v1; keyctx, sid_sign)`.
fn extension_sid(keyctx: &[u8; 32], sid_sign: &[u8; 32]) -> [u8; 32] {
    Transcript::new(tags::OT_EXT_SID)
        .chain(keyctx)
        .chain(sid_sign)
        .finalize()
}

/// Per-batch public values both parties derive.
struct BatchContext {
    sid_rvole: [u8; 32],
    h_ote: [u8; 32],
}

impl BatchContext {
    fn new(sid_ext: &[u8; 32], ote_msg: &[u8]) -> Self {
        Self {
            sid_rvole: Transcript::new(tags::VOLE_SID).chain(sid_ext).finalize(),
            h_ote: extension::message_digest(sid_ext, ote_msg),
        }
    }

    /// `theta[i][k]` from the hash of the masked inputs.
    fn theta(&self, a_tilde_bytes: &[u8]) -> [[Scalar; RVOLE_CHECKS]; RVOLE_INPUTS] {
        let tau = Transcript::new(tags::VOLE_THETA_SEED)
            .chain(&self.sid_rvole)
            .chain(&self.h_ote)
            .chain(a_tilde_bytes)
            .finalize();
        core::array::from_fn(|i| {
            core::array::from_fn(|k| {
                #[allow(clippy::cast_possible_truncation)]
                let (i, k) = ((i as u32).to_be_bytes(), (k as u32).to_be_bytes());
                hash_to_scalar(tags::VOLE_THETA, &[&tau, &i, &k])
            })
        })
    }

    /// The `mu` digest of `mu[j][k]` values.
    fn mu_digest(&self, mu: &[[Scalar; RVOLE_CHECKS]]) -> [u8; MU_BYTES] {
        let mut bytes = Vec::with_capacity(mu.len() * RVOLE_CHECKS * SCALAR_BYTES);
        for row in mu {
            for value in row {
                bytes.extend_from_slice(&encode_scalar(value));
            }
        }
        let digest = WideTranscript::<1>::new(tags::VOLE_MU)
            .chain(&self.sid_rvole)
            .chain(&bytes)
            .finalize_array();
        bytes.zeroize();
        digest
    }
}

/// `mu[j][k] = v[ell+k] + sum_i theta[i][k] * v[i]` for one row `v`.
fn check_combination(
    row: &RotOutput,
    theta: &[[Scalar; RVOLE_CHECKS]; RVOLE_INPUTS],
) -> [Scalar; RVOLE_CHECKS] {
    core::array::from_fn(|k| {
        (0..RVOLE_INPUTS).fold(row[RVOLE_INPUTS + k], |acc, i| acc + theta[i][k] * row[i])
    })
}

/// The receiver between its extension message and the sender's answer.
#[derive(ZeroizeOnDrop)]
pub struct RvoleReceiver {
    #[zeroize(skip)]
    ctx: BatchContext,
    choices: [u8; CHOICE_BYTES],
    gamma: Vec<RotOutput>,
    chi: Scalar,
}

/// The receiver's result: `chi` and `d` with `c_i + d_i = a_i * chi`.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct RvoleReceiverOutput {
    /// The receiver's random multiplicand.
    pub chi: Scalar,
    /// The receiver's additive shares.
    pub d: [Scalar; RVOLE_INPUTS],
}

/// The sender's result.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct RvoleSenderOutput {
    /// The sender's additive shares.
    pub c: [Scalar; RVOLE_INPUTS],
}

fn choice_bit(choices: &[u8; CHOICE_BYTES], j: usize) -> Choice {
    Choice::from((choices[j / 8] >> (j % 8)) & 1)
}

impl RvoleReceiver {
    /// Samples the choice bits, fixes `chi = <g, beta>` and returns the
    /// extension message for the session `sid_sign`.
    pub fn start(
        rng: &mut impl CryptoRngCore,
        key: &OtReceiverKey,
        sid_sign: &[u8; 32],
    ) -> (Self, Vec<u8>) {
        let mut choices = [0u8; CHOICE_BYTES];
        rng.fill_bytes(&mut choices);
        let chi = key
            .gadget()
            .entries()
            .iter()
            .enumerate()
            .fold(Scalar::ZERO, |acc, (j, g)| {
                acc + Scalar::conditional_select(&Scalar::ZERO, g, choice_bit(&choices, j))
            });
        let sid_ext = extension_sid(&key.context().keyctx, sid_sign);
        let (message, mut ext_out) = extension::receive(rng, key.seeds(), &sid_ext, &choices);
        let gamma = core::mem::take(&mut ext_out.outputs);
        let ctx = BatchContext::new(&sid_ext, &message);
        (
            Self {
                ctx,
                choices,
                gamma,
                chi,
            },
            message,
        )
    }

    /// The receiver's multiplicand `chi`, fixed before the sender answers.
    #[must_use]
    pub fn chi(&self) -> &Scalar {
        &self.chi
    }

    /// Checks the sender's message and outputs `(chi, d)`.
    ///
    /// # Errors
    ///
    /// [`Error::WrongLength`] or [`Error::NonCanonicalScalar`] (abort) for a
    /// malformed message; [`Error::RvoleCheckFailed`] (ban) if the `mu` check
    /// fails.
    pub fn finish(self, key: &OtReceiverKey, vole_msg: &[u8]) -> Result<RvoleReceiverOutput> {
        if vole_msg.len() != VOLE_MSG_BYTES {
            return Err(Error::WrongLength);
        }
        let a_tilde_len = XI * RVOLE_WIDTH * SCALAR_BYTES;
        let (a_tilde_bytes, rest) = vole_msg.split_at(a_tilde_len);
        let (eta_bytes, mu) = rest.split_at(RVOLE_CHECKS * SCALAR_BYTES);
        let eta: Vec<Scalar> = eta_bytes
            .chunks_exact(SCALAR_BYTES)
            .map(decode_scalar)
            .collect::<Result<_>>()?;
        let ctx = &self.ctx;
        let theta = ctx.theta(a_tilde_bytes);

        let mut d = [Scalar::ZERO; RVOLE_INPUTS];
        let mut mu_prime = Vec::with_capacity(XI);
        for (j, (row_bytes, (gamma, g))) in a_tilde_bytes
            .chunks_exact(RVOLE_WIDTH * SCALAR_BYTES)
            .zip(self.gamma.iter().zip(key.gadget().entries()))
            .enumerate()
        {
            let beta = choice_bit(&self.choices, j);
            let mut d_tilde = [Scalar::ZERO; RVOLE_WIDTH];
            for (t, bytes) in row_bytes.chunks_exact(SCALAR_BYTES).enumerate() {
                let a = decode_scalar(bytes)?;
                d_tilde[t] = gamma[t] + Scalar::conditional_select(&Scalar::ZERO, &a, beta);
            }
            let mut combo = check_combination(&d_tilde, &theta);
            for (value, eta_k) in combo.iter_mut().zip(&eta) {
                *value -= Scalar::conditional_select(&Scalar::ZERO, eta_k, beta);
            }
            mu_prime.push(combo);
            for (d_i, d_tilde_i) in d.iter_mut().zip(&d_tilde) {
                *d_i += g * d_tilde_i;
            }
            d_tilde.zeroize();
        }
        let digest = ctx.mu_digest(&mu_prime);
        mu_prime.zeroize();
        // The check's verdict is public: a failure bans the peer.
        if !declassify(digest.ct_eq(mu)) {
            d.zeroize();
            return Err(Error::RvoleCheckFailed);
        }
        Ok(RvoleReceiverOutput { chi: self.chi, d })
    }

    #[cfg(test)]
    pub(crate) fn choices(&self) -> &[u8; CHOICE_BYTES] {
        &self.choices
    }
}

/// A deviation a test makes the sender commit (PROTOCOL.md §7.4).
#[cfg(any(test, fuzzing))]
#[cfg_attr(fuzzing, allow(dead_code))]
#[derive(Clone, Copy)]
pub(crate) enum SenderDeviation {
    /// Adds `delta` to `a_tilde[row][col]`.
    ATilde {
        row: usize,
        col: usize,
        delta: Scalar,
    },
    /// Adds `delta` to input column 0 of every row and fixes `eta` to match:
    /// an input substitution the RVOLE cannot see.
    ShiftInput { delta: Scalar },
    /// Adds `delta` to `eta[0]`.
    Eta { delta: Scalar },
    /// Flips a bit of the `mu` digest.
    Mu,
}

/// Runs the sender: checks R's extension message, then answers with the
/// RVOLE message for inputs `a` (`VOLE_MSG_BYTES` bytes).
///
/// # Errors
///
/// [`Error::WrongLength`] (abort) for a malformed extension message;
/// [`Error::OtExtensionCheckFailed`] (ban) if its consistency check fails.
pub fn send(
    rng: &mut impl CryptoRngCore,
    key: &OtSenderKey,
    sid_sign: &[u8; 32],
    ote_msg: &[u8],
    inputs: &[Scalar; RVOLE_INPUTS],
) -> Result<(RvoleSenderOutput, Vec<u8>)> {
    send_inner(rng, key, sid_sign, ote_msg, inputs, None)
}

pub(crate) fn send_inner(
    rng: &mut impl CryptoRngCore,
    key: &OtSenderKey,
    sid_sign: &[u8; 32],
    ote_msg: &[u8],
    inputs: &[Scalar; RVOLE_INPUTS],
    #[cfg(any(test, fuzzing))] deviation: Option<SenderDeviation>,
    #[cfg(not(any(test, fuzzing)))] _deviation: Option<core::convert::Infallible>,
) -> Result<(RvoleSenderOutput, Vec<u8>)> {
    let sid_ext = extension_sid(&key.context().keyctx, sid_sign);
    let mut ext_out = extension::send(key.seeds(), &sid_ext, ote_msg)?;
    let ctx = BatchContext::new(&sid_ext, ote_msg);
    let mut a_hat: [Scalar; RVOLE_CHECKS] = core::array::from_fn(|_| random_scalar(rng));

    let mut message = Vec::with_capacity(VOLE_MSG_BYTES);
    #[cfg_attr(not(any(test, fuzzing)), allow(unused_variables))]
    for (j, [alpha0, alpha1]) in ext_out.outputs.iter().enumerate() {
        for t in 0..RVOLE_WIDTH {
            let pad = if t < RVOLE_INPUTS {
                inputs[t]
            } else {
                a_hat[t - RVOLE_INPUTS]
            };
            #[allow(unused_mut)]
            let mut a_tilde = alpha0[t] - alpha1[t] + pad;
            #[cfg(any(test, fuzzing))]
            match deviation {
                Some(SenderDeviation::ATilde { row, col, delta }) if row == j && col == t => {
                    a_tilde += delta
                }
                Some(SenderDeviation::ShiftInput { delta }) if t == 0 => a_tilde += delta,
                _ => {}
            }
            message.extend_from_slice(&encode_scalar(&a_tilde));
        }
    }
    let theta = ctx.theta(&message);
    for k in 0..RVOLE_CHECKS {
        #[allow(unused_mut)]
        let mut eta = (0..RVOLE_INPUTS).fold(a_hat[k], |acc, i| acc + theta[i][k] * inputs[i]);
        #[cfg(any(test, fuzzing))]
        match deviation {
            Some(SenderDeviation::ShiftInput { delta }) => eta += theta[0][k] * delta,
            Some(SenderDeviation::Eta { delta }) if k == 0 => eta += delta,
            _ => {}
        }
        message.extend_from_slice(&encode_scalar(&eta));
    }
    let mut mu: Vec<[Scalar; RVOLE_CHECKS]> = ext_out
        .outputs
        .iter()
        .map(|[alpha0, _]| check_combination(alpha0, &theta))
        .collect();
    #[allow(unused_mut)]
    let mut mu_digest = ctx.mu_digest(&mu);
    #[cfg(any(test, fuzzing))]
    if let Some(SenderDeviation::Mu) = deviation {
        mu_digest[0] ^= 1;
    }
    message.extend_from_slice(&mu_digest);
    mu.zeroize();
    a_hat.zeroize();

    let mut c = [Scalar::ZERO; RVOLE_INPUTS];
    for ([alpha0, _], g) in ext_out.outputs.iter().zip(key.gadget().entries()) {
        for (c_i, alpha) in c.iter_mut().zip(alpha0) {
            *c_i -= g * alpha;
        }
    }
    ext_out.zeroize();
    Ok((RvoleSenderOutput { c }, message))
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::needless_range_loop)]
mod tests;
