//! Fuzzes `Backup::from_bytes` and `Backup::verify` (PROTOCOL.md §17) against
//! a fixed honest backup of a fixture share.
//!
//! Byte 0 selects the mode (see the `mpc_core_fuzz` crate docs): raw (bit 0
//! clear) decodes the body; tamper (bit 0 set) applies tamper records to the
//! honest backup.
//!
//! What must hold:
//! - no panic; decoding errors are the documented ones;
//! - whatever decodes re-encodes to exactly the input;
//! - the honest backup verifies;
//! - anything that verifies against the honest public share and recovery
//!   key decrypts, with the recovery secret, to the honest share; and it is
//!   the honest backup itself (every byte is bound by the Fiat-Shamir
//!   challenge or checked against it, so an accepted change would be a
//!   soundness failure).
#![no_main]

use k256::elliptic_curve::ops::MulByGenerator;
use k256::ProjectivePoint;
use libfuzzer_sys::fuzz_target;
use mpc_core::backup::Backup;
use mpc_core::Error;
use mpc_core_fuzz::protocols::backup_fixture;
use mpc_core_fuzz::{tamper, MODE_TAMPER};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let fixture = backup_fixture();
    let bytes = if mode & MODE_TAMPER == 0 {
        body.to_vec()
    } else {
        tamper(&fixture.bytes, body)
    };
    let honest = bytes == fixture.bytes;
    let backup = match Backup::from_bytes(&bytes) {
        Ok(backup) => backup,
        Err(error) => {
            assert!(!honest, "honest backup does not decode: {error:?}");
            assert!(
                matches!(
                    error,
                    Error::WrongLength
                        | Error::UnsupportedShareVersion
                        | Error::MalformedPayload
                        | Error::InvalidPoint
                        | Error::IdentityPoint
                        | Error::NonCanonicalScalar
                ),
                "{error:?}"
            );
            return;
        }
    };
    assert_eq!(backup.to_bytes(), bytes, "accepted a non-canonical backup");
    match backup.verify(&fixture.public_share, &fixture.recovery.public_key()) {
        Err(error) => {
            assert!(!honest, "honest backup rejected");
            assert_eq!(error, Error::InvalidBackup);
        }
        Ok(()) => {
            let secret = backup
                .decrypt(&fixture.recovery)
                .expect("a verified backup does not decrypt");
            assert_eq!(
                ProjectivePoint::mul_by_generator(&*secret.to_nonzero_scalar()),
                fixture.public_share,
                "a verified backup decrypts to another share"
            );
            assert!(honest, "a changed backup verifies");
        }
    }
});
