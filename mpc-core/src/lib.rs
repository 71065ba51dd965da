//! Sans-IO two-party ECDSA (DKLs23) over secp256k1.
//!
//! Every protocol in this crate is a state machine: bytes in, bytes out. The
//! crate does no I/O, reads no clock and contains no `unsafe` code; the
//! caller supplies randomness (`rand_core::CryptoRng`) and moves messages.
//!
//! The normative specification is `docs/PROTOCOL.md` at the repository root;
//! comments of the form `PROTOCOL.md §N` cite its sections.
//!
//! Layers, bottom up:
//! - [`transcript`]: SHA-256 hashing with length prefixes and versioned tags
//!   (§2);
//! - [`wire`]: the versioned message envelope and checked encodings of points
//!   and scalars (§3);
//! - [`protocol`]: the one driving shape every protocol shares (§12);
//! - [`dkg`]: two-party key generation (§13), giving a [`KeyShare`];
//! - [`sign`]: signing, presigning and the online step (§14);
//! - [`schnorr`]: two-party BIP340 Schnorr signing with BIP32 and Taproot
//!   tweaks (§20);
//! - [`hazmat`]: the oblivious-transfer stack (base OT, SoftSpokenOT, RVOLE)
//!   that the signing protocol's multiplication is built on (§4-§7). Misuse of
//!   these primitives (reusing a batch, skipping a check) leaks keys.
#![no_std]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

// `vec!` in scope crate-wide (the code itself imports what it uses), so
// that mutation testing's "return an empty / one-element Vec" mutants
// compile and are tested instead of counting as unviable (docs/mutants.md).
#[allow(unused_imports)]
#[macro_use]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod backup;
mod ct;
pub mod derive;
pub mod dkg;
pub mod error;
pub mod export;
pub mod hazmat;
mod keygen;
pub mod keyshare;
pub mod local;
pub mod params;
mod proof;
pub mod protocol;
pub mod refresh;
pub mod schnorr;
pub mod sign;
pub mod transcript;
pub mod wire;

pub use derive::{DerivationPath, ExtendedPublicKey};
pub use dkg::Dkg;
pub use error::{AbortClass, Error};
pub use keyshare::{KeyId, KeyShare};
pub use protocol::{Protocol, Step};
pub use refresh::Refresh;
pub use schnorr::{
    SchnorrOnline, SchnorrPresign, SchnorrPresignature, SchnorrSignature, SignSchnorr, Taproot,
};
pub use sign::{
    ClaimRefused, ClaimSet, OnlineSign, Prehash, Presign, Presignature, PresignatureGuard, Sign,
    SignatureOutput,
};
