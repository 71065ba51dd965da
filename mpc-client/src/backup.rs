//! Verification of the server's backups (PROTOCOL.md §17): the JSON that
//! `POST /v1/keys/<key_id>/backup` returns (`{"key_id", "epoch", "role",
//! "public_share", "recovery_public_key", "backup", "created_at"}`).

use mpc_core::backup::Backup;
use mpc_core::wire::{decode_point, Role};
use mpc_core::KeyId;
use serde_json::Value;

use crate::error::ClientError;
use crate::layout::{key_id_arg, Records};
use crate::store::MAX_ENTRY_BYTES;
use crate::wallet::Wallet;

/// The fields of a backup file that are checked.
struct BackupFile {
    key_id: String,
    epoch: u64,
    role: String,
    public_share: String,
    recovery_public_key: String,
    backup: String,
}

impl BackupFile {
    fn parse(json: &[u8]) -> Result<Self, ClientError> {
        let invalid = |why: String| ClientError::invalid(format!("backup file: {why}"));
        if json.len() as u64 > MAX_ENTRY_BYTES {
            return Err(invalid(format!("larger than {MAX_ENTRY_BYTES} bytes")));
        }
        let value: Value =
            serde_json::from_slice(json).map_err(|e| invalid(format!("not JSON: {e}")))?;
        if !value.is_object() {
            return Err(invalid("not a JSON object".to_owned()));
        }
        let string = |name: &str| {
            value[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| invalid(format!("no string {name:?}")))
        };
        Ok(Self {
            key_id: string("key_id")?,
            epoch: value["epoch"]
                .as_u64()
                .ok_or_else(|| invalid("no unsigned integer \"epoch\"".to_owned()))?,
            role: string("role")?,
            public_share: string("public_share")?,
            recovery_public_key: string("recovery_public_key")?,
            backup: string("backup")?,
        })
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::A => "a",
        Role::B => "b",
    }
}

fn point_of_hex(text: &str) -> Result<k256::ProjectivePoint, String> {
    let bytes = hex::decode(text).map_err(|_| "not hex".to_owned())?;
    decode_point(&bytes).map_err(|e| e.as_str().to_owned())
}

/// Checks a backup file: its proof for its `public_share` and
/// `recovery_public_key`, that its label names the file's key, epoch and
/// role, and that it is of `key_id` if given. Needs no wallet or server.
///
/// # Errors
///
/// [`ClientError::InvalidInput`] if the file is not such a JSON object;
/// [`ClientError::BackupInvalid`] with every failed check.
pub fn verify_backup(backup_json: &[u8], key_id: Option<&str>) -> Result<(), ClientError> {
    let key_id = key_id.map(key_id_arg).transpose()?;
    check(backup_json, key_id.as_ref(), None)
}

/// The checks; with `records`, also against the wallet's share of the
/// backup's epoch if the wallet holds the key.
fn check(
    backup_json: &[u8],
    key_id: Option<&KeyId>,
    records: Option<&Records<'_>>,
) -> Result<(), ClientError> {
    let file = BackupFile::parse(backup_json)?;
    let mut reasons: Vec<String> = Vec::new();

    let file_key = mpc_api::parse_key_id(&file.key_id);
    if file_key.is_none() {
        reasons.push("key_id is not 64 hex digits".to_owned());
    }
    let role = match file.role.as_str() {
        "a" | "A" => Some(Role::A),
        "b" | "B" => Some(Role::B),
        _ => {
            reasons.push(format!("role {:?} is neither \"a\" nor \"b\"", file.role));
            None
        }
    };
    let public_share = point_of_hex(&file.public_share)
        .map_err(|e| reasons.push(format!("public_share is not a public key: {e}")))
        .ok();
    let recovery_key = point_of_hex(&file.recovery_public_key)
        .and_then(|point| {
            k256::PublicKey::from_affine(point.to_affine()).map_err(|_| "the identity".to_owned())
        })
        .map_err(|e| reasons.push(format!("recovery_public_key is not a public key: {e}")))
        .ok();
    let backup = hex::decode(&file.backup)
        .map_err(|_| "not hex".to_owned())
        .and_then(|bytes| Backup::from_bytes(&bytes).map_err(|e| e.as_str().to_owned()))
        .map_err(|e| reasons.push(format!("backup does not decode: {e}")))
        .ok();

    if let Some(backup) = &backup {
        let label = backup.label();
        if file_key.is_some_and(|k| k != label.key_id)
            || label.epoch != file.epoch
            || role.is_some_and(|r| r != label.role)
        {
            reasons.push(format!(
                "the backup is of key {}, epoch {}, role {}, not of the file's key_id, epoch and role",
                label.key_id,
                label.epoch,
                role_name(label.role)
            ));
        }
        if let (Some(public_share), Some(recovery_key)) = (&public_share, &recovery_key) {
            if backup.verify(public_share, recovery_key).is_err() {
                reasons.push(
                    "the backup's proof does not verify for this public_share and recovery_public_key"
                        .to_owned(),
                );
            }
        }
    }
    if let Some(wanted) = key_id {
        if file_key.as_ref() != Some(wanted) {
            reasons.push(format!(
                "the file is a backup of key {}, not of key {wanted}",
                file.key_id
            ));
        }
    }

    // Against this wallet's share of the backup's epoch, if it holds the key.
    let target = key_id.copied().or(file_key);
    if let (Some(records), Some(target), Some(role), Some(public_share)) =
        (records, target, role, public_share)
    {
        if let Some(current) = records.current_epoch(&target)? {
            match records.share(&target, file.epoch)? {
                Some(share) => {
                    if share.public_share(role) != public_share {
                        reasons.push(format!(
                            "public share does not match this key: it is not party {}'s \
                             public share of key {target} at epoch {}",
                            role_name(role),
                            file.epoch
                        ));
                    } else if share.public_share(role.peer()) + public_share
                        != share.public_key().to_projective()
                    {
                        reasons.push(format!(
                            "public share does not match this key: X_A + X_B is not the public \
                             key of key {target}"
                        ));
                    }
                }
                None => reasons.push(format!(
                    "this wallet holds no share of key {target} at epoch {} \
                     (current epoch {current}): the backup cannot be checked against, or \
                     restore the key with, this wallet's share",
                    file.epoch
                )),
            }
        }
    }

    if reasons.is_empty() {
        Ok(())
    } else {
        Err(ClientError::BackupInvalid { reasons })
    }
}

impl Wallet {
    /// As [`verify_backup`], and if the wallet holds the key (`key_id`,
    /// default the file's), also that the file's `public_share` is that
    /// party's public share in the wallet's share of the backup's epoch and
    /// that the shares add up to the key's public key. A backup of an epoch
    /// the wallet holds no share of is invalid: it cannot restore the key
    /// with this wallet's share.
    ///
    /// # Errors
    ///
    /// As [`verify_backup`]; [`ClientError::Store`] or
    /// [`ClientError::Corrupt`] if the wallet's share cannot be read.
    pub fn verify_backup(
        &self,
        backup_json: &[u8],
        key_id: Option<&str>,
    ) -> Result<(), ClientError> {
        let key_id = key_id.map(key_id_arg).transpose()?;
        check(backup_json, key_id.as_ref(), Some(&self.records()))
    }
}

/// The same checks against a store opened without a wallet (no server, no
/// token), e.g. by a command-line tool.
///
/// # Errors
///
/// As [`Wallet::verify_backup`].
pub fn verify_backup_in_store(
    store: &dyn crate::ShareStore,
    storage_key: &[u8; 32],
    backup_json: &[u8],
    key_id: Option<&str>,
) -> Result<(), ClientError> {
    let key_id = key_id.map(key_id_arg).transpose()?;
    let records = Records {
        store,
        key: storage_key,
    };
    check(backup_json, key_id.as_ref(), Some(&records))
}
