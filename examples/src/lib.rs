//! Examples for the `mpc-*` crates.
//!
//! The examples live next to this crate (`examples/*.rs`) and run with
//! `cargo run -p mpc-examples --example <name>`. This library holds the few
//! helpers more than one of them uses: the load generators' loopback check,
//! how they find the server's token secret, and their percentiles.
#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::path::Path;

use zeroize::Zeroizing;

/// The server's HS256 token secret: the first line of `jwt_secret_file`,
/// else `$MPC_JWT_SECRET`, else the dev-mode secret kept in
/// `dev_data_dir/dev-secrets.json`.
///
/// # Errors
///
/// A message naming the file that could not be read or parsed, or saying
/// that no source was given.
pub fn hs256_secret(
    jwt_secret_file: Option<&Path>,
    dev_data_dir: Option<&Path>,
) -> Result<Zeroizing<String>, String> {
    if let Some(path) = jwt_secret_file {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        );
        return Ok(Zeroizing::new(text.trim_end().to_owned()));
    }
    if let Ok(secret) = std::env::var("MPC_JWT_SECRET") {
        return Ok(Zeroizing::new(secret));
    }
    if let Some(dir) = dev_data_dir {
        let path = dir.join("dev-secrets.json");
        let text = Zeroizing::new(
            std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        );
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(secret) = value.get("jwt_secret").and_then(|v| v.as_str()) {
            return Ok(Zeroizing::new(secret.to_owned()));
        }
    }
    Err("no HS256 secret: use --jwt-secret-file, MPC_JWT_SECRET or --dev-data-dir".into())
}

/// Whether `host` (a name, an IP address, or a bracketed IPv6 address) is
/// on loopback. Only the name `localhost` is trusted without resolving it.
#[must_use]
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Checks that `url` is a plain `ws://` or `http://` URL whose host is on
/// loopback: the load generators send traffic nowhere else.
///
/// # Errors
///
/// A message saying which part is not allowed.
pub fn check_loopback(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("only ws:// and http:// URLs on loopback are allowed")?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err("a URL with credentials is not allowed".into());
    }
    let host = match authority.rsplit_once(':') {
        // An unbracketed IPv6 address has colons but no port.
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    };
    if is_loopback_host(host) {
        Ok(())
    } else {
        Err(format!(
            "{host} is not a loopback address: the load generators run on loopback only"
        ))
    }
}

/// The nearest-rank percentile `p` (0..=100) of `sorted` (ascending); 0
/// for an empty slice.
#[must_use]
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil().max(1.0);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let index = (rank as usize).min(sorted.len()) - 1;
    sorted[index]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only() {
        for ok in [
            "ws://127.0.0.1:8080",
            "ws://127.0.0.2:1/v1/session",
            "http://localhost:3001",
            "http://[::1]:3001/metrics",
        ] {
            assert_eq!(check_loopback(ok), Ok(()), "{ok}");
        }
        for bad in [
            "wss://127.0.0.1:8080",
            "ws://10.0.0.1:8080",
            "http://example.com",
            "http://127.0.0.1.example.com:80",
            "http://user@10.0.0.1:80",
            "http://[2001:db8::1]:80",
            "ftp://127.0.0.1",
        ] {
            assert!(check_loopback(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nearest_rank() {
        let sorted = [1.0, 2.0, 3.0, 4.0];
        assert!((percentile(&sorted, 50.0) - 2.0).abs() < f64::EPSILON);
        assert!((percentile(&sorted, 99.0) - 4.0).abs() < f64::EPSILON);
        assert!((percentile(&[], 50.0)).abs() < f64::EPSILON);
    }
}
