//! Fuzzes both receive points of the base OT (PROTOCOL.md §4).
//!
//! Byte 0 selects the mode (see the `mpc_core_fuzz` crate docs):
//! - bit 1 clear: an honest sender (`base::send`, fixed seed) gets the body
//!   as the receiver's message; bit 1 set: an honest `BaseOtReceiver`
//!   (fixed seed) gets the body as the sender's message in `finish`;
//! - bit 0 clear: the body is the message; bit 0 set: the body is a list of
//!   tamper records applied to the fixture's valid message.
//!
//! What must hold, for every input:
//! - the party never panics, and every error has class `Abort`;
//!   a message of the wrong length is `WrongLength`;
//! - the valid message is accepted, with exactly the fixture's keys;
//! - sender: for every OT whose point pair differs from the valid message's,
//!   both keys differ from the honest ones (keys bind the pair);
//! - receiver: an accepted sender message other than the valid one gives
//!   keys that all differ from the honest ones (keys bind `B`), with the
//!   same choice bits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpc_core::hazmat::ot::base::{BASE_OTS, RECEIVER_MSG_BYTES, SENDER_MSG_BYTES};
use mpc_core::wire::POINT_BYTES;
use mpc_core::{AbortClass, Error};
use mpc_core_fuzz::{
    base_fixture, base_receiver, base_send, tamper, BaseFixture, MODE_BASE_RECEIVER, MODE_TAMPER,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let fixture = base_fixture();
    let receiver_side = mode & MODE_BASE_RECEIVER != 0;
    let message = match (mode & MODE_TAMPER != 0, receiver_side) {
        (false, _) => body.to_vec(),
        (true, false) => tamper(&fixture.receiver_msg, body),
        (true, true) => tamper(&fixture.sender_msg, body),
    };
    if receiver_side {
        check_receiver(fixture, &message);
    } else {
        check_sender(fixture, &message);
    }
});

fn check_error(error: Error, len: usize, expected_len: usize) {
    assert_eq!(error.class(), AbortClass::Abort, "{error:?}");
    if len != expected_len {
        assert_eq!(error, Error::WrongLength);
    }
}

fn check_sender(fixture: &BaseFixture, message: &[u8]) {
    let honest = message == fixture.receiver_msg.as_slice();
    match base_send(message) {
        Err(error) => {
            assert!(!honest, "honest receiver message rejected: {error:?}");
            check_error(error, message.len(), RECEIVER_MSG_BYTES);
        }
        Ok((out, reply)) => {
            assert_eq!(message.len(), RECEIVER_MSG_BYTES);
            assert_eq!(reply.len(), SENDER_MSG_BYTES);
            assert_eq!(out.keys.len(), BASE_OTS);
            if honest {
                assert_eq!(reply, fixture.sender_msg);
                assert!(out.keys == fixture.sender_out.keys);
            }
            let pair = 2 * POINT_BYTES;
            for (t, (new, old)) in message
                .chunks_exact(pair)
                .zip(fixture.receiver_msg.chunks_exact(pair))
                .enumerate()
            {
                if new != old {
                    for j in 0..2 {
                        assert_ne!(
                            out.keys[t][j], fixture.sender_out.keys[t][j],
                            "OT {t} branch {j}: key does not bind the receiver's points"
                        );
                    }
                }
            }
        }
    }
}

fn check_receiver(fixture: &BaseFixture, message: &[u8]) {
    let honest = message == fixture.sender_msg.as_slice();
    let (receiver, start_msg) = base_receiver();
    assert_eq!(
        start_msg, fixture.receiver_msg,
        "harness: BaseOtReceiver::start is not deterministic in its rng"
    );
    match receiver.finish(message) {
        Err(error) => {
            assert!(!honest, "honest sender message rejected: {error:?}");
            check_error(error, message.len(), SENDER_MSG_BYTES);
        }
        Ok(out) => {
            assert_eq!(message.len(), SENDER_MSG_BYTES);
            assert_eq!(out.keys.len(), BASE_OTS);
            assert_eq!(out.choices, fixture.receiver_out.choices);
            for (t, (new, old)) in out.keys.iter().zip(&fixture.receiver_out.keys).enumerate() {
                if honest {
                    assert_eq!(new, old, "OT {t}: honest run not reproduced");
                } else {
                    assert_ne!(new, old, "OT {t}: key does not bind the sender's point");
                }
            }
        }
    }
}
