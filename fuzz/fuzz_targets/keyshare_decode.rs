//! Fuzzes the two storage decoders, `KeyShare::from_bytes` and
//! `Presignature::from_bytes`, on the same bytes.
//!
//! What must hold, for each: no panic; the only errors are
//! `UnsupportedShareVersion` and `MalformedKeyShare`; whatever decodes is
//! canonical (re-encodes to exactly the input). A decoded key share is also
//! consistent (`X_A + X_B` is its public key) and its `Debug` output does not
//! panic. Seeds are real shares (fresh, refreshed, burned) and real
//! presignatures.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpc_core::wire::Role;
use mpc_core::{Error, KeyShare, Presignature};

fn check_error(error: Error) {
    assert!(
        matches!(
            error,
            Error::UnsupportedShareVersion | Error::MalformedKeyShare
        ),
        "{error:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    match KeyShare::from_bytes(data) {
        Ok(share) => {
            assert_eq!(
                share.to_bytes().as_slice(),
                data,
                "accepted a non-canonical key share"
            );
            assert_eq!(
                share.public_share(Role::A) + share.public_share(Role::B),
                share.public_key().to_projective(),
                "accepted an inconsistent key share"
            );
            let _ = format!("{share:?}");
        }
        Err(error) => check_error(error),
    }
    match Presignature::from_bytes(data) {
        Ok(presignature) => {
            assert_eq!(
                presignature.to_bytes().as_slice(),
                data,
                "accepted a non-canonical presignature"
            );
            let _ = format!("{presignature:?}");
        }
        Err(error) => check_error(error),
    }
});
