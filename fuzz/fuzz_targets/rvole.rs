//! Fuzzes the RVOLE receiver's receive point, `RvoleReceiver::finish`
//! (PROTOCOL.md §7), under a fixed honest key pair.
//!
//! Every input gets a fresh `RvoleReceiver` started from a fixed seed (same
//! choice bits, `chi` and extension message each time); the fixture's valid
//! message is the honest sender's answer (`vole::send`) for fixed inputs `a`.
//! Byte 0 selects the mode (see the `mpc_core_fuzz` crate docs): raw (bit 0
//! clear) hands the body to `finish`; tamper (bit 0 set) applies tamper
//! records to the valid message.
//!
//! What must hold:
//! - `finish` never panics; every error has class `Abort` or `Ban`; a
//!   message of the wrong length is `WrongLength`;
//! - the valid message is accepted;
//! - whenever a message is accepted, the output is a correct multiplication:
//!   `c_i + d_i == a_i * chi` with the honest sender's `c` and the fixed `a`
//!   (an accepted message never yields a wrong product);
//! - tamper mode: a message that differs from the valid one is never
//!   accepted, not even a change confined to rows whose choice bit is 0 (which
//!   R does not add into `d`): `theta` hashes all of `a_tilde` and `mu` is
//!   compared as a digest, so no byte of the message is unchecked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpc_core::hazmat::vole::VOLE_MSG_BYTES;
use mpc_core::params::RVOLE_INPUTS;
use mpc_core::{AbortClass, Error};
use mpc_core_fuzz::{rvole_fixture, rvole_receiver, setup_fixture, tamper, MODE_TAMPER};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let keys = setup_fixture();
    let fixture = rvole_fixture();
    let tampered = mode & MODE_TAMPER != 0;
    let message = if tampered {
        tamper(&fixture.vole_msg, body)
    } else {
        body.to_vec()
    };
    let honest = message == fixture.vole_msg;

    let (receiver, ote_msg) = rvole_receiver();
    assert!(
        ote_msg == fixture.ote_msg && *receiver.chi() == fixture.chi,
        "harness: RvoleReceiver::start is not deterministic in its rng"
    );
    match receiver.finish(&keys.receiver_key, &message) {
        Err(error) => {
            assert!(!honest, "honest RVOLE message rejected: {error:?}");
            assert!(
                matches!(error.class(), AbortClass::Abort | AbortClass::Ban),
                "{error:?}"
            );
            if message.len() != VOLE_MSG_BYTES {
                assert_eq!(error, Error::WrongLength);
            }
        }
        Ok(out) => {
            assert_eq!(message.len(), VOLE_MSG_BYTES);
            assert!(
                out.chi == fixture.chi,
                "chi changed by the sender's message"
            );
            for i in 0..RVOLE_INPUTS {
                assert!(
                    fixture.c[i] + out.d[i] == fixture.inputs[i] * out.chi,
                    "accepted message gives a wrong product for input {i}"
                );
            }
            assert!(
                honest || !tampered,
                "accepted a tampered RVOLE message (products are correct)"
            );
        }
    }
});
