//! The wallet object and its records.

use std::fmt;
use std::sync::Arc;

use zeroize::{Zeroize, Zeroizing};

use crate::error::WalletError;
use crate::runtime::run;
use crate::store::{Foreign, ShareStore};

/// The public data of a key the wallet holds.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct KeyInfo {
    /// The key id (64 lower-case hex digits).
    pub key_id: String,
    /// The public key, SEC1 compressed (33 bytes).
    pub public_key: Vec<u8>,
    /// The BIP32 extended public key of the root (`xpub...`).
    pub xpub: String,
    /// The epoch the wallet signs with.
    pub epoch: u64,
    /// Presignatures of that epoch in the local pool.
    pub presignatures: u32,
    /// Whether the share's OT material is burned (signing needs a refresh).
    pub ot_burned: bool,
}

impl From<mpc_client::KeyInfo> for KeyInfo {
    fn from(info: mpc_client::KeyInfo) -> Self {
        Self {
            key_id: info.key_id,
            public_key: info.public_key.to_vec(),
            xpub: info.xpub,
            epoch: info.epoch,
            presignatures: info.presignatures,
            ot_burned: info.ot_burned,
        }
    }
}

/// A signature, checked before it is returned: valid and low-S under
/// `public_key`, and `recovery_id` recovers that key.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Signature {
    /// The (derived) public key it verifies under, SEC1 compressed.
    pub public_key: Vec<u8>,
    /// The signed prehash (32 bytes).
    pub prehash: Vec<u8>,
    /// `r || s` (64 bytes), low S.
    pub r_s: Vec<u8>,
    /// The recovery id (0-3).
    pub recovery_id: u8,
}

impl From<mpc_client::Signature> for Signature {
    fn from(signature: mpc_client::Signature) -> Self {
        Self {
            public_key: signature.public_key.to_vec(),
            prehash: signature.prehash.to_vec(),
            r_s: signature.r_s.to_vec(),
            recovery_id: signature.recovery_id,
        }
    }
}

/// The full private key of an export. An object rather than a record, so
/// that no generated string form (Python `repr`, Kotlin `toString`) shows
/// the secret; the Rust copy is wiped when the foreign object is freed.
#[derive(uniffi::Object)]
pub struct ExportedKey(mpc_client::ExportedKey);

impl fmt::Debug for ExportedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // mpc_client's Debug already redacts the secret.
        self.0.fmt(f)
    }
}

#[uniffi::export]
impl ExportedKey {
    /// The private key, 32 bytes big-endian: a copy in the caller's memory,
    /// which the caller wipes or keeps as its platform allows.
    #[must_use]
    pub fn secret_key(&self) -> Vec<u8> {
        self.0.secret_key.to_vec()
    }

    /// Its public key, SEC1 compressed (checked: `secret_key * G`).
    #[must_use]
    pub fn public_key(&self) -> Vec<u8> {
        self.0.public_key.to_vec()
    }
}

/// The device's keys (party A): key generation, signing, presigning,
/// refresh and export against `mpc-server`, with the shares sealed in a
/// [`ShareStore`]. Operations of one wallet may run concurrently.
#[derive(uniffi::Object)]
pub struct Wallet {
    pub(crate) inner: Arc<mpc_client::Wallet>,
}

impl fmt::Debug for Wallet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wallet").finish_non_exhaustive()
    }
}

/// `bytes` as an array of `N`, or [`WalletError::InvalidInput`] naming
/// `what`.
pub(crate) fn fixed<const N: usize>(bytes: &[u8], what: &str) -> Result<[u8; N], WalletError> {
    bytes
        .try_into()
        .map_err(|_| WalletError::invalid(format!("{what} must be {N} bytes, not {}", bytes.len())))
}

#[uniffi::export]
impl Wallet {
    /// A wallet talking to the server at `server_url` (`wss://`, the
    /// WebSocket endpoint) and `rest_url` (`https://`), authenticated by
    /// the bearer `token`, keeping its shares in `store` sealed under
    /// `storage_key` (32 bytes from the Keychain / Keystore; the same key
    /// opens the same store later).
    ///
    /// # Errors
    ///
    /// [`WalletError::InvalidInput`] for a storage key that is not 32 bytes
    /// or a URL of the wrong scheme.
    #[uniffi::constructor]
    pub fn new(
        server_url: String,
        rest_url: String,
        token: String,
        mut storage_key: Vec<u8>,
        store: Arc<dyn ShareStore>,
    ) -> Result<Arc<Self>, WalletError> {
        let key = fixed::<32>(&storage_key, "the storage key").map(Zeroizing::new);
        storage_key.zeroize();
        let config = mpc_client::WalletConfig {
            server_url,
            rest_url,
            token: Zeroizing::new(token),
            storage_key: key?,
        };
        let inner = mpc_client::Wallet::new(config, Arc::new(Foreign(store)))?;
        Ok(Arc::new(Self {
            inner: Arc::new(inner),
        }))
    }

    /// Replaces the bearer token (tokens expire); sessions already running
    /// keep the old one.
    pub fn set_token(&self, token: String) {
        self.inner.set_token(Zeroizing::new(token));
    }

    /// Generates a new key with the server and stores this side's share.
    ///
    /// # Errors
    ///
    /// The server's and the store's errors ([`WalletError`]).
    pub async fn keygen(&self) -> Result<KeyInfo, WalletError> {
        let inner = Arc::clone(&self.inner);
        run(async move { inner.keygen().await.map(KeyInfo::from) }).await
    }

    /// Signs the 32-byte `prehash` with `key_id`, under the BIP32 `path`
    /// (non-hardened, e.g. `m/0/5`) if given.
    ///
    /// # Errors
    ///
    /// [`WalletError::InvalidInput`] for a prehash that is not 32 bytes, a
    /// bad key id or path; [`WalletError::NotFound`]; the server's errors.
    pub async fn sign(
        &self,
        key_id: String,
        prehash: Vec<u8>,
        path: Option<String>,
    ) -> Result<Signature, WalletError> {
        let prehash = fixed::<32>(&prehash, "the prehash")?;
        let inner = Arc::clone(&self.inner);
        run(async move {
            inner
                .sign(&key_id, prehash, path.as_deref())
                .await
                .map(Signature::from)
        })
        .await
    }

    /// Runs `count` presignatures with the server into the key's local
    /// pool; the pool's size afterwards.
    ///
    /// # Errors
    ///
    /// As [`Wallet::sign`].
    pub async fn presign(&self, key_id: String, count: u32) -> Result<u32, WalletError> {
        let inner = Arc::clone(&self.inner);
        run(async move { inner.presign(&key_id, count).await }).await
    }

    /// Signs `prehash` with one presignature of the pool (one round trip).
    ///
    /// # Errors
    ///
    /// [`WalletError::NoPresignatures`] if the pool is empty; otherwise as
    /// [`Wallet::sign`].
    pub async fn sign_online(
        &self,
        key_id: String,
        prehash: Vec<u8>,
    ) -> Result<Signature, WalletError> {
        let prehash = fixed::<32>(&prehash, "the prehash")?;
        let inner = Arc::clone(&self.inner);
        run(async move {
            inner
                .sign_online(&key_id, prehash)
                .await
                .map(Signature::from)
        })
        .await
    }

    /// Refreshes the key's shares with the server (same public key, new
    /// epoch); the new epoch.
    ///
    /// # Errors
    ///
    /// [`WalletError::RefreshInProgress`] and the server's errors; the
    /// store's, in which case the next refresh completes this one.
    pub async fn refresh(&self, key_id: String) -> Result<u64, WalletError> {
        let inner = Arc::clone(&self.inner);
        run(async move { inner.refresh(&key_id).await }).await
    }

    /// The keys the wallet holds, sorted by key id.
    ///
    /// # Errors
    ///
    /// [`WalletError::Store`] or [`WalletError::Corrupt`].
    pub fn keys(&self) -> Result<Vec<KeyInfo>, WalletError> {
        Ok(self.inner.keys()?.into_iter().map(KeyInfo::from).collect())
    }

    /// The public data of one key.
    ///
    /// # Errors
    ///
    /// [`WalletError::InvalidInput`], [`WalletError::NotFound`],
    /// [`WalletError::Store`] or [`WalletError::Corrupt`].
    pub fn key(&self, key_id: String) -> Result<KeyInfo, WalletError> {
        Ok(self.inner.key(&key_id)?.into())
    }

    /// Exports the full private key (the server's share, encrypted to a
    /// one-time key, combined with this side's), authorised by a fresh
    /// single-use `step_up_token`.
    ///
    /// # Errors
    ///
    /// [`WalletError::StepUpRequired`], [`WalletError::StepUpTokenUsed`],
    /// [`WalletError::StepUpBindingMismatch`], [`WalletError::NotFound`],
    /// the server's errors; [`WalletError::Protocol`] if the answer does
    /// not open to this key.
    pub async fn export(
        &self,
        key_id: String,
        step_up_token: String,
    ) -> Result<Arc<ExportedKey>, WalletError> {
        let inner = Arc::clone(&self.inner);
        let step_up_token = Zeroizing::new(step_up_token);
        run(async move {
            inner
                .export(&key_id, &step_up_token)
                .await
                .map(|key| Arc::new(ExportedKey(key)))
        })
        .await
    }

    /// Checks a backup (the JSON the server's backup endpoint returned)
    /// against the share this wallet holds of `key_id` (or of the key the
    /// backup names).
    ///
    /// # Errors
    ///
    /// [`WalletError::BackupInvalid`] with every failed check;
    /// [`WalletError::InvalidInput`], [`WalletError::NotFound`].
    pub fn verify_backup(
        &self,
        backup_json: Vec<u8>,
        key_id: Option<String>,
    ) -> Result<(), WalletError> {
        Ok(self.inner.verify_backup(&backup_json, key_id.as_deref())?)
    }
}

/// Checks a backup's proofs on their own, without a wallet's share (as
/// [`mpc_client::verify_backup`]).
///
/// # Errors
///
/// [`WalletError::BackupInvalid`] with every failed check;
/// [`WalletError::InvalidInput`].
#[uniffi::export]
pub fn verify_backup(backup_json: Vec<u8>, key_id: Option<String>) -> Result<(), WalletError> {
    Ok(mpc_client::verify_backup(&backup_json, key_id.as_deref())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wallet() -> Arc<Wallet> {
        Wallet::new(
            "ws://127.0.0.1:9".into(),
            "http://127.0.0.1:9".into(),
            "secret-token-value".into(),
            vec![7; 32],
            crate::store::memory_store(),
        )
        .unwrap()
    }

    #[test]
    fn arguments_of_the_wrong_length_are_typed_errors() {
        let short_key = Wallet::new(
            "ws://127.0.0.1:9".into(),
            "http://127.0.0.1:9".into(),
            "t".into(),
            vec![7; 31],
            crate::store::memory_store(),
        );
        assert!(matches!(short_key, Err(WalletError::InvalidInput { .. })));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let wallet = wallet();
        for prehash in [vec![], vec![1; 31], vec![1; 33]] {
            let sign = runtime.block_on(wallet.sign("00".repeat(32), prehash.clone(), None));
            assert!(
                matches!(sign, Err(WalletError::InvalidInput { .. })),
                "{sign:?}"
            );
            let online = runtime.block_on(wallet.sign_online("00".repeat(32), prehash));
            assert!(matches!(online, Err(WalletError::InvalidInput { .. })));
        }
    }

    #[test]
    fn a_wrong_url_scheme_is_a_typed_error() {
        let wallet = Wallet::new(
            "http://127.0.0.1:9".into(),
            "http://127.0.0.1:9".into(),
            "t".into(),
            vec![7; 32],
            crate::store::memory_store(),
        );
        assert!(matches!(wallet, Err(WalletError::InvalidInput { .. })));
    }

    #[test]
    fn an_unknown_key_is_not_found_and_no_secret_is_printed() {
        let wallet = wallet();
        let error = wallet.key("ab".repeat(32)).unwrap_err();
        assert!(matches!(error, WalletError::NotFound { .. }), "{error:?}");
        let printed = format!("{wallet:?} {error:?} {error}");
        assert!(!printed.contains("secret-token-value"), "{printed}");
    }

    #[test]
    fn the_exported_key_debug_hides_the_secret() {
        let key = ExportedKey(mpc_client::ExportedKey {
            secret_key: Zeroizing::new([0xab; 32]),
            public_key: [2; 33],
        });
        assert_eq!(key.secret_key(), vec![0xab; 32]);
        let printed = format!("{key:?}");
        assert!(!printed.contains(&"ab".repeat(4)), "{printed}");
        assert!(!printed.contains("171"), "{printed}");
    }
}
