//! The gadget vectors of recently loaded shares (PROTOCOL.md §7, §18.5).
//!
//! Decoding a stored share derives its two OT directions' gadget vectors:
//! 2 × 416 hashes to a scalar, about as much CPU as a tenth of a signature.
//! They are public values fixed by the share's key contexts, and a key's
//! share is loaded for every session, so the vault keeps them for the most
//! recently loaded keys and hands them to
//! [`KeyShare::from_bytes_for_reusing`]. A gadget carries the context it
//! was derived from and is only reused for that same context, so a stale
//! entry (a refreshed key's old contexts) is never used: the new ones are
//! derived and replace it. Nothing secret is kept here.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use mpc_core::hazmat::vole::Gadget;
use mpc_core::{KeyId, KeyShare};

/// Keys whose gadgets are kept (about 27 KB each).
pub(crate) const GADGET_CACHE_KEYS: usize = 256;

/// Gadget vectors by key, the oldest insertion evicted first.
pub(crate) struct GadgetCache {
    inner: Mutex<Entries>,
    capacity: usize,
}

#[derive(Default)]
struct Entries {
    by_key: HashMap<KeyId, Arc<[Gadget; 2]>>,
    order: VecDeque<KeyId>,
}

impl Default for GadgetCache {
    fn default() -> Self {
        Self::with_capacity(GADGET_CACHE_KEYS)
    }
}

impl GadgetCache {
    /// A cache of the gadgets of at most `capacity` keys.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            inner: Mutex::default(),
            capacity,
        }
    }

    /// [`KeyShare::from_bytes_for`], with the gadgets kept for `key_id`
    /// reused where their contexts match, and the share's gadgets kept
    /// afterwards.
    ///
    /// # Errors
    ///
    /// As [`KeyShare::from_bytes_for`].
    pub(crate) fn decode(&self, bytes: &[u8], key_id: &KeyId) -> Result<KeyShare, mpc_core::Error> {
        let kept = self.lock().by_key.get(key_id).cloned();
        let known: &[Gadget] = kept.as_deref().map_or(&[], |gadgets| &gadgets[..]);
        let share = KeyShare::from_bytes_for_reusing(bytes, key_id, known)?;
        let [sender, receiver] = share.gadgets();
        let same = kept
            .as_deref()
            .is_some_and(|[a, b]| a.keyctx() == sender.keyctx() && b.keyctx() == receiver.keyctx());
        if !same {
            self.insert(*key_id, Arc::new([sender.clone(), receiver.clone()]));
        }
        Ok(share)
    }

    fn insert(&self, key_id: KeyId, gadgets: Arc<[Gadget; 2]>) {
        let mut entries = self.lock();
        if entries.by_key.insert(key_id, gadgets).is_none() {
            entries.order.push_back(key_id);
            while entries.order.len() > self.capacity {
                if let Some(oldest) = entries.order.pop_front() {
                    entries.by_key.remove(&oldest);
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::testkit::{dkg, refresh};

    fn gadgets_of(share: &KeyShare) -> [Gadget; 2] {
        share.gadgets().map(Clone::clone)
    }

    #[test]
    fn a_share_loaded_again_reuses_the_kept_gadgets() {
        let cache = GadgetCache::default();
        let (_, server) = dkg();
        let bytes = server.to_bytes();
        let first = cache.decode(&bytes, server.key_id()).unwrap();
        let kept = cache.lock().by_key.get(server.key_id()).cloned().unwrap();
        let second = cache.decode(&bytes, server.key_id()).unwrap();
        let still = cache.lock().by_key.get(server.key_id()).cloned().unwrap();
        assert!(Arc::ptr_eq(&kept, &still), "the entry was derived again");
        let fresh = KeyShare::from_bytes(&bytes).unwrap();
        assert_eq!(gadgets_of(&first), gadgets_of(&fresh));
        assert_eq!(gadgets_of(&second), gadgets_of(&fresh));
    }

    #[test]
    fn a_refreshed_share_never_gets_the_old_gadgets() {
        let cache = GadgetCache::default();
        let (client, server) = dkg();
        let (_, refreshed) = refresh(&client, &server);
        assert_eq!(server.key_id(), refreshed.key_id());
        // The old epoch's gadgets are kept, then the new epoch loads, then
        // the old one again: each gets exactly its own contexts' gadgets.
        for share in [&server, &refreshed, &server] {
            let bytes = share.to_bytes();
            let loaded = cache.decode(&bytes, share.key_id()).unwrap();
            let fresh = KeyShare::from_bytes(&bytes).unwrap();
            assert_eq!(gadgets_of(&loaded), gadgets_of(&fresh));
        }
        assert_ne!(gadgets_of(&server), gadgets_of(&refreshed));
    }

    #[test]
    fn the_cache_keeps_at_most_its_capacity() {
        let cache = GadgetCache::with_capacity(2);
        let servers: Vec<KeyShare> = (0..3).map(|_| dkg().1).collect();
        for share in &servers {
            cache.decode(&share.to_bytes(), share.key_id()).unwrap();
        }
        let entries = cache.lock();
        assert_eq!(entries.by_key.len(), 2);
        assert_eq!(entries.order.len(), 2);
        assert!(
            !entries.by_key.contains_key(servers[0].key_id()),
            "the oldest stays"
        );
    }
}
