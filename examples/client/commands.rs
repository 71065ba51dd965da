//! The commands that use the wallet: `keygen`, `sign`, `refresh`, `list`,
//! `show` and `export`, each a thin shell over `mpc_client::Wallet`.

use std::future::Future;
use std::sync::Arc;

use mpc_client::{ClientError, KeyInfo, ShareStore, Wallet, WalletConfig};
use mpc_core::{DerivationPath, KeyId, Prehash};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::output::{client_failure, Failure};
use crate::state::StateDir;

/// Stands in for the URLs of commands that do not talk to the server (the
/// wallet never connects for them).
const UNUSED_URL: &str = "http://127.0.0.1:9";

/// What every command gets.
pub(crate) struct Context {
    pub(crate) server: String,
    pub(crate) token: Option<Zeroizing<String>>,
    pub(crate) state: StateDir,
}

impl Context {
    /// The bearer token; fails without one.
    fn token(&self) -> Result<&str, Failure> {
        match self.token.as_ref().filter(|t| !t.is_empty()) {
            Some(token) => Ok(token.as_str()),
            None => Err(Failure::usage(
                "this command needs a bearer token: set MPC_TOKEN or pass --token",
            )),
        }
    }

    /// A wallet over the state directory. With `rest`, for the server
    /// (needs a token); without, for local reads only.
    fn wallet(&self, server: bool, rest: Option<&str>) -> Result<Wallet, Failure> {
        let (server_url, token) = if server || rest.is_some() {
            if !(self.server.starts_with("ws://") || self.server.starts_with("wss://")) {
                return Err(Failure::usage(format!(
                    "--server must be a ws:// or wss:// URL, not {:?}",
                    self.server
                )));
            }
            (self.server.clone(), self.token()?.to_owned())
        } else {
            (UNUSED_URL.replace("http", "ws"), String::new())
        };
        let store: Arc<dyn ShareStore> = Arc::clone(&self.state.store) as Arc<dyn ShareStore>;
        Wallet::new(
            WalletConfig {
                server_url,
                rest_url: rest.unwrap_or(UNUSED_URL).to_owned(),
                token: Zeroizing::new(token),
                storage_key: self.state.storage_key.clone(),
            },
            store,
        )
        .map_err(|e| match e {
            ClientError::InvalidInput { message } => Failure::usage(format!("--rest: {message}")),
            other => client_failure(&other),
        })
    }

    /// The key's data; `unknown_key` if the state directory does not hold
    /// it.
    fn held(&self, wallet: &Wallet, key_id: &KeyId) -> Result<KeyInfo, Failure> {
        match wallet.key(&key_id.to_string()) {
            Ok(info) => Ok(info),
            Err(ClientError::NotFound { .. }) => Err(Failure::local(
                "unknown_key",
                format!("no key {key_id} in {}", self.state.store.dir().display()),
            )),
            Err(err) => Err(client_failure(&err)),
        }
    }
}

/// Runs `future` to completion on a fresh runtime.
pub(crate) fn block_on<F: Future>(future: F) -> Result<F::Output, Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::local("runtime", format!("starting the runtime: {e}")))?;
    Ok(runtime.block_on(future))
}

pub(crate) fn cmd_keygen(ctx: &Context) -> Result<Value, Failure> {
    let wallet = ctx.wallet(true, None)?;
    let key = block_on(wallet.keygen())?.map_err(|e| client_failure(&e))?;
    Ok(json!({
        "key_id": key.key_id,
        "public_key": hex::encode(key.public_key),
        "xpub": key.xpub,
    }))
}

pub(crate) fn cmd_sign(
    ctx: &Context,
    key_id: &KeyId,
    prehash: Prehash,
    path: Option<&DerivationPath>,
) -> Result<Value, Failure> {
    let wallet = ctx.wallet(true, None)?;
    ctx.held(&wallet, key_id)?;
    let path = path.map(ToString::to_string);
    let signed = block_on(wallet.sign(&key_id.to_string(), *prehash.as_bytes(), path.as_deref()))?
        .map_err(|e| client_failure(&e))?;
    Ok(json!({
        "public_key": hex::encode(signed.public_key),
        "prehash": hex::encode(signed.prehash),
        "signature": hex::encode(signed.r_s),
        "recovery_id": signed.recovery_id,
    }))
}

pub(crate) fn cmd_refresh(ctx: &Context, key_id: &KeyId) -> Result<Value, Failure> {
    let wallet = ctx.wallet(true, None)?;
    ctx.held(&wallet, key_id)?;
    match block_on(wallet.refresh(&key_id.to_string()))? {
        Ok(epoch) => Ok(json!({ "key_id": key_id.to_string(), "epoch": epoch })),
        Err(err) => {
            let mut failure = client_failure(&err);
            // PROTOCOL.md §18.1: the epoch the wallet signs with now.
            if let Ok(info) = wallet.key(&key_id.to_string()) {
                failure.message = format!(
                    "{}; the refresh did not finish, signing uses epoch {}",
                    failure.message, info.epoch
                );
            }
            Err(failure)
        }
    }
}

pub(crate) fn cmd_list(ctx: &Context) -> Result<Value, Failure> {
    let wallet = ctx.wallet(false, None)?;
    let keys: Vec<Value> = wallet
        .keys()
        .map_err(|e| client_failure(&e))?
        .into_iter()
        .map(|key| {
            json!({
                "key_id": key.key_id,
                "public_key": hex::encode(key.public_key),
                "epoch": key.epoch,
            })
        })
        .collect();
    Ok(json!({ "keys": keys }))
}

pub(crate) fn cmd_show(ctx: &Context, key_id: &KeyId) -> Result<Value, Failure> {
    let wallet = ctx.wallet(false, None)?;
    let key = ctx.held(&wallet, key_id)?;
    Ok(json!({
        "key_id": key.key_id,
        "public_key": hex::encode(key.public_key),
        "xpub": key.xpub,
        "epoch": key.epoch,
        "ot_burned": key.ot_burned,
    }))
}

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

pub(crate) fn cmd_export(ctx: &Context, key_id: &KeyId, rest: &str) -> Result<Value, Failure> {
    let token = ctx.token()?.to_owned();
    let wallet = ctx.wallet(false, Some(rest))?;
    ctx.held(&wallet, key_id)?;
    let exported = block_on(wallet.export(&key_id.to_string(), &token))?.map_err(|e| match e {
        // A REST 404 names the server's key record.
        ClientError::NotFound { .. } => Failure::remote("key_not_found", e.to_string()),
        other => client_failure(&other),
    })?;
    // `main` wipes the printed strings.
    Ok(json!({
        "secret_key": secret_hex(&exported.secret_key),
        "public_key": hex::encode(exported.public_key),
    }))
}
