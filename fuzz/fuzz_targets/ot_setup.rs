//! Fuzzes the OT-extension sender's setup receive point,
//! `SenderSetup::finish(BotSendMsg, PprfMsg)` (PROTOCOL.md §5, §7.1).
//!
//! Byte 0 selects the mode (see the `mpc_core_fuzz` crate docs):
//! - raw (bit 0 clear): byte 1 is the length of `BotSendMsg`, clamped; the
//!   remaining bytes are `BotSendMsg || PprfMsg`;
//! - tamper (bit 0 set): tamper records applied to the fixture's honest
//!   `BotSendMsg || PprfMsg` (33 + 5120 bytes), split at 33.
//!
//! What must hold:
//! - `finish` never panics and every error has class `Abort`; wrong message
//!   lengths are errors;
//! - the honest messages give exactly the fixture's key;
//! - tamper mode: an accepted input changed nothing but correction words the
//!   evaluator does not use (the branch opposite its base-OT choice bit, the
//!   selective-failure leak PROTOCOL.md §5.3 bounds), yields exactly the
//!   honest seeds, and has a different setup fingerprint (the fingerprint
//!   binds the messages). A changed `BotSendMsg` (`B`) is never accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpc_core::hazmat::ot::base::SENDER_MSG_BYTES;
use mpc_core::hazmat::ot::pprf::PPRF_MSG_BYTES;
use mpc_core::hazmat::ot::setup::OtSenderKey;
use mpc_core::AbortClass;
use mpc_core_fuzz::{
    changed_offsets, pprf_byte, sender_setup, setup_fixture, tamper, used_branch, PprfByte,
    SetupFixture, MODE_TAMPER,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let fixture = setup_fixture();
    if mode & MODE_TAMPER == 0 {
        let Some((&split, rest)) = body.split_first() else {
            return;
        };
        let (send_msg, pprf_msg) = rest.split_at(usize::from(split).min(rest.len()));
        check(fixture, send_msg, pprf_msg);
    } else {
        let honest = [fixture.send_msg.as_slice(), &fixture.pprf_msg].concat();
        let tampered = tamper(&honest, body);
        let (send_msg, pprf_msg) = tampered.split_at(SENDER_MSG_BYTES);
        let key = check(fixture, send_msg, pprf_msg);
        check_tampered(fixture, &changed_offsets(&honest, &tampered), key);
    }
});

fn same_seeds(a: &OtSenderKey, b: &OtSenderKey) -> bool {
    a.seeds().punctured == b.seeds().punctured && a.seeds().seeds == b.seeds().seeds
}

/// Runs a fresh honest S on the messages; checks what holds for any input.
fn check(fixture: &SetupFixture, send_msg: &[u8], pprf_msg: &[u8]) -> Option<OtSenderKey> {
    let honest = send_msg == fixture.send_msg.as_slice() && pprf_msg == fixture.pprf_msg.as_slice();
    let (setup, recv_msg) = sender_setup();
    assert_eq!(
        recv_msg, fixture.recv_msg,
        "harness: SenderSetup::start is not deterministic in its rng"
    );
    match setup.finish(send_msg, pprf_msg) {
        Err(error) => {
            assert!(!honest, "honest setup messages rejected: {error:?}");
            assert_eq!(error.class(), AbortClass::Abort, "{error:?}");
            None
        }
        Ok(key) => {
            assert_eq!(
                send_msg.len(),
                SENDER_MSG_BYTES,
                "wrong-length BotSendMsg accepted"
            );
            assert_eq!(
                pprf_msg.len(),
                PPRF_MSG_BYTES,
                "wrong-length PprfMsg accepted"
            );
            if honest {
                assert!(same_seeds(&key, &fixture.sender_key));
                assert_eq!(key.context(), fixture.sender_key.context());
                assert_eq!(key.gadget(), fixture.sender_key.gadget());
            }
            Some(key)
        }
    }
}

fn check_tampered(fixture: &SetupFixture, changed: &[usize], key: Option<OtSenderKey>) {
    let Some(key) = key else {
        return;
    };
    if changed.is_empty() {
        return;
    }
    let punctured = &fixture.sender_key.seeds().punctured;
    for &offset in changed {
        let Some(pprf_offset) = offset.checked_sub(SENDER_MSG_BYTES) else {
            panic!("accepted a changed BotSendMsg (byte {offset})");
        };
        match pprf_byte(pprf_offset) {
            PprfByte::CorrectionWord {
                tree,
                level,
                branch,
            } => assert_ne!(
                branch,
                used_branch(punctured[tree], level),
                "accepted a changed correction word the evaluator uses \
                 (PprfMsg byte {pprf_offset}: tree {tree}, level {level})"
            ),
            PprfByte::Proof { tree } => {
                panic!("accepted a changed proof (PprfMsg byte {pprf_offset}, tree {tree})")
            }
        }
    }
    assert!(
        same_seeds(&key, &fixture.sender_key),
        "an accepted tamper changed S's seeds"
    );
    assert_ne!(
        key.context().fingerprint,
        fixture.sender_key.context().fingerprint,
        "the setup fingerprint does not bind PprfMsg"
    );
}
