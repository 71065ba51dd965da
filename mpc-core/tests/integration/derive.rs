//! BIP32 under a two-party key, checked by an independent implementation
//! (the `bip32` crate) and signatures under paths by libsecp256k1.
use crate::common;

use std::str::FromStr;

use common::{dkg_pair, libsecp_verify, run_honest, run_pair};
use mpc_core::sign::ClaimSet;
use mpc_core::{DerivationPath, Error, OnlineSign, Prehash, Presign, Sign};

#[test]
fn independent_bip32_crate_derives_the_same_children_from_our_xpub() {
    use bip32::PublicKey as _;
    for seed in 0..4u64 {
        let (a, b) = dkg_pair(seed);
        let xpub = a.xpub().to_string();
        assert_eq!(xpub, b.xpub().to_string());
        assert!(xpub.starts_with("xpub"));
        let theirs = bip32::XPub::from_str(&xpub).unwrap();
        assert_eq!(
            theirs.public_key().to_bytes().as_slice(),
            a.public_key().to_sec1_bytes().as_ref()
        );
        for path in ["m/0", "m/1/2", "m/44/60/0/0/5", "m/2147483647/7"] {
            let ours: DerivationPath = path.parse().unwrap();
            let mut expected = theirs.clone();
            for index in ours.indices() {
                expected = expected
                    .derive_child(bip32::ChildNumber::new(*index, false).unwrap())
                    .unwrap();
            }
            let (child, _) = a.derive(&ours).unwrap();
            assert_eq!(
                child.to_sec1_bytes().as_ref(),
                expected.public_key().to_bytes().as_slice(),
                "{path}"
            );
            let (ours_xpub, _) = a.xpub().derive_path(&ours).unwrap();
            assert_eq!(
                ours_xpub.to_string(),
                expected.to_string(bip32::Prefix::XPUB),
                "{path} xpub"
            );
        }
    }
}

#[test]
fn signatures_under_a_path_verify_under_the_child_key() {
    let (a, b) = dkg_pair(10);
    for (n, path) in ["m/0", "m/44/60/0/0/5", "m/7/7/7"].iter().enumerate() {
        let path: DerivationPath = path.parse().unwrap();
        let (child, _) = a.derive(&path).unwrap();
        assert_ne!(child, a.public_key());
        let prehash = Prehash::sha256(format!("path {path}").as_bytes());
        let mut sa = Sign::with_path(&a, prehash, &path).unwrap();
        let mut sb = Sign::with_path(&b, prehash, &path).unwrap();
        let (out, _) = run_honest(20 + n as u64, &mut sa, &mut sb);
        libsecp_verify(&child, &prehash, &out);
        // Presign + online under the same path.
        let (pa, pb) = run_honest(
            40 + n as u64,
            &mut Presign::with_path(&a, &path).unwrap(),
            &mut Presign::with_path(&b, &path).unwrap(),
        );
        let (out, _) = run_honest(
            60 + n as u64,
            &mut OnlineSign::new(&a, pa, prehash, &mut ClaimSet::new()).unwrap(),
            &mut OnlineSign::new(&b, pb, prehash, &mut ClaimSet::new()).unwrap(),
        );
        libsecp_verify(&child, &prehash, &out);
    }
}

#[test]
fn parties_on_different_paths_never_sign_together() {
    let (a, b) = dkg_pair(11);
    let prehash = Prehash::sha256(b"x");
    let pa: DerivationPath = "m/1".parse().unwrap();
    let pb: DerivationPath = "m/2".parse().unwrap();
    let (ea, eb) = run_pair(
        1,
        &mut Sign::with_path(&a, prehash, &pa).unwrap(),
        &mut Sign::with_path(&b, prehash, &pb).unwrap(),
        |_| {},
    );
    assert!(!ea.is_finished() && !eb.is_finished());
    // The root and an explicit empty path are the same session.
    let root = DerivationPath::root();
    let (out, _) = run_honest(
        2,
        &mut Sign::with_path(&a, prehash, &root).unwrap(),
        &mut Sign::new(&b, prehash),
    );
    libsecp_verify(&a.public_key(), &prehash, &out);
}

#[test]
fn hardened_paths_are_refused() {
    let (a, _) = dkg_pair(12);
    assert_eq!(
        "m/44'/60'/0'".parse::<DerivationPath>().err(),
        Some(Error::HardenedDerivation)
    );
    assert_eq!(
        DerivationPath::from_indices(&[1 << 31]).err(),
        Some(Error::HardenedDerivation)
    );
    assert_eq!(
        a.xpub().derive_child(1 << 31).err(),
        Some(Error::HardenedDerivation)
    );
}
