//! `verify-backup`: checks a backup file from the server with
//! `mpc_client` (see the crate documentation).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use mpc_client::{ClientError, MAX_ENTRY_BYTES};
use mpc_core::KeyId;
use serde_json::{json, Value};

use crate::output::{client_failure, Failure};
use crate::state::StateDir;

pub(crate) fn cmd_verify_backup(
    state: Option<&StateDir>,
    path: &Path,
    key_id: Option<&KeyId>,
) -> Result<Value, Failure> {
    let file = File::open(path)
        .map_err(|e| Failure::local("file", format!("reading {}: {e}", path.display())))?;
    let mut json = Vec::new();
    file.take(MAX_ENTRY_BYTES + 1)
        .read_to_end(&mut json)
        .map_err(|e| Failure::local("file", format!("reading {}: {e}", path.display())))?;
    let key_id = key_id.map(ToString::to_string);
    let result = match state {
        Some(state) => mpc_client::verify_backup_in_store(
            &*state.store,
            &state.storage_key,
            &json,
            key_id.as_deref(),
        ),
        None => mpc_client::verify_backup(&json, key_id.as_deref()),
    };
    match result {
        Ok(()) => Ok(json!({ "valid": true })),
        Err(ClientError::BackupInvalid { reasons }) => {
            let reason = reasons
                .join("; ")
                // The library names the key; here it came from --key-id.
                .replace(", not of key ", ", not of --key-id ")
                .replace("this wallet", "this state directory");
            Ok(json!({ "valid": false, "reason": reason }))
        }
        Err(ClientError::InvalidInput { message }) => Err(Failure::local(
            "invalid_file",
            format!("{}: {message}", path.display()),
        )),
        Err(err) => Err(client_failure(&err)),
    }
}
