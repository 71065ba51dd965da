//! `client sign --scheme bip340 [--taproot [--merkle-root HEX]]` against
//! the in-process server party: every signature checked with libsecp256k1
//! under keys computed without the client (the `bip32` crate's child of the
//! printed xpub, libsecp256k1's x-only Taproot tweak); flag misuse refused.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "shared/example_binary.rs"]
mod example_binary;
#[path = "client/server.rs"]
#[allow(dead_code)]
mod server;
#[path = "client/support.rs"]
#[allow(dead_code)]
mod support;

use serde_json::Value;
use server::Server;
use support::{bip32_child, failed, keygen, ok, random_prehash, run, str_of};

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// The BIP341 output key of an x-only internal key, by libsecp256k1.
fn taproot_output(internal: &[u8; 32], merkle_root: Option<&[u8; 32]>) -> [u8; 32] {
    let tag = sha256(b"TapTweak");
    let mut data = [tag, tag].concat();
    data.extend_from_slice(internal);
    if let Some(root) = merkle_root {
        data.extend_from_slice(root);
    }
    let tweak = secp256k1::Scalar::from_be_bytes(sha256(&data)).unwrap();
    let secp = secp256k1::Secp256k1::verification_only();
    secp256k1::XOnlyPublicKey::from_slice(internal)
        .unwrap()
        .add_tweak(&secp, &tweak)
        .unwrap()
        .0
        .serialize()
}

/// Signs with `extra` flags, checks the printed keys against `child` (SEC1
/// hex of the derived key) and the signature with libsecp256k1.
fn sign_bip340(
    server: &Server,
    state: &std::path::Path,
    key_id: &str,
    child: &str,
    extra: &[&str],
    merkle_root: Option<[u8; 32]>,
) -> Value {
    let message = random_prehash();
    let mut args = vec![
        "sign",
        "--key-id",
        key_id,
        "--prehash",
        &message,
        "--scheme",
        "bip340",
    ];
    args.extend(extra);
    let out = ok(&run(server, state, &args));
    assert_eq!(str_of(&out, "scheme"), "bip340");
    assert_eq!(str_of(&out, "public_key"), child);
    assert_eq!(str_of(&out, "message"), message);
    let internal: [u8; 32] = hex::decode(&child[2..]).unwrap().try_into().unwrap();
    assert_eq!(str_of(&out, "x_only_public_key"), hex::encode(internal));
    let taproot = extra.contains(&"--taproot");
    let key = if taproot {
        let output = taproot_output(&internal, merkle_root.as_ref());
        assert_eq!(str_of(&out, "taproot_output_key"), hex::encode(output));
        output
    } else {
        assert!(out["taproot_output_key"].is_null(), "{out}");
        internal
    };
    let secp = secp256k1::Secp256k1::verification_only();
    let sig = hex::decode(str_of(&out, "signature")).unwrap();
    let digest: [u8; 32] = hex::decode(&message).unwrap().try_into().unwrap();
    secp.verify_schnorr(
        &secp256k1::schnorr::Signature::from_slice(&sig).unwrap(),
        &secp256k1::Message::from_digest(digest),
        &secp256k1::XOnlyPublicKey::from_slice(&key).unwrap(),
    )
    .expect("libsecp256k1 rejects the signature");
    out
}

#[test]
fn bip340_at_root_path_and_taproot_verify_and_misuse_is_refused() {
    let server = Server::start();
    let scratch = tempfile::tempdir().unwrap();
    let state = scratch.path().join("state");
    let (key_id, public_key, xpub) = keygen(&server, &state);
    let child = bip32_child(&xpub, &[0, 5]);
    let root = sha256(b"tree");
    let root_hex = hex::encode(root);
    sign_bip340(&server, &state, &key_id, &public_key, &[], None);
    sign_bip340(&server, &state, &key_id, &child, &["--path", "m/0/5"], None);
    sign_bip340(&server, &state, &key_id, &public_key, &["--taproot"], None);
    let out = sign_bip340(
        &server,
        &state,
        &key_id,
        &child,
        &["--path", "m/0/5", "--taproot", "--merkle-root", &root_hex],
        Some(root),
    );
    assert_eq!(str_of(&out, "merkle_root"), root_hex);

    let prehash = random_prehash();
    let base = ["sign", "--key-id", &key_id, "--prehash", &prehash];
    // Taproot without BIP340, a merkle root without Taproot, a bad root.
    let message = failed(
        &run(&server, &state, &[&base[..], &["--taproot"]].concat()),
        1,
        "usage",
    );
    assert!(message.contains("--scheme bip340"), "{message}");
    let merkle = ["--scheme", "bip340", "--merkle-root", &root_hex];
    failed(
        &run(&server, &state, &[&base[..], &merkle[..]].concat()),
        1,
        "usage",
    );
    let short = ["--scheme", "bip340", "--taproot", "--merkle-root", "abcd"];
    failed(
        &run(&server, &state, &[&base[..], &short[..]].concat()),
        1,
        "usage",
    );
}
