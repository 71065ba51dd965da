//! The local presignature pool (PROTOCOL.md §14.3): presigning ahead, and
//! the online step from the pool.
//!
//! A presignature is used at most once, even if the process dies: taking
//! one durably writes its spent marker and deletes it from the store
//! before its online message can leave, so after a crash, a failed send or
//! a restore of the presignature's blob it is never given to a second
//! online step (the server refuses a second use too).

use mpc_core::wire::SessionId;
use mpc_core::{
    ClaimRefused, KeyId, KeyShare, Prehash, Presignature, PresignatureGuard, SignatureOutput,
};
use mpc_transport_ws::Client;

use crate::error::ClientError;
use crate::layout::{key_id_arg, spent_name};
use crate::wallet::{check_role, checked_signature, Signature, Wallet};

/// The claim [`Wallet::take_presignature`] made durable (the spent marker
/// written, the blob deleted), handed to mpc-core's `OnlineSign` as its
/// guard (PROTOCOL.md §14.3): it confirms exactly that presignature, once.
struct TakenClaim {
    key_id: KeyId,
    epoch: u64,
    session: SessionId,
    confirmed: bool,
}

impl PresignatureGuard for TakenClaim {
    fn claim(
        &mut self,
        key_id: &KeyId,
        epoch: u64,
        session: &SessionId,
    ) -> Result<(), ClaimRefused> {
        if self.confirmed {
            return Err(ClaimRefused::AlreadyClaimed);
        }
        if *key_id != self.key_id || epoch != self.epoch || *session != self.session {
            // Not the presignature whose claim was recorded.
            return Err(ClaimRefused::Unavailable);
        }
        self.confirmed = true;
        Ok(())
    }
}

/// The one place that runs the online step (mpc-core's `OnlineSign`
/// through the transport). `share` is the key share the presignature was
/// made with; `claim` is the presignature's recorded claim.
async fn online_step(
    client: &Client,
    share: &KeyShare,
    presignature: Presignature,
    prehash: Prehash,
    mut claim: TakenClaim,
) -> Result<SignatureOutput, mpc_transport_ws::TransportError> {
    client
        .online_sign(share, presignature, prehash, &mut claim)
        .await
}

impl Wallet {
    /// Runs `count` presigning sessions with the current share of `key_id`
    /// (root key) and adds each presignature to the local pool.
    /// Presignatures of an older epoch are dropped by the next refresh.
    ///
    /// Returns the pool size of the current epoch afterwards.
    ///
    /// # Errors
    ///
    /// As [`Wallet::sign`]; presignatures made before a failure stay in
    /// the pool.
    pub async fn presign(&self, key_id: &str, count: u32) -> Result<u32, ClientError> {
        let key_id = key_id_arg(key_id)?;
        let mut share = self.current_share(&key_id)?;
        if share.is_ot_burned() {
            return Err(ClientError::OtMaterialBurned);
        }
        let client = self.client()?;
        for _ in 0..count {
            let presignature = match client.presign(&share).await {
                Ok(presignature) => presignature,
                Err(err) => {
                    self.burn_on_ban(&mut share, &err)?;
                    return Err(ClientError::from_transport(&err, "key"));
                }
            };
            if *presignature.key_id() != key_id
                || presignature.epoch() != share.epoch()
                || presignature.role() != share.role()
            {
                return Err(ClientError::protocol(
                    "the presignature is of another key, epoch or role",
                ));
            }
            self.records().save_presignature(&presignature)?;
        }
        self.pool_size(&key_id, share.epoch())
    }

    /// Signs `prehash` under the root key of `key_id` with a presignature
    /// from the local pool (one round trip). The presignature is removed
    /// from the store before its online message leaves, whatever happens
    /// next.
    ///
    /// # Errors
    ///
    /// [`ClientError::NoPresignatures`] if the pool of the current epoch is
    /// empty; [`ClientError::NotFound`] (`"presignature"`) if the server no
    /// longer holds its half (used, or dropped by a refresh); otherwise as
    /// [`Wallet::sign`].
    pub async fn sign_online(
        &self,
        key_id: &str,
        prehash: [u8; 32],
    ) -> Result<Signature, ClientError> {
        let key_id = key_id_arg(key_id)?;
        let mut share = self.current_share(&key_id)?;
        if share.is_ot_burned() {
            return Err(ClientError::OtMaterialBurned);
        }
        check_role(&share)?;
        let client = self.client()?;
        let (presignature, claim) = self.take_presignature(&key_id, share.epoch())?;
        let prehash = Prehash::from_bytes(prehash);
        match online_step(&client, &share, presignature, prehash, claim).await {
            Ok(signed) => checked_signature(&share.public_key(), &prehash, &signed),
            Err(err) => {
                self.burn_on_ban(&mut share, &err)?;
                Err(ClientError::from_transport(&err, "presignature"))
            }
        }
    }

    /// Presignatures of `epoch` in `key_id`'s pool that can still be taken.
    pub(crate) fn pool_size(&self, key_id: &KeyId, epoch: u64) -> Result<u32, ClientError> {
        let pool = self.records().pool(key_id)?;
        let count = usable(&pool, epoch).count();
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    /// Takes one presignature of `epoch` out of the pool: writes its spent
    /// marker, then deletes it, then returns it with the guard that
    /// confirms this claim to the online step. A presignature that has a
    /// marker (a restored blob) or does not open is deleted and skipped.
    fn take_presignature(
        &self,
        key_id: &KeyId,
        epoch: u64,
    ) -> Result<(Presignature, TakenClaim), ClientError> {
        let _guard = self
            .pool_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let records = self.records();
        let pool = records.pool(key_id)?;
        let names: Vec<String> = usable(&pool, epoch)
            .map(|(name, _, _)| name.clone())
            .collect();
        for name in names {
            let presignature = match records.presignature(&name) {
                Ok(Some(presignature)) => presignature,
                // Gone meanwhile.
                Ok(None) => continue,
                Err(ClientError::Corrupt { .. }) => {
                    records.store.delete(&name)?;
                    continue;
                }
                Err(err) => return Err(err),
            };
            // The marker first: if the process dies after it, the blob is
            // never used, whatever the delete did.
            let spent = spent_name(key_id, epoch, &presignature.session_id().0);
            records.store.put(&spent, b"spent")?;
            records.store.delete(&name)?;
            let claim = TakenClaim {
                key_id: *key_id,
                epoch,
                session: presignature.session_id(),
                confirmed: false,
            };
            return Ok((presignature, claim));
        }
        Err(ClientError::NoPresignatures)
    }
}

/// The presignature entries of `epoch` without a spent marker. A restored
/// blob of a taken presignature has one, and is not usable.
fn usable(pool: &[(String, bool, u64)], epoch: u64) -> impl Iterator<Item = &(String, bool, u64)> {
    pool.iter().filter(move |(name, is_presig, e)| {
        *is_presig
            && *e == epoch
            && !pool
                .iter()
                .any(|(other, other_is_presig, _)| !*other_is_presig && spent_twin(name) == *other)
    })
}

/// `<key>.presig.<epoch>.<sid>` → `<key>.spent.<epoch>.<sid>`.
fn spent_twin(name: &str) -> String {
    name.replacen(".presig.", ".spent.", 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_claim_confirms_its_presignature_once() {
        let (key_id, session) = (KeyId([7; 32]), SessionId([9; 32]));
        let mut claim = TakenClaim {
            key_id,
            epoch: 3,
            session,
            confirmed: false,
        };
        // Another presignature, key or epoch: never the recorded claim.
        assert_eq!(
            claim.claim(&key_id, 3, &SessionId([8; 32])),
            Err(ClaimRefused::Unavailable)
        );
        assert_eq!(
            claim.claim(&KeyId([6; 32]), 3, &session),
            Err(ClaimRefused::Unavailable)
        );
        assert_eq!(
            claim.claim(&key_id, 4, &session),
            Err(ClaimRefused::Unavailable)
        );
        assert_eq!(claim.claim(&key_id, 3, &session), Ok(()));
        assert_eq!(
            claim.claim(&key_id, 3, &session),
            Err(ClaimRefused::AlreadyClaimed)
        );
    }
}
