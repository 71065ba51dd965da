//! Fuzzes `Envelope::decode`: it must never panic, every accepted input must
//! be canonical (re-encode to exactly the input), and `check` on an accepted
//! envelope must not panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpc_core::wire::{Envelope, Expected, ProtocolId, Role, SessionId, MAX_MESSAGE_BYTES};

const EXPECTED: Expected = Expected {
    protocol: ProtocolId::Sign,
    session: SessionId([0x5a; 32]),
    round: 1,
    sender: Role::A,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = Envelope::decode(data, MAX_MESSAGE_BYTES) {
        assert_eq!(envelope.encode(), data, "accepted a non-canonical encoding");
        let _ = envelope.check(&EXPECTED);
    }
});
