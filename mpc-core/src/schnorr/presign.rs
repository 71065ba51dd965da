//! BIP340 nonce preprocessing (PROTOCOL.md §20.5): the nonce round run ahead
//! of the message as [`SchnorrPresign`], and the partial-signature round as
//! [`SchnorrOnline`], which consumes the [`SchnorrPresignature`] only after
//! a [`PresignatureGuard`] claimed it (the contract of PROTOCOL.md §14.3).
//!
//! The round-2 math is the one-shot [`SignSchnorr`](super::SignSchnorr)'s
//! (`partial_signature` and `on_partial` in the parent module); only where
//! the nonces come from differs.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;

use k256::elliptic_curve::ops::MulByGenerator;
use k256::{ProjectivePoint, Scalar};
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::{
    on_partial, partial_signature, receive_nonces, session_id, AwaitPartial, Message, Nonces,
    SchnorrSignature, Setup, Taproot, ROUND_BYTES,
};
use crate::derive::DerivationPath;
use crate::error::{Error, Result};
use crate::keyshare::{decode_stored_record, to_zeroizing_vec, KeyId, KeyShare};
use crate::protocol::{impl_protocol, Driver, Expect, Machine, Transition};
use crate::sign::PresignatureGuard;
use crate::wire::{
    decode_point, decode_scalar, encode_point, encode_scalar, ProtocolId, Role, SessionId,
};

/// Format version of [`SchnorrPresignature::to_bytes`].
pub const SCHNORR_PRESIGNATURE_VERSION: u16 = 1;

/// Payload bytes of the presigning round (`enc33(D_i) || enc33(E_i)`); the
/// online round's is `ROUND_BYTES[1]` of [`SignSchnorr`](super::SignSchnorr).
pub const PRESIGN_ROUND_BYTES: [usize; 1] = [ROUND_BYTES[0]];

/// The result of the nonce round: this party's two secret nonces, both
/// parties' nonce points and the session id they fix (PROTOCOL.md §20.5).
///
/// Not `Clone`; wiped on drop; `Debug` shows no secret. Signing two
/// messages with one presignature leaks the share (three suffice for a
/// peer to solve for it), so [`SchnorrOnline::new`] takes it by value and
/// asks a [`PresignatureGuard`] to claim its session id first.
pub struct SchnorrPresignature {
    role: Role,
    key_id: KeyId,
    epoch: u64,
    /// The presigning setup: binds the key, epoch, path, BIP32 tweak and
    /// Taproot mode, so the online step can check its own against it.
    setup: [u8; 32],
    sid: [u8; 32],
    nonces: Nonces,
    peer_points: [ProjectivePoint; 2],
}

impl ZeroizeOnDrop for SchnorrPresignature {}

impl fmt::Debug for SchnorrPresignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchnorrPresignature")
            .field("role", &self.role)
            .field("key_id", &self.key_id)
            .field("epoch", &self.epoch)
            .field("session", &SessionId(self.sid))
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct Record {
    version: u16,
    role: u8,
    key_id: [u8; 32],
    epoch: u64,
    setup: [u8; 32],
    sid: [u8; 32],
    k0: [u8; 32],
    k1: [u8; 32],
    peer_d: Vec<u8>,
    peer_e: Vec<u8>,
}

impl SchnorrPresignature {
    /// The key this presignature signs for.
    #[must_use]
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// The epoch of the shares it was made with.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// This party's role.
    #[must_use]
    pub fn role(&self) -> Role {
        self.role
    }

    /// The session id `sid`; both parties hold the same value, so a storage
    /// layer can pair and claim presignatures by it.
    #[must_use]
    pub fn session_id(&self) -> SessionId {
        SessionId(self.sid)
    }

    /// Encodes the presignature (format version
    /// [`SCHNORR_PRESIGNATURE_VERSION`], postcard). The bytes hold the secret
    /// nonces: store them encrypted, and never give them to two online steps.
    #[must_use]
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let record = Record {
            version: SCHNORR_PRESIGNATURE_VERSION,
            role: self.role.as_u8(),
            key_id: self.key_id.0,
            epoch: self.epoch,
            setup: self.setup,
            sid: self.sid,
            k0: encode_scalar(&self.nonces.k[0]),
            k1: encode_scalar(&self.nonces.k[1]),
            peer_d: encode_point(&self.peer_points[0]).to_vec(),
            peer_e: encode_point(&self.peer_points[1]).to_vec(),
        };
        // Serializing this record cannot fail.
        to_zeroizing_vec(&record).unwrap_or_default()
    }

    /// Decodes and checks a presignature: the nonces are non-zero, the peer's
    /// points are valid and not the identity, and `sid` is the hash of the
    /// setup and the four points (so no stored field was changed alone).
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedShareVersion`] for another format version;
    /// [`Error::MalformedKeyShare`] for bytes that are not a canonical,
    /// consistent encoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let record: Record = decode_stored_record(bytes, SCHNORR_PRESIGNATURE_VERSION)?;
        let malformed = |_| Error::MalformedKeyShare;
        let role = Role::from_u8(record.role).ok_or(Error::MalformedKeyShare)?;
        let k: [Scalar; 2] = [
            decode_scalar(&record.k0).map_err(malformed)?,
            decode_scalar(&record.k1).map_err(malformed)?,
        ];
        if k.iter().any(|k| bool::from(k.is_zero())) {
            return Err(Error::MalformedKeyShare);
        }
        let nonces = Nonces {
            k,
            points: k.map(|k| ProjectivePoint::mul_by_generator(&k)),
        };
        let peer_points = [
            decode_point(&record.peer_d).map_err(malformed)?,
            decode_point(&record.peer_e).map_err(malformed)?,
        ];
        if session_id(&record.setup, role, &nonces.points, &peer_points) != record.sid {
            return Err(Error::MalformedKeyShare);
        }
        Ok(Self {
            role,
            key_id: KeyId(record.key_id),
            epoch: record.epoch,
            setup: record.setup,
            sid: record.sid,
            nonces,
            peer_points,
        })
    }
}

/// The nonces are boxed to keep the states' sizes close (the box's drop
/// wipes them before freeing).
enum PresignState<'a> {
    Init(Setup<'a>),
    Nonces(Setup<'a>, Box<Nonces>),
}

impl Machine for PresignState<'_> {
    type Output = SchnorrPresignature;
    const PROTOCOL: ProtocolId = ProtocolId::PresignSchnorr;

    fn role(&self) -> Role {
        match self {
            Self::Init(setup) | Self::Nonces(setup, _) => setup.role(),
        }
    }

    fn begin<R: CryptoRngCore>(self, rng: &mut R) -> Result<(Self, SessionId, u8, Vec<u8>)> {
        let Self::Init(setup) = self else {
            return Err(Error::AlreadyStarted);
        };
        // A ban ends all signing on the key, whatever the scheme (§8).
        if setup.share.is_ot_burned() {
            return Err(Error::OtMaterialBurned);
        }
        let nonces = Box::new(Nonces::derive(rng, &setup, None));
        let payload = nonces.payload();
        let session = SessionId(setup.setup);
        Ok((Self::Nonces(setup, nonces), session, 1, payload))
    }

    fn expect(&self) -> Expect {
        match self {
            Self::Init(setup) => Expect::round(setup.setup, 0, &PRESIGN_ROUND_BYTES),
            Self::Nonces(setup, _) => Expect::round(setup.setup, 1, &PRESIGN_ROUND_BYTES),
        }
    }

    fn advance<R: CryptoRngCore>(
        self,
        _rng: &mut R,
        payload: &[u8],
    ) -> Result<Transition<Self, SchnorrPresignature>> {
        let Self::Nonces(setup, nonces) = self else {
            return Err(Error::NotStarted);
        };
        let (peer_points, sid) =
            receive_nonces(&setup.setup, setup.role(), &nonces.points, payload)?;
        // Copied out of the box, which wipes its own copy when dropped.
        let nonces = Nonces {
            k: nonces.k,
            points: nonces.points,
        };
        Ok(Transition::Done(SchnorrPresignature {
            role: setup.role(),
            key_id: *setup.share.key_id(),
            epoch: setup.share.epoch(),
            setup: setup.setup,
            sid,
            nonces,
            peer_points,
        }))
    }
}

/// The BIP340 nonce round, run before the message is known (PROTOCOL.md
/// §20.5): one 66-byte message each way, output a [`SchnorrPresignature`].
pub struct SchnorrPresign<'a> {
    driver: Driver<PresignState<'a>>,
}

impl<'a> SchnorrPresign<'a> {
    /// Presigns for the key at BIP32 `path` (the root for an empty path)
    /// with the output tweak `taproot`; both are bound into the session and
    /// the online step must name the same ones.
    ///
    /// # Errors
    ///
    /// The derivation errors of [`KeyShare::derive`];
    /// [`Error::InvalidTweak`] for a Taproot tweak that BIP341 rejects;
    /// [`Error::MalformedKeyShare`] if the share's public shares do not add
    /// up to its public key.
    pub fn new(share: &'a KeyShare, path: &DerivationPath, taproot: Taproot) -> Result<Self> {
        Ok(Self {
            driver: Driver::new(PresignState::Init(Setup::new(
                share,
                path,
                taproot,
                ProtocolId::PresignSchnorr,
            )?)),
        })
    }
}

impl_protocol!(SchnorrPresign<'_> => SchnorrPresignature);

/// Both states boxed: they are large and of different sizes (the boxes'
/// drops wipe the nonces and `s_i` before freeing).
enum OnlineState<'a> {
    Init(Box<(Setup<'a>, Message, SchnorrPresignature)>),
    Partial(Box<AwaitPartial<'a>>),
}

impl Machine for OnlineState<'_> {
    type Output = SchnorrSignature;
    const PROTOCOL: ProtocolId = ProtocolId::SignSchnorr;

    fn role(&self) -> Role {
        match self {
            Self::Init(init) => init.0.role(),
            Self::Partial(state) => state.setup.role(),
        }
    }

    fn begin<R: CryptoRngCore>(self, _rng: &mut R) -> Result<(Self, SessionId, u8, Vec<u8>)> {
        let Self::Init(init) = self else {
            return Err(Error::AlreadyStarted);
        };
        // Copied out field by field: moving the presignature out of the box
        // would free the box's copy of the nonces unwiped. What stays in the
        // box (the presignature) is dropped, and wiped, in place on return.
        let sid = init.2.sid;
        let nonces = Nonces {
            k: init.2.nonces.k,
            points: init.2.nonces.points,
        };
        let peer_points = init.2.peer_points;
        let setup = init.0;
        let message = init.1;
        let (state, payload) = partial_signature(setup, message, sid, nonces, &peer_points)?;
        Ok((Self::Partial(Box::new(state)), SessionId(sid), 2, payload))
    }

    fn expect(&self) -> Expect {
        let sid = match self {
            Self::Init(init) => init.2.sid,
            Self::Partial(state) => state.sid,
        };
        Expect::round(sid, 2, &ROUND_BYTES)
    }

    fn advance<R: CryptoRngCore>(
        self,
        _rng: &mut R,
        payload: &[u8],
    ) -> Result<Transition<Self, SchnorrSignature>> {
        match self {
            Self::Init(..) => Err(Error::NotStarted),
            Self::Partial(state) => Ok(Transition::Done(on_partial(&state, payload)?)),
        }
    }
}

/// The online round of presigned BIP340 signing: one 64-byte message each
/// way, consuming a [`SchnorrPresignature`] (PROTOCOL.md §20.5).
pub struct SchnorrOnline<'a> {
    driver: Driver<OnlineState<'a>>,
}

impl<'a> SchnorrOnline<'a> {
    /// Signs `message` with `presignature`, which is consumed whatever the
    /// result. In order: `share` must not be burned; it must be of the
    /// presignature's key, epoch and role, and `path` and `taproot` must be
    /// the ones it was presigned for; then `guard` must claim its session
    /// id. Only after all of them can the round-2 message exist.
    ///
    /// # Errors
    ///
    /// [`Error::OtMaterialBurned`] if `share` is burned; the errors of
    /// [`SchnorrPresign::new`] for `path` and `taproot`;
    /// [`Error::KeyMismatch`] if the presignature is of another key, epoch,
    /// role, path or Taproot setting (the guard is not asked);
    /// [`Error::PresignatureClaimRefused`] if the guard refuses the claim.
    pub fn new<G: PresignatureGuard + ?Sized>(
        share: &'a KeyShare,
        presignature: SchnorrPresignature,
        message: &[u8],
        path: &DerivationPath,
        taproot: Taproot,
        guard: &mut G,
    ) -> Result<Self> {
        if share.is_ot_burned() {
            return Err(Error::OtMaterialBurned);
        }
        let setup = Setup::new(share, path, taproot, ProtocolId::PresignSchnorr)?;
        // The setup hash covers the key id, epoch, path, tweak and Taproot
        // mode; the role is checked apart (both roles share the setup).
        if presignature.key_id != *share.key_id()
            || presignature.epoch != share.epoch()
            || presignature.role != share.role()
            || presignature.setup != setup.setup
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
            driver: Driver::new(OnlineState::Init(Box::new((
                setup,
                Message::new(message),
                presignature,
            )))),
        })
    }

    /// The presignature's session id, under which the online round runs:
    /// known from construction; `None` once the step finished or failed.
    #[must_use]
    pub fn session_id(&self) -> Option<SessionId> {
        match self.driver.current()? {
            OnlineState::Init(init) => Some(SessionId(init.2.sid)),
            OnlineState::Partial(state) => Some(SessionId(state.sid)),
        }
    }
}

impl_protocol!(SchnorrOnline<'_> => SchnorrSignature);
