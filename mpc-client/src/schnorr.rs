//! Two-party BIP340 Schnorr signing from the wallet (PROTOCOL.md §20): at
//! the root key, under a BIP32 path, and for a BIP341 Taproot output key.

use mpc_core::schnorr::{signing_keys, verify};
use mpc_core::{DerivationPath, KeyShare};

pub use mpc_core::Taproot;

use crate::error::ClientError;
use crate::layout::key_id_arg;
use crate::wallet::{compressed, parse_path, Wallet};

/// A BIP340 signature with the keys it belongs to, checked by the wallet
/// before it is returned.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SchnorrSignature {
    /// The (derived) key, SEC1 compressed: the key at the path, before any
    /// Taproot tweak.
    pub public_key: [u8; 33],
    /// The x-only key the signature verifies under: the Taproot output key
    /// with a Taproot tweak, else the (derived) key.
    pub output_key: [u8; 32],
    /// The x-only internal key: the (derived) key before any Taproot tweak.
    pub internal_key: [u8; 32],
    /// The 32-byte message signed (a BIP341 signature hash for Taproot).
    pub message: [u8; 32],
    /// `x(R) || s`, as BIP340 serialises it.
    pub signature: [u8; 64],
}

impl Wallet {
    /// Signs the 32-byte `message` with BIP340 Schnorr, with the key's
    /// current share, under the BIP32 child at `path` (non-hardened, e.g.
    /// `m/0/5`; the root key if `None`) and for the Taproot output key
    /// `taproot` asks for. The signature is verified here under the output
    /// key the wallet computes from its own share before it is returned.
    ///
    /// # Errors
    ///
    /// [`ClientError::InvalidInput`] for a bad key id, path or a Taproot
    /// tweak BIP341 rejects; [`ClientError::OtMaterialBurned`] after a ban
    /// until a refresh; the server's refusals (revoked, banned, ...) as
    /// their variants; [`ClientError::Protocol`] if the peer deviated
    /// (after a ban-class error the share's OT material is burned, as for
    /// ECDSA).
    pub async fn sign_schnorr(
        &self,
        key_id: &str,
        message: [u8; 32],
        path: Option<&str>,
        taproot: Taproot,
    ) -> Result<SchnorrSignature, ClientError> {
        let key_id = key_id_arg(key_id)?;
        let path = parse_path(path)?;
        self.on_common_epoch(&key_id, |share| {
            self.sign_schnorr_with(share, message, &path, taproot)
        })
        .await
    }

    async fn sign_schnorr_with(
        &self,
        mut share: KeyShare,
        message: [u8; 32],
        path: &DerivationPath,
        taproot: Taproot,
    ) -> Result<SchnorrSignature, ClientError> {
        if share.is_ot_burned() {
            return Err(ClientError::OtMaterialBurned);
        }
        let (derived, _) = share
            .derive(path)
            .map_err(|e| ClientError::invalid(format!("path {path}: {}", e.as_str())))?;
        let (internal_key, output_key) = signing_keys(&share, path, taproot).map_err(|e| {
            ClientError::invalid(format!("path {path}, {taproot:?}: {}", e.as_str()))
        })?;
        let signed = match self
            .client()?
            .sign_schnorr(&share, message, path, taproot)
            .await
        {
            Ok(signed) => signed,
            Err(err) => {
                self.burn_on_ban(&mut share, &err)?;
                return Err(ClientError::from_transport(&err, "key"));
            }
        };
        // Under the keys this wallet computed, not the ones the session
        // names.
        if signed.public_key != output_key
            || signed.internal_key != internal_key
            || !verify(&output_key, &message, &signed.signature)
        {
            return Err(ClientError::Protocol {
                message: "the BIP340 signature does not verify under the key".into(),
            });
        }
        Ok(SchnorrSignature {
            public_key: compressed(&derived),
            output_key,
            internal_key,
            message,
            signature: signed.signature,
        })
    }
}
