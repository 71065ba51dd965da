//! Two-party BIP340 signing (PROTOCOL.md §20): published vectors, independent
//! verifiers (libsecp256k1's schnorrsig, k256's `schnorr`), independently
//! computed Taproot output keys, and a peer or network that tampers, replays,
//! crosses sessions or runs many sessions at once.
use crate::common;

use std::collections::HashSet;

use common::{dkg_pair, rng, run_honest, run_pair, End, InTransit};
use k256::elliptic_curve::sec1::ToEncodedPoint;
use mpc_core::derive::DerivationPath;
use mpc_core::schnorr::{self, signing_keys, tagged_hash, taproot_output_key, verify};
use mpc_core::wire::{Envelope, Role, MAX_MESSAGE_BYTES};
use mpc_core::{
    AbortClass, Error, KeyShare, Protocol, SchnorrSignature, SignSchnorr, Step, Taproot,
};
use rand_chacha::rand_core::RngCore;

fn unhex<const N: usize>(s: &str) -> [u8; N] {
    hex::decode(s).unwrap().try_into().unwrap()
}

/// BIP340 `test-vectors.csv` (bitcoin/bips): secret key (may be empty),
/// public key, aux_rand, message, signature, result.
const BIP340_VECTORS: &[(&str, &str, &str, &str, &str, bool)] = &[
    ("0000000000000000000000000000000000000000000000000000000000000003", "F9308A019258C31049344F85F89D5229B531C845836F99B08601F113BCE036F9", "0000000000000000000000000000000000000000000000000000000000000000", "0000000000000000000000000000000000000000000000000000000000000000", "E907831F80848D1069A5371B402410364BDF1C5F8307B0084C55F1CE2DCA821525F66A4A85EA8B71E482A74F382D2CE5EBEEE8FDB2172F477DF4900D310536C0", true), // 0: valid
    ("B7E151628AED2A6ABF7158809CF4F3C762E7160F38B4DA56A784D9045190CFEF", "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659", "0000000000000000000000000000000000000000000000000000000000000001", "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89", "6896BD60EEAE296DB48A229FF71DFE071BDE413E6D43F917DC8DCF8C78DE33418906D11AC976ABCCB20B091292BFF4EA897EFCB639EA871CFA95F6DE339E4B0A", true), // 1: valid
    ("C90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B14E5C9", "DD308AFEC5777E13121FA72B9CC1B7CC0139715309B086C960E18FD969774EB8", "C87AA53824B4D7AE2EB035A2B5BBBCCC080E76CDC6D1692C4B0B62D798E6D906", "7E2D58D8B3BCDF1ABADEC7829054F90DDA9805AAB56C77333024B9D0A508B75C", "5831AAEED7B44BB74E5EAB94BA9D4294C49BCF2A60728D8B4C200F50DD313C1BAB745879A5AD954A72C45A91C3A51D3C7ADEA98D82F8481E0E1E03674A6F3FB7", true), // 2: valid
    ("0B432B2677937381AEF05BB02A66ECD012773062CF3FA2549E44F58ED2401710", "25D1DFF95105F5253C4022F628A996AD3A0D95FBF21D468A1B33F8C160D8F517", "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF", "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF", "7EB0509757E246F19449885651611CB965ECC1A187DD51B64FDA1EDC9637D5EC97582B9CB13DB3933705B32BA982AF5AF25FD78881EBB32771FC5922EFC66EA3", true), // 3: test fails if msg is reduced modulo p or n
    ("", "D69C3509BB99E412E68B0FE8544E72837DFA30746D8BE2AA65975F29D22DC7B9", "", "4DF3C3F68FCC83B27E9D42C90431A72499F17875C81A599B566C9889B9696703", "00000000000000000000003B78CE563F89A0ED9414F5AA28AD0D96D6795F9C6376AFB1548AF603B3EB45C9F8207DEE1060CB71C04E80F593060B07D28308D7F4", true), // 4: valid
    ("", "EEFDEA4CDB677750A420FEE807EACF21EB9898AE79B9768766E4FAA04A2D4A34", "", "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89", "6CFF5C3BA86C69EA4B7376F31A9BCB4F74C1976089B2D9963DA2E5543E17776969E89B4C5564D00349106B8497785DD7D1D713A8AE82B32FA79D5F7FC407D39B", false), // 5: public key not on the curve
    ("", "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659", "", "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89", "FFF97BD5755EEEA420453A14355235D382F6472F8568A18B2F057A14602975563CC27944640AC607CD107AE10923D9EF7A73C643E166BE5EBEAFA34B1AC553E2", false), // 6: has_even_y(R) is false
    ("", "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659", "", "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89", "1FA62E331EDBC21C394792D2AB1100A7B432B013DF3F6FF4F99FCB33E0E1515F28890B3EDB6E7189B630448B515CE4F8622A954CFE545735AAEA5134FCCDB2BD", false), // 7: negated message
    ("", "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659", "", "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89", "6CFF5C3BA86C69EA4B7376F31A9BCB4F74C1976089B2D9963DA2E5543E177769961764B3AA9B2FFCB6EF947B6887A226E8D7C93E00C5ED0C1834FF0D0C2E6DA6", false), // 8: negated s value
    ("", "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659", "", "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89", "0000000000000000000000000000000000000000000000000000000000000000123DDA8328AF9C23A94C1FEECFD123BA4FB73476F0D594DCB65C6425BD186051", false), // 9: sG - eP is infinite (x(inf) as 0)
    ("", "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659", "", "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89", "00000000000000000000000000000000000000000000000000000000000000017615FBAF5AE28864013C099742DEADB4DBA87F11AC6754F93780D5A1837CF197", false), // 10: sG - eP is infinite (x(inf) as 1)
    ("", "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659", "", "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89", "4A298DACAE57395A15D0795DDBFD1DCB564DA82B0F269BC70A74F8220429BA1D69E89B4C5564D00349106B8497785DD7D1D713A8AE82B32FA79D5F7FC407D39B", false), // 11: sig[0:32] is not an X coordinate on the curve
    ("", "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659", "", "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89", "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F69E89B4C5564D00349106B8497785DD7D1D713A8AE82B32FA79D5F7FC407D39B", false), // 12: sig[0:32] is equal to field size
    ("", "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659", "", "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89", "6CFF5C3BA86C69EA4B7376F31A9BCB4F74C1976089B2D9963DA2E5543E177769FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141", false), // 13: sig[32:64] is equal to curve order
    ("", "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC30", "", "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89", "6CFF5C3BA86C69EA4B7376F31A9BCB4F74C1976089B2D9963DA2E5543E17776969E89B4C5564D00349106B8497785DD7D1D713A8AE82B32FA79D5F7FC407D39B", false), // 14: public key exceeds the field size
];

#[test]
fn bip340_published_vectors() {
    for (index, (secret, public, aux, message, signature, valid)) in
        BIP340_VECTORS.iter().enumerate()
    {
        let public: [u8; 32] = unhex(public);
        let message: [u8; 32] = unhex(message);
        let signature: [u8; 64] = unhex(signature);
        assert_eq!(
            verify(&public, &message, &signature),
            *valid,
            "vector {index}"
        );
        if !secret.is_empty() {
            // Our x-only encoding of d*G is the vector's public key.
            let d = k256::SecretKey::from_slice(&unhex::<32>(secret)).unwrap();
            let point = d.public_key().to_projective();
            assert_eq!(schnorr::x_only(&point), public, "vector {index}");
            // k256's single-party signer reproduces the vector, so the
            // format (x(R) || s, x-only key) is the one we emit.
            let signer = k256::schnorr::SigningKey::from_bytes(&unhex::<32>(secret)).unwrap();
            let sig = signer.sign_raw(&message, &unhex::<32>(aux)).unwrap();
            assert_eq!(sig.to_bytes(), signature, "vector {index}");
        }
    }
}

/// BIP341 `wallet-test-vectors.json` (key-path `scriptPubKey` cases) and the
/// three BIP86 vectors (internal key -> output key, no script tree).
#[test]
fn bip341_and_bip86_output_keys() {
    let cases: &[(&str, Option<&str>, &str)] = &[
        (
            "d6889cb081036e0faefa3a35157ad71086b123b2b144b649798b494c300a961d",
            None,
            "53a1f6e454df1aa2776a2814a721372d6258050de330b3c6d10ee8f4e0dda343",
        ),
        (
            "187791b6f712a8ea41c8ecdd0ee77fab3e85263b37e1ec18a3651926b3a6cf27",
            Some("5b75adecf53548f3ec6ad7d78383bf84cc57b55a3127c72b9a2481752dd88b21"),
            "147c9c57132f6e7ecddba9800bb0c4449251c92a1e60371ee77557b6620f3ea3",
        ),
        (
            "93478e9488f956df2396be2ce6c5cced75f900dfa18e7dabd2428aae78451820",
            Some("c525714a7f49c28aedbbba78c005931a81c234b2f6c99a73e4d06082adc8bf2b"),
            "e4d810fd50586274face62b8a807eb9719cef49c04177cc6b76a9a4251d5450e",
        ),
        // BIP86 m/86'/0'/0'/0/0, m/86'/0'/0'/0/1, m/86'/0'/0'/1/0.
        (
            "cc8a4bc64d897bddc5fbc2f670f7a8ba0b386779106cf1223c6fc5d7cd6fc115",
            None,
            "a60869f0dbcf1dc659c9cecbaf8050135ea9e8cdc487053f1dc6880949dc684c",
        ),
        (
            "83dfe85a3151d2517290da461fe2815591ef69f2b18a2ce63f01697a8b313145",
            None,
            "a82f29944d65b86ae6b5e5cc75e294ead6c59391a1edc5e016e3498c67fc7bbb",
        ),
        (
            "399f1b2f4393f29a18c937859c5dd8a77350103157eb880f02e8c08214277cef",
            None,
            "882d74e5d0572d5a816cef0041a96b6c1de832f6f9676d9605c44d5e9a97d3dc",
        ),
    ];
    for (internal, root, output) in cases {
        let root = root.map(unhex::<32>);
        let got = taproot_output_key(&unhex(internal), root.as_ref()).unwrap();
        assert_eq!(hex::encode(got), *output);
    }
    // Not an x coordinate (BIP340 vector 5's key): typed error, no panic.
    let bad = unhex("EEFDEA4CDB677750A420FEE807EACF21EB9898AE79B9768766E4FAA04A2D4A34");
    assert_eq!(taproot_output_key(&bad, None), Err(Error::InvalidPoint));
}

fn compressed(key: &k256::PublicKey) -> [u8; 33] {
    key.to_encoded_point(true).as_bytes().try_into().unwrap()
}

/// The output key computed without our code: the derived key from the
/// `bip32` crate's view of our xpub is checked elsewhere; here the Taproot
/// step is libsecp256k1's x-only tweak with a tagged hash computed by hand.
fn independent_keys(
    share: &KeyShare,
    path: &DerivationPath,
    taproot: Taproot,
) -> ([u8; 32], [u8; 32]) {
    let (derived, _) = share.derive(path).unwrap();
    let internal: [u8; 32] = compressed(&derived)[1..].try_into().unwrap();
    let root = match taproot {
        Taproot::Off => return (internal, internal),
        Taproot::KeyPathOnly => None,
        Taproot::MerkleRoot(root) => Some(root),
    };
    let mut data = internal.to_vec();
    data.extend_from_slice(root.as_ref().map_or(&[][..], |r| &r[..]));
    let tag = sha2_digest(b"TapTweak");
    let mut pre = tag.to_vec();
    pre.extend_from_slice(&tag);
    pre.extend_from_slice(&data);
    let t = sha2_digest(&pre);
    let secp = secp256k1::Secp256k1::verification_only();
    let xonly = secp256k1::XOnlyPublicKey::from_slice(&internal).unwrap();
    let (output, _) = xonly
        .add_tweak(&secp, &secp256k1::Scalar::from_be_bytes(t).unwrap())
        .unwrap();
    (internal, output.serialize())
}

fn sha2_digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

fn check_independently(message: &[u8; 32], out: &SignatureOutputs) {
    let (a, b) = out;
    assert_eq!(a, b, "the parties disagree");
    // libsecp256k1 schnorrsig.
    let secp = secp256k1::Secp256k1::verification_only();
    let key = secp256k1::XOnlyPublicKey::from_slice(&a.public_key).unwrap();
    let sig = secp256k1::schnorr::Signature::from_slice(&a.signature).unwrap();
    secp.verify_schnorr(&sig, &secp256k1::Message::from_digest(*message), &key)
        .expect("libsecp256k1 rejects the signature");
    // k256's schnorr module.
    let vk = k256::schnorr::VerifyingKey::from_bytes(&a.public_key).unwrap();
    let sig = k256::schnorr::Signature::try_from(&a.signature[..]).unwrap();
    vk.verify_raw(message, &sig)
        .expect("k256 rejects the signature");
}

type SignatureOutputs = (SchnorrSignature, SchnorrSignature);

fn sign_pair(
    seed: u64,
    (a, b): (&KeyShare, &KeyShare),
    message: &[u8],
    path: &DerivationPath,
    taproot: Taproot,
) -> SignatureOutputs {
    let mut sa = SignSchnorr::new(a, message, path, taproot).unwrap();
    let mut sb = SignSchnorr::new(b, message, path, taproot).unwrap();
    run_honest(seed, &mut sa, &mut sb)
}

#[test]
fn signatures_at_root_path_and_taproot_verify_independently() {
    let mut rng = rng(5);
    let paths = [
        DerivationPath::root(),
        "m/0/7".parse().unwrap(),
        "m/86/0/0/0/1".parse().unwrap(),
    ];
    let (mut odd_internal, mut even_internal) = (0, 0);
    let mut r_values = HashSet::new();
    for key in 0..6u64 {
        let (a, b) = dkg_pair(300 + key);
        for (p, path) in paths.iter().enumerate() {
            let mut merkle = [0u8; 32];
            rng.fill_bytes(&mut merkle);
            for (t, taproot) in [
                Taproot::Off,
                Taproot::KeyPathOnly,
                Taproot::MerkleRoot(merkle),
            ]
            .into_iter()
            .enumerate()
            {
                let mut message = [0u8; 32];
                rng.fill_bytes(&mut message);
                let seed = key * 100 + (p as u64) * 10 + t as u64;
                let out = sign_pair(seed, (&a, &b), &message, path, taproot);
                check_independently(&message, &out);
                let (internal, output) = independent_keys(&a, path, taproot);
                assert_eq!(out.0.internal_key, internal);
                assert_eq!(out.0.public_key, output);
                assert_eq!(signing_keys(&b, path, taproot).unwrap(), (internal, output));
                let (derived, _) = a.derive(path).unwrap();
                if compressed(&derived)[0] == 3 {
                    odd_internal += 1;
                } else {
                    even_internal += 1;
                }
                assert!(
                    r_values.insert(out.0.signature[..32].to_vec()),
                    "nonce reused"
                );
            }
        }
    }
    // Both parities of the internal key occurred, so both branches of the
    // x-only negation were checked against libsecp256k1.
    assert!(odd_internal > 0 && even_internal > 0);
}

#[test]
fn messages_of_any_length_sign_and_verify() {
    let (a, b) = dkg_pair(11);
    for len in [0usize, 1, 17, 100, 1000] {
        let message = vec![0x5a; len];
        let (out, _) = sign_pair(
            len as u64,
            (&a, &b),
            &message,
            &DerivationPath::root(),
            Taproot::KeyPathOnly,
        );
        assert!(verify(&out.public_key, &message, &out.signature));
        let vk = k256::schnorr::VerifyingKey::from_bytes(&out.public_key).unwrap();
        let sig = k256::schnorr::Signature::try_from(&out.signature[..]).unwrap();
        vk.verify_raw(&message, &sig).unwrap();
    }
}

/// Runs one honest pair with `hook` on the wire.
fn run_hooked(
    seed: u64,
    shares: (&KeyShare, &KeyShare),
    message: &[u8],
    hook: impl FnMut(&mut InTransit<'_>),
) -> (End<SchnorrSignature>, End<SchnorrSignature>) {
    let root = DerivationPath::root();
    let mut sa = SignSchnorr::new(shares.0, message, &root, Taproot::KeyPathOnly).unwrap();
    let mut sb = SignSchnorr::new(shares.1, message, &root, Taproot::KeyPathOnly).unwrap();
    run_pair(seed, &mut sa, &mut sb, hook)
}

#[test]
fn tampered_partial_signature_or_message_aborts_and_never_releases() {
    let (a, b) = dkg_pair(21);
    // A wrong s_A (any bit): B's partial check fires, class Abort.
    for bit in [0usize, 7, 130, 255] {
        let (_, end_b) = run_hooked(bit as u64, (&a, &b), b"m", |m| {
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
        assert_eq!(err.class(), AbortClass::Abort);
    }
    // A different message digest: PrehashMismatch.
    let (_, end_b) = run_hooked(1, (&a, &b), b"m", |m| {
        if m.sender == Role::A && m.round == 2 {
            m.edit_payload(|p| p[40] ^= 1);
        }
    });
    assert_eq!(end_b.error(), Some(Error::PrehashMismatch));
    // Truncated or extended payloads: WrongLength.
    for edit in [
        |p: &mut Vec<u8>| p.truncate(10),
        |p: &mut Vec<u8>| p.push(0),
    ] {
        let (_, end_b) = run_hooked(2, (&a, &b), b"m", |m| {
            if m.sender == Role::A && m.round == 1 {
                m.edit_payload(edit);
            }
        });
        assert_eq!(end_b.error(), Some(Error::WrongLength));
    }
    // The identity or an invalid encoding as a nonce point.
    for (byte, value, want) in [
        (0usize, 0x05u8, Error::InvalidPoint),
        (33, 0x00, Error::IdentityPoint),
    ] {
        let (_, end_b) = run_hooked(3, (&a, &b), b"m", |m| {
            if m.sender == Role::A && m.round == 1 {
                m.edit_payload(|p| {
                    if value == 0 {
                        p[byte..byte + 33].fill(0);
                    } else {
                        p[byte] = value;
                    }
                });
            }
        });
        assert_eq!(end_b.error(), Some(want));
    }
}

#[test]
fn tampered_nonce_splits_the_session_and_nobody_signs() {
    let (a, b) = dkg_pair(22);
    // Replace A's D with another valid point: B's session id differs from
    // A's, so the round-2 messages are ignored on both sides.
    let other = Envelope::decode(
        &SignSchnorr::new(&a, b"x", &DerivationPath::root(), Taproot::KeyPathOnly)
            .unwrap()
            .start(&mut rng(99))
            .unwrap(),
        MAX_MESSAGE_BYTES,
    )
    .unwrap()
    .payload;
    let (end_a, end_b) = run_hooked(4, (&a, &b), b"m", |m| {
        if m.sender == Role::A && m.round == 1 {
            m.edit_payload(|p| p[..33].copy_from_slice(&other[..33]));
        }
    });
    assert!(matches!(end_a, End::Waiting) && matches!(end_b, End::Waiting));
}

#[test]
fn parties_with_different_messages_paths_or_taproot_modes_never_share_a_session() {
    let (a, b) = dkg_pair(23);
    let root = DerivationPath::root();
    let child: DerivationPath = "m/1".parse().unwrap();
    type Inputs<'a> = (&'a [u8], &'a DerivationPath, Taproot);
    let cases: [(Inputs<'_>, Inputs<'_>); 4] = [
        ((b"m", &root, Taproot::Off), (b"m", &child, Taproot::Off)),
        (
            (b"m", &root, Taproot::Off),
            (b"m", &root, Taproot::KeyPathOnly),
        ),
        (
            (b"m", &root, Taproot::MerkleRoot([1; 32])),
            (b"m", &root, Taproot::MerkleRoot([2; 32])),
        ),
        ((b"m", &root, Taproot::Off), (b"n", &root, Taproot::Off)),
    ];
    for (i, ((ma, pa, ta), (mb, pb, tb))) in cases.into_iter().enumerate() {
        let mut sa = SignSchnorr::new(&a, ma, pa, ta).unwrap();
        let mut sb = SignSchnorr::new(&b, mb, pb, tb).unwrap();
        let (end_a, end_b) = run_pair(i as u64, &mut sa, &mut sb, |_| {});
        if i == 3 {
            // Same setup, different message: caught by the digest in round 2.
            assert_eq!(end_a.error(), Some(Error::PrehashMismatch));
            assert_eq!(end_b.error(), Some(Error::PrehashMismatch));
        } else {
            // Different setup ids: round 1 is ignored (WrongSession).
            assert!(
                matches!(end_a, End::Waiting) && matches!(end_b, End::Waiting),
                "case {i}"
            );
        }
    }
}

/// Drives one party by hand: start, then feed messages, collecting errors.
fn feed(
    party: &mut SignSchnorr<'_>,
    seed: u64,
    message: &[u8],
) -> Result<Step<SchnorrSignature>, Error> {
    party.handle(&mut rng(seed), message)
}

#[test]
fn replayed_duplicated_and_cross_session_messages_are_ignored() {
    let (a, b) = dkg_pair(24);
    let root = DerivationPath::root();
    let mut rng_a = rng(1);
    let mut rng_b = rng(2);
    // Session 1, honest, recording its messages.
    let mut a1 = SignSchnorr::new(&a, b"one", &root, Taproot::Off).unwrap();
    let mut b1 = SignSchnorr::new(&b, b"one", &root, Taproot::Off).unwrap();
    let a1_r1 = a1.start(&mut rng_a).unwrap();
    let b1_r1 = b1.start(&mut rng_b).unwrap();
    let Step::Send(a1_r2) = a1.handle(&mut rng_a, &b1_r1).unwrap() else {
        panic!()
    };
    let Step::Send(b1_r2) = b1.handle(&mut rng_b, &a1_r1).unwrap() else {
        panic!()
    };
    // Duplicated round-1 message after round 1 (addressed to the setup id,
    // not the joint id): ignored, state unchanged.
    assert_eq!(feed(&mut b1, 0, &a1_r1).unwrap_err(), Error::WrongSession);
    let Step::Finished(out_b) = b1.handle(&mut rng_b, &a1_r2).unwrap() else {
        panic!()
    };
    let Step::Finished(out_a) = a1.handle(&mut rng_a, &b1_r2).unwrap() else {
        panic!()
    };
    assert_eq!(out_a, out_b);
    // Replaying into a finished session: AlreadyFinished.
    assert_eq!(
        feed(&mut b1, 0, &a1_r2).unwrap_err(),
        Error::AlreadyFinished
    );

    // Session 2 on the same key and message: the old round-2 message is for
    // another session id and is ignored; the session still completes.
    let mut a2 = SignSchnorr::new(&a, b"one", &root, Taproot::Off).unwrap();
    let mut b2 = SignSchnorr::new(&b, b"one", &root, Taproot::Off).unwrap();
    let a2_r1 = a2.start(&mut rng_a).unwrap();
    let b2_r1 = b2.start(&mut rng_b).unwrap();
    assert_eq!(feed(&mut b2, 0, &a1_r2).unwrap_err(), Error::WrongSession);
    let Step::Send(b2_r2) = b2.handle(&mut rng_b, &a2_r1).unwrap() else {
        panic!()
    };
    assert_eq!(feed(&mut b2, 0, &a1_r2).unwrap_err(), Error::WrongSession);
    let Step::Send(a2_r2) = a2.handle(&mut rng_a, &b2_r1).unwrap() else {
        panic!()
    };
    let Step::Finished(out2) = b2.handle(&mut rng_b, &a2_r2).unwrap() else {
        panic!()
    };
    let Step::Finished(_) = a2.handle(&mut rng_a, &b2_r2).unwrap() else {
        panic!()
    };
    assert_ne!(
        out2.signature[..32],
        out_a.signature[..32],
        "fresh nonce per session"
    );
    // A message from party A's own role reflected back at it: WrongSender.
    let mut a3 = SignSchnorr::new(&a, b"one", &root, Taproot::Off).unwrap();
    let a3_r1 = a3.start(&mut rng_a).unwrap();
    assert_eq!(feed(&mut a3, 0, &a3_r1).unwrap_err(), Error::WrongSender);
}

#[test]
fn the_same_random_source_never_gives_one_nonce_for_two_messages() {
    // Both parties' randomness repeats exactly (a restored VM snapshot, a
    // broken RNG): nonces are still derived from the message, so the two
    // signatures share no R, and no party's nonce points repeat.
    let (a, b) = dkg_pair(25);
    let root = DerivationPath::root();
    let mut seen_r = HashSet::new();
    let mut seen_nonce_points = HashSet::new();
    for message in [&b"pay alice"[..], b"pay bob", b"", b"pay alice "] {
        let mut sa = SignSchnorr::new(&a, message, &root, Taproot::KeyPathOnly).unwrap();
        let mut sb = SignSchnorr::new(&b, message, &root, Taproot::KeyPathOnly).unwrap();
        let first = sa.start(&mut rng(7)).unwrap();
        let payload = Envelope::decode(&first, MAX_MESSAGE_BYTES).unwrap().payload;
        assert!(seen_nonce_points.insert(payload[..33].to_vec()));
        assert!(seen_nonce_points.insert(payload[33..].to_vec()));
        let mut sa = SignSchnorr::new(&a, message, &root, Taproot::KeyPathOnly).unwrap();
        let (out, _) = run_honest(7, &mut sa, &mut sb);
        assert!(seen_r.insert(out.signature[..32].to_vec()));
    }
}

#[test]
fn concurrent_sessions_interleaved_and_crossed_stay_separate_and_sound() {
    // 32 sessions on one key and one derivation run at once; messages are
    // delivered in a scrambled order, and every round-2 message is first
    // offered to every other session (a peer or network crossing sessions).
    // Each crossed message is ignored, each session completes with its own
    // message, and no two sessions share a nonce.
    let (a, b) = dkg_pair(26);
    let root = DerivationPath::root();
    let n = 32usize;
    let messages: Vec<[u8; 32]> = (0..n).map(|i| [u8::try_from(i).unwrap(); 32]).collect();
    let mut pa: Vec<_> = messages
        .iter()
        .map(|m| SignSchnorr::new(&a, m, &root, Taproot::KeyPathOnly).unwrap())
        .collect();
    let mut pb: Vec<_> = messages
        .iter()
        .map(|m| SignSchnorr::new(&b, m, &root, Taproot::KeyPathOnly).unwrap())
        .collect();
    let (mut rng_a, mut rng_b) = (rng(1), rng(2));
    let r1_a: Vec<_> = pa
        .iter_mut()
        .map(|p| p.start(&mut rng_a).unwrap())
        .collect();
    let r1_b: Vec<_> = pb
        .iter_mut()
        .map(|p| p.start(&mut rng_b).unwrap())
        .collect();
    let order: Vec<usize> = (0..n).map(|i| (i * 7 + 3) % n).collect();
    let mut r2_a = vec![Vec::new(); n];
    let mut r2_b = vec![Vec::new(); n];
    for &i in &order {
        let Step::Send(m) = pa[i].handle(&mut rng_a, &r1_b[i]).unwrap() else {
            panic!()
        };
        r2_a[i] = m;
        let Step::Send(m) = pb[i].handle(&mut rng_b, &r1_a[i]).unwrap() else {
            panic!()
        };
        r2_b[i] = m;
    }
    let mut seen_r = HashSet::new();
    for &i in order.iter().rev() {
        for j in (0..n).filter(|j| *j != i) {
            // Finished sessions refuse everything; running ones ignore it.
            for err in [
                feed(&mut pa[j], 0, &r2_b[i]).unwrap_err(),
                feed(&mut pb[j], 0, &r2_a[i]).unwrap_err(),
            ] {
                assert!(
                    matches!(err, Error::WrongSession | Error::AlreadyFinished),
                    "{err:?}"
                );
            }
        }
        let Step::Finished(out_a) = pa[i].handle(&mut rng_a, &r2_b[i]).unwrap() else {
            panic!()
        };
        let Step::Finished(out_b) = pb[i].handle(&mut rng_b, &r2_a[i]).unwrap() else {
            panic!()
        };
        check_independently(&messages[i], &(out_a, out_b));
        assert!(
            seen_r.insert(out_a.signature[..32].to_vec()),
            "nonce reused"
        );
    }
}

#[test]
fn a_peer_replaying_its_nonces_into_many_sessions_gets_only_valid_signatures() {
    // A malicious B sends the same round-1 nonces into 16 of A's sessions
    // (the opening move of a ROS attack needs A to commit to its effective
    // nonce before B's choices are fixed). A's effective nonce D + b*E
    // depends, through b, on the session's message and all four points, so
    // its partial signatures are on 16 distinct R; B's honest completion of
    // the first session verifies, and the others cannot be completed with
    // a partial signature from another session.
    let (a, b) = dkg_pair(29);
    let root = DerivationPath::root();
    let messages: Vec<[u8; 32]> = (0..16u8).map(|i| [i; 32]).collect();
    let mut rng_a = rng(3);
    let mut rng_b = rng(4);
    let mut b0 = SignSchnorr::new(&b, &messages[0], &root, Taproot::Off).unwrap();
    let b_r1 = b0.start(&mut rng_b).unwrap();
    let mut a_sessions: Vec<_> = messages
        .iter()
        .map(|m| SignSchnorr::new(&a, m, &root, Taproot::Off).unwrap())
        .collect();
    let a_r1: Vec<_> = a_sessions
        .iter_mut()
        .map(|p| p.start(&mut rng_a).unwrap())
        .collect();
    let a_r2: Vec<_> = a_sessions
        .iter_mut()
        .map(|p| match p.handle(&mut rng_a, &b_r1).unwrap() {
            Step::Send(m) => m,
            Step::Finished(_) => panic!(),
        })
        .collect();
    let sids: HashSet<_> = a_sessions.iter().map(|p| p.session_id().unwrap()).collect();
    assert_eq!(sids.len(), 16, "sessions with one peer nonce still differ");
    let Step::Send(b_r2) = b0.handle(&mut rng_b, &a_r1[0]).unwrap() else {
        panic!()
    };
    for (i, p) in a_sessions.iter_mut().enumerate().skip(1) {
        assert_eq!(
            feed(p, 0, &b_r2).unwrap_err(),
            Error::WrongSession,
            "session {i}"
        );
    }
    let Step::Finished(out) = a_sessions[0].handle(&mut rng_a, &b_r2).unwrap() else {
        panic!()
    };
    let Step::Finished(out_b) = b0.handle(&mut rng_b, &a_r2[0]).unwrap() else {
        panic!()
    };
    check_independently(&messages[0], &(out, out_b));
}

#[test]
fn burned_share_refuses_and_errors_are_sticky() {
    let (mut a, b) = dkg_pair(27);
    a.burn_ot_material();
    let mut sa = SignSchnorr::new(&a, b"m", &DerivationPath::root(), Taproot::Off).unwrap();
    assert_eq!(sa.start(&mut rng(1)).unwrap_err(), Error::OtMaterialBurned);
    assert_eq!(sa.start(&mut rng(1)).unwrap_err(), Error::OtMaterialBurned);
    // A failed session returns its error forever.
    let mut sb = SignSchnorr::new(&b, b"m", &DerivationPath::root(), Taproot::Off).unwrap();
    let _ = sb.start(&mut rng(2)).unwrap();
    assert_eq!(sb.start(&mut rng(2)).unwrap_err(), Error::AlreadyStarted);
    // A wrong partial signature ends the session for good: every later
    // call, even with a well-formed message, returns the same error.
    let (a2, b2) = dkg_pair(30);
    let root = DerivationPath::root();
    let mut sa2 = SignSchnorr::new(&a2, b"m", &root, Taproot::Off).unwrap();
    let mut sb2 = SignSchnorr::new(&b2, b"m", &root, Taproot::Off).unwrap();
    let mut captured = Vec::new();
    let (_, end_b) = run_pair(5, &mut sa2, &mut sb2, |m| {
        if m.sender == Role::A && m.round == 2 {
            captured = m.bytes.clone();
            m.edit_payload(|p| p[3] ^= 1);
        }
    });
    assert_eq!(end_b.error(), Some(Error::InvalidPartialSignature));
    assert_eq!(
        feed(&mut sb2, 0, &captured).unwrap_err(),
        Error::InvalidPartialSignature
    );
    let mut sb2 = SignSchnorr::new(&b, b"m", &DerivationPath::root(), Taproot::Off).unwrap();
    assert_eq!(feed(&mut sb2, 0, &[]).unwrap_err(), Error::NotStarted);
}

#[test]
fn hardened_paths_are_refused() {
    let (a, _) = dkg_pair(28);
    assert_eq!(
        "m/0'".parse::<DerivationPath>().unwrap_err(),
        Error::HardenedDerivation
    );
    assert!(SignSchnorr::new(
        &a,
        b"m",
        &DerivationPath::from_indices(&[1, 2]).unwrap(),
        Taproot::Off
    )
    .is_ok());
}

#[test]
fn tagged_hash_matches_its_definition() {
    let tag = sha2_digest(b"BIP0340/challenge");
    let mut pre = tag.to_vec();
    pre.extend_from_slice(&tag);
    pre.extend_from_slice(b"abc");
    assert_eq!(
        tagged_hash(b"BIP0340/challenge", &[b"a", b"bc"]),
        sha2_digest(&pre)
    );
}
