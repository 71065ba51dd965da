//! The device side (party A) of the two-party ECDSA signer (DKLs23): a
//! [`Wallet`] that keeps its key shares, sealed, in a [`ShareStore`] and
//! runs key generation, signing (optionally under a BIP32 path),
//! presigning into a local pool and online signing from it, share refresh
//! with the durability of PROTOCOL.md §18.1, export of the full key and
//! verification of the server's backups, against `mpc-server` over
//! `mpc-transport-ws` (WebSocket) and its REST API.
//!
//! ```no_run
//! # async fn example() -> Result<(), mpc_client::ClientError> {
//! use std::sync::Arc;
//! use mpc_client::{FileStore, Wallet, WalletConfig};
//! use zeroize::Zeroizing;
//!
//! let store = Arc::new(FileStore::open("/path/to/private/dir")?);
//! let wallet = Wallet::new(
//!     WalletConfig {
//!         server_url: "wss://signer.example/v1/session".into(),
//!         rest_url: "https://signer.example".into(),
//!         token: Zeroizing::new("<bearer token>".into()),
//!         // From the Keychain / Keystore.
//!         storage_key: Zeroizing::new([0u8; 32]),
//!     },
//!     store,
//! )?;
//! let key = wallet.keygen().await?;
//! let signature = wallet.sign(&key.key_id, [7u8; 32], Some("m/0/5")).await?;
//! # let _ = signature;
//! # Ok(())
//! # }
//! ```
//!
//! # Storage
//!
//! Every secret blob (shares, presignatures) is sealed with
//! XChaCha20-Poly1305 under the caller's 32-byte storage key, with the
//! entry name as associated data, before it reaches the store; see
//! `layout` in the source for the names. A tampered, truncated, moved or
//! foreign blob gives [`ClientError::Corrupt`].
//!
//! # Mobile
//!
//! Written for `aarch64-apple-ios` and `aarch64-linux-android` (not built
//! here): no `std::process`, no file-system use outside [`FileStore`], TLS
//! by rustls. The [`ShareStore`] calls are synchronous and made on the
//! async paths, so an implementation must be quick (a small file or a
//! Keychain call), or the caller runs wallet calls under `spawn_blocking`.
//!
//! Secrets are zeroized on drop; `Debug` shows no token, storage key,
//! share or exported key.

mod backup;
mod error;
mod export;
mod layout;
mod presign;
mod refresh;
mod schnorr;
mod seal;
mod store;
mod wallet;

pub use backup::{verify_backup, verify_backup_in_store};
pub use error::{ClientError, StoreError};
pub use schnorr::{SchnorrSignature, Taproot};
pub use store::{check_name, FileStore, MemoryStore, ShareStore, MAX_ENTRY_BYTES};
pub use wallet::{ExportedKey, KeyInfo, Signature, Wallet, WalletConfig};
