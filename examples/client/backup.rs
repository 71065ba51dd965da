//! `verify-backup`: checks a backup file from the server (see the crate
//! documentation).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use mpc_core::backup::Backup;
use mpc_core::wire::{decode_point, Role};
use mpc_core::KeyId;
use serde_json::{json, Value};

use crate::cli::parse_key_id;
use crate::output::Failure;
use crate::state::{StateDir, MAX_FILE_BYTES};

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
    /// Reads the file; fails if it is not a JSON object with these fields
    /// of these types.
    fn read(path: &Path) -> Result<Self, Failure> {
        let file = File::open(path)
            .map_err(|e| Failure::local("file", format!("reading {}: {e}", path.display())))?;
        let mut text = Vec::new();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut text)
            .map_err(|e| Failure::local("file", format!("reading {}: {e}", path.display())))?;
        let invalid =
            |why: String| Failure::local("invalid_file", format!("{}: {why}", path.display()));
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(invalid(format!("larger than {MAX_FILE_BYTES} bytes")));
        }
        let value: Value =
            serde_json::from_slice(&text).map_err(|e| invalid(format!("not JSON: {e}")))?;
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

/// A SEC1 compressed point in hex.
fn point_of_hex(text: &str) -> Result<k256::ProjectivePoint, String> {
    let bytes = hex::decode(text).map_err(|_| "not hex".to_owned())?;
    decode_point(&bytes).map_err(|e| e.as_str().to_owned())
}

pub(crate) fn cmd_verify_backup(
    state: Option<&StateDir>,
    path: &Path,
    key_id: Option<&KeyId>,
) -> Result<Value, Failure> {
    let file = BackupFile::read(path)?;
    let mut reasons: Vec<String> = Vec::new();

    let file_key = parse_key_id(&file.key_id)
        .map_err(|_| reasons.push("key_id is not 64 hex digits".to_owned()))
        .ok();
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
                "the file is a backup of key {}, not of --key-id {wanted}",
                file.key_id
            ));
        }
    }

    // Against this client's share of the backup's epoch, if it holds the key.
    let target = key_id.copied().or(file_key);
    if let (Some(state), Some(target), Some(role), Some(public_share)) =
        (state, target, role, public_share)
    {
        if let Some(current) = state.held_epoch(&target)? {
            match state.load_share_if_present(&target, file.epoch)? {
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
                    "this state directory holds no share of key {target} at epoch {} \
                     (current epoch {current}): the backup cannot be checked against, or \
                     restore the key with, this client's share",
                    file.epoch
                )),
            }
        }
    }

    Ok(if reasons.is_empty() {
        json!({ "valid": true })
    } else {
        json!({ "valid": false, "reason": reasons.join("; ") })
    })
}
