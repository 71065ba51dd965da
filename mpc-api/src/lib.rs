//! The request bodies of the `mpc-server` REST API and their validation.
//!
//! The server parses every body with [`parse_body`] and every field with
//! the functions here, so the fuzz target `rest_bodies` exercises exactly
//! the server's request parsing without linking the server.
#![forbid(unsafe_code)]

use mpc_core::KeyId;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use utoipa::ToSchema;

/// A backup request (`POST /v1/keys/{key_id}/backup`).
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// SEC1 compressed recovery public key, hex; only when the server
    /// allows it, else the configured key is used.
    #[serde(default)]
    pub recovery_public_key: Option<String>,
}

/// An export request (`POST /v1/keys/{key_id}/export`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    /// The owner's one-time public key, SEC1 compressed hex.
    pub onetime_public_key: String,
    /// The epoch of the owner's share; default: the key's epoch.
    #[serde(default)]
    pub epoch: Option<u64>,
}

/// A revocation request (`DELETE /v1/keys/{key_id}`): the caller names
/// the key again, so that a mistaken or forged path alone cannot destroy a
/// share.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// The id of the key to revoke (64 hex characters): must equal the
    /// key id in the path.
    pub confirm: String,
}

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON (HTTP 400).
    Syntax(String),
    /// JSON of the wrong shape: unknown or missing fields, wrong types
    /// (HTTP 422).
    Shape(String),
}

impl core::fmt::Display for BodyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Syntax(detail) => write!(f, "the body is not JSON: {detail}"),
            Self::Shape(detail) => write!(f, "the body has the wrong shape: {detail}"),
        }
    }
}

impl std::error::Error for BodyError {}

/// Parses a JSON body (the size and content type are the caller's checks).
///
/// # Errors
///
/// [`BodyError::Syntax`] for bytes that are not one JSON value,
/// [`BodyError::Shape`] for JSON that is not a `T`.
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BodyError> {
    // Syntax first: parsing straight into `T` reports an unknown field
    // before a syntax error later in the same bytes (found by the
    // `rest_bodies` fuzz target), which would call non-JSON a shape error.
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| BodyError::Syntax(e.to_string()))?;
    serde_json::from_value(value).map_err(|e| BodyError::Shape(e.to_string()))
}

/// A key id from its 64 hex characters (either case).
#[must_use]
pub fn parse_key_id(text: &str) -> Option<KeyId> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text, &mut bytes).ok()?;
    Some(KeyId(bytes))
}

/// A secp256k1 public key from 33 bytes of SEC1 compressed hex; `None` for
/// anything else (other lengths, uncompressed or hybrid encodings, points
/// off the curve).
#[must_use]
pub fn parse_point(text: &str) -> Option<k256::PublicKey> {
    let mut bytes = [0u8; 33];
    hex::decode_to_slice(text, &mut bytes).ok()?;
    // Only the compressed tags: k256 also takes 0x05 (the "compact" form)
    // as a 33-byte encoding, a second spelling of the same key (found by
    // the `rest_bodies` fuzz target).
    if !matches!(bytes[0], 0x02 | 0x03) {
        return None;
    }
    k256::PublicKey::from_sec1_bytes(&bytes).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k256::elliptic_curve::sec1::ToEncodedPoint;

    #[test]
    fn bodies_and_fields() {
        let key = k256::SecretKey::from_slice(&[5u8; 32])
            .unwrap()
            .public_key();
        let hex_key = hex::encode(key.to_encoded_point(true).as_bytes());
        let body = format!(r#"{{"onetime_public_key":"{hex_key}","epoch":3}}"#);
        let request: ExportRequest = parse_body(body.as_bytes()).unwrap();
        assert_eq!(request.epoch, Some(3));
        assert_eq!(parse_point(&request.onetime_public_key), Some(key));
        assert_eq!(parse_point(&hex_key.to_uppercase()), Some(key));
        let uncompressed = hex::encode(key.to_encoded_point(false).as_bytes());
        assert_eq!(parse_point(&uncompressed), None);
        assert_eq!(parse_point(&hex_key[..64]), None);
        let compact = format!("05{}", &hex_key[2..]);
        assert_eq!(parse_point(&compact), None);
        assert!(matches!(
            parse_body::<ExportRequest>(b"{"),
            Err(BodyError::Syntax(_))
        ));
        assert!(matches!(
            parse_body::<ExportRequest>(br#"{"onetime_public_key":5}"#),
            Err(BodyError::Shape(_))
        ));
        assert!(matches!(
            parse_body::<BackupRequest>(br#"{"extra":1}"#),
            Err(BodyError::Shape(_))
        ));
        assert_eq!(
            parse_body::<BackupRequest>(b"{}"),
            Ok(BackupRequest::default())
        );
        let revoke: RevokeRequest = parse_body(br#"{"confirm":"ab"}"#).unwrap();
        assert_eq!(revoke.confirm, "ab");
        assert!(matches!(
            parse_body::<RevokeRequest>(b"{}"),
            Err(BodyError::Shape(_))
        ));
        assert!(matches!(
            parse_body::<RevokeRequest>(br#"{"confirm":"ab","force":true}"#),
            Err(BodyError::Shape(_))
        ));
        assert!(parse_key_id(&"ab".repeat(32)).is_some());
        assert!(parse_key_id("ab").is_none());
    }
}
