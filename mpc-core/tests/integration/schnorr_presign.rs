//! Presigned BIP340 signing (PROTOCOL.md §20.5): the nonce round run ahead
//! as `SchnorrPresign`, the online round as `SchnorrOnline` behind the
//! presignature guard of §14.3. Signatures are checked by libsecp256k1 and
//! k256; the attacks are a restored presignature, a mismatched share or
//! setting, tampering on the wire and in storage, racing claims, and a
//! guard that lies (whose consequence, the share's recovery, is shown).
use crate::common;

use std::sync::{Arc, Mutex};

use common::{dkg_pair, run_honest, run_pair, Counting, End, InTransit};
use k256::elliptic_curve::ops::{MulByGenerator, Reduce};
use k256::{ProjectivePoint, Scalar, U256};
use mpc_core::schnorr::{has_even_y, signing_keys, tagged_hash, x_only, CHALLENGE_TAG};
use mpc_core::sign::{ClaimRefused, ClaimSet, PresignatureGuard};
use mpc_core::transcript::{hash_to_scalar, tags};
use mpc_core::wire::{decode_point, encode_point, Envelope, Role, SessionId, MAX_MESSAGE_BYTES};
use mpc_core::{
    DerivationPath, Error, KeyId, KeyShare, Presign, Presignature, Refresh, SchnorrOnline,
    SchnorrPresign, SchnorrPresignature, SchnorrSignature, Taproot,
};
use serde::{Deserialize, Serialize};

/// The stored record of a Schnorr presignature (format version 1), field by
/// field, as a storage layer or an attacker holding a copy sees it.
#[derive(Serialize, Deserialize, Clone)]
struct Record {
    version: u16,
    role: u8,
    key_id: [u8; 32],
    epoch: u64,
    setup: [u8; 32],
    sid: [u8; 32],
    k0: [u8; 32],
    k1: [u8; 32],
    peer_d: Vec<u8>,
    peer_e: Vec<u8>,
}

fn record(presignature: &SchnorrPresignature) -> Record {
    postcard::from_bytes(&presignature.to_bytes()).unwrap()
}

fn presign(
    seed: u64,
    (a, b): (&KeyShare, &KeyShare),
    path: &DerivationPath,
    taproot: Taproot,
) -> (SchnorrPresignature, SchnorrPresignature) {
    run_honest(
        seed,
        &mut SchnorrPresign::new(a, path, taproot).unwrap(),
        &mut SchnorrPresign::new(b, path, taproot).unwrap(),
    )
}

/// Runs the online round with fresh in-memory guards and `hook` on the wire.
fn online_hooked(
    seed: u64,
    (a, b): (&KeyShare, &KeyShare),
    (pre_a, pre_b): (SchnorrPresignature, SchnorrPresignature),
    messages: (&[u8], &[u8]),
    path: &DerivationPath,
    taproot: Taproot,
    hook: impl FnMut(&mut InTransit<'_>),
) -> (End<SchnorrSignature>, End<SchnorrSignature>) {
    let mut sa =
        SchnorrOnline::new(a, pre_a, messages.0, path, taproot, &mut ClaimSet::new()).unwrap();
    let mut sb =
        SchnorrOnline::new(b, pre_b, messages.1, path, taproot, &mut ClaimSet::new()).unwrap();
    run_pair(seed, &mut sa, &mut sb, hook)
}

fn check_independently(message: &[u8; 32], a: &SchnorrSignature, b: &SchnorrSignature) {
    assert_eq!(a, b, "the parties disagree");
    let secp = secp256k1::Secp256k1::verification_only();
    let key = secp256k1::XOnlyPublicKey::from_slice(&a.public_key).unwrap();
    let sig = secp256k1::schnorr::Signature::from_slice(&a.signature).unwrap();
    secp.verify_schnorr(&sig, &secp256k1::Message::from_digest(*message), &key)
        .expect("libsecp256k1 rejects the signature");
    let vk = k256::schnorr::VerifyingKey::from_bytes(&a.public_key).unwrap();
    let sig = k256::schnorr::Signature::try_from(&a.signature[..]).unwrap();
    vk.verify_raw(message, &sig)
        .expect("k256 rejects the signature");
}

#[test]
fn presigned_signatures_at_root_path_and_taproot_verify_independently() {
    let (a, b) = dkg_pair(301);
    let paths: [DerivationPath; 2] = [DerivationPath::root(), "m/0/7".parse().unwrap()];
    let taproots = [
        Taproot::Off,
        Taproot::KeyPathOnly,
        Taproot::MerkleRoot([0x5a; 32]),
    ];
    let mut seed = 0;
    for path in &paths {
        for taproot in taproots {
            seed += 1;
            let pres = presign(seed, (&a, &b), path, taproot);
            assert_eq!(pres.0.session_id(), pres.1.session_id());
            let message = [u8::try_from(seed).unwrap(); 32];
            let (ea, eb) = online_hooked(
                seed,
                (&a, &b),
                pres,
                (&message, &message),
                path,
                taproot,
                |_| {},
            );
            let (sa, sb) = (ea.unwrap(), eb.unwrap());
            check_independently(&message, &sa, &sb);
            let (internal, output) = signing_keys(&a, path, taproot).unwrap();
            assert_eq!((sa.internal_key, sa.public_key), (internal, output));
        }
    }
}

/// The attack the guard exists for: the stored bytes are restored after
/// their use and the online step is asked again for another message.
#[test]
fn restored_presignature_is_refused_via_the_guard() {
    let (a, b) = dkg_pair(302);
    let root = DerivationPath::root();
    let (pre_a, pre_b) = presign(1, (&a, &b), &root, Taproot::KeyPathOnly);
    let (bytes_a, bytes_b) = (pre_a.to_bytes(), pre_b.to_bytes());
    let (mut store_a, mut store_b) = (ClaimSet::new(), ClaimSet::new());
    let t = Taproot::KeyPathOnly;
    let first = [1u8; 32];
    let (sa, sb) = run_honest(
        2,
        &mut SchnorrOnline::new(&a, pre_a, &first, &root, t, &mut store_a).unwrap(),
        &mut SchnorrOnline::new(&b, pre_b, &first, &root, t, &mut store_b).unwrap(),
    );
    check_independently(&first, &sa, &sb);
    let second = [2u8; 32];
    for (share, bytes, store) in [(&a, &bytes_a, &mut store_a), (&b, &bytes_b, &mut store_b)] {
        let restored = SchnorrPresignature::from_bytes(bytes).unwrap();
        assert!(store.is_claimed(share.key_id(), share.epoch(), &restored.session_id()));
        assert_eq!(
            SchnorrOnline::new(share, restored, &second, &root, t, store).err(),
            Some(Error::PresignatureClaimRefused)
        );
    }
}

/// Another key, epoch (after a refresh), role, path or Taproot setting, and
/// a burned share: refused before the guard is asked, so no claim is spent.
#[test]
fn wrong_share_key_epoch_role_path_or_taproot_is_refused_before_the_claim() {
    let (a, b) = dkg_pair(303);
    let (other_a, _) = dkg_pair(304);
    let (a1, b1) = run_honest(
        3,
        &mut Refresh::new(&a, b"refresh"),
        &mut Refresh::new(&b, b"refresh"),
    );
    let path: DerivationPath = "m/1/2".parse().unwrap();
    let root = DerivationPath::root();
    let (pre_a, _) = presign(4, (&a, &b), &path, Taproot::KeyPathOnly);
    let bytes = pre_a.to_bytes();
    let cases: [(&KeyShare, &DerivationPath, Taproot); 7] = [
        (&other_a, &path, Taproot::KeyPathOnly),
        (&a1, &path, Taproot::KeyPathOnly),
        (&b, &path, Taproot::KeyPathOnly),
        (&a, &root, Taproot::KeyPathOnly),
        (&a, &"m/1/3".parse().unwrap(), Taproot::KeyPathOnly),
        (&a, &path, Taproot::Off),
        (&a, &path, Taproot::MerkleRoot([0; 32])),
    ];
    for (index, (share, p, t)) in cases.into_iter().enumerate() {
        let mut guard = Counting::default();
        let pre = SchnorrPresignature::from_bytes(&bytes).unwrap();
        assert_eq!(
            SchnorrOnline::new(share, pre, b"m", p, t, &mut guard).err(),
            Some(Error::KeyMismatch),
            "case {index}"
        );
        assert_eq!(guard.0, 0, "case {index}: the guard was asked");
    }
    // The right share and settings: exactly one claim.
    let t = Taproot::KeyPathOnly;
    let mut guard = Counting::default();
    let pre = SchnorrPresignature::from_bytes(&bytes).unwrap();
    assert_eq!(
        (pre.key_id(), pre.epoch(), pre.role()),
        (a.key_id(), a.epoch(), a.role())
    );
    let sid = pre.session_id();
    let online = SchnorrOnline::new(&a, pre, b"m", &path, t, &mut guard).unwrap();
    assert_eq!(online.session_id(), Some(sid));
    drop(online);
    assert_eq!(guard.0, 1);
    // A presignature of the refreshed shares carries their epoch.
    let (pre_a1, _) = presign(5, (&a1, &b1), &path, t);
    assert_eq!((pre_a1.epoch(), a1.epoch()), (1, 1));
    // A burned share (a ban, §18.2): refused before the claim, and it does
    // not presign either.
    let mut burned = a;
    burned.burn_ot_material();
    let mut guard = Counting::default();
    let pre = SchnorrPresignature::from_bytes(&bytes).unwrap();
    assert_eq!(
        SchnorrOnline::new(&burned, pre, b"m", &path, t, &mut guard).err(),
        Some(Error::OtMaterialBurned)
    );
    assert_eq!(guard.0, 0);
    let mut p = SchnorrPresign::new(&burned, &path, t).unwrap();
    assert_eq!(
        mpc_core::Protocol::start(&mut p, &mut common::rng(1)).err(),
        Some(Error::OtMaterialBurned)
    );
}

#[test]
fn tampering_on_the_wire_aborts_and_never_releases() {
    let (a, b) = dkg_pair(305);
    let root = DerivationPath::root();
    let t = Taproot::Off;
    // A wrong s_A: B's partial check fires and B releases nothing.
    for bit in [0usize, 9, 200] {
        let pres = presign(bit as u64, (&a, &b), &root, t);
        let (_, end_b) = online_hooked(1, (&a, &b), pres, (b"m", b"m"), &root, t, |m| {
            if m.sender == Role::A && m.round == 2 {
                m.edit_payload(|p| p[bit / 8] ^= 1 << (bit % 8));
            }
        });
        let err = end_b.error().expect("B must fail");
        assert!(
            matches!(
                err,
                Error::InvalidPartialSignature | Error::NonCanonicalScalar
            ),
            "{err:?}"
        );
    }
    // Parties asked for different messages: PrehashMismatch on both sides.
    let pres = presign(10, (&a, &b), &root, t);
    let (ea, eb) = online_hooked(2, (&a, &b), pres, (b"m1", b"m2"), &root, t, |_| {});
    assert_eq!(ea.error(), Some(Error::PrehashMismatch));
    assert_eq!(eb.error(), Some(Error::PrehashMismatch));
    // A nonce point replaced in the presigning round: the two presignatures
    // have different session ids, so the online messages cross no session
    // and nobody signs.
    let other_point = encode_point(&(ProjectivePoint::GENERATOR * Scalar::from(5u64)));
    let (pa, pb) = run_pair(
        11,
        &mut SchnorrPresign::new(&a, &root, t).unwrap(),
        &mut SchnorrPresign::new(&b, &root, t).unwrap(),
        |m| {
            if m.sender == Role::A {
                m.edit_payload(|p| p[..33].copy_from_slice(&other_point));
            }
        },
    );
    let (pa, pb) = (pa.unwrap(), pb.unwrap());
    assert_ne!(pa.session_id(), pb.session_id());
    let (ea, eb) = online_hooked(3, (&a, &b), (pa, pb), (b"m", b"m"), &root, t, |_| {});
    assert!(matches!(ea, End::Waiting) && matches!(eb, End::Waiting));
    // An ECDSA presigning message fed to a Schnorr presigning: ignored.
    let mut ecdsa_a = Presign::new(&a);
    let first = mpc_core::Protocol::start(&mut ecdsa_a, &mut common::rng(4)).unwrap();
    let mut schnorr_b = SchnorrPresign::new(&b, &root, t).unwrap();
    mpc_core::Protocol::start(&mut schnorr_b, &mut common::rng(5)).unwrap();
    let err = mpc_core::Protocol::handle(&mut schnorr_b, &mut common::rng(6), &first).err();
    assert_eq!(err.map(|e| e.class()), Some(mpc_core::AbortClass::Ignore));
}

/// Stored bytes changed field by field, or an ECDSA presignature offered as
/// a Schnorr one (and the reverse): refused on load.
#[test]
fn tampered_or_cross_scheme_presignature_bytes_are_refused() {
    let (a, b) = dkg_pair(306);
    let root = DerivationPath::root();
    let (pre_a, _) = presign(1, (&a, &b), &root, Taproot::Off);
    let good = record(&pre_a);
    let edits: [fn(&mut Record); 6] = [
        |r| r.sid[0] ^= 1,
        |r| r.setup[0] ^= 1,
        |r| r.k0[31] ^= 1,
        |r| r.peer_e[5] ^= 1,
        |r| r.k1 = [0; 32],
        |r| r.role ^= 3,
    ];
    for (index, edit) in edits.iter().enumerate() {
        let mut r = good.clone();
        edit(&mut r);
        let bytes = postcard::to_allocvec(&r).unwrap();
        assert!(
            SchnorrPresignature::from_bytes(&bytes).is_err(),
            "edit {index} loaded"
        );
    }
    let mut r = good.clone();
    r.version = 2;
    let bytes = postcard::to_allocvec(&r).unwrap();
    assert_eq!(
        SchnorrPresignature::from_bytes(&bytes).err(),
        Some(Error::UnsupportedShareVersion)
    );
    let mut trailing = pre_a.to_bytes().to_vec();
    trailing.push(0);
    assert!(SchnorrPresignature::from_bytes(&trailing).is_err());
    // Cross-scheme, both ways.
    let (ecdsa_a, _) = run_honest(2, &mut Presign::new(&a), &mut Presign::new(&b));
    assert!(SchnorrPresignature::from_bytes(&ecdsa_a.to_bytes()).is_err());
    assert!(Presignature::from_bytes(&pre_a.to_bytes()).is_err());
    // Debug shows no nonce.
    let debug = format!("{pre_a:?}");
    assert!(!debug.contains(&hex::encode(good.k0)) && !debug.contains("k0"));
}

/// A shared, honest guard: eight threads race restored copies of one
/// presignature; exactly one gets an online step.
#[test]
fn racing_restored_copies_get_one_online_step_with_an_honest_guard() {
    struct Shared(Arc<Mutex<ClaimSet>>);
    impl PresignatureGuard for Shared {
        fn claim(&mut self, k: &KeyId, e: u64, s: &SessionId) -> Result<(), ClaimRefused> {
            self.0.lock().unwrap().claim(k, e, s)
        }
    }
    let (a, b) = dkg_pair(307);
    let (pre_a, _) = presign(1, (&a, &b), &DerivationPath::root(), Taproot::Off);
    let bytes = pre_a.to_bytes().to_vec();
    let store = Arc::new(Mutex::new(ClaimSet::new()));
    let a = Arc::new(a);
    let handles: Vec<_> = (0..8u8)
        .map(|i| {
            let (a, bytes, store) = (a.clone(), bytes.clone(), store.clone());
            std::thread::spawn(move || {
                let pre = SchnorrPresignature::from_bytes(&bytes).unwrap();
                let mut guard = Shared(store);
                let root = DerivationPath::root();
                SchnorrOnline::new(&a, pre, &[i], &root, Taproot::Off, &mut guard).is_ok()
            })
        })
        .collect();
    let wins = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|ok| *ok)
        .count();
    assert_eq!(wins, 1);
}

/// The documented consequence of a guard that lies (PROTOCOL.md §20.5): the
/// peer B, holding restored copies of both sides' presignatures, gets A to
/// sign three messages with one nonce pair, and solves
/// `s_A = g_R*k0 + g_R*b*k1 + e*f*x_A` (three equations, three unknowns)
/// for A's share.
#[test]
fn a_lying_guard_lets_the_peer_recover_the_share_from_three_uses() {
    let (a, b) = dkg_pair(308);
    let root = DerivationPath::root();
    let t = Taproot::Off;
    let (pre_a, pre_b) = presign(1, (&a, &b), &root, t);
    let (bytes_a, bytes_b) = (pre_a.to_bytes(), pre_b.to_bytes());
    let rb = record(&pre_b);
    let sid = pre_a.session_id().0;
    let points_b = [rb.k0, rb.k1].map(|k| {
        ProjectivePoint::mul_by_generator(
            &Option::<Scalar>::from(<Scalar as k256::elliptic_curve::PrimeField>::from_repr(
                k.into(),
            ))
            .unwrap(),
        )
    });
    let points_a = [&rb.peer_d, &rb.peer_e].map(|p| decode_point(p).unwrap());
    let (_, output_x) = signing_keys(&a, &root, t).unwrap();
    let pk = a.public_share(Role::A) + a.public_share(Role::B);
    let f = if has_even_y(&pk) {
        Scalar::ONE
    } else {
        -Scalar::ONE
    };
    let mut rows = Vec::new();
    let mut lying = Counting::default();
    for message in [b"one".as_slice(), b"two", b"three"] {
        let pa = SchnorrPresignature::from_bytes(&bytes_a).unwrap();
        let pb = SchnorrPresignature::from_bytes(&bytes_b).unwrap();
        let mut sa = SchnorrOnline::new(&a, pa, message, &root, t, &mut lying).unwrap();
        let mut sb = SchnorrOnline::new(&b, pb, message, &root, t, &mut lying).unwrap();
        let mut s_a = [0u8; 32];
        let (ea, _) = run_pair(2, &mut sa, &mut sb, |m| {
            if m.sender == Role::A {
                let env = Envelope::decode(m.bytes, MAX_MESSAGE_BYTES).unwrap();
                s_a.copy_from_slice(&env.payload[..32]);
            }
        });
        ea.unwrap();
        let b_factor = hash_to_scalar(tags::SCHNORR_BINDING, &[&sid, &output_x, message]);
        let big_r = points_a[0] + points_a[1] * b_factor + points_b[0] + points_b[1] * b_factor;
        let g_r = if has_even_y(&big_r) {
            Scalar::ONE
        } else {
            -Scalar::ONE
        };
        let e = <Scalar as Reduce<U256>>::reduce_bytes(
            &tagged_hash(CHALLENGE_TAG, &[&x_only(&big_r), &output_x, message]).into(),
        );
        let s = Option::<Scalar>::from(<Scalar as k256::elliptic_curve::PrimeField>::from_repr(
            s_a.into(),
        ))
        .unwrap();
        rows.push(([g_r, g_r * b_factor, e * f], s));
    }
    assert_eq!(lying.0, 6, "every use was claimed by the lying guard");
    // Cramer's rule for the third unknown, x_A.
    let det = |m: [[Scalar; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let m = [rows[0].0, rows[1].0, rows[2].0];
    let mut mx = m;
    for (row, (_, s)) in mx.iter_mut().zip(&rows) {
        row[2] = *s;
    }
    let x_a = det(mx) * Option::<Scalar>::from(det(m).invert()).unwrap();
    assert_eq!(
        ProjectivePoint::mul_by_generator(&x_a),
        a.public_share(Role::A),
        "the share was not recovered"
    );
}
