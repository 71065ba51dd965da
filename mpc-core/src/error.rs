//! Typed protocol errors and their abort classes (PROTOCOL.md §8).
//!
//! Every error names what failed, never a secret, and maps to one
//! [`AbortClass`] that tells the caller what to do with the session and the
//! key: drop the message, end the session, or burn the key's OT material.

use core::fmt;

/// What an error means for the session and for the key (PROTOCOL.md §8).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AbortClass {
    /// The message was not meant for this session state (wrong session,
    /// round, protocol or sender, or an unreadable envelope). Drop it, blame
    /// nobody: anyone on the network can produce such bytes.
    Ignore,
    /// The peer sent a well-addressed message that fails a check on public
    /// data. The session ends; the key material is untouched.
    Abort,
    /// The peer deviated in a way that may reveal bits of long-term secret
    /// OT correlations if retried (selective abort). The session ends and
    /// the key's OT material must be burned until a refresh.
    Ban,
    /// The local caller misused the API (e.g. called a finished protocol).
    Local,
}

/// Every error `mpc-core` returns.
///
/// Errors carry no payload that could hold secret data; comparing them is
/// cheap and they can be stored as the sticky state of a failed protocol.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    // ---- Ignore: envelope and addressing (PROTOCOL.md §3.3) ----
    /// The envelope's format version is not one this build speaks.
    UnsupportedVersion,
    /// The envelope names a different protocol.
    WrongProtocol,
    /// The envelope's session id is not this session's.
    WrongSession,
    /// The envelope's round is not the one expected now.
    WrongRound,
    /// The envelope claims a sender role that is not the peer's.
    WrongSender,
    /// The encoded message exceeds the size limit for its protocol and round.
    MessageTooLarge,
    /// The envelope bytes do not decode canonically.
    MalformedEnvelope,

    // ---- Abort: malformed or failing public data ----
    /// A payload has the wrong length for its message type.
    WrongLength,
    /// A payload does not decode as its message type.
    MalformedPayload,
    /// A point encoding is not a 33-byte SEC1 compressed point on the curve.
    InvalidPoint,
    /// A point is the identity where the protocol forbids it.
    IdentityPoint,
    /// A scalar encoding is not canonical (its value is `>= q`).
    NonCanonicalScalar,
    /// A scalar is zero where the protocol forbids it.
    ZeroScalar,
    /// A base-OT value `M = r + Hp(...)` was the identity.
    DegenerateBaseOt,
    /// The GGM (all-but-one) tree proof of the OT-extension setup failed
    /// (DKG or refresh). A malicious peer learns one choice bit per try
    /// (PROTOCOL.md §5.3): count repeated failures with one peer.
    PprfProofFailed,
    /// A commitment's opening does not match the commitment.
    CommitmentMismatch,
    /// A proof of knowledge of a discrete log does not verify.
    InvalidProof,
    /// The parties disagree on the key (public key, chain code or OT setup).
    KeyConfirmationFailed,
    /// The peer signs a different prehash.
    PrehashMismatch,
    /// The sum of nonce or inversion shares is zero, or `r = 0`.
    DegenerateSignature,
    /// The peer's BIP340 partial signature does not verify against its
    /// public share and nonces (PROTOCOL.md §20). No secret is involved in
    /// the check, so this only aborts.
    InvalidPartialSignature,

    // ---- Local: misuse, stored data ----
    /// The protocol has already finished; it takes no more messages.
    AlreadyFinished,
    /// The protocol's first message was already produced.
    AlreadyStarted,
    /// A message arrived before the protocol was started.
    NotStarted,
    /// A key share encoding is of an older or unknown format version.
    UnsupportedShareVersion,
    /// A key share (or presignature) does not decode or is inconsistent
    /// (e.g. `x_i * G` does not match its public share).
    MalformedKeyShare,
    /// A key share belongs to another key, epoch or role than expected.
    KeyMismatch,
    /// An in-process run stopped with both parties waiting.
    Stalled,
    /// A hardened BIP32 index: impossible without the full private key.
    HardenedDerivation,
    /// A BIP32 derivation path does not parse.
    InvalidDerivationPath,
    /// A BIP32 step gives `IL >= n` or the identity (skip that index).
    InvalidDerivation,
    /// An extended public key string does not decode.
    InvalidExtendedKey,
    /// An export ciphertext does not decrypt for this key, epoch and
    /// one-time key (or encryption failed).
    ExportFailed,
    /// The exported share and the own share do not combine to the public key.
    ExportMismatch,
    /// A backup's proof does not verify for this public share and recovery
    /// key.
    InvalidBackup,
    /// No row of a backup decrypts to the share with this recovery secret.
    BackupDecryptionFailed,
    /// The key's OT material was burned after a ban; refresh before signing.
    OtMaterialBurned,
    /// The [`PresignatureGuard`](crate::sign::PresignatureGuard) refused to
    /// claim the presignature (it was claimed before, or the claim could not
    /// be recorded); no round-4 message was produced (PROTOCOL.md §14.3).
    PresignatureClaimRefused,
    /// A BIP341 Taproot tweak is not below the group order or gives the
    /// identity (PROTOCOL.md §20).
    InvalidTweak,

    // ---- Ban: checks whose failure can leak correlated secrets ----
    /// The SoftSpokenOT consistency check failed: the OT-extension receiver
    /// deviated.
    OtExtensionCheckFailed,
    /// The RVOLE `mu` check failed: the RVOLE sender deviated.
    RvoleCheckFailed,
    /// A Gamma check of the signing protocol failed: the peer's RVOLE input
    /// differs from its committed nonce or its public key share.
    GammaCheckFailed,
    /// The assembled signature does not verify: the peer sent a wrong share.
    SignatureVerificationFailed,
}

impl Error {
    /// The abort class of this error (PROTOCOL.md §8).
    #[must_use]
    pub const fn class(&self) -> AbortClass {
        match self {
            Self::UnsupportedVersion
            | Self::WrongProtocol
            | Self::WrongSession
            | Self::WrongRound
            | Self::WrongSender
            | Self::MessageTooLarge
            | Self::MalformedEnvelope => AbortClass::Ignore,
            Self::WrongLength
            | Self::MalformedPayload
            | Self::InvalidPoint
            | Self::IdentityPoint
            | Self::NonCanonicalScalar
            | Self::ZeroScalar
            | Self::DegenerateBaseOt
            | Self::PprfProofFailed
            | Self::CommitmentMismatch
            | Self::InvalidProof
            | Self::KeyConfirmationFailed
            | Self::PrehashMismatch
            | Self::DegenerateSignature
            | Self::InvalidPartialSignature => AbortClass::Abort,
            Self::OtExtensionCheckFailed
            | Self::RvoleCheckFailed
            | Self::GammaCheckFailed
            | Self::SignatureVerificationFailed => AbortClass::Ban,
            Self::AlreadyFinished
            | Self::AlreadyStarted
            | Self::NotStarted
            | Self::UnsupportedShareVersion
            | Self::MalformedKeyShare
            | Self::KeyMismatch
            | Self::Stalled
            | Self::HardenedDerivation
            | Self::InvalidDerivationPath
            | Self::InvalidDerivation
            | Self::InvalidExtendedKey
            | Self::ExportFailed
            | Self::ExportMismatch
            | Self::InvalidBackup
            | Self::BackupDecryptionFailed
            | Self::OtMaterialBurned
            | Self::PresignatureClaimRefused
            | Self::InvalidTweak => AbortClass::Local,
        }
    }

    /// A short, stable, secret-free description.
    #[must_use]
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::UnsupportedVersion => "unsupported wire format version",
            Self::WrongProtocol => "message for another protocol",
            Self::WrongSession => "message for another session",
            Self::WrongRound => "message for another round",
            Self::WrongSender => "message from an unexpected sender role",
            Self::MessageTooLarge => "message exceeds the size limit",
            Self::MalformedEnvelope => "malformed envelope",
            Self::WrongLength => "payload has the wrong length",
            Self::MalformedPayload => "malformed payload",
            Self::InvalidPoint => "invalid point encoding",
            Self::IdentityPoint => "identity point",
            Self::NonCanonicalScalar => "non-canonical scalar",
            Self::ZeroScalar => "zero scalar",
            Self::DegenerateBaseOt => "degenerate base OT message",
            Self::PprfProofFailed => {
                "OT setup GGM-tree (PPRF) proof failed: the peer's trees are inconsistent \
                 (repeated failures with one peer probe the setup's choice bits, \
                 PROTOCOL.md 5.3)"
            }
            Self::OtExtensionCheckFailed => "OT extension consistency check failed",
            Self::RvoleCheckFailed => "RVOLE consistency check failed",
            Self::CommitmentMismatch => "commitment opening does not match",
            Self::InvalidProof => "invalid proof of knowledge",
            Self::KeyConfirmationFailed => "key confirmation failed",
            Self::PrehashMismatch => "peer signs a different prehash",
            Self::DegenerateSignature => "degenerate nonce or signature value",
            Self::InvalidPartialSignature => "peer's partial signature does not verify",
            Self::InvalidTweak => "invalid Taproot tweak",
            Self::AlreadyFinished => "protocol already finished",
            Self::AlreadyStarted => "protocol already started",
            Self::NotStarted => "protocol not started",
            Self::UnsupportedShareVersion => "unsupported key share format version",
            Self::MalformedKeyShare => "malformed or inconsistent key share",
            Self::KeyMismatch => "key share for another key, epoch or role",
            Self::Stalled => "in-process run stalled",
            Self::HardenedDerivation => "hardened derivation needs the private key",
            Self::InvalidDerivationPath => "invalid derivation path",
            Self::InvalidDerivation => "derivation gives an invalid key at this index",
            Self::InvalidExtendedKey => "invalid extended public key",
            Self::ExportFailed => {
                "export ciphertext does not decrypt for this key and one-time key"
            }
            Self::ExportMismatch => "exported share does not combine to the public key",
            Self::InvalidBackup => "backup proof does not verify",
            Self::BackupDecryptionFailed => "backup does not decrypt to the share",
            Self::OtMaterialBurned => "OT material burned: refresh before signing",
            Self::PresignatureClaimRefused => "presignature store refused the claim: used before",
            Self::GammaCheckFailed => "Gamma check failed",
            Self::SignatureVerificationFailed => "assembled signature does not verify",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:?})", self.as_str(), self.class())
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

/// Result type of this crate.
pub type Result<T> = core::result::Result<T, Error>;
