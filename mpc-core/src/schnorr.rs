//! Two-party BIP340 Schnorr signing under the DKG's additive key
//! (PROTOCOL.md §20).
//!
//! The scheme is 2-of-2 MuSig2 (ePrint 2020/1261) with two nonces per party
//! and a binding factor over all four nonce points and the message, so that
//! many concurrent sessions with one malicious peer do not open the ROS
//! attack (ePrint 2020/945) that breaks the naive "send `R_i`, then `s_i`".
//! No key-aggregation coefficients: the DKG's proofs of knowledge
//! (PROTOCOL.md §13) already rule out a rogue public share.
//!
//! Rounds (both parties send in each):
//!
//! 1. the nonce points `D_i = k_i1*G`, `E_i = k_i2*G` (message-independent in
//!    shape, but the nonces are derived from fresh randomness, the share and
//!    the message);
//! 2. the partial signature `s_i` and a digest of the message.
//!
//! Each party checks the peer's partial signature against its public share
//! and nonces, assembles `(x(R), s)`, and releases it only after BIP340
//! verification under the output key.

use alloc::vec::Vec;

use k256::elliptic_curve::group::Group;
use k256::elliptic_curve::ops::MulByGenerator;
use k256::{ProjectivePoint, Scalar};
use rand_core::CryptoRngCore;
use zeroize::{Zeroize, ZeroizeOnDrop};

mod bip340;
mod presign;

use bip340::{challenge, parity_sign, KeyTweaks};
pub use bip340::{
    has_even_y, lift_x, tagged_hash, taproot_output_key, verify, x_only, Taproot, CHALLENGE_TAG,
    TAP_TWEAK_TAG,
};
pub use presign::{
    SchnorrOnline, SchnorrPresign, SchnorrPresignature, PRESIGN_ROUND_BYTES,
    SCHNORR_PRESIGNATURE_VERSION,
};

use crate::derive::DerivationPath;
use crate::error::{Error, Result};
use crate::keyshare::KeyShare;
use crate::protocol::{impl_protocol, Driver, Expect, Machine, Transition};
use crate::transcript::{hash_to_scalar, tags, Transcript};
use crate::wire::{
    encode_points, encode_scalar, ProtocolId, Reader, Role, SessionId, POINT_BYTES, SCALAR_BYTES,
};

/// Payload bytes of each Schnorr signing round.
pub const ROUND_BYTES: [usize; 2] = [2 * POINT_BYTES, SCALAR_BYTES + 32];

/// A finished, verified BIP340 signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchnorrSignature {
    /// `x(R) || s`, 64 bytes, as BIP340 serialises it.
    pub signature: [u8; 64],
    /// The x-only key the signature verifies under: the Taproot output key
    /// `Q` if a Taproot tweak was asked, else the (derived) key.
    pub public_key: [u8; 32],
    /// The x-only internal key `P'` (the derived key, before any Taproot
    /// tweak); equal to `public_key` without Taproot.
    pub internal_key: [u8; 32],
}

/// The keys two-party BIP340 signing at `path` with `taproot` would use:
/// `(internal_key, output_key)`, both x-only (PROTOCOL.md §20.1).
///
/// # Errors
///
/// The derivation errors of [`KeyShare::derive`]; [`Error::InvalidTweak`] for
/// a Taproot tweak that BIP341 rejects.
pub fn signing_keys(
    share: &KeyShare,
    path: &DerivationPath,
    taproot: Taproot,
) -> Result<([u8; 32], [u8; 32])> {
    let (_, bip32) = share.derive(path)?;
    let key = KeyTweaks::new(share.public_key_point(), bip32, taproot)?;
    Ok((x_only(&key.internal), x_only(&key.output)))
}

/// The key-side inputs of a session: everything but the message.
struct Setup<'a> {
    share: &'a KeyShare,
    key: KeyTweaks,
    /// `x(Q)`, the BIP340 public key.
    output_x: [u8; 32],
    setup: [u8; 32],
}

impl<'a> Setup<'a> {
    /// `protocol` is the opening round's protocol ([`ProtocolId::SignSchnorr`]
    /// for one-shot signing, [`ProtocolId::PresignSchnorr`] for presigning),
    /// so the two flows never share a setup, nonce or session id.
    fn new(
        share: &'a KeyShare,
        path: &DerivationPath,
        taproot: Taproot,
        protocol: ProtocolId,
    ) -> Result<Self> {
        let (_, bip32) = share.derive(path)?;
        let root = share.public_key_point();
        if share.public_share(Role::A) + share.public_share(Role::B) != root {
            return Err(Error::MalformedKeyShare);
        }
        let key = KeyTweaks::new(root, bip32, taproot)?;
        let setup = Transcript::new(tags::SCHNORR_SETUP)
            .chain(share.transcript_hash())
            .chain(&share.key_id().0)
            .chain(&share.epoch().to_be_bytes())
            .chain(&path.to_bytes())
            .chain(&encode_scalar(&bip32))
            .chain(&taproot.to_bytes())
            .chain(&[protocol.as_u8()])
            .finalize();
        Ok(Self {
            share,
            output_x: x_only(&key.output),
            key,
            setup,
        })
    }

    fn role(&self) -> Role {
        self.share.role()
    }
}

/// The message and its digest `mdig` (compared in round 2).
struct Message {
    bytes: Vec<u8>,
    digest: [u8; 32],
}

impl Message {
    fn new(message: &[u8]) -> Self {
        Self {
            bytes: message.to_vec(),
            digest: Transcript::new(tags::SCHNORR_MSG).chain(message).finalize(),
        }
    }
}

/// This party's two secret nonces and their points.
#[derive(Zeroize, ZeroizeOnDrop)]
struct Nonces {
    k: [Scalar; 2],
    #[zeroize(skip)]
    points: [ProjectivePoint; 2],
}

impl Nonces {
    /// `k_j = H2S(nonce tag; rand, x_i, setup, [H(m),] u8(j))`: fresh
    /// randomness mixed with the share and the session's inputs, so that a
    /// repeated random source still gives distinct nonces for distinct keys,
    /// paths or (one-shot only) messages (PROTOCOL.md §20.2, §20.5).
    /// Presigning passes no message digest: the message is not known yet.
    fn derive<R: CryptoRngCore>(
        rng: &mut R,
        setup: &Setup<'_>,
        message_digest: Option<&[u8; 32]>,
    ) -> Self {
        loop {
            let mut rand = zeroize::Zeroizing::new([0u8; 32]);
            rng.fill_bytes(rand.as_mut());
            let secret = zeroize::Zeroizing::new(encode_scalar(&setup.share.secret));
            // Presigning hashes an empty string in mdig's place; its setup
            // differs from one-shot signing's (the protocol byte).
            let digest: &[u8] = message_digest.map_or(&[], |digest| digest);
            let k = [0u8, 1].map(|j| {
                hash_to_scalar(
                    tags::SCHNORR_NONCE,
                    &[rand.as_ref(), secret.as_ref(), &setup.setup, digest, &[j]],
                )
            });
            if k.iter().all(|k| !bool::from(k.is_zero())) {
                let points = k.map(|k| ProjectivePoint::mul_by_generator(&k));
                return Self { k, points };
            }
        }
    }

    /// Round 1's payload: `enc33(D_i) || enc33(E_i)`.
    fn payload(&self) -> Vec<u8> {
        let encoded = encode_points(&self.points);
        let mut payload = Vec::with_capacity(ROUND_BYTES[0]);
        payload.extend_from_slice(&encoded[0]);
        payload.extend_from_slice(&encoded[1]);
        payload
    }
}

/// Decodes the peer's round-1 payload and derives the joint session id
/// `sid = H(sid tag; setup, D_A, E_A, D_B, E_B)`.
fn receive_nonces(
    setup: &[u8; 32],
    role: Role,
    own: &[ProjectivePoint; 2],
    payload: &[u8],
) -> Result<([ProjectivePoint; 2], [u8; 32])> {
    let mut reader = Reader::exact(payload, ROUND_BYTES[0])?;
    let peer = [reader.point()?, reader.point()?];
    Ok((peer, session_id(setup, role, own, &peer)))
}

fn session_id(
    setup: &[u8; 32],
    role: Role,
    own: &[ProjectivePoint; 2],
    peer: &[ProjectivePoint; 2],
) -> [u8; 32] {
    let (points_a, points_b) = role.order(own, peer);
    let encoded = encode_points(&[points_a[0], points_a[1], points_b[0], points_b[1]]);
    let mut sid = Transcript::new(tags::SCHNORR_SID).chain(setup);
    for point in &encoded {
        sid.append(point);
    }
    sid.finalize()
}

struct AwaitNonces<'a> {
    setup: Setup<'a>,
    message: Message,
    nonces: Nonces,
}

struct AwaitPartial<'a> {
    setup: Setup<'a>,
    message: Message,
    sid: [u8; 32],
    /// The peer's effective nonce `g_R * (D_j + b*E_j)`.
    peer_nonce: ProjectivePoint,
    r_x: [u8; 32],
    e: Scalar,
    own_s: Scalar,
}

enum State<'a> {
    Init(Setup<'a>, Message),
    Nonces(AwaitNonces<'a>),
    Partial(AwaitPartial<'a>),
}

impl Machine for State<'_> {
    type Output = SchnorrSignature;
    const PROTOCOL: ProtocolId = ProtocolId::SignSchnorr;

    fn role(&self) -> Role {
        match self {
            Self::Init(setup, _) => setup.role(),
            Self::Nonces(s) => s.setup.role(),
            Self::Partial(s) => s.setup.role(),
        }
    }

    fn begin<R: CryptoRngCore>(self, rng: &mut R) -> Result<(Self, SessionId, u8, Vec<u8>)> {
        let Self::Init(setup, message) = self else {
            return Err(Error::AlreadyStarted);
        };
        // A ban ends all signing on the key, whatever the scheme (§8).
        if setup.share.is_ot_burned() {
            return Err(Error::OtMaterialBurned);
        }
        let nonces = Nonces::derive(rng, &setup, Some(&message.digest));
        let payload = nonces.payload();
        let session = SessionId(setup.setup);
        Ok((
            Self::Nonces(AwaitNonces {
                setup,
                message,
                nonces,
            }),
            session,
            1,
            payload,
        ))
    }

    fn expect(&self) -> Expect {
        let (session, round) = match self {
            Self::Init(setup, _) => (setup.setup, 0),
            Self::Nonces(s) => (s.setup.setup, 1),
            Self::Partial(s) => (s.sid, 2),
        };
        Expect::round(session, round, &ROUND_BYTES)
    }

    fn advance<R: CryptoRngCore>(
        self,
        _rng: &mut R,
        payload: &[u8],
    ) -> Result<Transition<Self, SchnorrSignature>> {
        match self {
            Self::Init(..) => Err(Error::NotStarted),
            Self::Nonces(state) => {
                let (next, out) = on_nonces(state, payload)?;
                Ok(Transition::Next {
                    session: SessionId(next.sid),
                    state: Self::Partial(next),
                    round: 2,
                    payload: out,
                })
            }
            Self::Partial(state) => Ok(Transition::Done(on_partial(&state, payload)?)),
        }
    }
}

/// Round 1 received (one-shot signing).
fn on_nonces<'a>(state: AwaitNonces<'a>, payload: &[u8]) -> Result<(AwaitPartial<'a>, Vec<u8>)> {
    let AwaitNonces {
        setup,
        message,
        nonces,
    } = state;
    let (peer, sid) = receive_nonces(&setup.setup, setup.role(), &nonces.points, payload)?;
    partial_signature(setup, message, sid, nonces, &peer)
}

/// The joint nonce, the challenge and this party's partial signature, the
/// round-2 math shared by one-shot signing and the online step of a
/// presignature (PROTOCOL.md §20.2, §20.5). Consumes the nonces.
fn partial_signature<'a>(
    setup: Setup<'a>,
    message: Message,
    sid: [u8; 32],
    nonces: Nonces,
    peer_points: &[ProjectivePoint; 2],
) -> Result<(AwaitPartial<'a>, Vec<u8>)> {
    // The binding factor covers every nonce point (through sid), the output
    // key and the message: a peer that picks its nonces after seeing ours,
    // or a message after both, changes b, and with it our effective nonce
    // (MuSig2's defence against ROS).
    let b = hash_to_scalar(
        tags::SCHNORR_BINDING,
        &[&sid, &setup.output_x, &message.bytes],
    );
    let own = nonces.points[0] + nonces.points[1] * b;
    let peer = peer_points[0] + peer_points[1] * b;
    let big_r = own + peer;
    if bool::from(big_r.is_identity()) {
        return Err(Error::DegenerateSignature);
    }
    // BIP340: R must have even y, so both parties negate their nonces if not.
    let g_r = parity_sign(&big_r);
    let r_x = x_only(&big_r);
    let e = challenge(&r_x, &setup.output_x, &message.bytes);
    let mut k = nonces.k[0] + nonces.k[1] * b;
    let own_s = g_r * k + e * setup.key.share_factor() * setup.share.secret;
    k.zeroize();
    drop(nonces);
    let mut out = Vec::with_capacity(ROUND_BYTES[1]);
    out.extend_from_slice(&encode_scalar(&own_s));
    out.extend_from_slice(&message.digest);
    Ok((
        AwaitPartial {
            setup,
            message,
            sid,
            peer_nonce: peer * g_r,
            r_x,
            e,
            own_s,
        },
        out,
    ))
}

/// Round 2 received: check the peer's partial signature, assemble, verify.
fn on_partial(state: &AwaitPartial<'_>, payload: &[u8]) -> Result<SchnorrSignature> {
    let mut reader = Reader::exact(payload, ROUND_BYTES[1])?;
    let peer_s = reader.scalar()?;
    let peer_digest: [u8; 32] = reader.array()?;
    let setup = &state.setup;
    let message = &state.message;
    if peer_digest != message.digest {
        return Err(Error::PrehashMismatch);
    }
    // s_j*G == g_R*(D_j + b*E_j) + e*g*gacc*X_j: identifies a wrong share
    // before anything is assembled.
    let peer_public = setup.share.public_share(setup.role().peer());
    let expected = state.peer_nonce + peer_public * (state.e * setup.key.share_factor());
    if ProjectivePoint::mul_by_generator(&peer_s) != expected {
        return Err(Error::InvalidPartialSignature);
    }
    let s = state.own_s + peer_s + state.e * setup.key.tweak_term();
    let mut signature = [0u8; 64];
    signature[..32].copy_from_slice(&state.r_x);
    signature[32..].copy_from_slice(&encode_scalar(&s));
    if !verify(&setup.output_x, &message.bytes, &signature) {
        return Err(Error::SignatureVerificationFailed);
    }
    Ok(SchnorrSignature {
        signature,
        public_key: setup.output_x,
        internal_key: x_only(&setup.key.internal),
    })
}

impl Drop for AwaitPartial<'_> {
    fn drop(&mut self) {
        self.own_s.zeroize();
    }
}

/// Two-party BIP340 signing: two rounds, for one message.
pub struct SignSchnorr<'a> {
    driver: Driver<State<'a>>,
}

impl<'a> SignSchnorr<'a> {
    /// Signs `message` (any length; Taproot signs a 32-byte sighash) with
    /// `share`, under the key at BIP32 `path` (the root for an empty path),
    /// with the output tweak `taproot`. The path, the BIP32 tweak and the
    /// Taproot mode and merkle root are bound into the session id.
    ///
    /// # Errors
    ///
    /// The derivation errors of [`KeyShare::derive`];
    /// [`Error::InvalidTweak`] for a Taproot tweak that BIP341 rejects;
    /// [`Error::MalformedKeyShare`] if the share's public shares do not add
    /// up to its public key.
    pub fn new(
        share: &'a KeyShare,
        message: &[u8],
        path: &DerivationPath,
        taproot: Taproot,
    ) -> Result<Self> {
        Ok(Self {
            driver: Driver::new(State::Init(
                Setup::new(share, path, taproot, ProtocolId::SignSchnorr)?,
                Message::new(message),
            )),
        })
    }

    /// The joint session id, once round 1 was received (for logs and
    /// correlation; public).
    #[must_use]
    pub fn session_id(&self) -> Option<SessionId> {
        match self.driver.machine()? {
            State::Partial(s) => Some(SessionId(s.sid)),
            _ => None,
        }
    }
}

impl_protocol!(SignSchnorr<'_> => SchnorrSignature);
