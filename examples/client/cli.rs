//! The command line: the global options, the commands and their argument
//! parsers.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use mpc_core::{DerivationPath, KeyId, Prehash};

/// Default base URL of the server's REST API.
const DEFAULT_REST: &str = "http://127.0.0.1:3001";

/// Help heading of the options every command takes.
const GLOBAL: &str = "Global options";

/// Command-line client (party A) of the two-party ECDSA signing server.
#[derive(Parser)]
#[command(name = "client")]
pub(crate) struct Cli {
    /// WebSocket URL of the server.
    #[arg(
        long,
        env = "MPC_SERVER",
        default_value = "ws://127.0.0.1:8080",
        global = true,
        help_heading = GLOBAL
    )]
    pub(crate) server: String,
    /// Bearer token for the server. Prefer the MPC_TOKEN environment
    /// variable: command-line arguments are visible to other local users.
    #[arg(
        long,
        env = "MPC_TOKEN",
        hide_env_values = true,
        global = true,
        help_heading = GLOBAL
    )]
    pub(crate) token: Option<String>,
    /// Directory holding this client's key shares (required, except by
    /// verify-backup and verify).
    #[arg(long, value_name = "DIR", global = true, help_heading = GLOBAL)]
    pub(crate) state: Option<PathBuf>,
    /// The 32-byte key (64 hex digits) the shares in the state directory
    /// are sealed under. Without it a fixed development key is used, which
    /// protects nothing: set it for real keys. Prefer the environment
    /// variable: command-line arguments are visible to other local users.
    #[arg(
        long,
        value_name = "HEX",
        env = "MPC_STORAGE_KEY",
        hide_env_values = true,
        global = true,
        help_heading = GLOBAL
    )]
    pub(crate) storage_key: Option<String>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
    /// Exports the full private key: the server encrypts its share to a
    /// one-time key, the client adds its own. Needs a token with a
    /// second-factor claim.
    Export {
        /// The key (64 hex digits).
        #[arg(long, value_parser = parse_key_id)]
        key_id: KeyId,
        /// Base URL of the server's REST API.
        #[arg(long, value_name = "URL", env = "MPC_REST", default_value = DEFAULT_REST)]
        rest: String,
    },
    /// Verifies a backup file from the server (and, with --state, that it
    /// is of this client's key).
    VerifyBackup {
        /// The JSON the server returned for the backup.
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        /// The key of the state directory to check the backup against
        /// (default: the file's key_id).
        #[arg(long, value_parser = parse_key_id)]
        key_id: Option<KeyId>,
    },
    /// Verifies an ECDSA signature with libsecp256k1, independently of the
    /// code that made it; needs no state directory, token or server.
    Verify {
        /// The SEC1 public key (66 hex digits compressed, or 130
        /// uncompressed).
        #[arg(long, value_parser = parse_public_key)]
        public_key: PublicKeyBytes,
        /// The 32-byte message hash that was signed (64 hex digits).
        #[arg(long, value_parser = parse_prehash)]
        prehash: Prehash,
        /// The signature r || s (128 hex digits).
        #[arg(long, value_parser = parse_signature)]
        signature: [u8; 64],
    },
}

/// The bytes of a SEC1 public key, of a valid length but not checked to be
/// a point.
#[derive(Clone, Debug)]
pub(crate) struct PublicKeyBytes(pub(crate) Vec<u8>);

pub(crate) fn parse_key_id(text: &str) -> Result<KeyId, String> {
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

fn parse_public_key(text: &str) -> Result<PublicKeyBytes, String> {
    let bytes = hex::decode(text).map_err(|_| "not hex".to_owned())?;
    if bytes.len() != 33 && bytes.len() != 65 {
        return Err(
            "a public key is 33 bytes (66 hex digits) compressed, or 65 uncompressed".to_owned(),
        );
    }
    Ok(PublicKeyBytes(bytes))
}

fn parse_signature(text: &str) -> Result<[u8; 64], String> {
    let bytes = hex::decode(text).map_err(|_| "not hex".to_owned())?;
    bytes
        .try_into()
        .map_err(|_| "a signature is r || s, 64 bytes (128 hex digits)".to_owned())
}

fn parse_path(text: &str) -> Result<DerivationPath, String> {
    text.parse()
        .map_err(|err: mpc_core::Error| format!("{} (expected e.g. m/0/5)", err.as_str()))
}
