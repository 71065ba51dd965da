//! The presignature guard and the round-4 rerandomization (PROTOCOL.md
//! §14.3): what `OnlineSign::new` refuses, and that the shifted nonce is the
//! one the spec defines, checked by k256 and libsecp256k1.
use crate::common;

use common::{dkg_pair, libsecp_verify, run_honest, run_pair, Counting};
use k256::ecdsa::signature::hazmat::PrehashVerifier;
use k256::ecdsa::VerifyingKey;
use k256::elliptic_curve::bigint::U256;
use k256::elliptic_curve::ops::{MulByGenerator, Reduce};
use k256::elliptic_curve::point::AffineCoordinates;
use k256::{ProjectivePoint, Scalar};
use mpc_core::sign::ClaimSet;
use mpc_core::transcript::{hash_to_scalar, tags};
use mpc_core::wire::{decode_point, encode_point, encode_scalar};
use mpc_core::{
    DerivationPath, Error, KeyShare, OnlineSign, Prehash, Presign, Presignature, Refresh,
};
use serde::{Deserialize, Serialize};

/// The presignature record of PROTOCOL.md §14.3 (format version 2), field by
/// field, as a storage layer (or an attacker holding a copy) sees it.
#[derive(Serialize, Deserialize)]
struct Record {
    version: u16,
    role: u8,
    key_id: [u8; 32],
    epoch: u64,
    sid: [u8; 32],
    big_r: Vec<u8>,
    phi: [u8; 32],
    u: [u8; 32],
    v: [u8; 32],
    tweak: [u8; 32],
    verifying_key: Vec<u8>,
}

fn record(presignature: &Presignature) -> Record {
    postcard::from_bytes(&presignature.to_bytes()).unwrap()
}

fn online(share: &KeyShare, presignature: Presignature, prehash: Prehash) -> OnlineSign {
    OnlineSign::new(share, presignature, prehash, &mut ClaimSet::new()).unwrap()
}

/// The attack the guard exists for: a storage layer restores a presignature
/// after its use (backup, replica, crash before the delete) and the online
/// step is asked to run it again for another prehash. With the store's
/// claims kept (here one `ClaimSet` per party, as a durable store would),
/// the restored copy is refused before any round-4 byte exists, and the
/// refusal does not depend on the peer.
#[test]
fn restored_presignature_is_refused_when_the_store_says_claimed() {
    let (a, b) = dkg_pair(201);
    let (pre_a, pre_b) = run_honest(1, &mut Presign::new(&a), &mut Presign::new(&b));
    let (bytes_a, bytes_b) = (pre_a.to_bytes(), pre_b.to_bytes());
    let (mut store_a, mut store_b) = (ClaimSet::new(), ClaimSet::new());
    let first = Prehash::sha256(b"pay alice");
    let sid = Presignature::from_bytes(&bytes_a).unwrap().session_id();
    assert!(!store_a.is_claimed(a.key_id(), a.epoch(), &sid));
    let (out, _) = run_honest(
        2,
        &mut OnlineSign::new(&a, pre_a, first, &mut store_a).unwrap(),
        &mut OnlineSign::new(&b, pre_b, first, &mut store_b).unwrap(),
    );
    libsecp_verify(&a.public_key(), &first, &out);
    assert!(store_a.is_claimed(a.key_id(), a.epoch(), &sid));

    let second = Prehash::sha256(b"pay mallory");
    for (share, bytes, store) in [(&a, &bytes_a, &mut store_a), (&b, &bytes_b, &mut store_b)] {
        let restored = Presignature::from_bytes(bytes).unwrap();
        assert_eq!(
            OnlineSign::new(share, restored, second, store).err(),
            Some(Error::PresignatureClaimRefused)
        );
    }
    // A guard reached through a reference (a `&mut G` handed on by a
    // caller's own generic code) refuses the same.
    let mut by_reference = &mut store_a;
    let restored_a = Presignature::from_bytes(&bytes_a).unwrap();
    assert_eq!(
        OnlineSign::new(&a, restored_a, second, &mut by_reference).err(),
        Some(Error::PresignatureClaimRefused)
    );
    // One honest party is enough: B's store forgot, A's did not.
    let restored_a = Presignature::from_bytes(&bytes_a).unwrap();
    assert!(OnlineSign::new(&a, restored_a, second, &mut store_a).is_err());
    let restored_b = Presignature::from_bytes(&bytes_b).unwrap();
    assert!(OnlineSign::new(&b, restored_b, second, &mut ClaimSet::new()).is_ok());
}

/// A presignature given with the wrong share: another key, another epoch
/// (after a refresh the old epoch's presignatures must not run with the new
/// share, nor the reverse), or the peer's share. Refused before the guard
/// is asked, so a mismatched call does not spend a claim.
#[test]
fn presignature_of_another_key_epoch_or_role_is_refused_before_the_claim() {
    let (a, b) = dkg_pair(202);
    let (other_a, _) = dkg_pair(203);
    let (a1, b1) = run_honest(
        3,
        &mut Refresh::new(&a, b"refresh"),
        &mut Refresh::new(&b, b"refresh"),
    );
    assert_eq!((a1.key_id(), a1.epoch()), (a.key_id(), 1));
    let (pre_a, _) = run_honest(4, &mut Presign::new(&a), &mut Presign::new(&b));
    let bytes = pre_a.to_bytes();
    // A presignature carries the epoch of the shares it was made with.
    let (pre_a1, _) = run_honest(5, &mut Presign::new(&a1), &mut Presign::new(&b1));
    assert_eq!((pre_a.epoch(), pre_a1.epoch()), (0, 1));
    let prehash = Prehash::sha256(b"m");
    for wrong in [&other_a, &a1, &b] {
        let mut guard = Counting::default();
        let presignature = Presignature::from_bytes(&bytes).unwrap();
        assert_eq!(
            OnlineSign::new(wrong, presignature, prehash, &mut guard).err(),
            Some(Error::KeyMismatch)
        );
        assert_eq!(guard.0, 0, "the guard was asked");
    }
    let mut guard = Counting::default();
    let presignature = Presignature::from_bytes(&bytes).unwrap();
    assert!(OnlineSign::new(&a, presignature, prehash, &mut guard).is_ok());
    assert_eq!(guard.0, 1);
}

/// A share whose OT material was burned after a ban (§18.2, the flag in the
/// stored share) refuses the online step too, even though round 4 uses no
/// OT material: a ban means "refuse signing until a refresh".
#[test]
fn burned_share_refuses_the_online_step() {
    let (a, b) = dkg_pair(204);
    let (pre_a, _) = run_honest(5, &mut Presign::new(&a), &mut Presign::new(&b));
    let mut burned = KeyShare::from_bytes(&a.to_bytes()).unwrap();
    burned.burn_ot_material();
    let restored = KeyShare::from_bytes(&burned.to_bytes()).unwrap();
    assert!(restored.is_ot_burned());
    let mut guard = Counting::default();
    assert_eq!(
        OnlineSign::new(&restored, pre_a, Prehash::sha256(b"m"), &mut guard).err(),
        Some(Error::OtMaterialBurned)
    );
    assert_eq!(guard.0, 0);
}

/// `R' = R + delta*G` with `delta` computed here from the spec's formula
/// (tag, `enc33(PK')`, `enc32(t)`, prehash, `sid`), for the root key and a
/// derived key; the signatures verify under k256 and libsecp256k1 (with
/// `ecrecover`), and `r` is `x(R') mod q`, never `x(R)`.
#[test]
fn shifted_nonce_matches_the_spec_and_verifies_independently() {
    let (a, b) = dkg_pair(205);
    let paths = [DerivationPath::root(), "m/7/1".parse().unwrap()];
    for (n, path) in paths.iter().enumerate() {
        let seed = 10 * n as u64;
        let (public_key, tweak) = a.derive(path).unwrap();
        let (pre_a, pre_b) = run_honest(
            seed,
            &mut Presign::with_path(&a, path).unwrap(),
            &mut Presign::with_path(&b, path).unwrap(),
        );
        let rec = record(&pre_a);
        assert_eq!(rec.tweak, encode_scalar(&tweak));
        assert_eq!(
            rec.verifying_key,
            encode_point(&public_key.to_projective()).to_vec()
        );
        let prehash = Prehash::sha256(format!("shift {n}").as_bytes());
        let (out, other) = run_honest(
            seed + 1,
            &mut online(&a, pre_a, prehash),
            &mut online(&b, pre_b, prehash),
        );
        assert_eq!(out, other);

        let delta = hash_to_scalar(
            tags::SIGN_RERANDOMIZE,
            &[&rec.verifying_key, &rec.tweak, prehash.as_bytes(), &rec.sid],
        );
        let big_r = decode_point(&rec.big_r).unwrap();
        let shifted = big_r + ProjectivePoint::mul_by_generator(&delta);
        let x = |p: &ProjectivePoint| <Scalar as Reduce<U256>>::reduce_bytes(&p.to_affine().x());
        assert_eq!(*out.signature.r(), x(&shifted));
        assert_ne!(*out.signature.r(), x(&big_r));

        VerifyingKey::from(public_key)
            .verify_prehash(prehash.as_bytes(), &out.signature)
            .unwrap();
        libsecp_verify(&public_key, &prehash, &out);
    }
}

/// Two online steps from presignatures with equal `R` before the shift
/// (the same stored presignature, run twice by stores that lie) but
/// different prehashes get different `R'`; the same prehash would give the
/// same `R'`, so the difference comes from the prehash.
#[test]
fn equal_nonce_before_the_shift_gives_different_nonces_per_prehash() {
    let (a, b) = dkg_pair(206);
    let (pre_a, pre_b) = run_honest(1, &mut Presign::new(&a), &mut Presign::new(&b));
    let (bytes_a, bytes_b) = (pre_a.to_bytes(), pre_b.to_bytes());
    let sign = |seed: u64, prehash: Prehash| {
        let pa = Presignature::from_bytes(&bytes_a).unwrap();
        let pb = Presignature::from_bytes(&bytes_b).unwrap();
        let (out, _) = run_honest(
            seed,
            &mut online(&a, pa, prehash),
            &mut online(&b, pb, prehash),
        );
        libsecp_verify(&a.public_key(), &prehash, &out);
        *out.signature.r()
    };
    let one = sign(2, Prehash::sha256(b"one"));
    let two = sign(3, Prehash::sha256(b"two"));
    assert_ne!(one, two);
    assert_eq!(one, sign(4, Prehash::sha256(b"one")));
}

/// A presignature made for one derivation cannot sign under another key:
/// `v_A + v_B = x'*phi` fixes the key at presigning, and the stored tweak
/// and `PK'` only enter `delta` and the final check. An attacker who
/// rewrites both parties' stored tweak and `PK'` to another path's gets a
/// failed verification (and a ban), never a signature under the other key.
#[test]
fn presignature_for_one_tweak_cannot_sign_under_another_key() {
    let (a, b) = dkg_pair(207);
    let path: DerivationPath = "m/1".parse().unwrap();
    let target: DerivationPath = "m/2".parse().unwrap();
    let (target_key, target_tweak) = a.derive(&target).unwrap();
    let (pre_a, pre_b) = run_honest(
        1,
        &mut Presign::with_path(&a, &path).unwrap(),
        &mut Presign::with_path(&b, &path).unwrap(),
    );
    let retarget = |presignature: &Presignature| {
        let mut rec = record(presignature);
        rec.tweak = encode_scalar(&target_tweak);
        rec.verifying_key = encode_point(&target_key.to_projective()).to_vec();
        Presignature::from_bytes(&postcard::to_allocvec(&rec).unwrap()).unwrap()
    };
    let (evil_a, evil_b) = (retarget(&pre_a), retarget(&pre_b));
    let prehash = Prehash::sha256(b"retargeted");
    let (ea, eb) = run_pair(
        2,
        &mut online(&a, evil_a, prehash),
        &mut online(&b, evil_b, prehash),
        |_| {},
    );
    assert_eq!(ea.error(), Some(Error::SignatureVerificationFailed));
    assert_eq!(eb.error(), Some(Error::SignatureVerificationFailed));
    // The untouched presignatures still sign under m/1.
    let (child, _) = a.derive(&path).unwrap();
    let (out, _) = run_honest(
        3,
        &mut online(&a, pre_a, prehash),
        &mut online(&b, pre_b, prehash),
    );
    libsecp_verify(&child, &prehash, &out);
}

/// The full four-round `Sign` shifts its nonce the same way (one round-4
/// code path): many signatures verify under libsecp256k1 with both
/// recovery parities.
#[test]
fn full_signing_with_the_shift_verifies_with_both_parities() {
    let (a, b) = dkg_pair(208);
    let mut parities = [0usize; 2];
    for n in 0..12u64 {
        let prehash = Prehash::sha256(&n.to_be_bytes());
        let (out, _) = run_honest(
            n,
            &mut mpc_core::Sign::new(&a, prehash),
            &mut mpc_core::Sign::new(&b, prehash),
        );
        libsecp_verify(&a.public_key(), &prehash, &out);
        parities[usize::from(out.recovery_id.is_y_odd())] += 1;
    }
    assert!(parities[0] > 0 && parities[1] > 0, "{parities:?}");
}
