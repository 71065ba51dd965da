//! Development mode (`--dev`): generated secrets kept in the data
//! directory, and a ready-made token for a demo user.
//!
//! Never for production: the secrets sit unencrypted next to the database.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::auth::{generate_dev_secret, TokenBuilder};
use crate::config::SecretSource;

/// The demo user dev mode prints a token for.
pub const DEMO_USER: &str = "demo";

/// How long the printed demo token is valid.
pub const DEMO_TOKEN_SECONDS: u64 = 24 * 3600;

#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct DevSecrets {
    jwt_secret: String,
    master_key: String,
}

/// The process environment with dev-mode secrets filling what it lacks.
pub struct DevSource<'a> {
    base: &'a dyn SecretSource,
    generated: HashMap<String, String>,
}

impl Drop for DevSource<'_> {
    fn drop(&mut self) {
        for value in self.generated.values_mut() {
            value.zeroize();
        }
    }
}

impl SecretSource for DevSource<'_> {
    fn var(&self, name: &str) -> Option<String> {
        let configured = |n: &str| self.base.var(n).is_some();
        let has_own = configured(name) || configured(&format!("{name}_FILE"));
        if has_own || name.ends_with("_FILE") {
            self.base.var(name)
        } else {
            self.generated.get(name).cloned()
        }
    }
}

/// The secrets of a production deployment: dev mode refuses to start when
/// any is configured (it would otherwise run production data with a demo
/// token printed and dev secrets on disk).
pub const PRODUCTION_SECRETS: [&str; 4] = [
    "MPC_JWT_SECRET",
    "MPC_MASTER_KEY",
    "MPC_DATABASE_URL",
    "MPC_WEBHOOK_SECRET",
];

/// Checks that dev mode may start: no production secret configured (as
/// variable or `_FILE`), no public-key token verification, and both
/// listeners on loopback addresses (a dev server is reachable from this
/// machine only).
///
/// # Errors
///
/// A message naming the first reason to refuse (never a secret value).
pub fn check_allowed(
    ws_addr: SocketAddr,
    rest_addr: SocketAddr,
    jwt_public_keys: Option<&Path>,
    base: &dyn SecretSource,
) -> Result<(), String> {
    for name in PRODUCTION_SECRETS {
        for variable in [name.to_owned(), format!("{name}_FILE")] {
            if base.var(&variable).is_some() {
                return Err(format!(
                    "--dev refuses to start: {variable} is set (a production secret); \
                     unset it or run without --dev"
                ));
            }
        }
    }
    if jwt_public_keys.is_some() {
        return Err(
            "--dev refuses to start: MPC_JWT_PUBLIC_KEYS is set (production token \
                    verification); unset it or run without --dev"
                .to_owned(),
        );
    }
    for (what, addr) in [("WebSocket", ws_addr), ("REST", rest_addr)] {
        if !addr.ip().is_loopback() {
            return Err(format!(
                "--dev refuses to start: the {what} listener {addr} is not a loopback \
                 address (dev mode serves this machine only)"
            ));
        }
    }
    Ok(())
}

/// Loads the dev secrets from `data_dir/dev-secrets.json`, creating the
/// directory and the file (mode 0600) with fresh secrets on first use.
///
/// # Errors
///
/// A message if the directory or file cannot be created or read.
pub fn source<'a>(data_dir: &Path, base: &'a dyn SecretSource) -> Result<DevSource<'a>, String> {
    fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", data_dir.display()))?;
    let path = data_dir.join("dev-secrets.json");
    let secrets: DevSecrets = match fs::read(&path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            serde_json::from_slice(&bytes)
                .map_err(|e| format!("{} is not valid: {e}", path.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let fresh = DevSecrets {
                jwt_secret: generate_dev_secret().to_string(),
                master_key: random_hex_key().to_string(),
            };
            write_private(&path, &serde_json::to_vec(&fresh).unwrap_or_default())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            fresh
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut generated = HashMap::new();
    generated.insert("MPC_JWT_SECRET".to_owned(), secrets.jwt_secret.clone());
    generated.insert("MPC_MASTER_KEY".to_owned(), secrets.master_key.clone());
    Ok(DevSource { base, generated })
}

/// A token for [`DEMO_USER`], signed with the HS256 secret in use.
///
/// # Errors
///
/// A message if no HS256 secret is available or signing fails.
pub fn demo_token(
    source: &dyn SecretSource,
    audience: &str,
    issuer: Option<&str>,
) -> Result<Zeroizing<String>, String> {
    let secret = crate::config::read_secret(source, "MPC_JWT_SECRET")?
        .ok_or("dev mode prints a token only for HS256")?;
    let mut builder = TokenBuilder::new(DEMO_USER, audience).expires_in(DEMO_TOKEN_SECONDS);
    if let Some(issuer) = issuer {
        builder = builder.issuer(issuer);
    }
    builder
        .sign_hs256(secret.as_bytes())
        .map(Zeroizing::new)
        .map_err(|e| e.to_string())
}

fn random_hex_key() -> Zeroizing<String> {
    use rand_core::{OsRng, RngCore};
    let mut key = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(key.as_mut());
    Zeroizing::new(hex::encode(key.as_ref()))
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn dev_mode_refuses_production_secrets_and_public_listeners() {
        let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let local6: SocketAddr = "[::1]:0".parse().unwrap();
        assert!(check_allowed(local, local6, None, &env(&[])).is_ok());
        for name in PRODUCTION_SECRETS {
            for variable in [name.to_owned(), format!("{name}_FILE")] {
                let error =
                    check_allowed(local, local, None, &env(&[(&variable, "s3cr3t")])).unwrap_err();
                assert!(error.contains(&variable), "{error}");
                assert!(!error.contains("s3cr3t"), "{error}");
            }
        }
        let pem = Path::new("/k.pem");
        assert!(check_allowed(local, local, Some(pem), &env(&[])).is_err());
        for public in ["0.0.0.0:0", "[::]:0", "192.0.2.1:80"] {
            let public: SocketAddr = public.parse().unwrap();
            let error = check_allowed(public, local, None, &env(&[])).unwrap_err();
            assert!(
                error.contains("WebSocket") && error.contains("loopback"),
                "{error}"
            );
            let error = check_allowed(local, public, None, &env(&[])).unwrap_err();
            assert!(error.contains("REST"), "{error}");
        }
    }
}
