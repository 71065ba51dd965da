//! The commands that use the WebSocket server or only the state directory:
//! `keygen`, `sign`, `refresh`, `list` and `show`.

use std::future::Future;

use k256::ecdsa::signature::hazmat::PrehashVerifier;
use k256::ecdsa::VerifyingKey;
use mpc_core::wire::Role;
use mpc_core::{DerivationPath, KeyId, KeyShare, Prehash, Refresh, SignatureOutput};
use mpc_transport_ws::{Client, Rejection};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::output::{transport_failure, Failure};
use crate::state::StateDir;

/// What every command gets.
pub(crate) struct Context {
    pub(crate) server: String,
    pub(crate) token: Option<Zeroizing<String>>,
    pub(crate) state: StateDir,
}

impl Context {
    /// The bearer token; fails without one.
    pub(crate) fn token(&self) -> Result<&str, Failure> {
        match self.token.as_ref().filter(|t| !t.is_empty()) {
            Some(token) => Ok(token.as_str()),
            None => Err(Failure::usage(
                "this command needs a bearer token: set MPC_TOKEN or pass --token",
            )),
        }
    }

    /// A client of the server; fails without a token.
    pub(crate) fn client(&self) -> Result<Client, Failure> {
        let token = self.token()?;
        if !(self.server.starts_with("ws://") || self.server.starts_with("wss://")) {
            return Err(Failure::usage(format!(
                "--server must be a ws:// or wss:// URL, not {:?}",
                self.server
            )));
        }
        Ok(Client::new(self.server.clone()).with_bearer_token(token))
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

pub(crate) fn key_hex(public_key: &k256::PublicKey) -> String {
    hex::encode(public_key.to_sec1_bytes())
}

/// A share the server handed back must be this client's.
fn check_role(share: &KeyShare) -> Result<(), Failure> {
    if share.role() == Role::A {
        Ok(())
    } else {
        Err(Failure::remote(
            "protocol",
            "the server returned a share of the wrong role",
        ))
    }
}

pub(crate) fn cmd_keygen(ctx: &Context) -> Result<Value, Failure> {
    let client = ctx.client()?;
    let share = block_on(client.keygen())?.map_err(|e| transport_failure(&e))?;
    check_role(&share)?;
    ctx.state.save_share(&share)?;
    ctx.state.set_current(share.key_id(), share.epoch())?;
    Ok(json!({
        "key_id": share.key_id().to_string(),
        "public_key": key_hex(&share.public_key()),
        "xpub": share.xpub().to_string(),
    }))
}

/// Checks a signature independently of the protocol's own check: valid and
/// low-S under `public_key`, and the recovery id recovers that key.
fn verify_signature(
    public_key: &k256::PublicKey,
    prehash: &Prehash,
    signed: &SignatureOutput,
) -> Result<(), Failure> {
    let key = VerifyingKey::from(public_key);
    let bad = |what: &str| Failure::remote("verification_failed", format!("the signature {what}"));
    if signed.signature.normalize_s().is_some() {
        return Err(bad("is not low-S"));
    }
    key.verify_prehash(prehash.as_bytes(), &signed.signature)
        .map_err(|_| bad("does not verify under the key"))?;
    let recovered = VerifyingKey::recover_from_prehash(
        prehash.as_bytes(),
        &signed.signature,
        signed.recovery_id,
    )
    .map_err(|_| bad("recovers no key"))?;
    if recovered != key {
        return Err(bad("recovers another key with its recovery id"));
    }
    Ok(())
}

/// The current share of `key_id`, refused if its OT material was burned
/// (PROTOCOL.md §8: a ban stops every scheme until a refresh).
pub(crate) fn signing_share(ctx: &Context, key_id: &KeyId) -> Result<KeyShare, Failure> {
    let share = ctx.state.load_current(key_id)?;
    if share.is_ot_burned() {
        return Err(Failure::local(
            "ot_burned",
            format!(
                "the OT material of epoch {} was burned after a failed signature: run refresh",
                share.epoch()
            ),
        ));
    }
    Ok(share)
}

/// The failure of a signing session; after a ban-class one, the share's OT
/// material is burned and saved first (PROTOCOL.md §8).
pub(crate) fn signing_failure(
    ctx: &Context,
    share: &mut KeyShare,
    err: &mpc_transport_ws::TransportError,
) -> Failure {
    let mut failure = transport_failure(err);
    if err.is_ban() {
        share.burn_ot_material();
        failure.message = match ctx.state.save_share(share) {
            Ok(()) => format!(
                "{}; the share's OT material was burned: run refresh before signing again",
                failure.message
            ),
            Err(save) => format!(
                "{}; burning the share's OT material failed ({}): run refresh before signing again",
                failure.message, save.message
            ),
        };
    }
    failure
}

pub(crate) fn cmd_sign(
    ctx: &Context,
    key_id: &KeyId,
    prehash: Prehash,
    path: Option<&DerivationPath>,
) -> Result<Value, Failure> {
    let client = ctx.client()?;
    let mut share = signing_share(ctx, key_id)?;
    let public_key = match path {
        Some(path) => {
            share
                .derive(path)
                .map_err(|e| Failure::usage(format!("--path {path}: {}", e.as_str())))?
                .0
        }
        None => share.public_key(),
    };
    let result = block_on(async {
        match path {
            Some(path) => client.sign_with_path(&share, prehash, path).await,
            None => client.sign(&share, prehash).await,
        }
    })?;
    let signed = result.map_err(|err| signing_failure(ctx, &mut share, &err))?;
    verify_signature(&public_key, &prehash, &signed)?;
    Ok(json!({
        "public_key": key_hex(&public_key),
        "prehash": hex::encode(prehash.as_bytes()),
        "signature": hex::encode(signed.signature.to_bytes()),
        "recovery_id": signed.recovery_id.to_byte(),
    }))
}

/// Persists a refresh's progress before each message leaves
/// (PROTOCOL.md §18.1).
struct RefreshJournal<'a> {
    state: &'a StateDir,
    key_id: KeyId,
    new_epoch: u64,
    /// The new share file is written ("ready").
    saved: bool,
    /// `current` names the new epoch ("confirmed").
    confirmed: bool,
    /// Why the hook stopped the session, if it did.
    failure: Option<Failure>,
}

impl RefreshJournal<'_> {
    fn before_send(&mut self, refresh: &Refresh<'_>) -> Result<(), Rejection> {
        self.record(refresh).map_err(|failure| {
            self.failure = Some(failure);
            Rejection::INTERNAL
        })
    }

    fn record(&mut self, refresh: &Refresh<'_>) -> Result<(), Failure> {
        if !self.saved {
            if let Some(new) = refresh.ready_share() {
                if new.epoch() != self.new_epoch || *new.key_id() != self.key_id {
                    return Err(Failure::remote(
                        "protocol",
                        "the refresh produced a share of another key or epoch",
                    ));
                }
                // Overwrites a leftover of an earlier, interrupted refresh.
                self.state.save_share(new)?;
                self.saved = true;
            }
        }
        if self.saved && !self.confirmed && refresh.is_confirmed() {
            self.state.set_current(&self.key_id, self.new_epoch)?;
            self.confirmed = true;
        }
        Ok(())
    }
}

pub(crate) fn cmd_refresh(ctx: &Context, key_id: &KeyId) -> Result<Value, Failure> {
    let client = ctx.client()?;
    let old = ctx.state.load_current(key_id)?;
    let old_epoch = old.epoch();
    let Some(new_epoch) = old_epoch.checked_add(1) else {
        return Err(Failure::local("state", "the epoch cannot grow any more"));
    };
    let mut journal = RefreshJournal {
        state: &ctx.state,
        key_id: *key_id,
        new_epoch,
        saved: false,
        confirmed: false,
        failure: None,
    };
    let result = {
        let mut hook = |refresh: &Refresh<'_>| std::future::ready(journal.before_send(refresh));
        block_on(client.refresh(&old, &mut hook))?
    };
    let new = match result {
        Ok(new) => new,
        Err(err) => {
            let signing = if journal.confirmed {
                new_epoch
            } else {
                old_epoch
            };
            // A storage failure in the hook is the cause; the transport only
            // reports that the hook stopped the session.
            let mut failure = journal
                .failure
                .take()
                .unwrap_or_else(|| transport_failure(&err));
            failure.message = format!(
                "{}; the refresh did not finish, signing uses epoch {signing}",
                failure.message
            );
            return Err(failure);
        }
    };
    check_role(&new)?;
    if new.epoch() != new_epoch || new.key_id() != key_id || new.public_key() != old.public_key() {
        return Err(Failure::remote(
            "protocol",
            "the refresh returned a share of another key or epoch",
        ));
    }
    // The hook saw both states before the last message left; this only
    // matters if it did not.
    if !journal.saved {
        ctx.state.save_share(&new)?;
    }
    if !journal.confirmed {
        ctx.state.set_current(key_id, new_epoch)?;
    }
    // Finalized: the server is confirmed and will not ask for older epochs.
    ctx.state.remove_shares_before(key_id, new_epoch)?;
    Ok(json!({ "key_id": key_id.to_string(), "epoch": new_epoch }))
}

pub(crate) fn cmd_list(ctx: &Context) -> Result<Value, Failure> {
    let mut keys = Vec::new();
    for key_id in ctx.state.keys()? {
        let share = ctx.state.load_current(&key_id)?;
        keys.push(json!({
            "key_id": key_id.to_string(),
            "public_key": key_hex(&share.public_key()),
            "epoch": share.epoch(),
        }));
    }
    Ok(json!({ "keys": keys }))
}

pub(crate) fn cmd_show(ctx: &Context, key_id: &KeyId) -> Result<Value, Failure> {
    let share = ctx.state.load_current(key_id)?;
    Ok(json!({
        "key_id": key_id.to_string(),
        "public_key": key_hex(&share.public_key()),
        "xpub": share.xpub().to_string(),
        "epoch": share.epoch(),
        "ot_burned": share.is_ot_burned(),
    }))
}
