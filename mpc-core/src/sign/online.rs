//! Round 4, the online step (PROTOCOL.md §14.1, §14.3): the nonce offset
//! that rerandomizes a presignature with the message, the round-4 message,
//! and the assembly and verification of the signature.

use alloc::vec::Vec;

use k256::ecdsa::{RecoveryId, Signature};
use k256::elliptic_curve::bigint::U256;
use k256::elliptic_curve::group::Group;
#[cfg(not(feature = "std"))]
use k256::elliptic_curve::ops::MulByGenerator;
use k256::elliptic_curve::ops::{Invert, Reduce};
use k256::elliptic_curve::point::AffineCoordinates;
use k256::elliptic_curve::PrimeField;
use k256::{AffinePoint, ProjectivePoint, Scalar};
use rand_core::CryptoRngCore;
use zeroize::Zeroize;

use super::guard::PresignatureGuard;
use super::{Prehash, Presignature, SignatureOutput, ROUND_BYTES};
use crate::error::{Error, Result};
#[cfg(feature = "std")]
use crate::hazmat::ot::comb::CombTable;
use crate::keyshare::KeyShare;
use crate::protocol::{impl_protocol, Driver, Expect, Machine, Transition};
use crate::transcript::{tags, WideTranscript};
use crate::wire::{encode_scalar, ProtocolId, Reader, Role, SessionId};

/// `delta = H2S(mpc/sign/rerandomize/v1; enc33(PK'), enc32(t), prehash, sid)`
/// (PROTOCOL.md §14.3). Public, and computed by both parties from what they
/// already agree on, so it costs no message.
pub(crate) fn nonce_offset(presignature: &Presignature, prehash: &Prehash) -> Scalar {
    let mut hash = WideTranscript::<2>::new(tags::SIGN_RERANDOMIZE);
    hash.append(&presignature.verifying_key_bytes);
    hash.append(&encode_scalar(&presignature.tweak));
    hash.append(prehash.as_bytes());
    hash.append(&presignature.sid);
    hash.finalize_scalar()
}

/// `scalar*G` for the online step (the offset and the verification). With
/// `std`: the comb table of `G` (the base OT's [`CombTable`], 65x9 affine
/// points, about 50 KB) built once per process and shared by every online
/// step; it costs about two thirds of k256's `mul_by_generator`, whose
/// table lookups copy the whole table. Without `std` (no lazy statics):
/// `mul_by_generator`.
fn generator_mul(scalar: &Scalar) -> ProjectivePoint {
    #[cfg(feature = "std")]
    {
        static TABLE: std::sync::OnceLock<CombTable> = std::sync::OnceLock::new();
        TABLE
            .get_or_init(|| CombTable::new(&ProjectivePoint::GENERATOR))
            .mul(scalar)
    }
    #[cfg(not(feature = "std"))]
    {
        ProjectivePoint::mul_by_generator(scalar)
    }
}

/// `a*G + b*P`. With `std`, the `G` term goes through the comb table and
/// `P` through k256's single-point multiplication, cheaper than k256's
/// two-point `lincomb`, which is what `no_std` builds use (public inputs
/// either way).
fn verification_point(a: &Scalar, point: &ProjectivePoint, b: &Scalar) -> ProjectivePoint {
    #[cfg(feature = "std")]
    {
        generator_mul(a) + *point * b
    }
    #[cfg(not(feature = "std"))]
    {
        use k256::elliptic_curve::ops::LinearCombination;
        ProjectivePoint::lincomb(&ProjectivePoint::GENERATOR, a, point, b)
    }
}

/// Waiting for the peer's round-4 message.
pub(super) struct AwaitRound4 {
    presignature: Presignature,
    prehash: Prehash,
    /// `R' = R + delta*G`, the signature's nonce point.
    big_r: AffinePoint,
    /// `r' = x(R') mod q`.
    r: Scalar,
    /// `u_i' = u_i + delta*phi_i`, sent in the clear.
    u: Scalar,
    /// `w_i = z*phi_i + r'*v_i`.
    w: Scalar,
}

impl Drop for AwaitRound4 {
    fn drop(&mut self) {
        self.w.zeroize();
    }
}

impl AwaitRound4 {
    pub(super) fn role(&self) -> Role {
        self.presignature.role
    }

    pub(super) fn sid(&self) -> [u8; 32] {
        self.presignature.sid
    }
}

/// Shifts the shared nonce `k` by `delta` and computes the round-4 message
/// `enc32(u_i') || enc32(w_i) || prehash` (PROTOCOL.md §14.1).
///
/// `k' = k + delta`, so `u_A' + u_B' = k'*phi` when each party adds
/// `delta*phi_i` to its `u_i`; `w_i` uses `r' = x(R')`.
///
/// # Errors
///
/// [`Error::DegenerateSignature`] if `R'` is the identity or `r'` is zero
/// (probability about `2^-256` for a random-oracle `delta`).
pub(super) fn online_message(
    presignature: Presignature,
    prehash: Prehash,
) -> Result<(AwaitRound4, Vec<u8>)> {
    let delta = nonce_offset(&presignature, &prehash);
    let shifted = presignature.big_r + generator_mul(&delta);
    if bool::from(shifted.is_identity()) {
        return Err(Error::DegenerateSignature);
    }
    let big_r = shifted.to_affine();
    let r = <Scalar as Reduce<U256>>::reduce_bytes(&big_r.x());
    if bool::from(r.is_zero()) {
        return Err(Error::DegenerateSignature);
    }
    let u = presignature.u + delta * presignature.phi;
    let w = prehash.scalar() * presignature.phi + r * presignature.v;
    let mut out = Vec::with_capacity(ROUND_BYTES[3]);
    out.extend_from_slice(&encode_scalar(&u));
    out.extend_from_slice(&encode_scalar(&w));
    out.extend_from_slice(prehash.as_bytes());
    Ok((
        AwaitRound4 {
            presignature,
            prehash,
            big_r,
            r,
            u,
            w,
        },
        out,
    ))
}

/// Assembles, normalises and verifies the signature (PROTOCOL.md §14.4).
///
/// The verification is the ECDSA equation solved for the nonce point we
/// already hold: `(z/s)*G + (r'/s)*PK' == R'`. It implies the standard
/// verifier's `x(...) mod q == r'`, and needs one scalar inversion (shared by
/// `1/u` and `1/s`) and no affine conversion. Together with the comb table
/// for the `G` term this pays for the offset's `delta*G` (PROTOCOL.md
/// §14.1: the online step costs less than before the rerandomization).
pub(super) fn finish(state: &AwaitRound4, payload: &[u8]) -> Result<SignatureOutput> {
    let mut reader = Reader::exact(payload, ROUND_BYTES[3])?;
    let peer_u = reader.scalar()?;
    let peer_w = reader.scalar()?;
    let peer_prehash: [u8; 32] = reader.array()?;
    if peer_prehash != *state.prehash.as_bytes() {
        return Err(Error::PrehashMismatch);
    }
    let u = state.u + peer_u;
    if bool::from(u.is_zero()) {
        return Err(Error::DegenerateSignature);
    }
    let w = state.w + peer_w;
    // s = 0 is no signature: only a wrong w_j gives it (ban, as for any
    // signature that does not verify).
    if bool::from(w.is_zero()) {
        return Err(Error::SignatureVerificationFailed);
    }
    // u and w are public (both parties see both shares of each), so the
    // variable-time inversion is fine.
    let inverse = Option::<Scalar>::from(Invert::invert_vartime(&(u * w)))
        .ok_or(Error::DegenerateSignature)?;
    // s = w/u = w*w/(u*w); 1/s = u/w = u*u/(u*w).
    let s = w * w * inverse;
    let s_inv = u * u * inverse;
    let presig = &state.presignature;
    let expected = verification_point(
        &(state.prehash.scalar() * s_inv),
        &presig.verifying_key,
        &(state.r * s_inv),
    );
    if expected != ProjectivePoint::from(state.big_r) {
        return Err(Error::SignatureVerificationFailed);
    }
    let signature =
        Signature::from_scalars(state.r, s).map_err(|_| Error::SignatureVerificationFailed)?;
    let x_reduced = Option::<Scalar>::from(Scalar::from_repr(state.big_r.x())).is_none();
    let mut y_odd = bool::from(state.big_r.y_is_odd());
    let signature = match signature.normalize_s() {
        Some(low) => {
            y_odd = !y_odd;
            low
        }
        None => signature,
    };
    Ok(SignatureOutput {
        signature,
        recovery_id: RecoveryId::new(y_odd, x_reduced),
    })
}

/// The online step: one short message each way, consuming a presignature.
///
/// Its only constructor checks the presignature against the key share and
/// claims it with a [`PresignatureGuard`] first (PROTOCOL.md §14.3).
pub struct OnlineSign {
    driver: Driver<OnlineState>,
}

impl OnlineSign {
    /// Signs `prehash` with `presignature`, which is consumed whatever the
    /// result. In order: `share` must not be burned (§18.2) and must be of
    /// the presignature's key, epoch and role; then `guard` must claim the
    /// presignature's session id. Only after all three can the round-4
    /// message be produced.
    ///
    /// # Errors
    ///
    /// [`Error::OtMaterialBurned`] if `share` is burned;
    /// [`Error::KeyMismatch`] if the presignature is of another key, epoch
    /// or role than `share` (the guard is not asked);
    /// [`Error::PresignatureClaimRefused`] if the guard refuses the claim.
    pub fn new<G: PresignatureGuard + ?Sized>(
        share: &KeyShare,
        presignature: Presignature,
        prehash: Prehash,
        guard: &mut G,
    ) -> Result<Self> {
        if share.is_ot_burned() {
            return Err(Error::OtMaterialBurned);
        }
        if presignature.key_id != *share.key_id()
            || presignature.epoch != share.epoch()
            || presignature.role != share.role()
        {
            return Err(Error::KeyMismatch);
        }
        guard
            .claim(
                &presignature.key_id,
                presignature.epoch,
                &SessionId(presignature.sid),
            )
            .map_err(|_| Error::PresignatureClaimRefused)?;
        Ok(Self {
            driver: Driver::new(OnlineState::Init(presignature, prehash)),
        })
    }
}

enum OnlineState {
    Init(Presignature, Prehash),
    Waiting(AwaitRound4),
}

impl Machine for OnlineState {
    type Output = SignatureOutput;
    const PROTOCOL: ProtocolId = ProtocolId::Sign;

    fn role(&self) -> Role {
        match self {
            Self::Init(p, _) => p.role,
            Self::Waiting(s) => s.role(),
        }
    }

    fn begin<R: CryptoRngCore>(self, _rng: &mut R) -> Result<(Self, SessionId, u8, Vec<u8>)> {
        let Self::Init(presignature, prehash) = self else {
            return Err(Error::AlreadyStarted);
        };
        let session = SessionId(presignature.sid);
        let (state, out) = online_message(presignature, prehash)?;
        Ok((Self::Waiting(state), session, 4, out))
    }

    fn expect(&self) -> Expect {
        let sid = match self {
            Self::Init(p, _) => p.sid,
            Self::Waiting(s) => s.sid(),
        };
        Expect {
            session: SessionId(sid),
            round: 4,
            max_payload: ROUND_BYTES[3],
        }
    }

    fn advance<R: CryptoRngCore>(
        self,
        _rng: &mut R,
        payload: &[u8],
    ) -> Result<Transition<Self, SignatureOutput>> {
        match self {
            Self::Init(..) => Err(Error::NotStarted),
            Self::Waiting(state) => Ok(Transition::Done(finish(&state, payload)?)),
        }
    }
}

impl_protocol!(OnlineSign => SignatureOutput);
