//! Two-party DKLs23 signing, presigning and the online step
//! (PROTOCOL.md §14).
//!
//! Rounds (both parties send in each):
//!
//! 1. a fresh signing nonce and a commitment to the nonce share `R_i`;
//! 2. the SoftSpokenOT extension message of the direction where this party is
//!    the RVOLE receiver (its session id needs both nonces of round 1, so it
//!    cannot be sent earlier: PROTOCOL.md §9, rule 2);
//! 3. the RVOLE message with inputs `(r_i, x_i')`, the opening of `R_i`,
//!    `Gamma_u`, `Gamma_v` and `psi_i`;
//! 4. the online step: `(u_i, w_i)` and the prehash being signed.
//!
//! Rounds 1-3 do not depend on the message: [`Presign`] runs them and
//! outputs a [`Presignature`], which [`OnlineSign`] consumes by value after
//! a [`PresignatureGuard`] claimed it. [`Sign`] runs all four rounds. Round 4
//! shifts the nonce by a hash of the public key, the derivation tweak, the
//! prehash and the session id in both cases (`online`, PROTOCOL.md §14.3).

use alloc::vec::Vec;
use core::fmt;

use k256::ecdsa::{RecoveryId, Signature};
use k256::elliptic_curve::bigint::U256;
use k256::elliptic_curve::group::Group;
use k256::elliptic_curve::ops::{LinearCombination, MulByGenerator, Reduce};
use k256::{ProjectivePoint, Scalar};
use rand_core::CryptoRngCore;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

mod guard;
mod online;
mod presignature;

pub use guard::{ClaimRefused, ClaimSet, PresignatureGuard};
pub use online::OnlineSign;
pub use presignature::{Presignature, PRESIGNATURE_VERSION};

use online::{finish, online_message, AwaitRound4};

use crate::derive::DerivationPath;
use crate::error::{Error, Result};
use crate::hazmat::ot::extension::OTE_MSG_BYTES;
use crate::hazmat::vole::{self, RvoleReceiver, VOLE_MSG_BYTES};
use crate::keyshare::KeyShare;
use crate::protocol::{impl_protocol, Driver, Expect, Machine, Transition};
use crate::transcript::{tags, Transcript};
use crate::wire::{
    encode_point, encode_points, encode_scalar, Hex, ProtocolId, Reader, Role, SessionId,
    POINT_BYTES, SCALAR_BYTES,
};

/// Payload bytes of each signing round.
pub const ROUND_BYTES: [usize; 4] = [
    32 + 32,
    OTE_MSG_BYTES,
    VOLE_MSG_BYTES + POINT_BYTES + 32 + 2 * POINT_BYTES + SCALAR_BYTES,
    2 * SCALAR_BYTES + 32,
];

/// The 32-byte hash of the message being signed.
///
/// Signing takes a prehash, never a message, so a caller cannot sign
/// unhashed data by mistake; the hashing helpers are named for what they do.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Prehash([u8; 32]);

impl Prehash {
    /// Wraps an existing 32-byte digest.
    #[must_use]
    pub const fn from_bytes(digest: [u8; 32]) -> Self {
        Self(digest)
    }

    /// SHA-256 of `message`.
    #[must_use]
    pub fn sha256(message: &[u8]) -> Self {
        use sha2::Digest;
        Self(sha2::Sha256::digest(message).into())
    }

    /// The digest bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn scalar(&self) -> Scalar {
        <Scalar as Reduce<U256>>::reduce_bytes(&self.0.into())
    }
}

impl fmt::Debug for Prehash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Prehash({})", Hex(&self.0))
    }
}

/// A finished signature: low-S, verified against the (derived) public key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignatureOutput {
    /// The ECDSA signature `(r, s)`, with `s` normalised to the low half.
    pub signature: Signature,
    /// The recovery id (`ecrecover` parity and overflow bits).
    pub recovery_id: RecoveryId,
}

/// Shared inputs of a signing session.
struct Setup<'a> {
    share: &'a KeyShare,
    /// Additive derivation tweak on the public key; zero for the root key.
    tweak: Scalar,
    /// `tweak * G`, computed once.
    tweak_point: ProjectivePoint,
    setup: [u8; 32],
}

fn setup_sid(
    share: &KeyShare,
    path: &DerivationPath,
    tweak: &Scalar,
    protocol: ProtocolId,
) -> [u8; 32] {
    Transcript::new(tags::SIGN_SETUP)
        .chain(share.transcript_hash())
        .chain(&share.key_id().0)
        .chain(&share.epoch().to_be_bytes())
        .chain(&path.to_bytes())
        .chain(&encode_scalar(tweak))
        .chain(&[protocol.as_u8()])
        .finalize()
}

impl<'a> Setup<'a> {
    /// The setup for signing under the root key.
    fn root(share: &'a KeyShare, protocol: ProtocolId) -> Self {
        Self::build(share, &DerivationPath::root(), Scalar::ZERO, protocol)
    }

    /// The setup for signing under the key at `path`.
    fn at_path(share: &'a KeyShare, path: &DerivationPath, protocol: ProtocolId) -> Result<Self> {
        let (_, tweak) = share.derive(path)?;
        Ok(Self::build(share, path, tweak, protocol))
    }

    fn build(
        share: &'a KeyShare,
        path: &DerivationPath,
        tweak: Scalar,
        protocol: ProtocolId,
    ) -> Self {
        let tweak_point = if bool::from(tweak.is_zero()) {
            ProjectivePoint::IDENTITY
        } else {
            ProjectivePoint::mul_by_generator(&tweak)
        };
        Self {
            share,
            tweak,
            tweak_point,
            setup: setup_sid(share, path, &tweak, protocol),
        }
    }

    fn role(&self) -> Role {
        self.share.role()
    }

    /// `X_role'`: the public share, with the tweak on party A's.
    fn public_share(&self, role: Role) -> ProjectivePoint {
        let base = self.share.public_share(role);
        match role {
            Role::A => base + self.tweak_point,
            Role::B => base,
        }
    }

    /// `x_i'`: this party's secret share, with the tweak if it is party A.
    fn secret_share(&self) -> Scalar {
        match self.role() {
            Role::A => self.share.secret + self.tweak,
            Role::B => self.share.secret,
        }
    }

    fn derived_public_key(&self) -> ProjectivePoint {
        self.share.public_key_point() + self.tweak_point
    }
}

fn commitment(setup: &[u8; 32], role: Role, nonce_point: &[u8], salt: &[u8; 32]) -> [u8; 32] {
    Transcript::new(tags::SIGN_COMMIT)
        .chain(setup)
        .chain(&[role.as_u8()])
        .chain(nonce_point)
        .chain(salt)
        .finalize()
}

fn random_nonzero(rng: &mut impl CryptoRngCore) -> Scalar {
    crate::ct::random_nonzero_scalar(rng)
}

/// Per-session secrets of this party.
#[derive(Zeroize, ZeroizeOnDrop)]
struct Nonces {
    r: Scalar,
    phi: Scalar,
    #[zeroize(skip)]
    big_r: ProjectivePoint,
    salt: [u8; 32],
}

struct AwaitRound1<'a> {
    setup: Setup<'a>,
    sign_nonce: [u8; 32],
    nonces: Nonces,
}

struct AwaitRound2<'a> {
    setup: Setup<'a>,
    sid: [u8; 32],
    nonces: Nonces,
    peer_commitment: [u8; 32],
    receiver: RvoleReceiver,
}

struct AwaitRound3<'a> {
    setup: Setup<'a>,
    sid: [u8; 32],
    nonces: Nonces,
    peer_commitment: [u8; 32],
    receiver: RvoleReceiver,
    c: Zeroizing<[Scalar; 2]>,
}

enum State<'a, const PRESIGN: bool> {
    Init {
        setup: Setup<'a>,
        prehash: Option<Prehash>,
    },
    Round1(AwaitRound1<'a>, Option<Prehash>),
    Round2(AwaitRound2<'a>, Option<Prehash>),
    Round3(AwaitRound3<'a>, Option<Prehash>),
    Round4(AwaitRound4),
}

type SignState<'a> = State<'a, false>;
type PresignState<'a> = State<'a, true>;

impl<const PRESIGN: bool> Machine for State<'_, PRESIGN> {
    type Output = Finished;
    const PROTOCOL: ProtocolId = if PRESIGN {
        ProtocolId::Presign
    } else {
        ProtocolId::Sign
    };

    fn role(&self) -> Role {
        match self {
            Self::Init { setup, .. } => setup.role(),
            Self::Round1(s, _) => s.setup.role(),
            Self::Round2(s, _) => s.setup.role(),
            Self::Round3(s, _) => s.setup.role(),
            Self::Round4(s) => s.role(),
        }
    }

    fn begin<R: CryptoRngCore>(self, rng: &mut R) -> Result<(Self, SessionId, u8, Vec<u8>)> {
        let Self::Init { setup, prehash } = self else {
            return Err(Error::AlreadyStarted);
        };
        if setup.share.is_ot_burned() {
            return Err(Error::OtMaterialBurned);
        }
        let r = random_nonzero(rng);
        let mut nonces = Nonces {
            r,
            phi: random_nonzero(rng),
            big_r: ProjectivePoint::mul_by_generator(&r),
            salt: [0; 32],
        };
        rng.fill_bytes(&mut nonces.salt);
        let mut sign_nonce = [0u8; 32];
        rng.fill_bytes(&mut sign_nonce);
        let commit = commitment(
            &setup.setup,
            setup.role(),
            &encode_point(&nonces.big_r),
            &nonces.salt,
        );
        let mut payload = Vec::with_capacity(ROUND_BYTES[0]);
        payload.extend_from_slice(&sign_nonce);
        payload.extend_from_slice(&commit);
        let session = SessionId(setup.setup);
        Ok((
            Self::Round1(
                AwaitRound1 {
                    setup,
                    sign_nonce,
                    nonces,
                },
                prehash,
            ),
            session,
            1,
            payload,
        ))
    }

    fn expect(&self) -> Expect {
        let (session, round) = match self {
            Self::Init { setup, .. } => (setup.setup, 0),
            Self::Round1(s, _) => (s.setup.setup, 1),
            Self::Round2(s, _) => (s.sid, 2),
            Self::Round3(s, _) => (s.sid, 3),
            Self::Round4(s) => (s.sid(), 4),
        };
        Expect::round(session, round, &ROUND_BYTES)
    }

    fn advance<R: CryptoRngCore>(
        self,
        rng: &mut R,
        payload: &[u8],
    ) -> Result<Transition<Self, Finished>> {
        match self {
            Self::Init { .. } => Err(Error::NotStarted),
            Self::Round1(state, prehash) => {
                let (next, out) = round1(rng, state, payload)?;
                Ok(Transition::Next {
                    session: SessionId(next.sid),
                    state: Self::Round2(next, prehash),
                    round: 2,
                    payload: out,
                })
            }
            Self::Round2(state, prehash) => {
                let (next, out) = round2(rng, state, payload)?;
                Ok(Transition::Next {
                    session: SessionId(next.sid),
                    state: Self::Round3(next, prehash),
                    round: 3,
                    payload: out,
                })
            }
            Self::Round3(state, prehash) => {
                let presignature = round3(state, payload)?;
                match prehash {
                    None => Ok(Transition::Done(Finished::Presignature(
                        alloc::boxed::Box::new(presignature),
                    ))),
                    Some(prehash) => {
                        let (next, out) = online_message(presignature, prehash)?;
                        let session = SessionId(next.sid());
                        Ok(Transition::Next {
                            state: Self::Round4(next),
                            session,
                            round: 4,
                            payload: out,
                        })
                    }
                }
            }
            Self::Round4(state) => Ok(Transition::Done(Finished::Signature(finish(
                &state, payload,
            )?))),
        }
    }
}

/// What a signing machine finishes with.
enum Finished {
    Presignature(alloc::boxed::Box<Presignature>),
    Signature(SignatureOutput),
}

fn round1<'a, R: CryptoRngCore>(
    rng: &mut R,
    state: AwaitRound1<'a>,
    payload: &[u8],
) -> Result<(AwaitRound2<'a>, Vec<u8>)> {
    let mut reader = Reader::exact(payload, ROUND_BYTES[0])?;
    let peer_nonce: [u8; 32] = reader.array()?;
    let peer_commitment: [u8; 32] = reader.array()?;
    let (nonce_a, nonce_b) = state.setup.role().order(&state.sign_nonce, &peer_nonce);
    let sid = Transcript::new(tags::SIGN_SID)
        .chain(&state.setup.setup)
        .chain(nonce_a)
        .chain(nonce_b)
        .finalize();
    // As RVOLE receiver of the peer's direction: chi_i is fixed here.
    let (receiver, ote_msg) = RvoleReceiver::start(rng, &state.setup.share.ot_receiver, &sid);
    let next = AwaitRound2 {
        setup: state.setup,
        sid,
        nonces: state.nonces,
        peer_commitment,
        receiver,
    };
    Ok((next, ote_msg))
}

fn round2<'a, R: CryptoRngCore>(
    rng: &mut R,
    state: AwaitRound2<'a>,
    payload: &[u8],
) -> Result<(AwaitRound3<'a>, Vec<u8>)> {
    let _ = Reader::exact(payload, ROUND_BYTES[1])?;
    let mut secret = state.setup.secret_share();
    let inputs = Zeroizing::new([state.nonces.r, secret]);
    secret.zeroize();
    // As RVOLE sender of this party's direction, inputs (r_i, x_i').
    let (c, vole_msg) = vole::send(
        rng,
        &state.setup.share.ot_sender,
        &state.sid,
        payload,
        &inputs,
    )?;
    let psi = state.nonces.phi - state.receiver.chi();
    let mut out = vole_msg;
    out.reserve(ROUND_BYTES[2] - out.len());
    // One field inversion for the three points.
    let [big_r, gamma_u, gamma_v] = [
        state.nonces.big_r,
        ProjectivePoint::mul_by_generator(&c.c[0]),
        ProjectivePoint::mul_by_generator(&c.c[1]),
    ];
    let encoded = encode_points(&[big_r, gamma_u, gamma_v]);
    out.extend_from_slice(&encoded[0]);
    out.extend_from_slice(&state.nonces.salt);
    out.extend_from_slice(&encoded[1]);
    out.extend_from_slice(&encoded[2]);
    out.extend_from_slice(&encode_scalar(&psi));
    let next = AwaitRound3 {
        setup: state.setup,
        sid: state.sid,
        nonces: state.nonces,
        peer_commitment: state.peer_commitment,
        receiver: state.receiver,
        c: Zeroizing::new(c.c),
    };
    Ok((next, out))
}

fn round3(state: AwaitRound3<'_>, payload: &[u8]) -> Result<Presignature> {
    let mut reader = Reader::exact(payload, ROUND_BYTES[2])?;
    let vole_msg = reader.take(VOLE_MSG_BYTES)?;
    let peer_r_bytes = reader.take(POINT_BYTES)?;
    let peer_r = crate::wire::decode_point(peer_r_bytes)?;
    let peer_salt: [u8; 32] = reader.array()?;
    let peer_gamma_u = reader.point()?;
    let peer_gamma_v = reader.point()?;
    let peer_psi = reader.scalar()?;

    let AwaitRound3 {
        setup,
        sid,
        nonces,
        peer_commitment,
        receiver,
        c,
    } = state;
    let role = setup.role();
    let peer = role.peer();
    let expected = commitment(&setup.setup, peer, peer_r_bytes, &peer_salt);
    if !bool::from(expected.ct_eq(&peer_commitment)) {
        return Err(Error::CommitmentMismatch);
    }
    let d = receiver.finish(&setup.share.ot_receiver, vole_msg)?;
    let chi = d.chi;
    // Gamma checks (PROTOCOL.md §14.2): the peer's RVOLE inputs are its
    // committed nonce and its public share.
    let peer_public = setup.public_share(peer);
    // chi*P - d*G == Gamma as one constant-time two-term multiplication.
    let g = ProjectivePoint::GENERATOR;
    let gamma_ok = ProjectivePoint::lincomb(&peer_r, &chi, &g, &-d.d[0]) == peer_gamma_u
        && ProjectivePoint::lincomb(&peer_public, &chi, &g, &-d.d[1]) == peer_gamma_v;
    if !gamma_ok {
        return Err(Error::GammaCheckFailed);
    }
    let verifying_key = setup.derived_public_key();
    if setup.public_share(Role::A) + setup.public_share(Role::B) != verifying_key {
        return Err(Error::MalformedKeyShare);
    }
    let big_r = nonces.big_r + peer_r;
    if bool::from(big_r.is_identity()) {
        return Err(Error::DegenerateSignature);
    }
    let mask = nonces.phi + peer_psi;
    let mut secret = setup.secret_share();
    let u = nonces.r * mask + c[0] + d.d[0];
    let v = secret * mask + c[1] + d.d[1];
    secret.zeroize();
    Ok(Presignature {
        role,
        key_id: *setup.share.key_id(),
        epoch: setup.share.epoch(),
        sid,
        big_r,
        phi: nonces.phi,
        u,
        v,
        tweak: setup.tweak,
        verifying_key_bytes: encode_point(&verifying_key),
        verifying_key,
    })
}

/// Signing: all four rounds, for one prehash.
pub struct Sign<'a> {
    driver: Driver<SignState<'a>>,
}

impl<'a> Sign<'a> {
    /// Signs `prehash` with `share` under the root key.
    #[must_use]
    pub fn new(share: &'a KeyShare, prehash: Prehash) -> Self {
        Self::from_setup(Setup::root(share, ProtocolId::Sign), prehash)
    }

    /// Signs `prehash` under the key at BIP32 `path` below the root. The path
    /// is bound into the session id; party A adds the derivation tweak to its
    /// share.
    ///
    /// # Errors
    ///
    /// The derivation errors of [`KeyShare::derive`].
    pub fn with_path(share: &'a KeyShare, prehash: Prehash, path: &DerivationPath) -> Result<Self> {
        Ok(Self::from_setup(
            Setup::at_path(share, path, ProtocolId::Sign)?,
            prehash,
        ))
    }

    fn from_setup(setup: Setup<'a>, prehash: Prehash) -> Self {
        Self {
            driver: Driver::new(State::Init {
                setup,
                prehash: Some(prehash),
            }),
        }
    }
}

/// Presigning: rounds 1-3, independent of the message.
pub struct Presign<'a> {
    driver: Driver<PresignState<'a>>,
}

impl<'a> Presign<'a> {
    /// Presigns with `share` under the root key.
    #[must_use]
    pub fn new(share: &'a KeyShare) -> Self {
        Self::from_setup(Setup::root(share, ProtocolId::Presign))
    }

    /// Presigns under the key at BIP32 `path` (bound into the session id).
    ///
    /// # Errors
    ///
    /// The derivation errors of [`KeyShare::derive`].
    pub fn with_path(share: &'a KeyShare, path: &DerivationPath) -> Result<Self> {
        Ok(Self::from_setup(Setup::at_path(
            share,
            path,
            ProtocolId::Presign,
        )?))
    }

    fn from_setup(setup: Setup<'a>) -> Self {
        Self {
            driver: Driver::new(State::Init {
                setup,
                prehash: None,
            }),
        }
    }
}

impl_protocol!(Sign<'_> => SignatureOutput, |finished| match finished {
    Finished::Signature(output) => Ok(output),
    Finished::Presignature(_) => Err(Error::AlreadyFinished),
});
impl_protocol!(Presign<'_> => Presignature, |finished| match finished {
    Finished::Presignature(presignature) => Ok(Presignature::unbox(presignature)),
    Finished::Signature(_) => Err(Error::AlreadyFinished),
});
