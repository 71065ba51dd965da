//! Fuzzes the SoftSpokenOT sender's receive point, `extension::send`
//! (PROTOCOL.md §6.3), under a fixed honest key pair.
//!
//! Byte 0 selects the mode (see the `mpc_core_fuzz` crate docs): raw (bit 0
//! clear) hands the body to the sender as R's message; tamper (bit 0 set)
//! applies tamper records to the fixture's valid message.
//!
//! What must hold:
//! - the result is `Ok`, `WrongLength` (class `Abort`, exactly for a wrong
//!   length) or `OtExtensionCheckFailed` (class `Ban`), never a panic;
//! - the valid message is accepted and the outputs are correlated with R's
//!   (`outputs[j][choice_j]` is R's output, the other branch is not);
//! - tamper mode: a message that differs from the valid one is never
//!   accepted. Even a change to the `U` block of a tree whose punctured
//!   index is 0 (which the sender does not add into its rows) must fail,
//!   because the check challenge hashes all of `U`; accepting it would tell R
//!   that tree's `Delta` bits are zero.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpc_core::hazmat::ot::extension::{self, OTE_MSG_BYTES};
use mpc_core::params::{EXT_ROW_BYTES, TREES, XI};
use mpc_core::{AbortClass, Error};
use mpc_core_fuzz::{
    bit, changed_offsets, ext_fixture, setup_fixture, tamper, EXT_SID, MODE_TAMPER,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let keys = setup_fixture();
    let fixture = ext_fixture();
    let tampered = mode & MODE_TAMPER != 0;
    let message = if tampered {
        tamper(&fixture.message, body)
    } else {
        body.to_vec()
    };
    let honest = message == fixture.message;
    let seeds = keys.sender_key.seeds();

    match extension::send(seeds, &EXT_SID, &message) {
        Err(Error::WrongLength) => {
            assert_eq!(Error::WrongLength.class(), AbortClass::Abort);
            assert_ne!(message.len(), OTE_MSG_BYTES);
        }
        Err(Error::OtExtensionCheckFailed) => {
            assert_eq!(Error::OtExtensionCheckFailed.class(), AbortClass::Ban);
            assert_eq!(message.len(), OTE_MSG_BYTES);
            assert!(!honest, "honest extension message rejected");
        }
        Err(error) => panic!("unexpected error {error:?}"),
        Ok(out) => {
            assert_eq!(message.len(), OTE_MSG_BYTES);
            assert_eq!(out.outputs.len(), XI);
            if honest {
                for j in 0..XI {
                    let c = bit(&fixture.choices, j);
                    assert!(out.outputs[j][c] == fixture.receiver_out.outputs[j]);
                    assert!(out.outputs[j][1 - c] != fixture.receiver_out.outputs[j]);
                }
            } else if tampered {
                let changed = changed_offsets(&fixture.message, &message);
                let only_unused_u_blocks = changed.iter().all(|&offset| {
                    offset < TREES * EXT_ROW_BYTES && seeds.punctured[offset / EXT_ROW_BYTES] == 0
                });
                panic!(
                    "accepted a tampered extension message (changed bytes {changed:?}; \
                     only U blocks of trees with punctured index 0: {only_unused_u_blocks})"
                );
            }
        }
    }
});
