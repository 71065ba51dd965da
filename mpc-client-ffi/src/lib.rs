//! UniFFI bindings of the [`mpc_client`] wallet (the device side, party A,
//! of the two-party ECDSA signer) for Swift, Kotlin and Python.
//!
//! The interface is declared with UniFFI's proc-macros (no UDL):
//! [`Wallet`] with async methods (Swift `async`, Kotlin `suspend`, Python
//! coroutines), the records [`KeyInfo`] and [`Signature`], the
//! [`ExportedKey`] object, the typed errors [`WalletError`] and
//! [`StoreError`], and the [`ShareStore`] trait that foreign code
//! implements to keep the sealed blobs where it likes (Keychain, Keystore,
//! a database); [`file_store`] and [`memory_store`] are the Rust ones.
//!
//! The wallet's futures run on this library's own tokio runtime (two
//! worker threads, started on first use); the foreign future awaits the
//! result. Cancelling it on the foreign side does not stop an operation
//! already started: it runs to its end, so that a refresh or a presigning
//! batch is never cut between the server's and the store's writes by an
//! app's cancellation.
//!
//! Bindings are generated from the built library by
//! `scripts/bindings.sh`; the README shows the Swift and Kotlin calls.
//! Written for `aarch64-apple-ios` and `aarch64-linux-android`; built and
//! tested here on Linux only (Python).
//!
//! No secret (token, storage key, exported key) appears in a `Debug` or
//! `Display` string, nor in a generated record's string form: the
//! exported key is an object whose bytes are read by a method.

uniffi::setup_scaffolding!();

mod error;
mod runtime;
mod schnorr;
mod store;
mod wallet;

pub use error::{StoreError, WalletError};
pub use schnorr::{SchnorrSignature, Taproot};
pub use store::{file_store, memory_store, ShareStore};
pub use wallet::{verify_backup, ExportedKey, KeyInfo, Signature, Wallet};
