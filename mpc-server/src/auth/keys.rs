//! PEM parsing and loading of the public verification keys.

use jsonwebtoken::DecodingKey;

use super::{AuthConfigError, JwtAlgorithm};

/// One `-----BEGIN <label>----- ... -----END <label>-----` block.
pub(super) struct PemBlock {
    pub(super) label: String,
    pub(super) text: String,
}

/// Splits PEM data into blocks; text outside blocks is ignored.
pub(super) fn split_pem(data: &[u8]) -> Result<Vec<PemBlock>, AuthConfigError> {
    let text = std::str::from_utf8(data)
        .map_err(|_| AuthConfigError::InvalidPem("the file is not UTF-8 text".to_owned()))?;
    let mut blocks = Vec::new();
    let mut current: Option<PemBlock> = None;
    for line in text.lines().map(str::trim) {
        match current.as_mut() {
            None => {
                if let Some(label) = pem_marker(line, "BEGIN") {
                    current = Some(PemBlock {
                        label: label.to_owned(),
                        text: format!("{line}\n"),
                    });
                }
            }
            Some(block) => {
                block.text.push_str(line);
                block.text.push('\n');
                if let Some(label) = pem_marker(line, "END") {
                    if label != block.label {
                        return Err(AuthConfigError::InvalidPem(format!(
                            "block `{}` ends with `{label}`",
                            block.label
                        )));
                    }
                    blocks.extend(current.take());
                } else if pem_marker(line, "BEGIN").is_some() {
                    return Err(AuthConfigError::InvalidPem(format!(
                        "block `{}` is not terminated",
                        block.label
                    )));
                }
            }
        }
    }
    if let Some(block) = current {
        return Err(AuthConfigError::InvalidPem(format!(
            "block `{}` is not terminated",
            block.label
        )));
    }
    Ok(blocks)
}

fn pem_marker<'a>(line: &'a str, kind: &str) -> Option<&'a str> {
    line.strip_prefix("-----")?
        .strip_prefix(kind)?
        .strip_prefix(' ')?
        .strip_suffix("-----")
}

/// Parses every SPKI `PUBLIC KEY` block usable with `algorithm`; blocks of
/// other types are skipped.
pub(super) fn load_public_keys(
    algorithm: JwtAlgorithm,
    pem: &[u8],
) -> Result<Vec<DecodingKey>, AuthConfigError> {
    let blocks = split_pem(pem)?;
    let mut keys = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    for (index, block) in blocks.iter().enumerate() {
        if block.label != "PUBLIC KEY" {
            skipped.push(format!("a `{}` block", block.label));
            continue;
        }
        let bytes = block.text.as_bytes();
        let parsed = match algorithm {
            JwtAlgorithm::Es256 => DecodingKey::from_ec_pem(bytes),
            JwtAlgorithm::EdDsa | JwtAlgorithm::Hs256 => DecodingKey::from_ed_pem(bytes),
        };
        match parsed {
            Ok(key) if usable_public_key(algorithm, &key) => keys.push(key),
            Ok(_) => skipped.push(format!("a public key of another curve (block {index})")),
            Err(_) => {
                let other_type = DecodingKey::from_ec_pem(bytes).is_ok()
                    || DecodingKey::from_ed_pem(bytes).is_ok()
                    || DecodingKey::from_rsa_pem(bytes).is_ok();
                if !other_type {
                    return Err(AuthConfigError::InvalidPem(format!(
                        "PUBLIC KEY block {index} is not a valid SPKI public key"
                    )));
                }
                skipped.push(format!("a public key of another type (block {index})"));
            }
        }
    }

    if keys.is_empty() {
        let mut detail = if blocks.is_empty() {
            "the file contains no PEM blocks".to_owned()
        } else {
            format!("found only {}", skipped.join(", "))
        };
        if blocks.iter().any(|b| b.label.ends_with("PRIVATE KEY")) {
            detail.push_str(
                "; this looks like a private key: configure the public key instead \
                 (`openssl pkey -in key.pem -pubout`)",
            );
        }
        return Err(AuthConfigError::NoUsableKey { algorithm, detail });
    }
    if !skipped.is_empty() {
        tracing::info!(
            %algorithm,
            keys = keys.len(),
            skipped = skipped.len(),
            "JWT public key file: ignoring PEM blocks of other key types"
        );
    }
    Ok(keys)
}

/// Whether `key` can verify `algorithm` signatures: the point must be on the
/// right curve. Probes by verifying a dummy signature, which fails cleanly for
/// a good key and with a key error for a bad one.
fn usable_public_key(algorithm: JwtAlgorithm, key: &DecodingKey) -> bool {
    // The Ed25519 verifier slices the first 32 bytes without checking.
    if algorithm == JwtAlgorithm::EdDsa && key.as_bytes().len() != 32 {
        return false;
    }
    jsonwebtoken::crypto::verify("AA", b"probe", key, algorithm.to_jwt()).is_ok()
}
