//! Two-party BIP340 Schnorr signing through the bindings (PROTOCOL.md §20).

use std::sync::Arc;

use crate::error::WalletError;
use crate::runtime::run;
use crate::wallet::{fixed, Wallet};

/// The BIP341 Taproot tweak a BIP340 signature is made for.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum Taproot {
    /// No tweak: the signature verifies under the (derived) key itself.
    Off,
    /// The output key of a key-path-only output (no script tree, as BIP86).
    KeyPathOnly,
    /// The output key committing to a script tree with this merkle root.
    MerkleRoot {
        /// The 32-byte merkle root.
        root: Vec<u8>,
    },
}

/// A BIP340 signature with the keys it belongs to, checked by the wallet.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SchnorrSignature {
    /// The (derived) key before any Taproot tweak, SEC1 compressed.
    pub public_key: Vec<u8>,
    /// The x-only internal key (32 bytes).
    pub internal_key: Vec<u8>,
    /// The x-only key it verifies under (32 bytes): the Taproot output key
    /// with a tweak, else the internal key.
    pub output_key: Vec<u8>,
    /// The signed 32-byte message (a BIP341 signature hash for Taproot).
    pub message: Vec<u8>,
    /// `x(R) || s` (64 bytes).
    pub signature: Vec<u8>,
}

impl From<mpc_client::SchnorrSignature> for SchnorrSignature {
    fn from(signed: mpc_client::SchnorrSignature) -> Self {
        Self {
            public_key: signed.public_key.to_vec(),
            internal_key: signed.internal_key.to_vec(),
            output_key: signed.output_key.to_vec(),
            message: signed.message.to_vec(),
            signature: signed.signature.to_vec(),
        }
    }
}

#[uniffi::export]
impl Wallet {
    /// Signs the 32-byte `message` with BIP340 Schnorr, under the BIP32
    /// `path` (non-hardened) if given and for the `taproot` output key.
    ///
    /// # Errors
    ///
    /// [`WalletError::InvalidInput`] for a message or merkle root that is
    /// not 32 bytes, a bad key id or path, or a tweak BIP341 rejects;
    /// otherwise as [`Wallet::sign`].
    pub async fn sign_schnorr(
        &self,
        key_id: String,
        message: Vec<u8>,
        path: Option<String>,
        taproot: Taproot,
    ) -> Result<SchnorrSignature, WalletError> {
        let message = fixed::<32>(&message, "the message")?;
        let taproot = match taproot {
            Taproot::Off => mpc_client::Taproot::Off,
            Taproot::KeyPathOnly => mpc_client::Taproot::KeyPathOnly,
            Taproot::MerkleRoot { root } => {
                mpc_client::Taproot::MerkleRoot(fixed::<32>(&root, "the merkle root")?)
            }
        };
        let inner = Arc::clone(&self.inner);
        run(async move {
            inner
                .sign_schnorr(&key_id, message, path.as_deref(), taproot)
                .await
                .map(SchnorrSignature::from)
        })
        .await
    }
}
