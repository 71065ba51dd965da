//! The transport's own messages: the frame kinds, the opening message that
//! names the operation, and the outcome message that ends a session.
//!
//! Every binary frame is `kind: u8 || body`:
//!
//! | kind | name | sent by | body |
//! |---|---|---|---|
//! | 1 | opening | client, first frame only | [`Opening`] |
//! | 2 | message | both | one `mpc_core::wire::Envelope`, exactly as encoded |
//! | 3 | outcome | both, last frame before the close | [`Outcome`] |
//!
//! Openings and outcomes are postcard records with a size cap and a
//! canonical decoding: a decoded value re-encodes to exactly its input, so
//! there is one encoding per value.

use core::fmt;

use mpc_core::derive::DerivationPath;
use mpc_core::wire::SessionId;
use mpc_core::{AbortClass, KeyId, Prehash, Taproot};
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};

use crate::error::{class_name, CloseCode};

/// The opening format version this build speaks.
pub const OPENING_VERSION: u8 = 1;

/// Largest encoded opening accepted, in bytes.
pub const MAX_OPENING_BYTES: usize = 512;

/// Deepest derivation path an opening may name.
pub const MAX_PATH_DEPTH: usize = 32;

/// Largest encoded outcome accepted, in bytes.
pub const MAX_OUTCOME_BYTES: usize = 256;

/// Longest reason text in an outcome or a close frame, in bytes (the
/// WebSocket limit for a close reason).
pub const MAX_REASON_BYTES: usize = 123;

/// What a binary frame carries (its first byte).
#[non_exhaustive]
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// The client's opening message.
    Opening = 1,
    /// One protocol message (an encoded envelope).
    Message = 2,
    /// The final outcome of one side.
    Outcome = 3,
}

impl FrameKind {
    /// The kind with this code, or `None`.
    #[must_use]
    pub const fn from_u8(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Opening),
            2 => Some(Self::Message),
            3 => Some(Self::Outcome),
            _ => None,
        }
    }

    /// The kind's code.
    #[must_use]
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

/// A frame of kind `kind` around `body`.
#[must_use]
pub fn encode_frame(kind: FrameKind, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(1 + body.len());
    frame.push(kind.as_u8());
    frame.extend_from_slice(body);
    frame
}

/// Splits a frame into its kind and body; `None` if it is empty or of an
/// unknown kind.
#[must_use]
pub fn decode_frame(frame: &[u8]) -> Option<(FrameKind, &[u8])> {
    let (&kind, body) = frame.split_first()?;
    Some((FrameKind::from_u8(kind)?, body))
}

/// Why an opening or outcome did not decode. The text is fixed and
/// secret-free.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for DecodeError {}

/// A session's public handle: 32 random bytes the client picks and sends in
/// its opening.
///
/// Both sides derive public protocol context from it: key generation and
/// refresh use it as their `context` ([`Opening::context`]), so their first
/// round is addressed to this session only.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionHandle(pub [u8; 32]);

impl SessionHandle {
    /// A fresh random handle.
    #[must_use]
    pub fn random(rng: &mut impl CryptoRngCore) -> Self {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }
}

impl fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionHandle({self})")
    }
}

/// The first eight bytes in hex, for logs.
impl fmt::Display for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0[..8] {
            write!(f, "{byte:02x}")?;
        }
        f.write_str("..")
    }
}

/// The operation a client asks for, with its public parameters.
///
/// New operations are appended as new variants, so older encodings stay
/// valid.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Two-party key generation ([`mpc_core::Dkg`]).
    Keygen,
    /// Signing `prehash` with the key `key_id` under `path`
    /// ([`mpc_core::Sign::with_path`]; the root path is
    /// [`mpc_core::Sign::new`]).
    Sign {
        /// The key.
        key_id: KeyId,
        /// The epoch of the client's share: the server signs with its share
        /// of the same epoch (after a cut refresh it may hold two).
        epoch: u64,
        /// The 32-byte hash to sign.
        prehash: Prehash,
        /// The BIP32 non-hardened path below the key (at most
        /// [`MAX_PATH_DEPTH`] levels).
        path: DerivationPath,
    },
    /// Presigning with the key `key_id` under `path`
    /// ([`mpc_core::Presign::with_path`]).
    Presign {
        /// The key.
        key_id: KeyId,
        /// The epoch of the client's share.
        epoch: u64,
        /// The BIP32 non-hardened path below the key (at most
        /// [`MAX_PATH_DEPTH`] levels).
        path: DerivationPath,
    },
    /// The online step of the presignature `presignature` (its presigning
    /// session id) of key `key_id`, for `prehash` ([`mpc_core::OnlineSign`]).
    OnlineSign {
        /// The key.
        key_id: KeyId,
        /// The presignature's session id
        /// ([`Presignature::session_id`](mpc_core::Presignature::session_id)).
        presignature: SessionId,
        /// The 32-byte hash to sign.
        prehash: Prehash,
    },
    /// Share refresh of key `key_id` ([`mpc_core::Refresh`], with
    /// [`Opening::context`] as its context). A server that does not run it
    /// answers [`CloseCode::UNSUPPORTED_OPERATION`].
    Refresh {
        /// The key.
        key_id: KeyId,
        /// The epoch of the client's share, which the refresh starts from.
        epoch: u64,
    },
    /// Two-party BIP340 Schnorr signing of `message` with the key `key_id`
    /// under `path`, with the output tweak `taproot`
    /// ([`mpc_core::SignSchnorr`], PROTOCOL.md §20).
    SignSchnorr {
        /// The key.
        key_id: KeyId,
        /// The epoch of the client's share.
        epoch: u64,
        /// The 32-byte message (a BIP341 signature hash for Taproot).
        message: [u8; 32],
        /// The BIP32 non-hardened path below the key (at most
        /// [`MAX_PATH_DEPTH`] levels).
        path: DerivationPath,
        /// The BIP341 output tweak, if any.
        taproot: Taproot,
    },
    /// The BIP340 nonce round run ahead of the message, for the key
    /// `key_id` under `path` with the output tweak `taproot`
    /// ([`mpc_core::SchnorrPresign`], PROTOCOL.md §20.5).
    PresignSchnorr {
        /// The key.
        key_id: KeyId,
        /// The epoch of the client's share.
        epoch: u64,
        /// The BIP32 non-hardened path below the key (at most
        /// [`MAX_PATH_DEPTH`] levels).
        path: DerivationPath,
        /// The BIP341 output tweak, if any.
        taproot: Taproot,
    },
    /// The online round of the Schnorr presignature `presignature` (its
    /// session id) of key `key_id`, for `message`
    /// ([`mpc_core::SchnorrOnline`], PROTOCOL.md §20.5). `path` and
    /// `taproot` must be the presignature's.
    OnlineSignSchnorr {
        /// The key.
        key_id: KeyId,
        /// The presignature's session id
        /// ([`SchnorrPresignature::session_id`](mpc_core::SchnorrPresignature::session_id)).
        presignature: SessionId,
        /// The 32-byte message (a BIP341 signature hash for Taproot).
        message: [u8; 32],
        /// The path the presignature was made for.
        path: DerivationPath,
        /// The output tweak the presignature was made for.
        taproot: Taproot,
    },
}

impl Operation {
    /// A short name, for logs.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Keygen => "keygen",
            Self::Sign { .. } => "sign",
            Self::Presign { .. } => "presign",
            Self::OnlineSign { .. } => "online-sign",
            Self::Refresh { .. } => "refresh",
            Self::SignSchnorr { .. } => "sign-bip340",
            Self::PresignSchnorr { .. } => "presign-bip340",
            Self::OnlineSignSchnorr { .. } => "online-sign-bip340",
        }
    }

    /// The key the operation uses, if any.
    #[must_use]
    pub const fn key_id(&self) -> Option<&KeyId> {
        match self {
            Self::Keygen => None,
            Self::Sign { key_id, .. }
            | Self::Presign { key_id, .. }
            | Self::OnlineSign { key_id, .. }
            | Self::Refresh { key_id, .. }
            | Self::SignSchnorr { key_id, .. }
            | Self::PresignSchnorr { key_id, .. }
            | Self::OnlineSignSchnorr { key_id, .. } => Some(key_id),
        }
    }
}

/// The client's first frame: which operation, in which session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opening {
    /// The session's handle.
    pub session: SessionHandle,
    /// What to run.
    pub operation: Operation,
}

#[derive(Serialize, Deserialize)]
enum WireOperation {
    Keygen,
    Sign {
        key_id: [u8; 32],
        epoch: u64,
        prehash: [u8; 32],
        path: Vec<u32>,
    },
    Presign {
        key_id: [u8; 32],
        epoch: u64,
        path: Vec<u32>,
    },
    OnlineSign {
        key_id: [u8; 32],
        presignature: [u8; 32],
        prehash: [u8; 32],
    },
    Refresh {
        key_id: [u8; 32],
        epoch: u64,
    },
    SignSchnorr {
        key_id: [u8; 32],
        epoch: u64,
        message: [u8; 32],
        path: Vec<u32>,
        taproot: WireTaproot,
    },
    PresignSchnorr {
        key_id: [u8; 32],
        epoch: u64,
        path: Vec<u32>,
        taproot: WireTaproot,
    },
    OnlineSignSchnorr {
        key_id: [u8; 32],
        presignature: [u8; 32],
        message: [u8; 32],
        path: Vec<u32>,
        taproot: WireTaproot,
    },
}

#[derive(Serialize, Deserialize)]
enum WireTaproot {
    Off,
    KeyPathOnly,
    MerkleRoot([u8; 32]),
}

impl WireTaproot {
    fn from_core(taproot: Taproot) -> Self {
        match taproot {
            Taproot::KeyPathOnly => Self::KeyPathOnly,
            Taproot::MerkleRoot(root) => Self::MerkleRoot(root),
            Taproot::Off => Self::Off,
        }
    }

    fn to_core(&self) -> Taproot {
        match self {
            Self::Off => Taproot::Off,
            Self::KeyPathOnly => Taproot::KeyPathOnly,
            Self::MerkleRoot(root) => Taproot::MerkleRoot(*root),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct WireOpening {
    version: u8,
    session: [u8; 32],
    operation: WireOperation,
}

impl Opening {
    /// An opening for `operation` with a fresh random session handle.
    #[must_use]
    pub fn new(operation: Operation, rng: &mut impl CryptoRngCore) -> Self {
        Self {
            session: SessionHandle::random(rng),
            operation,
        }
    }

    /// The public context both parties pass to [`mpc_core::Dkg::new`]
    /// (keygen) or [`mpc_core::Refresh::new`] (refresh): the session handle.
    #[must_use]
    pub fn context(&self) -> &[u8] {
        &self.session.0
    }

    fn to_wire(&self) -> WireOpening {
        let operation = match &self.operation {
            Operation::Keygen => WireOperation::Keygen,
            Operation::Sign {
                key_id,
                epoch,
                prehash,
                path,
            } => WireOperation::Sign {
                key_id: key_id.0,
                epoch: *epoch,
                prehash: *prehash.as_bytes(),
                path: path.indices().to_vec(),
            },
            Operation::Presign {
                key_id,
                epoch,
                path,
            } => WireOperation::Presign {
                key_id: key_id.0,
                epoch: *epoch,
                path: path.indices().to_vec(),
            },
            Operation::OnlineSign {
                key_id,
                presignature,
                prehash,
            } => WireOperation::OnlineSign {
                key_id: key_id.0,
                presignature: presignature.0,
                prehash: *prehash.as_bytes(),
            },
            Operation::Refresh { key_id, epoch } => WireOperation::Refresh {
                key_id: key_id.0,
                epoch: *epoch,
            },
            Operation::SignSchnorr {
                key_id,
                epoch,
                message,
                path,
                taproot,
            } => WireOperation::SignSchnorr {
                key_id: key_id.0,
                epoch: *epoch,
                message: *message,
                path: path.indices().to_vec(),
                taproot: WireTaproot::from_core(*taproot),
            },
            Operation::PresignSchnorr {
                key_id,
                epoch,
                path,
                taproot,
            } => WireOperation::PresignSchnorr {
                key_id: key_id.0,
                epoch: *epoch,
                path: path.indices().to_vec(),
                taproot: WireTaproot::from_core(*taproot),
            },
            Operation::OnlineSignSchnorr {
                key_id,
                presignature,
                message,
                path,
                taproot,
            } => WireOperation::OnlineSignSchnorr {
                key_id: key_id.0,
                presignature: presignature.0,
                message: *message,
                path: path.indices().to_vec(),
                taproot: WireTaproot::from_core(*taproot),
            },
        };
        WireOpening {
            version: OPENING_VERSION,
            session: self.session.0,
            operation,
        }
    }

    /// The canonical encoding (the body of an opening frame).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        // Serializing fixed-size fields into a growable buffer cannot fail;
        // were it ever to, the empty result is an opening no peer accepts.
        postcard::to_allocvec(&self.to_wire()).unwrap_or_default()
    }

    /// Decodes a canonical opening.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] if `bytes` is longer than [`MAX_OPENING_BYTES`], is
    /// not of version [`OPENING_VERSION`], does not decode, has trailing
    /// bytes, names a path deeper than [`MAX_PATH_DEPTH`] or with a hardened
    /// index, or is not the canonical encoding of what it decodes to.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_OPENING_BYTES {
            return Err(DecodeError("opening too long"));
        }
        match bytes.first() {
            None => return Err(DecodeError("empty opening")),
            Some(&OPENING_VERSION) => {}
            Some(_) => return Err(DecodeError("unsupported opening version")),
        }
        let (wire, rest) = postcard::take_from_bytes::<WireOpening>(bytes)
            .map_err(|_| DecodeError("malformed opening"))?;
        if !rest.is_empty() {
            return Err(DecodeError("trailing bytes after the opening"));
        }
        let operation = match wire.operation {
            WireOperation::Keygen => Operation::Keygen,
            WireOperation::Sign {
                key_id,
                epoch,
                prehash,
                path,
            } => Operation::Sign {
                key_id: KeyId(key_id),
                epoch,
                prehash: Prehash::from_bytes(prehash),
                path: decode_path(&path)?,
            },
            WireOperation::Presign {
                key_id,
                epoch,
                path,
            } => Operation::Presign {
                key_id: KeyId(key_id),
                epoch,
                path: decode_path(&path)?,
            },
            WireOperation::OnlineSign {
                key_id,
                presignature,
                prehash,
            } => Operation::OnlineSign {
                key_id: KeyId(key_id),
                presignature: SessionId(presignature),
                prehash: Prehash::from_bytes(prehash),
            },
            WireOperation::Refresh { key_id, epoch } => Operation::Refresh {
                key_id: KeyId(key_id),
                epoch,
            },
            WireOperation::SignSchnorr {
                key_id,
                epoch,
                message,
                path,
                taproot,
            } => Operation::SignSchnorr {
                key_id: KeyId(key_id),
                epoch,
                message,
                path: decode_path(&path)?,
                taproot: taproot.to_core(),
            },
            WireOperation::PresignSchnorr {
                key_id,
                epoch,
                path,
                taproot,
            } => Operation::PresignSchnorr {
                key_id: KeyId(key_id),
                epoch,
                path: decode_path(&path)?,
                taproot: taproot.to_core(),
            },
            WireOperation::OnlineSignSchnorr {
                key_id,
                presignature,
                message,
                path,
                taproot,
            } => Operation::OnlineSignSchnorr {
                key_id: KeyId(key_id),
                presignature: SessionId(presignature),
                message,
                path: decode_path(&path)?,
                taproot: taproot.to_core(),
            },
        };
        let opening = Self {
            session: SessionHandle(wire.session),
            operation,
        };
        if opening.encode() != bytes {
            return Err(DecodeError("non-canonical opening"));
        }
        Ok(opening)
    }
}

fn decode_path(indices: &[u32]) -> Result<DerivationPath, DecodeError> {
    if indices.len() > MAX_PATH_DEPTH {
        return Err(DecodeError("derivation path too deep"));
    }
    DerivationPath::from_indices(indices).map_err(|_| DecodeError("hardened derivation index"))
}

/// How one side's part of a session ended: the body of its last frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The protocol finished on this side (and the server stored what it
    /// had to store).
    Ok,
    /// The session failed on this side; a close frame with the same code
    /// follows.
    Failed {
        /// The close code.
        code: CloseCode,
        /// The class of the protocol error, when a protocol error caused it.
        class: Option<AbortClass>,
        /// A short secret-free reason, at most [`MAX_REASON_BYTES`] bytes.
        reason: String,
    },
}

#[derive(Serialize, Deserialize)]
enum WireOutcome {
    Ok,
    Failed {
        code: u16,
        class: u8,
        reason: String,
    },
}

fn class_code(class: Option<AbortClass>) -> u8 {
    match class {
        None => 0,
        Some(AbortClass::Ignore) => 1,
        Some(AbortClass::Abort) => 2,
        Some(AbortClass::Ban) => 3,
        Some(AbortClass::Local) => 4,
        // A class this build does not know: report none rather than a
        // wrong one; the close code still says what happened.
        Some(_) => 0,
    }
}

fn class_from_code(code: u8) -> Result<Option<AbortClass>, DecodeError> {
    match code {
        0 => Ok(None),
        1 => Ok(Some(AbortClass::Ignore)),
        2 => Ok(Some(AbortClass::Abort)),
        3 => Ok(Some(AbortClass::Ban)),
        4 => Ok(Some(AbortClass::Local)),
        _ => Err(DecodeError("unknown error class in outcome")),
    }
}

/// `text` cut to at most `max` bytes on a character boundary.
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Outcome {
    /// A failure caused by the protocol error `error`: the close code of
    /// its class and its secret-free description.
    #[must_use]
    pub fn from_protocol_error(error: mpc_core::Error) -> Self {
        let class = error.class();
        Self::Failed {
            code: CloseCode::for_class(class).unwrap_or(CloseCode::PROTOCOL_ABORT),
            class: Some(class),
            reason: format!("{}: {}", class_name(class), error.as_str()),
        }
    }

    /// The canonical encoding (the body of an outcome frame). A reason
    /// longer than [`MAX_REASON_BYTES`] is cut.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let wire = match self {
            Self::Ok => WireOutcome::Ok,
            Self::Failed {
                code,
                class,
                reason,
            } => WireOutcome::Failed {
                code: code.0,
                class: class_code(*class),
                reason: truncate(reason, MAX_REASON_BYTES).to_owned(),
            },
        };
        postcard::to_allocvec(&wire).unwrap_or_default()
    }

    /// Decodes a canonical outcome.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] if `bytes` is longer than [`MAX_OUTCOME_BYTES`], does
    /// not decode, has trailing bytes, names an unknown class, has a reason
    /// over [`MAX_REASON_BYTES`], or is not canonical.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_OUTCOME_BYTES {
            return Err(DecodeError("outcome too long"));
        }
        let (wire, rest) = postcard::take_from_bytes::<WireOutcome>(bytes)
            .map_err(|_| DecodeError("malformed outcome"))?;
        if !rest.is_empty() {
            return Err(DecodeError("trailing bytes after the outcome"));
        }
        let outcome = match wire {
            WireOutcome::Ok => Self::Ok,
            WireOutcome::Failed {
                code,
                class,
                reason,
            } => {
                if reason.len() > MAX_REASON_BYTES {
                    return Err(DecodeError("outcome reason too long"));
                }
                Self::Failed {
                    code: CloseCode(code),
                    class: class_from_code(class)?,
                    reason,
                }
            }
        };
        if outcome.encode() != bytes {
            return Err(DecodeError("non-canonical outcome"));
        }
        Ok(outcome)
    }
}

#[cfg(test)]
#[path = "opening_tests.rs"]
mod tests;
