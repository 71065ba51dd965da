//! The state directory: an `mpc_client::FileStore` and the key its blobs
//! are sealed under (see the crate documentation).

use std::path::PathBuf;
use std::sync::Arc;

use mpc_client::FileStore;
use zeroize::Zeroizing;

use crate::output::{client_failure, Failure};

/// The storage key without `--storage-key` / `MPC_STORAGE_KEY`: public,
/// so it protects nothing; it keeps the development loop short.
const DEV_STORAGE_KEY: [u8; 32] = *b"mpc-examples client dev key!!!!!";

/// The state directory and its storage key.
pub(crate) struct StateDir {
    pub(crate) store: Arc<FileStore>,
    pub(crate) storage_key: Zeroizing<[u8; 32]>,
}

/// `--storage-key` as 32 bytes, or the development key.
pub(crate) fn storage_key(text: Option<&str>) -> Result<Zeroizing<[u8; 32]>, Failure> {
    let Some(text) = text else {
        return Ok(Zeroizing::new(DEV_STORAGE_KEY));
    };
    let mut key = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), key.as_mut())
        .map_err(|_| Failure::usage("--storage-key must be 64 hex digits (32 bytes)"))?;
    Ok(key)
}

impl StateDir {
    /// Opens (creating it if missing) and checks the state directory.
    pub(crate) fn open(dir: PathBuf, key: Zeroizing<[u8; 32]>) -> Result<Self, Failure> {
        let store = FileStore::open(dir).map_err(|e| client_failure(&e.into()))?;
        Ok(Self {
            store: Arc::new(store),
            storage_key: key,
        })
    }

    /// Opens and checks an existing state directory.
    pub(crate) fn open_existing(dir: PathBuf, key: Zeroizing<[u8; 32]>) -> Result<Self, Failure> {
        let store = FileStore::open_existing(dir).map_err(|e| client_failure(&e.into()))?;
        Ok(Self {
            store: Arc::new(store),
            storage_key: key,
        })
    }
}
