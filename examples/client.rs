//! A command-line client (party A, share P1) of a two-party signing server:
//! key generation, signing and share refresh over WebSocket, with the
//! client's shares kept in a local state directory.
//!
//! ```sh
//! export MPC_TOKEN=...   # better than --token, which `ps` shows to everyone
//! cargo run --release --example client -- --server ws://127.0.0.1:8080 --state ./state keygen
//! cargo run --release --example client -- --state ./state sign --key-id <K> --prehash <64 hex> [--path m/0/5]
//! cargo run --release --example client -- --state ./state refresh --key-id <K>
//! cargo run --release --example client -- --state ./state list
//! cargo run --release --example client -- --state ./state show --key-id <K>
//! ```
//!
//! `--server` defaults to `$MPC_SERVER`, then `ws://127.0.0.1:8080`; the URL
//! is used as given (add the server's path if it has one). `--token`
//! defaults to `$MPC_TOKEN`; only the commands that talk to the server need
//! it. The global options may also follow the command.
//!
//! # Output
//!
//! Each command prints exactly one JSON object on one line on stdout:
//!
//! - `keygen`: `{"key_id", "public_key", "xpub"}`;
//! - `sign`: `{"public_key", "prehash", "signature", "recovery_id"}`, where
//!   `public_key` is the (derived) key the signature verifies under and
//!   `signature` is `r || s` (64 bytes, low S), checked here before printing;
//! - `refresh`: `{"key_id", "epoch"}` (the new epoch);
//! - `list`: `{"keys": [{"key_id", "public_key", "epoch"}, ...]}`;
//! - `show`: `{"key_id", "public_key", "xpub", "epoch", "ot_burned"}`.
//!
//! Keys are SEC1 compressed hex, other byte strings lower-case hex. On
//! failure nothing goes to stdout; one line `{"error": "<code>", "message":
//! "..."}` goes to stderr and the exit status is 1 for a usage or local
//! error (state directory, permissions, unknown key) and 2 for a server,
//! connection or protocol error. The token and share bytes are never
//! printed.
//!
//! # State directory
//!
//! Created with mode 0700 if missing; every file is written with mode 0600
//! and atomically (temporary file in the same directory, fsync, rename,
//! fsync of the directory). A command refuses to run if the directory or
//! one of its share or epoch files is accessible by group or others.
//!
//! - `<key_id>.<epoch>.share`: the share of that epoch ([`KeyShare::to_bytes`],
//!   not encrypted: protect the directory);
//! - `<key_id>.current`: the epoch the client signs with (decimal, one line).
//!
//! A refresh follows PROTOCOL.md §18.1: the new share is written when it is
//! ready (`current` still names the old epoch), `current` switches to the
//! new epoch when the server confirmed it, and the older share files are
//! deleted once the refresh finished. An interrupted refresh thus leaves a
//! state the server can sign with; a newer share file that `current` does
//! not name is ignored, and the next refresh overwrites it. The directory is
//! not locked: run one command at a time per state directory.
//!
//! If a signing session ends with a ban-class error (PROTOCOL.md §8), the
//! share's OT material is burned and saved so; signing is then refused until
//! a refresh.
//!
//! Adding a command: a variant of `Command`, a `cmd_*` function returning
//! the JSON object or a `Failure`, and an arm in `run`.

use std::ffi::OsString;
use std::fs::{self, File};
use std::future::Future;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};
use k256::ecdsa::signature::hazmat::PrehashVerifier;
use k256::ecdsa::VerifyingKey;
use mpc_core::wire::Role;
use mpc_core::{DerivationPath, KeyId, KeyShare, Prehash, Refresh, SignatureOutput};
use mpc_transport_ws::{Client, CloseCode, Rejection, TransportError};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use os::{create_private_dir, create_private_file, sync_dir};

/// Exit status of a usage or local error.
const EXIT_LOCAL: u8 = 1;
/// Exit status of a server, connection or protocol error.
const EXIT_REMOTE: u8 = 2;
/// No share file is anywhere near this big; a bigger file is not read.
const MAX_FILE_BYTES: u64 = 16 << 20;

// ---------------------------------------------------------------------------
// Command line

/// Help heading of the options every command takes.
const GLOBAL: &str = "Global options";

/// Command-line client (party A) of the two-party ECDSA signing server.
#[derive(Parser)]
#[command(name = "client")]
struct Cli {
    /// WebSocket URL of the server.
    #[arg(
        long,
        env = "MPC_SERVER",
        default_value = "ws://127.0.0.1:8080",
        global = true,
        help_heading = GLOBAL
    )]
    server: String,
    /// Bearer token for the server. Prefer the MPC_TOKEN environment
    /// variable: command-line arguments are visible to other local users.
    #[arg(
        long,
        env = "MPC_TOKEN",
        hide_env_values = true,
        global = true,
        help_heading = GLOBAL
    )]
    token: Option<String>,
    /// Directory holding this client's key shares (required).
    #[arg(long, value_name = "DIR", global = true, help_heading = GLOBAL)]
    state: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generates a new key with the server and stores this client's share.
    Keygen,
    /// Signs a 32-byte prehash with the current share of a key.
    Sign {
        /// The key (64 hex digits).
        #[arg(long, value_parser = parse_key_id)]
        key_id: KeyId,
        /// The 32-byte message hash to sign (64 hex digits).
        #[arg(long, value_parser = parse_prehash)]
        prehash: Prehash,
        /// Non-hardened BIP32 path of the child key to sign with, e.g.
        /// m/0/5 (default: the root key).
        #[arg(long, value_parser = parse_path)]
        path: Option<DerivationPath>,
    },
    /// Refreshes the shares of a key (same public key, next epoch).
    Refresh {
        /// The key (64 hex digits).
        #[arg(long, value_parser = parse_key_id)]
        key_id: KeyId,
    },
    /// Lists the keys in the state directory.
    List,
    /// Shows the public data of one key.
    Show {
        /// The key (64 hex digits).
        #[arg(long, value_parser = parse_key_id)]
        key_id: KeyId,
    },
}

fn parse_key_id(text: &str) -> Result<KeyId, String> {
    let bytes = hex::decode(text).map_err(|_| "not hex".to_owned())?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "a key id is 32 bytes (64 hex digits)".to_owned())?;
    Ok(KeyId(bytes))
}

fn parse_prehash(text: &str) -> Result<Prehash, String> {
    let text = text.strip_prefix("0x").unwrap_or(text);
    let bytes = hex::decode(text).map_err(|_| "not hex".to_owned())?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "a prehash is 32 bytes (64 hex digits)".to_owned())?;
    Ok(Prehash::from_bytes(bytes))
}

fn parse_path(text: &str) -> Result<DerivationPath, String> {
    text.parse()
        .map_err(|err: mpc_core::Error| format!("{} (expected e.g. m/0/5)", err.as_str()))
}

// ---------------------------------------------------------------------------
// Errors

/// A failed command: what is printed on stderr, and the exit status.
#[derive(Debug)]
struct Failure {
    code: &'static str,
    message: String,
    exit: u8,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Self::local("usage", message)
    }

    fn local(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            exit: EXIT_LOCAL,
        }
    }

    fn remote(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            exit: EXIT_REMOTE,
        }
    }

    fn io(action: &str, path: &Path, err: &io::Error) -> Self {
        Self::local("state", format!("{action} {}: {err}", path.display()))
    }

    fn corrupt(path: &Path, what: impl std::fmt::Display) -> Self {
        Self::local("corrupt_state", format!("{}: {what}", path.display()))
    }
}

/// A transport error as a failure. The transport's messages hold no token
/// or secret data.
fn transport_failure(err: &TransportError) -> Failure {
    let code = match err {
        TransportError::UpgradeRefused {
            status: 401 | 403, ..
        } => "unauthorized",
        TransportError::UpgradeRefused { .. } => "upgrade_refused",
        TransportError::Transport { .. } | TransportError::Closed => "connection",
        TransportError::Timeout { .. } => "timeout",
        _ if err.is_ban() => "protocol_ban",
        TransportError::RejectedByPeer { code, .. } => match *code {
            CloseCode::NOT_FOUND => "server_not_found",
            CloseCode::UNAVAILABLE | CloseCode::GOING_AWAY => "unavailable",
            CloseCode::UNSUPPORTED_OPERATION => "unsupported",
            CloseCode::TIMEOUT => "timeout",
            CloseCode::PROTOCOL_ABORT => "protocol",
            _ => "rejected",
        },
        _ => "protocol",
    };
    Failure::remote(code, err.to_string())
}

// ---------------------------------------------------------------------------
// State directory

/// Makes temporary file names unique within this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The client's state directory (see the crate documentation).
struct StateDir {
    dir: PathBuf,
}

/// What differs between Unix and other systems: modes and directory
/// fsync exist on Unix only.
#[cfg(unix)]
mod os {
    use std::fs::{self, File, OpenOptions};
    use std::io;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    use std::path::Path;

    /// The permission bits.
    pub(crate) fn mode_of(meta: &fs::Metadata) -> Option<u32> {
        Some(meta.permissions().mode() & 0o7777)
    }

    /// Creates `path` (and missing parents) with mode 0700.
    pub(crate) fn create_private_dir(path: &Path) -> io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)?;
        // Exactly 0700, whatever the umask.
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))
    }

    /// Creates a new file with mode 0600; fails if it exists.
    pub(crate) fn create_private_file(path: &Path) -> io::Result<File> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        Ok(file)
    }

    /// Makes renames and deletions in `dir` durable.
    pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// Elsewhere there are no modes to set or check.
#[cfg(not(unix))]
mod os {
    use std::fs::{self, File, OpenOptions};
    use std::io;
    use std::path::Path;

    pub(crate) fn mode_of(_meta: &fs::Metadata) -> Option<u32> {
        None
    }

    pub(crate) fn create_private_dir(path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    pub(crate) fn create_private_file(path: &Path) -> io::Result<File> {
        OpenOptions::new().write(true).create_new(true).open(path)
    }

    pub(crate) fn sync_dir(_dir: &Path) -> io::Result<()> {
        Ok(())
    }
}

/// Refuses a file or directory that group or others may access.
fn check_private(path: &Path, meta: &fs::Metadata) -> Result<(), Failure> {
    match os::mode_of(meta) {
        Some(mode) if mode & 0o077 != 0 => Err(Failure::local(
            "insecure_permissions",
            format!(
                "{} is accessible by group or others (mode {mode:04o}); \
                 it must be 0700 for the state directory, 0600 for its files",
                path.display()
            ),
        )),
        _ => Ok(()),
    }
}

fn share_name(key_id: &KeyId, epoch: u64) -> String {
    format!("{key_id}.{epoch}.share")
}

fn current_name(key_id: &KeyId) -> String {
    format!("{key_id}.current")
}

/// `<key_id>.<epoch>.share` → key id and epoch.
fn parse_share_name(name: &str) -> Option<(KeyId, u64)> {
    let (key, epoch) = name.strip_suffix(".share")?.split_once('.')?;
    if key.len() != 64 || !epoch.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((parse_key_id(key).ok()?, epoch.parse().ok()?))
}

/// `<key_id>.current` → key id.
fn parse_current_name(name: &str) -> Option<KeyId> {
    let key = name.strip_suffix(".current")?;
    if key.len() != 64 {
        return None;
    }
    parse_key_id(key).ok()
}

impl StateDir {
    /// Opens (creating it if missing) and checks the state directory.
    fn open(dir: PathBuf) -> Result<Self, Failure> {
        match fs::metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(Failure::local(
                    "state",
                    format!("{} is not a directory", dir.display()),
                ))
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                create_private_dir(&dir).map_err(|e| Failure::io("creating", &dir, &e))?;
            }
            Err(err) => return Err(Failure::io("reading", &dir, &err)),
        }
        let state = Self { dir };
        state.check_permissions()?;
        Ok(state)
    }

    /// The directory and every share, epoch and temporary file in it must
    /// be private to the owner.
    fn check_permissions(&self) -> Result<(), Failure> {
        let meta = fs::metadata(&self.dir).map_err(|e| Failure::io("reading", &self.dir, &e))?;
        check_private(&self.dir, &meta)?;
        for name in self.file_names()? {
            if [".share", ".current", ".tmp"]
                .iter()
                .any(|suffix| name.ends_with(suffix))
            {
                let path = self.dir.join(&name);
                match fs::metadata(&path) {
                    Ok(meta) => check_private(&path, &meta)?,
                    // Renamed or deleted since the listing.
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                    Err(err) => return Err(Failure::io("reading", &path, &err)),
                }
            }
        }
        Ok(())
    }

    /// The names of the entries of the directory (names that are not UTF-8
    /// are none of ours and are skipped).
    fn file_names(&self) -> Result<Vec<String>, Failure> {
        let entries = fs::read_dir(&self.dir).map_err(|e| Failure::io("listing", &self.dir, &e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Failure::io("listing", &self.dir, &e))?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// Writes `bytes` to `name` atomically, with mode 0600.
    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), Failure> {
        let target = self.dir.join(name);
        let temp = self.dir.join(format!(
            ".{name}.{}.{}.tmp",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let write = || -> io::Result<()> {
            let mut file = create_private_file(&temp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            drop(file);
            fs::rename(&temp, &target)?;
            sync_dir(&self.dir)
        };
        write().map_err(|err| {
            // Gone already if the rename happened.
            let _ = fs::remove_file(&temp);
            Failure::io("writing", &target, &err)
        })
    }

    /// Reads a private file; `None` if it does not exist.
    fn read_private(&self, path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, Failure> {
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(Failure::io("reading", path, &err)),
        };
        let meta = file
            .metadata()
            .map_err(|e| Failure::io("reading", path, &e))?;
        check_private(path, &meta)?;
        if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
            return Err(Failure::corrupt(path, "not a share or epoch file"));
        }
        // One allocation of the right size, so no copy of a share is left
        // behind by a reallocation.
        let capacity = usize::try_from(meta.len()).unwrap_or(0).saturating_add(1);
        let mut bytes = Zeroizing::new(Vec::with_capacity(capacity));
        file.read_to_end(&mut bytes)
            .map_err(|e| Failure::io("reading", path, &e))?;
        Ok(Some(bytes))
    }

    /// The epoch `<key_id>.current` names.
    fn current_epoch(&self, key_id: &KeyId) -> Result<u64, Failure> {
        let path = self.dir.join(current_name(key_id));
        let Some(bytes) = self.read_private(&path)? else {
            return Err(Failure::local(
                "unknown_key",
                format!("no key {key_id} in {}", self.dir.display()),
            ));
        };
        std::str::from_utf8(&bytes)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .ok_or_else(|| Failure::corrupt(&path, "not an epoch number"))
    }

    /// The share of `key_id` at `epoch`, checked: right key, epoch and
    /// role.
    fn load_share(&self, key_id: &KeyId, epoch: u64) -> Result<KeyShare, Failure> {
        let path = self.dir.join(share_name(key_id, epoch));
        let Some(bytes) = self.read_private(&path)? else {
            return Err(Failure::corrupt(
                &path,
                format!("missing, but {} names epoch {epoch}", current_name(key_id)),
            ));
        };
        let share =
            KeyShare::from_bytes_for(&bytes, key_id).map_err(|e| Failure::corrupt(&path, e))?;
        if share.epoch() != epoch || share.role() != Role::A {
            return Err(Failure::corrupt(
                &path,
                "not this client's share of that epoch",
            ));
        }
        Ok(share)
    }

    /// The share the client signs with: the epoch `current` names.
    fn load_current(&self, key_id: &KeyId) -> Result<KeyShare, Failure> {
        let epoch = self.current_epoch(key_id)?;
        self.load_share(key_id, epoch)
    }

    fn save_share(&self, share: &KeyShare) -> Result<(), Failure> {
        self.write_atomic(
            &share_name(share.key_id(), share.epoch()),
            &share.to_bytes(),
        )
    }

    fn set_current(&self, key_id: &KeyId, epoch: u64) -> Result<(), Failure> {
        self.write_atomic(&current_name(key_id), format!("{epoch}\n").as_bytes())
    }

    /// Deletes the share files of `key_id` older than `epoch`.
    fn remove_shares_before(&self, key_id: &KeyId, epoch: u64) -> Result<(), Failure> {
        let mut removed = false;
        for name in self.file_names()? {
            if matches!(parse_share_name(&name), Some((k, e)) if k == *key_id && e < epoch) {
                let path = self.dir.join(&name);
                fs::remove_file(&path).map_err(|e| Failure::io("deleting", &path, &e))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&self.dir).map_err(|e| Failure::io("syncing", &self.dir, &e))?;
        }
        Ok(())
    }

    /// The keys that have a `current` file, sorted.
    fn keys(&self) -> Result<Vec<KeyId>, Failure> {
        let mut keys: Vec<KeyId> = self
            .file_names()?
            .iter()
            .filter_map(|name| parse_current_name(name))
            .collect();
        keys.sort();
        Ok(keys)
    }
}

// ---------------------------------------------------------------------------
// Commands

/// What every command gets.
struct Context {
    server: String,
    token: Option<Zeroizing<String>>,
    state: StateDir,
}

impl Context {
    /// A client of the server; fails without a token.
    fn client(&self) -> Result<Client, Failure> {
        let Some(token) = self.token.as_ref().filter(|t| !t.is_empty()) else {
            return Err(Failure::usage(
                "this command needs a bearer token: set MPC_TOKEN or pass --token",
            ));
        };
        if !(self.server.starts_with("ws://") || self.server.starts_with("wss://")) {
            return Err(Failure::usage(format!(
                "--server must be a ws:// or wss:// URL, not {:?}",
                self.server
            )));
        }
        Ok(Client::new(self.server.clone()).with_bearer_token(token.as_str()))
    }
}

/// Runs `future` to completion on a fresh runtime.
fn block_on<F: Future>(future: F) -> Result<F::Output, Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::local("runtime", format!("starting the runtime: {e}")))?;
    Ok(runtime.block_on(future))
}

fn key_hex(public_key: &k256::PublicKey) -> String {
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

fn cmd_keygen(ctx: &Context) -> Result<Value, Failure> {
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

fn cmd_sign(
    ctx: &Context,
    key_id: &KeyId,
    prehash: Prehash,
    path: Option<&DerivationPath>,
) -> Result<Value, Failure> {
    let client = ctx.client()?;
    let mut share = ctx.state.load_current(key_id)?;
    if share.is_ot_burned() {
        return Err(Failure::local(
            "ot_burned",
            format!(
                "the OT material of epoch {} was burned after a failed signature: run refresh",
                share.epoch()
            ),
        ));
    }
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
    let signed = match result {
        Ok(signed) => signed,
        Err(err) => {
            let mut failure = transport_failure(&err);
            if err.is_ban() {
                // PROTOCOL.md §8: never use this OT material again.
                share.burn_ot_material();
                failure.message = match ctx.state.save_share(&share) {
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
            return Err(failure);
        }
    };
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

fn cmd_refresh(ctx: &Context, key_id: &KeyId) -> Result<Value, Failure> {
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

fn cmd_list(ctx: &Context) -> Result<Value, Failure> {
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

fn cmd_show(ctx: &Context, key_id: &KeyId) -> Result<Value, Failure> {
    let share = ctx.state.load_current(key_id)?;
    Ok(json!({
        "key_id": key_id.to_string(),
        "public_key": key_hex(&share.public_key()),
        "xpub": share.xpub().to_string(),
        "epoch": share.epoch(),
        "ot_burned": share.is_ot_burned(),
    }))
}

fn run(cli: Cli) -> Result<Value, Failure> {
    let Some(state) = cli.state else {
        return Err(Failure::usage("--state DIR is required"));
    };
    let ctx = Context {
        server: cli.server,
        token: cli.token.map(Zeroizing::new),
        state: StateDir::open(state)?,
    };
    match &cli.command {
        Command::Keygen => cmd_keygen(&ctx),
        Command::Sign {
            key_id,
            prehash,
            path,
        } => cmd_sign(&ctx, key_id, *prehash, path.as_ref()),
        Command::Refresh { key_id } => cmd_refresh(&ctx, key_id),
        Command::List => cmd_list(&ctx),
        Command::Show { key_id } => cmd_show(&ctx, key_id),
    }
}

// ---------------------------------------------------------------------------
// Output

/// The token values this invocation may carry, to keep them out of error
/// messages that quote arguments.
fn token_candidates() -> Vec<String> {
    let mut tokens: Vec<String> = std::env::var("MPC_TOKEN").into_iter().collect();
    let args: Vec<OsString> = std::env::args_os().collect();
    for (i, arg) in args.iter().enumerate() {
        let arg = arg.to_string_lossy();
        if arg == "--token" {
            if let Some(next) = args.get(i + 1) {
                tokens.push(next.to_string_lossy().into_owned());
            }
        } else if let Some(value) = arg.strip_prefix("--token=") {
            tokens.push(value.to_owned());
        }
    }
    tokens.retain(|t| !t.is_empty());
    tokens
}

/// A clap error as one line, without the usage hints and any token.
fn usage_message(err: &clap::Error) -> String {
    let rendered = err.render().to_string();
    let mut message = rendered
        .lines()
        .map(str::trim)
        .filter(|line| {
            !line.is_empty()
                && !line.starts_with("Usage:")
                && !line.starts_with("For more information")
        })
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(rest) = message.strip_prefix("error: ") {
        message = rest.to_owned();
    }
    for token in token_candidates() {
        message = message.replace(&token, "<redacted>");
    }
    message
}

fn print_failure(failure: &Failure) -> ExitCode {
    let line = json!({ "error": failure.code, "message": failure.message });
    let _ = writeln!(io::stderr().lock(), "{line}");
    ExitCode::from(failure.exit)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) =>
        {
            return match err.print() {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::from(EXIT_LOCAL),
            };
        }
        Err(err) => return print_failure(&Failure::usage(usage_message(&err))),
    };
    match run(cli) {
        Ok(value) => {
            let mut out = io::stdout().lock();
            match writeln!(out, "{value}").and_then(|()| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => print_failure(&Failure::local(
                    "output",
                    format!("writing the result: {err}"),
                )),
            }
        }
        Err(failure) => print_failure(&failure),
    }
}
