//! The server's REST request parsing (`mpc_api`, which the server's body
//! extractor and path handling call): arbitrary bytes as an export body, a
//! backup body, a revoke body and a key id.
//!
//! Must hold: no panic; a body either parses or is refused as syntax (not
//! JSON) or shape (wrong fields), and bytes that are not JSON are never
//! accepted; any point or key id that parses is exactly the hex it came
//! from (no second spelling of one key is accepted, apart from letter case).
#![no_main]

use k256::elliptic_curve::sec1::ToEncodedPoint;
use libfuzzer_sys::fuzz_target;
use mpc_api::{
    parse_body, parse_key_id, parse_point, BackupRequest, BodyError, ExportRequest, RevokeRequest,
};

fn check_point(text: &str) {
    if let Some(key) = parse_point(text) {
        assert_eq!(
            hex::encode(key.to_encoded_point(true).as_bytes()),
            text.to_ascii_lowercase()
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let is_json = serde_json_is_value(data);
    match parse_body::<ExportRequest>(data) {
        Ok(request) => {
            assert!(is_json);
            check_point(&request.onetime_public_key);
        }
        Err(BodyError::Shape(_)) => assert!(is_json),
        Err(BodyError::Syntax(_)) => assert!(!is_json),
    }
    match parse_body::<BackupRequest>(data) {
        Ok(request) => {
            assert!(is_json);
            if let Some(text) = &request.recovery_public_key {
                check_point(text);
            }
        }
        Err(BodyError::Shape(_)) => assert!(is_json),
        Err(BodyError::Syntax(_)) => assert!(!is_json),
    }
    match parse_body::<RevokeRequest>(data) {
        Ok(request) => {
            assert!(is_json);
            if let Some(key_id) = parse_key_id(&request.confirm) {
                assert_eq!(hex::encode(key_id.0), request.confirm.to_ascii_lowercase());
            }
        }
        Err(BodyError::Shape(_)) => assert!(is_json),
        Err(BodyError::Syntax(_)) => assert!(!is_json),
    }
    if let Ok(text) = core::str::from_utf8(data) {
        if let Some(key_id) = parse_key_id(text) {
            assert_eq!(hex::encode(key_id.0), text.to_ascii_lowercase());
        }
        check_point(text);
    }
});

/// Whether the bytes are one JSON value (any shape), by serde_json itself.
fn serde_json_is_value(data: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(data).is_ok()
}
