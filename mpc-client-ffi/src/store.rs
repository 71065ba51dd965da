//! The share store across the FFI: [`ShareStore`] is the trait foreign
//! code implements (a Swift class over the Keychain, a Kotlin one over
//! the Keystore, a Python dict); [`file_store`] and [`memory_store`] hand
//! out the Rust implementations. The wallet only ever passes sealed blobs
//! (XChaCha20-Poly1305 under the storage key, the entry name as associated
//! data) and names it chose itself.

use std::sync::Arc;

use crate::error::StoreError;

/// Where the wallet keeps its sealed blobs. Implemented in Swift, Kotlin
/// or Python (or by [`file_store`] and [`memory_store`]).
///
/// The calls are synchronous and made from the wallet's worker threads,
/// while an operation runs: keep them quick (a small file, a Keychain
/// item). They may be made from several threads at once.
#[uniffi::export(with_foreign)]
pub trait ShareStore: Send + Sync {
    /// Stores `sealed` under `name`, replacing any previous blob
    /// atomically: after a crash the old or the new blob, never a mix; once
    /// this returned, the new one survives a crash.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if the blob is not durably stored.
    fn put(&self, name: String, sealed: Vec<u8>) -> Result<(), StoreError>;

    /// The blob under `name`, or none.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if it cannot be read.
    fn get(&self, name: String) -> Result<Option<Vec<u8>>, StoreError>;

    /// Removes `name` durably; removing a missing name succeeds.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if it may still be there.
    fn delete(&self, name: String) -> Result<(), StoreError>;

    /// Every name in the store, in any order.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if the listing fails.
    fn list(&self) -> Result<Vec<String>, StoreError>;
}

/// A store of the Rust library behind the FFI trait.
struct RustStore(Arc<dyn mpc_client::ShareStore>);

impl ShareStore for RustStore {
    fn put(&self, name: String, sealed: Vec<u8>) -> Result<(), StoreError> {
        Ok(self.0.put(&name, &sealed)?)
    }

    fn get(&self, name: String) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.get(&name)?)
    }

    fn delete(&self, name: String) -> Result<(), StoreError> {
        Ok(self.0.delete(&name)?)
    }

    fn list(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.0.list()?)
    }
}

/// The store in the private directory `dir` (created with mode 0700 if
/// missing): one file per entry, replaced atomically and synced.
///
/// # Errors
///
/// [`StoreError::InsecurePermissions`] if the directory or a file in it is
/// accessible by group or others; [`StoreError::Io`] if it cannot be
/// created or read.
#[uniffi::export]
pub fn file_store(dir: String) -> Result<Arc<dyn ShareStore>, StoreError> {
    let store = mpc_client::FileStore::open(dir)?;
    Ok(Arc::new(RustStore(Arc::new(store))))
}

/// A store in memory, lost with the process (tests, demos).
#[uniffi::export]
#[must_use]
pub fn memory_store() -> Arc<dyn ShareStore> {
    Arc::new(RustStore(Arc::new(mpc_client::MemoryStore::new())))
}

/// A store given over the FFI, as the wallet uses it.
pub(crate) struct Foreign(pub(crate) Arc<dyn ShareStore>);

impl mpc_client::ShareStore for Foreign {
    fn put(&self, name: &str, sealed: &[u8]) -> Result<(), mpc_client::StoreError> {
        Ok(self.0.put(name.to_owned(), sealed.to_vec())?)
    }

    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, mpc_client::StoreError> {
        let blob = self.0.get(name.to_owned())?;
        // A foreign store is not trusted with memory either: nothing the
        // wallet wrote is this large.
        if blob
            .as_ref()
            .is_some_and(|b| b.len() as u64 > mpc_client::MAX_ENTRY_BYTES)
        {
            return Err(mpc_client::StoreError::TooLarge {
                name: name.to_owned(),
            });
        }
        Ok(blob)
    }

    fn delete(&self, name: &str) -> Result<(), mpc_client::StoreError> {
        Ok(self.0.delete(name.to_owned())?)
    }

    fn list(&self) -> Result<Vec<String>, mpc_client::StoreError> {
        Ok(self.0.list()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mpc_client::ShareStore as _;

    /// A foreign store that hands back a blob larger than anything the
    /// wallet writes (a hostile or broken app store): refused before the
    /// wallet reads it.
    struct Huge;

    impl ShareStore for Huge {
        fn put(&self, _: String, _: Vec<u8>) -> Result<(), StoreError> {
            Ok(())
        }
        fn get(&self, _: String) -> Result<Option<Vec<u8>>, StoreError> {
            let len = usize::try_from(mpc_client::MAX_ENTRY_BYTES).unwrap_or(usize::MAX) + 1;
            Ok(Some(vec![0; len]))
        }
        fn delete(&self, _: String) -> Result<(), StoreError> {
            Ok(())
        }
        fn list(&self) -> Result<Vec<String>, StoreError> {
            Ok(Vec::new())
        }
    }

    #[test]
    fn an_oversized_foreign_blob_is_refused() {
        let store = Foreign(Arc::new(Huge));
        assert_eq!(
            store.get("k.share"),
            Err(mpc_client::StoreError::TooLarge {
                name: "k.share".into()
            })
        );
    }

    #[test]
    fn the_memory_store_round_trips_through_both_traits() {
        let store = Foreign(memory_store());
        store.put("a.share", b"sealed").unwrap();
        assert_eq!(
            store.get("a.share").unwrap().as_deref(),
            Some(&b"sealed"[..])
        );
        assert_eq!(store.list().unwrap(), vec!["a.share".to_owned()]);
        store.delete("a.share").unwrap();
        store.delete("a.share").unwrap();
        assert_eq!(store.get("a.share").unwrap(), None);
        // The Rust store's own name check reaches the caller typed.
        assert!(matches!(
            store.put("../escape", b"x"),
            Err(mpc_client::StoreError::InvalidName { .. })
        ));
    }
}
