//! Tests of the opening and outcome encodings (`opening.rs`).

use super::*;

fn samples() -> Vec<Opening> {
    let session = SessionHandle([7; 32]);
    let key_id = KeyId([9; 32]);
    let prehash = Prehash::from_bytes([3; 32]);
    let path = DerivationPath::from_indices(&[44, 60, 0, 0, 1 << 30]).unwrap();
    let deepest = DerivationPath::from_indices(&[(1 << 31) - 1; MAX_PATH_DEPTH]).unwrap();
    [
        Operation::Keygen,
        Operation::Sign {
            key_id,
            epoch: 0,
            prehash,
            path: DerivationPath::root(),
        },
        Operation::Sign {
            key_id,
            epoch: u64::MAX,
            prehash,
            path: deepest.clone(),
        },
        Operation::SignSchnorr {
            key_id,
            epoch: u64::MAX,
            message: [1; 32],
            path: deepest,
            taproot: Taproot::MerkleRoot([2; 32]),
        },
        Operation::SignSchnorr {
            key_id,
            epoch: 0,
            message: [1; 32],
            path: DerivationPath::root(),
            taproot: Taproot::KeyPathOnly,
        },
        Operation::SignSchnorr {
            key_id,
            epoch: 0,
            message: [1; 32],
            path: path.clone(),
            taproot: Taproot::Off,
        },
        Operation::Presign {
            key_id,
            epoch: 7,
            path: path.clone(),
        },
        Operation::OnlineSign {
            key_id,
            presignature: SessionId([5; 32]),
            prehash,
        },
        Operation::Refresh { key_id, epoch: 3 },
        Operation::PresignSchnorr {
            key_id,
            epoch: 2,
            path: path.clone(),
            taproot: Taproot::MerkleRoot([4; 32]),
        },
        Operation::OnlineSignSchnorr {
            key_id,
            presignature: SessionId([6; 32]),
            message: [8; 32],
            path: path.clone(),
            taproot: Taproot::KeyPathOnly,
        },
    ]
    .into_iter()
    .map(|operation| Opening { session, operation })
    .collect()
}

#[test]
fn openings_round_trip() {
    for opening in samples() {
        let bytes = opening.encode();
        assert!(bytes.len() <= MAX_OPENING_BYTES);
        assert_eq!(bytes[0], OPENING_VERSION);
        assert_eq!(Opening::decode(&bytes), Ok(opening.clone()));
    }
}

#[test]
fn known_keygen_encoding() {
    let opening = Opening {
        session: SessionHandle([0x11; 32]),
        operation: Operation::Keygen,
    };
    let mut want = vec![1u8];
    want.extend_from_slice(&[0x11; 32]);
    want.push(0);
    assert_eq!(opening.encode(), want);
}

#[test]
fn bad_openings_rejected() {
    for opening in samples() {
        let bytes = opening.encode();
        for len in 0..bytes.len() {
            assert!(Opening::decode(&bytes[..len]).is_err(), "prefix {len}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(Opening::decode(&long).is_err());
        let mut version = bytes.clone();
        version[0] = 2;
        assert_eq!(
            Opening::decode(&version),
            Err(DecodeError("unsupported opening version"))
        );
    }
    // Unknown operation tag, and an over-long varint for a known one.
    let mut bytes = samples()[0].encode();
    bytes[33] = 9;
    assert!(Opening::decode(&bytes).is_err());
    let mut bytes = samples()[0].encode();
    bytes[33] = 0x80;
    bytes.push(0);
    assert!(Opening::decode(&bytes).is_err());
    assert!(Opening::decode(&[0xff; MAX_OPENING_BYTES + 1]).is_err());
}

fn sign_opening(path: Vec<u32>) -> Vec<u8> {
    postcard::to_allocvec(&WireOpening {
        version: OPENING_VERSION,
        session: [1; 32],
        operation: WireOperation::Sign {
            key_id: [2; 32],
            epoch: 0,
            prehash: [3; 32],
            path,
        },
    })
    .unwrap()
}

#[test]
fn bad_paths_rejected() {
    assert!(Opening::decode(&sign_opening(vec![1; MAX_PATH_DEPTH])).is_ok());
    assert_eq!(
        Opening::decode(&sign_opening(vec![1; MAX_PATH_DEPTH + 1])),
        Err(DecodeError("derivation path too deep"))
    );
    assert_eq!(
        Opening::decode(&sign_opening(vec![0, 1 << 31])),
        Err(DecodeError("hardened derivation index"))
    );
    // A path length that runs past the input.
    let mut bytes = sign_opening(vec![5]);
    let len_at = 1 + 32 + 1 + 32 + 1 + 32;
    assert_eq!(bytes[len_at], 1);
    bytes[len_at] = 100;
    assert!(Opening::decode(&bytes).is_err());
}

#[test]
fn outcomes_round_trip() {
    let failed = Outcome::from_protocol_error(mpc_core::Error::RvoleCheckFailed);
    assert_eq!(
        failed,
        Outcome::Failed {
            code: CloseCode::PROTOCOL_BAN,
            class: Some(AbortClass::Ban),
            reason: "ban: RVOLE consistency check failed".into(),
        }
    );
    for outcome in [Outcome::Ok, failed] {
        let bytes = outcome.encode();
        assert_eq!(Outcome::decode(&bytes), Ok(outcome));
        let mut long = bytes.clone();
        long.push(0);
        assert!(Outcome::decode(&long).is_err());
    }
    assert!(Outcome::decode(&[]).is_err());
    assert!(Outcome::decode(&[7]).is_err());
}

#[test]
fn long_reasons_are_cut_on_a_char_boundary() {
    let outcome = Outcome::Failed {
        code: CloseCode::INTERNAL_ERROR,
        class: None,
        reason: "é".repeat(100),
    };
    let Ok(Outcome::Failed { reason, .. }) = Outcome::decode(&outcome.encode()) else {
        panic!("does not decode");
    };
    assert_eq!(reason.len(), 122);
    assert_eq!(truncate("abc", 2), "ab");
}

#[test]
fn frames() {
    let frame = encode_frame(FrameKind::Message, b"xyz");
    assert_eq!(frame, b"\x02xyz");
    assert_eq!(
        decode_frame(&frame),
        Some((FrameKind::Message, &b"xyz"[..]))
    );
    assert_eq!(decode_frame(&[]), None);
    assert_eq!(decode_frame(&[0, 1]), None);
    assert_eq!(decode_frame(&[4]), None);
    assert_eq!(decode_frame(&[3]), Some((FrameKind::Outcome, &[][..])));
}
