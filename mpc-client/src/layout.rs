//! The store's entry names and the sealed records behind them.
//!
//! - `<key_id>.<epoch>.share`: the sealed share of that epoch;
//! - `<key_id>.current`: the epoch the wallet signs with, decimal, not
//!   sealed (it is not secret; a changed value can only name an epoch whose
//!   sealed share is held, since a share's name, epoch included, is
//!   authenticated);
//! - `<key_id>.presig.<epoch>.<sid>`: a sealed presignature of the pool;
//! - `<key_id>.spent.<epoch>.<sid>`: the marker that a presignature was
//!   taken for an online step; a presignature with a marker is never used
//!   (PROTOCOL.md §14.3).

use mpc_core::wire::Role;
use mpc_core::{KeyId, KeyShare, Presignature};
use zeroize::Zeroizing;

use crate::error::ClientError;
use crate::seal::{open, seal};
use crate::store::ShareStore;

pub(crate) fn share_name(key_id: &KeyId, epoch: u64) -> String {
    format!("{key_id}.{epoch}.share")
}

pub(crate) fn current_name(key_id: &KeyId) -> String {
    format!("{key_id}.current")
}

pub(crate) fn presig_name(key_id: &KeyId, epoch: u64, sid: &[u8; 32]) -> String {
    format!("{key_id}.presig.{epoch}.{}", hex::encode(sid))
}

pub(crate) fn spent_name(key_id: &KeyId, epoch: u64, sid: &[u8; 32]) -> String {
    format!("{key_id}.spent.{epoch}.{}", hex::encode(sid))
}

/// `<key_id>.<epoch>.share` → key id and epoch.
pub(crate) fn parse_share_name(name: &str) -> Option<(KeyId, u64)> {
    let (key, epoch) = name.strip_suffix(".share")?.split_once('.')?;
    Some((parse_key_id(key)?, parse_epoch(epoch)?))
}

/// `<key_id>.current` → key id.
pub(crate) fn parse_current_name(name: &str) -> Option<KeyId> {
    parse_key_id(name.strip_suffix(".current")?)
}

/// `<key_id>.{presig,spent}.<epoch>.<sid>` → key id, kind, epoch, sid.
pub(crate) fn parse_pool_name(name: &str) -> Option<(KeyId, &str, u64, [u8; 32])> {
    let mut parts = name.split('.');
    let key = parse_key_id(parts.next()?)?;
    let kind = parts.next().filter(|k| *k == "presig" || *k == "spent")?;
    let epoch = parse_epoch(parts.next()?)?;
    let sid: [u8; 32] = hex::decode(parts.next()?).ok()?.try_into().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some((key, kind, epoch, sid))
}

fn parse_epoch(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A key id as 64 lower-case hex digits (the form the names use).
pub(crate) fn parse_key_id(text: &str) -> Option<KeyId> {
    if text.len() != 64 || text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    mpc_api::parse_key_id(text)
}

/// A key id given by a caller (either case).
pub(crate) fn key_id_arg(text: &str) -> Result<KeyId, ClientError> {
    mpc_api::parse_key_id(text).ok_or_else(|| ClientError::invalid("a key id is 64 hex digits"))
}

/// Typed access to the records of one store under one storage key.
pub(crate) struct Records<'a> {
    pub(crate) store: &'a dyn ShareStore,
    pub(crate) key: &'a [u8; 32],
}

impl Records<'_> {
    fn get_open(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, ClientError> {
        match self.store.get(name)? {
            None => Ok(None),
            Some(sealed) => open(self.key, name, &sealed).map(Some),
        }
    }

    pub(crate) fn put_sealed(&self, name: &str, plaintext: &[u8]) -> Result<(), ClientError> {
        let sealed = seal(self.key, name, plaintext)?;
        self.store.put(name, &sealed)?;
        Ok(())
    }

    /// The epoch the wallet signs `key_id` with; `None` if it does not hold
    /// the key.
    pub(crate) fn current_epoch(&self, key_id: &KeyId) -> Result<Option<u64>, ClientError> {
        let name = current_name(key_id);
        let Some(bytes) = self.store.get(&name)? else {
            return Ok(None);
        };
        std::str::from_utf8(&bytes)
            .ok()
            .and_then(|text| parse_epoch(text.trim()))
            .map(Some)
            .ok_or(ClientError::Corrupt { name })
    }

    pub(crate) fn set_current(&self, key_id: &KeyId, epoch: u64) -> Result<(), ClientError> {
        self.store
            .put(&current_name(key_id), format!("{epoch}\n").as_bytes())?;
        Ok(())
    }

    /// The share of `key_id` at `epoch`, checked (key, epoch, role A);
    /// `None` if there is none.
    pub(crate) fn share(
        &self,
        key_id: &KeyId,
        epoch: u64,
    ) -> Result<Option<KeyShare>, ClientError> {
        let name = share_name(key_id, epoch);
        let Some(bytes) = self.get_open(&name)? else {
            return Ok(None);
        };
        let share = KeyShare::from_bytes_for(&bytes, key_id)
            .map_err(|_| ClientError::Corrupt { name: name.clone() })?;
        if share.epoch() != epoch || share.role() != Role::A {
            return Err(ClientError::Corrupt { name });
        }
        Ok(Some(share))
    }

    /// The share the wallet signs with.
    ///
    /// # Errors
    ///
    /// [`ClientError::NotFound`] if the wallet does not hold the key,
    /// [`ClientError::Corrupt`] if `current` names an epoch without a
    /// (valid) share.
    pub(crate) fn current(&self, key_id: &KeyId) -> Result<KeyShare, ClientError> {
        let epoch = self
            .current_epoch(key_id)?
            .ok_or_else(|| ClientError::not_found("key"))?;
        self.share(key_id, epoch)?
            .ok_or_else(|| ClientError::Corrupt {
                name: share_name(key_id, epoch),
            })
    }

    pub(crate) fn save_share(&self, share: &KeyShare) -> Result<(), ClientError> {
        self.put_sealed(
            &share_name(share.key_id(), share.epoch()),
            &share.to_bytes(),
        )
    }

    pub(crate) fn save_presignature(&self, presignature: &Presignature) -> Result<(), ClientError> {
        let name = presig_name(
            presignature.key_id(),
            presignature.epoch(),
            &presignature.session_id().0,
        );
        self.put_sealed(&name, &presignature.to_bytes())
    }

    /// The presignature stored under `name`, checked against its name.
    pub(crate) fn presignature(&self, name: &str) -> Result<Option<Presignature>, ClientError> {
        let corrupt = || ClientError::Corrupt {
            name: name.to_owned(),
        };
        let Some((key_id, _, epoch, sid)) = parse_pool_name(name) else {
            return Err(corrupt());
        };
        let Some(bytes) = self.get_open(name)? else {
            return Ok(None);
        };
        let presignature = Presignature::from_bytes(&bytes).map_err(|_| corrupt())?;
        if *presignature.key_id() != key_id
            || presignature.epoch() != epoch
            || presignature.session_id().0 != sid
            || presignature.role() != Role::A
        {
            return Err(corrupt());
        }
        Ok(Some(presignature))
    }

    /// The names of every entry of `key_id`'s presignature pool and spent
    /// markers, parsed.
    pub(crate) fn pool(&self, key_id: &KeyId) -> Result<Vec<(String, bool, u64)>, ClientError> {
        let mut entries = Vec::new();
        for name in self.store.list()? {
            let parsed =
                parse_pool_name(&name).map(|(key, kind, epoch, _)| (key, kind == "presig", epoch));
            if let Some((key, is_presig, epoch)) = parsed {
                if key == *key_id {
                    entries.push((name, is_presig, epoch));
                }
            }
        }
        entries.sort();
        Ok(entries)
    }

    /// Deletes the shares and pool entries of `key_id` older than `epoch`
    /// (PROTOCOL.md §18.1 "finalized": the server holds none of them).
    pub(crate) fn remove_before(&self, key_id: &KeyId, epoch: u64) -> Result<(), ClientError> {
        for name in self.store.list()? {
            let old = match parse_share_name(&name) {
                Some((key, e)) => key == *key_id && e < epoch,
                None => {
                    matches!(parse_pool_name(&name), Some((key, _, e, _)) if key == *key_id && e < epoch)
                }
            };
            if old {
                self.store.delete(&name)?;
            }
        }
        Ok(())
    }

    /// The keys that have a `current` entry, sorted.
    pub(crate) fn keys(&self) -> Result<Vec<KeyId>, ClientError> {
        let mut keys: Vec<KeyId> = self
            .store
            .list()?
            .iter()
            .filter_map(|name| parse_current_name(name))
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// The newest share of `key_id` above `epoch`, if one is held.
    pub(crate) fn newer_share(
        &self,
        key_id: &KeyId,
        epoch: u64,
    ) -> Result<Option<KeyShare>, ClientError> {
        let newest = self
            .store
            .list()?
            .iter()
            .filter_map(|name| parse_share_name(name))
            .filter(|(key, e)| key == key_id && *e > epoch)
            .map(|(_, e)| e)
            .max();
        match newest {
            Some(e) => self.share(key_id, e),
            None => Ok(None),
        }
    }
}
