//! The [`Wallet`]: the device's keys over a [`ShareStore`], and every
//! operation with the server.

use std::fmt;
use std::sync::{Arc, Mutex, RwLock};

use k256::ecdsa::signature::hazmat::PrehashVerifier;
use k256::ecdsa::VerifyingKey;
use mpc_core::wire::Role;
use mpc_core::{DerivationPath, KeyId, KeyShare, Prehash, SignatureOutput};
use mpc_transport_ws::{Client, TransportConfig, TransportError};
use zeroize::Zeroizing;

use crate::error::ClientError;
use crate::layout::{key_id_arg, Records};
use crate::store::ShareStore;

/// What a [`Wallet`] needs besides its store. `Debug` shows neither the
/// token nor the storage key.
pub struct WalletConfig {
    /// The server's WebSocket URL (`ws://` or `wss://`), used as given.
    pub server_url: String,
    /// The base URL of the server's REST API (`http://` or `https://`);
    /// `/v1/...` is appended.
    pub rest_url: String,
    /// The bearer token of the WebSocket sessions.
    pub token: Zeroizing<String>,
    /// The key every stored blob is sealed under (from the Keychain /
    /// Keystore on a phone).
    pub storage_key: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for WalletConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalletConfig")
            .field("server_url", &self.server_url)
            .field("rest_url", &self.rest_url)
            .field("token", &"<redacted>")
            .field("storage_key", &"<redacted>")
            .finish()
    }
}

/// The public data of a key the wallet holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key id (64 lower-case hex digits).
    pub key_id: String,
    /// The public key, SEC1 compressed.
    pub public_key: [u8; 33],
    /// The BIP32 extended public key of the root (`xpub...`).
    pub xpub: String,
    /// The epoch the wallet signs with.
    pub epoch: u64,
    /// Presignatures of that epoch in the local pool.
    pub presignatures: u32,
    /// Whether the share's OT material is burned (signing needs a refresh).
    pub ot_burned: bool,
}

/// A signature, checked before it is returned: valid and low-S under
/// `public_key`, and `recovery_id` recovers that key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The (derived) public key it verifies under, SEC1 compressed.
    pub public_key: [u8; 33],
    /// The signed prehash.
    pub prehash: [u8; 32],
    /// `r || s`, low S.
    pub r_s: [u8; 64],
    /// The recovery id (0-3).
    pub recovery_id: u8,
}

/// The full private key of an export. `Debug` does not show the secret.
pub struct ExportedKey {
    /// The private key (32 bytes, big-endian), wiped on drop.
    pub secret_key: Zeroizing<[u8; 32]>,
    /// Its public key, SEC1 compressed (checked: `secret_key * G`).
    pub public_key: [u8; 33],
}

impl fmt::Debug for ExportedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportedKey")
            .field("secret_key", &"<redacted>")
            .field("public_key", &hex::encode(self.public_key))
            .finish()
    }
}

/// The device's keys (party A) over a [`ShareStore`]; every operation runs
/// on tokio. Cheap to share behind an `Arc`; operations of one wallet may
/// run concurrently (presignatures are handed out under a lock, refreshes
/// of one wallet are serialized).
pub struct Wallet {
    pub(crate) store: Arc<dyn ShareStore>,
    server_url: String,
    pub(crate) rest_url: String,
    token: RwLock<Zeroizing<String>>,
    storage_key: Zeroizing<[u8; 32]>,
    transport: TransportConfig,
    /// Taking a presignature (list, read, mark, delete) is one step.
    pub(crate) pool_lock: Mutex<()>,
    /// PROTOCOL.md §18.1, device side: one refresh at a time.
    pub(crate) refresh_lock: tokio::sync::Mutex<()>,
}

impl fmt::Debug for Wallet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wallet")
            .field("server_url", &self.server_url)
            .field("rest_url", &self.rest_url)
            .finish_non_exhaustive()
    }
}

pub(crate) fn compressed(key: &k256::PublicKey) -> [u8; 33] {
    let mut out = [0u8; 33];
    out.copy_from_slice(&key.to_sec1_bytes());
    out
}

/// A share the server handed back must be this client's.
pub(crate) fn check_role(share: &KeyShare) -> Result<(), ClientError> {
    if share.role() == Role::A {
        Ok(())
    } else {
        Err(ClientError::protocol(
            "the server returned a share of the wrong role",
        ))
    }
}

/// Checks a signature independently of the protocol's own check and
/// returns it in the API's shape.
pub(crate) fn checked_signature(
    public_key: &k256::PublicKey,
    prehash: &Prehash,
    signed: &SignatureOutput,
) -> Result<Signature, ClientError> {
    let key = VerifyingKey::from(public_key);
    let bad = |what: &str| ClientError::protocol(format!("the signature {what}"));
    if signed.signature.normalize_s().is_some() {
        return Err(bad("is not low-S"));
    }
    key.verify_prehash(prehash.as_bytes(), &signed.signature)
        .map_err(|_| bad("does not verify under the key"))?;
    let recovered = VerifyingKey::recover_from_prehash(
        prehash.as_bytes(),
        &signed.signature,
        signed.recovery_id,
    )
    .map_err(|_| bad("recovers no key"))?;
    if recovered != key {
        return Err(bad("recovers another key with its recovery id"));
    }
    let mut r_s = [0u8; 64];
    r_s.copy_from_slice(&signed.signature.to_bytes());
    Ok(Signature {
        public_key: compressed(public_key),
        prehash: *prehash.as_bytes(),
        r_s,
        recovery_id: signed.recovery_id.to_byte(),
    })
}

impl Wallet {
    /// A wallet over `store`.
    ///
    /// # Errors
    ///
    /// [`ClientError::InvalidInput`] if `server_url` is not `ws://` or
    /// `wss://`, or `rest_url` not `http://` or `https://`.
    pub fn new(config: WalletConfig, store: Arc<dyn ShareStore>) -> Result<Self, ClientError> {
        let WalletConfig {
            server_url,
            rest_url,
            token,
            storage_key,
        } = config;
        if !(server_url.starts_with("ws://") || server_url.starts_with("wss://")) {
            return Err(ClientError::invalid(
                "the server URL must start with ws:// or wss://",
            ));
        }
        if !(rest_url.starts_with("http://") || rest_url.starts_with("https://")) {
            return Err(ClientError::invalid(
                "the REST URL must start with http:// or https://",
            ));
        }
        Ok(Self {
            store,
            server_url,
            rest_url,
            token: RwLock::new(token),
            storage_key,
            transport: TransportConfig::default(),
            pool_lock: Mutex::new(()),
            refresh_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Uses `config` (timeouts, size limits) for every WebSocket session.
    #[must_use]
    pub fn with_transport_config(mut self, config: TransportConfig) -> Self {
        self.transport = config;
        self
    }

    /// Replaces the bearer token (tokens expire); sessions already running
    /// keep the old one.
    pub fn set_token(&self, token: Zeroizing<String>) {
        let mut guard = self
            .token
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard = token;
    }

    pub(crate) fn records(&self) -> Records<'_> {
        Records {
            store: &*self.store,
            key: &self.storage_key,
        }
    }

    pub(crate) fn client(&self) -> Result<Client, ClientError> {
        let token = self
            .token
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if token.is_empty() {
            return Err(ClientError::Unauthorized);
        }
        Ok(Client::new(self.server_url.clone())
            .with_bearer_token(token.as_str())
            .with_config(self.transport.clone()))
    }

    /// Generates a new key with the server and stores this device's share.
    ///
    /// # Errors
    ///
    /// The server's or the network's error (then the key must not be
    /// used), or a [`ClientError::Store`] failure (the server holds a key
    /// this device cannot sign with).
    pub async fn keygen(&self) -> Result<KeyInfo, ClientError> {
        let client = self.client()?;
        let share = client
            .keygen()
            .await
            .map_err(|e| ClientError::from_transport(&e, "key"))?;
        check_role(&share)?;
        let records = self.records();
        records.save_share(&share)?;
        records.set_current(share.key_id(), share.epoch())?;
        Ok(self.info_of(&share))
    }

    /// Signs `prehash` with the key `key_id`, under the BIP32 child at the
    /// non-hardened `path` (e.g. `"m/0/5"`) if given.
    ///
    /// If the server no longer holds the wallet's epoch but a newer share is
    /// held (a refresh whose confirmation was not recorded), that share is
    /// tried and, once it signs, made current (PROTOCOL.md §18.1).
    ///
    /// # Errors
    ///
    /// [`ClientError::InvalidInput`] for a bad key id or path;
    /// [`ClientError::NotFound`] for a key the wallet does not hold;
    /// [`ClientError::OtMaterialBurned`]; the server's errors
    /// ([`ClientError::Banned`], [`ClientError::Revoked`], ...); after
    /// [`ClientError::ProtocolBan`] the share's OT material is burned.
    pub async fn sign(
        &self,
        key_id: &str,
        prehash: [u8; 32],
        path: Option<&str>,
    ) -> Result<Signature, ClientError> {
        let key_id = key_id_arg(key_id)?;
        let path = parse_path(path)?;
        let prehash = Prehash::from_bytes(prehash);
        self.on_common_epoch(&key_id, |share| self.sign_with(share, &prehash, &path))
            .await
    }

    /// Runs a signing session with the current share of `key_id`. If the
    /// server no longer holds that epoch but a newer share is held here (a
    /// refresh whose confirmation the wallet missed, PROTOCOL.md §18.1),
    /// runs it again with the newer share and, once the server signed with
    /// it, makes that the common epoch.
    pub(crate) async fn on_common_epoch<T, F, Fut>(
        &self,
        key_id: &KeyId,
        mut session: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(KeyShare) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let share = self.records().current(key_id)?;
        match session(share).await {
            Err(ClientError::UnknownEpoch) => {
                let epoch = self
                    .records()
                    .current_epoch(key_id)?
                    .ok_or_else(|| ClientError::not_found("key"))?;
                let Some(newer) = self.records().newer_share(key_id, epoch)? else {
                    return Err(ClientError::UnknownEpoch);
                };
                let new_epoch = newer.epoch();
                let signed = session(newer).await?;
                // The server signed with it: it is the common epoch.
                self.records().set_current(key_id, new_epoch)?;
                self.records().remove_before(key_id, new_epoch)?;
                Ok(signed)
            }
            other => other,
        }
    }

    async fn sign_with(
        &self,
        mut share: KeyShare,
        prehash: &Prehash,
        path: &DerivationPath,
    ) -> Result<Signature, ClientError> {
        if share.is_ot_burned() {
            return Err(ClientError::OtMaterialBurned);
        }
        let (public_key, _) = share
            .derive(path)
            .map_err(|e| ClientError::invalid(format!("path {path}: {}", e.as_str())))?;
        let client = self.client()?;
        let result = if *path == DerivationPath::root() {
            client.sign(&share, *prehash).await
        } else {
            client.sign_with_path(&share, *prehash, path).await
        };
        match result {
            Ok(signed) => checked_signature(&public_key, prehash, &signed),
            Err(err) => {
                self.burn_on_ban(&mut share, &err)?;
                Err(ClientError::from_transport(&err, "key"))
            }
        }
    }

    /// PROTOCOL.md §18.2: after a ban-class error the share's OT material
    /// is never used again.
    pub(crate) fn burn_on_ban(
        &self,
        share: &mut KeyShare,
        err: &TransportError,
    ) -> Result<(), ClientError> {
        if err.is_ban() {
            share.burn_ot_material();
            self.records().save_share(share)?;
        }
        Ok(())
    }

    /// The keys the wallet holds, sorted by key id.
    ///
    /// # Errors
    ///
    /// [`ClientError::Store`] or [`ClientError::Corrupt`].
    pub fn keys(&self) -> Result<Vec<KeyInfo>, ClientError> {
        let records = self.records();
        records
            .keys()?
            .iter()
            .map(|key_id| Ok(self.info_of(&records.current(key_id)?)))
            .collect()
    }

    /// The public data of one key.
    ///
    /// # Errors
    ///
    /// [`ClientError::InvalidInput`], [`ClientError::NotFound`],
    /// [`ClientError::Store`] or [`ClientError::Corrupt`].
    pub fn key(&self, key_id: &str) -> Result<KeyInfo, ClientError> {
        let key_id = key_id_arg(key_id)?;
        Ok(self.info_of(&self.records().current(&key_id)?))
    }

    fn info_of(&self, share: &KeyShare) -> KeyInfo {
        KeyInfo {
            key_id: share.key_id().to_string(),
            public_key: compressed(&share.public_key()),
            xpub: share.xpub().to_string(),
            epoch: share.epoch(),
            presignatures: self.pool_size(share.key_id(), share.epoch()).unwrap_or(0),
            ot_burned: share.is_ot_burned(),
        }
    }

    /// The key id of `key_id`'s current share, for the other modules.
    pub(crate) fn current_share(&self, key_id: &KeyId) -> Result<KeyShare, ClientError> {
        self.records().current(key_id)
    }
}

/// A BIP32 path argument: `None` is the root key.
pub(crate) fn parse_path(path: Option<&str>) -> Result<DerivationPath, ClientError> {
    match path {
        Some(text) => text
            .parse()
            .map_err(|_| ClientError::invalid(format!("not a BIP32 path: {text:?}"))),
        None => Ok(DerivationPath::root()),
    }
}
