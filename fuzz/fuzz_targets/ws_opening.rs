//! Fuzzes the transport's own decoders: `Opening::decode` and
//! `Outcome::decode` (and the frame split) of `mpc-transport-ws`.
//!
//! What must hold: no panic; whatever decodes is canonical, i.e. encode is
//! the inverse of decode (`encode(decode(x)) == x`, and decoding that again
//! gives the same value).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpc_transport_ws::opening::{decode_frame, encode_frame};
use mpc_transport_ws::{Opening, Outcome};

fuzz_target!(|data: &[u8]| {
    if let Ok(opening) = Opening::decode(data) {
        let encoded = opening.encode();
        assert_eq!(encoded, data, "accepted a non-canonical opening");
        assert_eq!(Opening::decode(&encoded).as_ref(), Ok(&opening));
        let _ = (opening.context(), opening.operation.name());
        let _ = opening.operation.key_id();
    }
    if let Ok(outcome) = Outcome::decode(data) {
        let encoded = outcome.encode();
        assert_eq!(encoded, data, "accepted a non-canonical outcome");
        assert_eq!(Outcome::decode(&encoded).as_ref(), Ok(&outcome));
    }
    if let Some((kind, body)) = decode_frame(data) {
        assert_eq!(encode_frame(kind, body), data);
    }
});
