//! A command-line client (party A, share P1) of a two-party signing server:
//! key generation, signing and share refresh over WebSocket, export of the
//! full key over the server's REST API, verification of the server's
//! backups and of signatures, with the client's shares kept in a local
//! state directory.
//!
//! ```sh
//! export MPC_TOKEN=...   # better than --token, which `ps` shows to everyone
//! cargo run --release --example client -- --server ws://127.0.0.1:8080 --state ./state keygen
//! cargo run --release --example client -- --state ./state sign --key-id <K> --prehash <64 hex> [--path m/0/5]
//! cargo run --release --example client -- --state ./state refresh --key-id <K>
//! cargo run --release --example client -- --state ./state list
//! cargo run --release --example client -- --state ./state show --key-id <K>
//! cargo run --release --example client -- --state ./state export --key-id <K> [--rest http://127.0.0.1:3001]
//! cargo run --release --example client -- [--state ./state] verify-backup --file backup.json [--key-id <K>]
//! cargo run --release --example client -- verify --public-key <66 hex> --prehash <64 hex> --signature <128 hex>
//! ```
//!
//! `--server` defaults to `$MPC_SERVER`, then `ws://127.0.0.1:8080`; the URL
//! is used as given (add the server's path if it has one). `export`'s
//! `--rest` is the base URL of the server's REST API (`$MPC_REST`, then
//! `http://127.0.0.1:3001`); `/v1/...` is appended to it. `--token`
//! defaults to `$MPC_TOKEN`; only the commands that talk to the server need
//! it, and `export` needs one with a second-factor (step-up) claim. The
//! global options may also follow the command.
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
//! - `show`: `{"key_id", "public_key", "xpub", "epoch", "ot_burned"}`;
//! - `export`: `{"secret_key", "public_key"}`: the full private key (32
//!   bytes) and its public key, checked to match the key's before printing;
//! - `verify-backup`: `{"valid": true}`, or `{"valid": false, "reason"}`
//!   (exit status 0 in both cases);
//! - `verify`: `{"valid": true}`, or `{"valid": false, "reason"}`
//!   (exit status 0 in both cases).
//!
//! Keys are SEC1 compressed hex, other byte strings lower-case hex. On
//! failure nothing goes to stdout; one line `{"error": "<code>", "message":
//! "..."}` goes to stderr and the exit status is 1 for a usage or local
//! error (state directory, permissions, unknown key, unreadable backup
//! file) and 2 for a server, connection or protocol error. An error
//! response of the REST API (RFC 9457 problem JSON) gives the problem's
//! `code` as `error`, or `http_<status>` if it has none. The token and
//! share bytes are never printed; the output is wiped from memory once
//! printed (it may hold an exported key).
//!
//! # Export
//!
//! `export` makes a one-time key pair, sends the public key and the current
//! epoch to `POST <rest>/v1/keys/<key_id>/export`, decrypts the server's
//! share from the response with the one-time secret
//! ([`mpc_core::export::import_export`]), adds this client's share and
//! prints the key only if it matches the public key. The one-time secret
//! is not stored anywhere. Redirects are not followed.
//!
//! # Backup verification
//!
//! `verify-backup` reads the JSON the server returns from
//! `POST /v1/keys/<key_id>/backup` (`{"key_id", "epoch", "role",
//! "public_share", "recovery_public_key", "backup", "created_at"}`), checks
//! the backup's proof for its `public_share` and `recovery_public_key` and
//! that the backup's label names the file's key, epoch and role. If
//! `--state` is given and holds the key (`--key-id`, default the file's
//! `key_id`), it also checks that `public_share` is that party's public
//! share in this client's share of the backup's epoch and that the shares
//! add up to the key's public key; a backup of an epoch this client holds
//! no share of is reported invalid, since it cannot restore the key with
//! this client's share. `--state` is optional here, and not created if
//! missing. All failed checks are listed in `reason`, separated by `; `.
//!
//! # Signature verification
//!
//! `verify` checks an ECDSA signature `r || s` (64 bytes, as `sign`
//! prints it) of a 32-byte prehash under a SEC1 public key (33 bytes
//! compressed, or 65 uncompressed) with libsecp256k1, an implementation
//! independent of the one the other commands use, so that a signature
//! this client printed can be checked by other code. Like libsecp256k1
//! it rejects high-S signatures. It needs no state directory, token or
//! server. A `--public-key` or `--signature` that is not hex of one of
//! those lengths, or a `--prehash` that is not 64 hex digits, is a usage
//! error (exit status 1); a key that is not a point of the curve or a
//! signature whose `r` or `s` is out of range is reported invalid.
//!
//! # State directory
//!
//! An [`mpc_client::FileStore`]: created with mode 0700 if missing; every
//! file is written with mode 0600 and atomically (temporary file in the
//! same directory, fsync, rename, fsync of the directory). A command
//! refuses to run if the directory or one of its files is accessible by
//! group or others.
//!
//! - `<key_id>.<epoch>.share`: the share of that epoch, sealed
//!   (XChaCha20-Poly1305) under the storage key: `--storage-key` /
//!   `$MPC_STORAGE_KEY` (64 hex digits). Without one, a fixed development
//!   key is used, which protects nothing: set it for real keys (a state
//!   directory written under one key does not open under another);
//! - `<key_id>.current`: the epoch the client signs with (decimal, one line).
//!
//! A refresh follows PROTOCOL.md §18.1 (in `mpc_client::Wallet::refresh`):
//! the new share is written when it is ready (`current` still names the
//! old epoch), `current` switches to the new epoch when the server
//! confirmed it, and the older share files are deleted once the refresh
//! finished. An interrupted refresh thus leaves a state the server can sign
//! with; a newer share file that `current` does not name is ignored, and
//! the next refresh overwrites it. The directory is not locked: run one
//! command at a time per state directory.
//!
//! If a signing session ends with a ban-class error (PROTOCOL.md §8), the
//! share's OT material is burned and saved so; signing is then refused until
//! a refresh.
//!
//! The commands are a thin shell over the `mpc-client` library. Adding a
//! command: a variant of `Command` (in `cli.rs`), a `cmd_*` function
//! returning the JSON object or a `Failure` (in the module of its group of
//! commands), and an arm in `run`.

mod backup;
mod cli;
mod commands;
mod output;
mod state;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;
use serde_json::Value;
use zeroize::Zeroizing;

use backup::cmd_verify_backup;
use cli::{Cli, Command};
use commands::{cmd_export, cmd_keygen, cmd_list, cmd_refresh, cmd_show, cmd_sign, Context};
use output::{print_failure, print_value, usage_message, wipe_strings, Failure, EXIT_LOCAL};
use state::{storage_key, StateDir};
use verify::cmd_verify;

fn run(cli: Cli) -> Result<Value, Failure> {
    let Cli {
        server,
        token,
        state,
        storage_key: storage_key_hex,
        command,
    } = cli;
    let storage_key = storage_key(storage_key_hex.as_deref())?;
    // Called by the one arm that runs.
    let context = |state: Option<PathBuf>| -> Result<Context, Failure> {
        let Some(state) = state else {
            return Err(Failure::usage("--state DIR is required"));
        };
        Ok(Context {
            server,
            token: token.map(Zeroizing::new),
            state: StateDir::open(state, storage_key.clone())?,
        })
    };
    match &command {
        Command::Keygen => cmd_keygen(&context(state)?),
        Command::Sign {
            key_id,
            prehash,
            path,
        } => cmd_sign(&context(state)?, key_id, *prehash, path.as_ref()),
        Command::Refresh { key_id } => cmd_refresh(&context(state)?, key_id),
        Command::List => cmd_list(&context(state)?),
        Command::Show { key_id } => cmd_show(&context(state)?, key_id),
        Command::Export { key_id, rest } => cmd_export(&context(state)?, key_id, rest),
        Command::VerifyBackup { file, key_id } => {
            // Needs no server, and the state directory only if given.
            let state = state
                .map(|dir| StateDir::open_existing(dir, storage_key.clone()))
                .transpose()?;
            cmd_verify_backup(state.as_ref(), file, key_id.as_ref())
        }
        // Needs no server, token or state directory.
        Command::Verify {
            public_key,
            prehash,
            signature,
        } => Ok(cmd_verify(public_key, prehash, signature)),
    }
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
        Ok(mut value) => {
            let printed = print_value(&value);
            wipe_strings(&mut value);
            match printed {
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
