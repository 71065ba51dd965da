//! The device side of a refresh with its durability (PROTOCOL.md §18.1):
//! the new share is stored when it is ready, the wallet switches to it when
//! the server confirmed it, and the older epochs are deleted once the
//! refresh finished (finalized). A refresh cut after any message leaves an
//! epoch both sides sign with; the next refresh starts from it.

use mpc_core::{KeyId, KeyShare, Refresh};
use mpc_transport_ws::Rejection;

use crate::error::ClientError;
use crate::layout::{key_id_arg, Records};
use crate::wallet::{check_role, Wallet};

/// Persists a refresh's progress before each message leaves.
struct Journal<'a> {
    records: Records<'a>,
    key_id: KeyId,
    new_epoch: u64,
    /// The new share is stored ("ready").
    saved: bool,
    /// `current` names the new epoch ("confirmed").
    confirmed: bool,
    /// Why the hook stopped the session, if it did.
    failure: Option<ClientError>,
}

impl Journal<'_> {
    fn before_send(&mut self, refresh: &Refresh<'_>) -> Result<(), Rejection> {
        self.record(refresh).map_err(|failure| {
            self.failure = Some(failure);
            Rejection::INTERNAL
        })
    }

    fn record(&mut self, refresh: &Refresh<'_>) -> Result<(), ClientError> {
        if !self.saved {
            if let Some(new) = refresh.ready_share() {
                if new.epoch() != self.new_epoch || *new.key_id() != self.key_id {
                    return Err(ClientError::protocol(
                        "the refresh produced a share of another key or epoch",
                    ));
                }
                // Overwrites a leftover of an earlier, interrupted refresh
                // (never the epoch the wallet signs with: that is older).
                self.records.save_share(new)?;
                self.saved = true;
            }
        }
        if self.saved && !self.confirmed && refresh.is_confirmed() {
            self.records.set_current(&self.key_id, self.new_epoch)?;
            self.confirmed = true;
        }
        Ok(())
    }
}

impl Wallet {
    /// Refreshes the shares of `key_id` (same public key, next epoch) and
    /// returns the new epoch. Refreshes of one wallet run one at a time;
    /// a device that opens one store from several processes must serialize
    /// their refreshes itself (§18.1).
    ///
    /// If the server no longer holds the wallet's epoch but the wallet
    /// holds a newer share (a refresh cut before its confirmation was
    /// recorded), the refresh is run from that share.
    ///
    /// # Errors
    ///
    /// The server's or network's error, or a store failure: then the
    /// refresh did not finish, and [`Wallet::key`] shows the epoch the
    /// wallet signs with (one the server holds too).
    pub async fn refresh(&self, key_id: &str) -> Result<u64, ClientError> {
        let key_id = key_id_arg(key_id)?;
        let _serialized = self.refresh_lock.lock().await;
        let old = self.current_share(&key_id)?;
        match self.refresh_from(&old).await {
            Err(ClientError::UnknownEpoch) => {
                let Some(newer) = self.records().newer_share(&key_id, old.epoch())? else {
                    return Err(ClientError::UnknownEpoch);
                };
                self.refresh_from(&newer).await
            }
            other => other,
        }
    }

    async fn refresh_from(&self, old: &KeyShare) -> Result<u64, ClientError> {
        let key_id = *old.key_id();
        let new_epoch = old
            .epoch()
            .checked_add(1)
            .ok_or_else(|| ClientError::protocol("the epoch cannot grow any more"))?;
        let client = self.client()?;
        let mut journal = Journal {
            records: self.records(),
            key_id,
            new_epoch,
            saved: false,
            confirmed: false,
            failure: None,
        };
        let result = {
            let mut hook = |refresh: &Refresh<'_>| std::future::ready(journal.before_send(refresh));
            client.refresh(old, &mut hook).await
        };
        let new = match result {
            Ok(new) => new,
            // A store failure in the hook is the cause; the transport only
            // reports that the hook stopped the session.
            Err(err) => {
                return Err(journal
                    .failure
                    .take()
                    .unwrap_or_else(|| ClientError::from_transport(&err, "key")))
            }
        };
        check_role(&new)?;
        if new.epoch() != new_epoch
            || *new.key_id() != key_id
            || new.public_key() != old.public_key()
        {
            return Err(ClientError::protocol(
                "the refresh returned a share of another key or epoch",
            ));
        }
        let records = self.records();
        // The hook saw both states before the last message left; this only
        // matters if it did not.
        if !journal.saved {
            records.save_share(&new)?;
        }
        if !journal.confirmed {
            records.set_current(&key_id, new_epoch)?;
        }
        // Finalized: the server will not sign with older epochs, and has
        // dropped their presignatures.
        records.remove_before(&key_id, new_epoch)?;
        Ok(new_epoch)
    }
}
