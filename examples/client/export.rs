//! `export`: the full private key, from the server's encrypted share and
//! this client's (see the crate documentation).

use mpc_core::export::{import_export, ExportCiphertext};
use mpc_core::KeyId;
use rand_core::OsRng;
use serde_json::{json, Value};
use zeroize::{Zeroize, Zeroizing};

use crate::cli::parse_key_id;
use crate::commands::{block_on, key_hex, Context};
use crate::output::Failure;
use crate::rest::{post_json, rest_url};

/// 64 hex digits of a secret, in one allocation of the right size and
/// without other copies left behind.
fn secret_hex(bytes: &[u8; 32]) -> String {
    let mut digits = Zeroizing::new([0u8; 64]);
    // 64 = 2 * 32: cannot fail.
    let _ = hex::encode_to_slice(bytes, digits.as_mut());
    let mut text = String::with_capacity(digits.len());
    text.extend(digits.iter().map(|&d| char::from(d)));
    text
}

/// The ciphertext of the export response, checked to be for `key_id` at
/// `epoch`.
fn export_ciphertext(
    response: &Value,
    key_id: &KeyId,
    epoch: u64,
) -> Result<ExportCiphertext, Failure> {
    let bad = |why: String| Failure::remote("protocol", format!("export response: {why}"));
    let field = |name: &str| {
        response[name]
            .as_str()
            .ok_or_else(|| bad(format!("no string {name:?}")))
    };
    let answered_key = field("key_id")?;
    if parse_key_id(answered_key).ok().as_ref() != Some(key_id) {
        return Err(bad(format!("it is for key {answered_key:?}, not {key_id}")));
    }
    match response["epoch"].as_u64() {
        Some(answered) if answered == epoch => {}
        Some(answered) => return Err(bad(format!("it is for epoch {answered}, not {epoch}"))),
        None => return Err(bad("no number \"epoch\"".to_owned())),
    }
    let bytes = hex::decode(field("ciphertext")?)
        .map_err(|_| bad("\"ciphertext\" is not hex".to_owned()))?;
    ExportCiphertext::from_bytes(&bytes)
        .map_err(|e| bad(format!("\"ciphertext\" does not decode: {}", e.as_str())))
}

pub(crate) fn cmd_export(ctx: &Context, key_id: &KeyId, rest: &str) -> Result<Value, Failure> {
    let token = ctx.token()?;
    let url = rest_url(rest, &format!("v1/keys/{key_id}/export"))?;
    let share = ctx.state.load_current(key_id)?;
    // Zeroized on drop.
    let onetime = k256::SecretKey::random(&mut OsRng);
    let request = json!({
        "onetime_public_key": key_hex(&onetime.public_key()),
        "epoch": share.epoch(),
    });
    let response = block_on(post_json(url, token, &request))??;
    let ciphertext = export_ciphertext(&response, key_id, share.epoch())?;
    let exported = import_export(&share, &onetime, &ciphertext).map_err(|e| {
        let code = match e {
            mpc_core::Error::KeyMismatch => "key_mismatch",
            mpc_core::Error::ExportFailed => "export_failed",
            mpc_core::Error::ExportMismatch => "export_mismatch",
            _ => "protocol",
        };
        Failure::remote(code, format!("the exported share: {}", e.as_str()))
    })?;
    drop(onetime);
    // import_export checked x*G against the key; checked again here, where
    // the printed key comes from.
    if exported.public_key() != share.public_key() {
        return Err(Failure::remote(
            "export_mismatch",
            "the exported key is not this key",
        ));
    }
    let mut bytes: [u8; 32] = exported.to_bytes().into();
    let secret_key = secret_hex(&bytes);
    bytes.zeroize();
    // `main` wipes the printed strings.
    Ok(json!({
        "secret_key": secret_key,
        "public_key": key_hex(&exported.public_key()),
    }))
}
