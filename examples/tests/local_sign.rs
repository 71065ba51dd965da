//! Runs the `local_sign` example binary and checks its output with
//! libsecp256k1 (the `secp256k1` crate), including public-key recovery.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::PathBuf;
use std::process::Command;

#[path = "shared/example_binary.rs"]
mod example_binary;

fn example_binary() -> PathBuf {
    example_binary::build_example("local_sign")
}

fn run(count: &str) -> std::process::Output {
    Command::new(example_binary())
        .args(["--count", count])
        .output()
        .unwrap()
}

#[test]
fn prints_verifiable_signatures_one_json_object_per_line() {
    let output = run("5");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5);
    let secp = secp256k1::Secp256k1::verification_only();
    let mut keys = std::collections::HashSet::new();
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 4);
        let pk_bytes = hex::decode(v["public_key"].as_str().unwrap()).unwrap();
        assert_eq!(pk_bytes.len(), 33);
        let pk = secp256k1::PublicKey::from_slice(&pk_bytes).unwrap();
        let prehash: [u8; 32] = hex::decode(v["prehash"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let sig_bytes = hex::decode(v["signature"].as_str().unwrap()).unwrap();
        assert_eq!(sig_bytes.len(), 64);
        let msg = secp256k1::Message::from_digest(prehash);
        let sig = secp256k1::ecdsa::Signature::from_compact(&sig_bytes).unwrap();
        secp.verify_ecdsa(&msg, &sig, &pk).unwrap();
        let recid = v["recovery_id"].as_i64().unwrap();
        assert!((0..=3).contains(&recid));
        let recid = secp256k1::ecdsa::RecoveryId::from_i32(i32::try_from(recid).unwrap()).unwrap();
        let recoverable =
            secp256k1::ecdsa::RecoverableSignature::from_compact(&sig_bytes, recid).unwrap();
        assert_eq!(secp.recover_ecdsa(&msg, &recoverable).unwrap(), pk);
        keys.insert(pk_bytes);
    }
    assert_eq!(keys.len(), 1, "one key per run");
}

#[test]
fn count_zero_prints_nothing_and_bad_arguments_fail() {
    let output = run("0");
    assert!(output.status.success());
    assert!(output.stdout.is_empty());
    let bad = run("many");
    assert!(!bad.status.success());
    assert!(bad.stdout.is_empty());
}
