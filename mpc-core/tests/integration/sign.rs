//! DKG and signing end to end, checked by independent implementations:
//! k256's verifier and libsecp256k1 (the `secp256k1` crate).
use crate::common;

use common::{dkg_pair, libsecp_verify, run_honest, run_pair};
use k256::ecdsa::VerifyingKey;
use mpc_core::sign::ClaimSet;
use mpc_core::{KeyShare, OnlineSign, Prehash, Presign, Presignature, Sign, SignatureOutput};
use rand_chacha::rand_core::RngCore;

fn check_with_k256(share: &KeyShare, prehash: &Prehash, out: &SignatureOutput) {
    use k256::ecdsa::signature::hazmat::PrehashVerifier;
    let vk = VerifyingKey::from(share.public_key());
    vk.verify_prehash(prehash.as_bytes(), &out.signature)
        .unwrap();
    let recovered =
        VerifyingKey::recover_from_prehash(prehash.as_bytes(), &out.signature, out.recovery_id)
            .unwrap();
    assert_eq!(recovered, vk);
    assert!(
        out.signature.normalize_s().is_none(),
        "signature is not low-S"
    );
}

fn sign_pair(
    seed: u64,
    a: &KeyShare,
    b: &KeyShare,
    prehash: Prehash,
) -> (SignatureOutput, SignatureOutput) {
    let mut sa = Sign::new(a, prehash);
    let mut sb = Sign::new(b, prehash);
    run_honest(seed, &mut sa, &mut sb)
}

#[test]
fn random_dkg_and_signatures_verify_under_libsecp256k1_and_k256() {
    let mut rng = common::rng(99);
    let mut recovery_ids = [0usize; 4];
    for key in 0..24u64 {
        let (a, b) = dkg_pair(1000 + key);
        assert_eq!(a.public_key(), b.public_key());
        assert_eq!(a.key_id(), b.key_id());
        assert_eq!(a.chain_code(), b.chain_code());
        for n in 0..8u64 {
            let mut digest = [0u8; 32];
            rng.fill_bytes(&mut digest);
            let prehash = Prehash::from_bytes(digest);
            let (out_a, out_b) = sign_pair(key * 100 + n, &a, &b, prehash);
            assert_eq!(out_a, out_b);
            check_with_k256(&a, &prehash, &out_a);
            libsecp_verify(&a.public_key(), &prehash, &out_a);
            recovery_ids[usize::from(out_a.recovery_id.to_byte())] += 1;
        }
    }
    // Both parities occur (overflow ids 2, 3 have probability ~2^-127).
    assert!(recovery_ids[0] > 0 && recovery_ids[1] > 0);
}

#[test]
fn presign_then_online_sign_verifies() {
    let (a, b) = dkg_pair(7);
    for n in 0..4u64 {
        let mut pa = Presign::new(&a);
        let mut pb = Presign::new(&b);
        let (pre_a, pre_b) = run_honest(50 + n, &mut pa, &mut pb);
        assert_eq!(pre_a.session_id(), pre_b.session_id());
        let prehash = Prehash::sha256(format!("message {n}").as_bytes());
        let mut oa = OnlineSign::new(&a, pre_a, prehash, &mut ClaimSet::new()).unwrap();
        let mut ob = OnlineSign::new(&b, pre_b, prehash, &mut ClaimSet::new()).unwrap();
        let (out_a, out_b) = run_honest(60 + n, &mut oa, &mut ob);
        assert_eq!(out_a, out_b);
        check_with_k256(&a, &prehash, &out_a);
        libsecp_verify(&a.public_key(), &prehash, &out_a);
    }
}

#[test]
fn stored_presignatures_round_trip_and_sign() {
    let (a, b) = dkg_pair(17);
    let (pre_a, pre_b) = run_honest(5, &mut Presign::new(&a), &mut Presign::new(&b));
    let bytes_a = pre_a.to_bytes();
    let bytes_b = pre_b.to_bytes();
    let pre_a = Presignature::from_bytes(&bytes_a).unwrap();
    let pre_b = Presignature::from_bytes(&bytes_b).unwrap();
    assert_eq!(pre_a.to_bytes(), bytes_a);
    assert_eq!((pre_a.key_id(), pre_a.epoch()), (a.key_id(), a.epoch()));
    let prehash = Prehash::sha256(b"stored");
    let (out_a, out_b) = run_honest(
        6,
        &mut OnlineSign::new(&a, pre_a, prehash, &mut ClaimSet::new()).unwrap(),
        &mut OnlineSign::new(&b, pre_b, prehash, &mut ClaimSet::new()).unwrap(),
    );
    assert_eq!(out_a, out_b);
    libsecp_verify(&a.public_key(), &prehash, &out_a);

    // Every truncation, any trailing byte, another version and a bad point
    // are typed errors.
    for len in 0..bytes_b.len() {
        assert!(Presignature::from_bytes(&bytes_b[..len]).is_err(), "{len}");
    }
    let mut long = bytes_b.to_vec();
    long.push(0);
    assert_eq!(
        Presignature::from_bytes(&long).unwrap_err(),
        mpc_core::Error::MalformedKeyShare
    );
    let mut version = bytes_b.to_vec();
    version[0] = 1;
    assert_eq!(
        Presignature::from_bytes(&version).unwrap_err(),
        mpc_core::Error::UnsupportedShareVersion
    );
    // The tag byte of R: the record ends with R (length byte and 33 bytes),
    // four scalars and the verifying key (length byte and 33 bytes).
    let mut bad_point = bytes_b.to_vec();
    let at = bad_point.len() - 34 - 4 * 32 - 34 + 1;
    assert!(matches!(bad_point[at], 2 | 3));
    bad_point[at] = 5;
    assert_eq!(
        Presignature::from_bytes(&bad_point).unwrap_err(),
        mpc_core::Error::MalformedKeyShare
    );
}

#[test]
fn online_step_with_different_prehashes_aborts() {
    let (a, b) = dkg_pair(8);
    let (pre_a, pre_b) = run_honest(1, &mut Presign::new(&a), &mut Presign::new(&b));
    let mut oa = OnlineSign::new(&a, pre_a, Prehash::sha256(b"one"), &mut ClaimSet::new()).unwrap();
    let mut ob = OnlineSign::new(&b, pre_b, Prehash::sha256(b"two"), &mut ClaimSet::new()).unwrap();
    let (ea, eb) = run_pair(2, &mut oa, &mut ob, |_| {});
    assert_eq!(ea.error(), Some(mpc_core::Error::PrehashMismatch));
    assert_eq!(eb.error(), Some(mpc_core::Error::PrehashMismatch));
}

#[test]
fn presignatures_from_different_sessions_do_not_pair() {
    let (a, b) = dkg_pair(9);
    let (pre_a1, _pre_b1) = run_honest(1, &mut Presign::new(&a), &mut Presign::new(&b));
    let (_pre_a2, pre_b2) = run_honest(2, &mut Presign::new(&a), &mut Presign::new(&b));
    let prehash = Prehash::sha256(b"m");
    let (ea, eb) = run_pair(
        3,
        &mut OnlineSign::new(&a, pre_a1, prehash, &mut ClaimSet::new()).unwrap(),
        &mut OnlineSign::new(&b, pre_b2, prehash, &mut ClaimSet::new()).unwrap(),
        |_| {},
    );
    // Each side drops the other's message as addressed to another session.
    assert!(!ea.is_finished() && !eb.is_finished());
    assert!(ea.error().is_none() && eb.error().is_none());
}

#[test]
fn key_share_round_trips_and_rejects_foreign_or_old_encodings() {
    let (a, b) = dkg_pair(11);
    let bytes = a.to_bytes();
    let decoded = KeyShare::from_bytes_for(&bytes, a.key_id()).unwrap();
    assert_eq!(decoded.public_key(), a.public_key());
    assert_eq!(decoded.to_bytes().as_slice(), bytes.as_slice());
    // The decoded share signs with the peer's original share.
    let prehash = Prehash::sha256(b"after decode");
    let (out, _) = sign_pair(12, &decoded, &b, prehash);
    libsecp_verify(&a.public_key(), &prehash, &out);

    let (other, _) = dkg_pair(13);
    assert_eq!(
        KeyShare::from_bytes_for(&bytes, other.key_id()).err(),
        Some(mpc_core::Error::KeyMismatch)
    );
    // Version 0 (an older format) is refused as such.
    let mut old = bytes.to_vec();
    old[0] = 0;
    assert_eq!(
        KeyShare::from_bytes(&old).err(),
        Some(mpc_core::Error::UnsupportedShareVersion)
    );
    assert_eq!(
        KeyShare::from_bytes(&bytes[..bytes.len() - 1]).err(),
        Some(mpc_core::Error::MalformedKeyShare)
    );
    let mut trailing = bytes.to_vec();
    trailing.push(0);
    assert_eq!(
        KeyShare::from_bytes(&trailing).err(),
        Some(mpc_core::Error::MalformedKeyShare)
    );
    // Debug shows no secret.
    let debug = format!("{a:?}");
    assert!(debug.contains("KeyShare") && !debug.contains("secret"));
}
