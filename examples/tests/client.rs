//! Runs the `client` example binary against an in-process server party
//! (built on the server API of `mpc-transport-ws`, with refresh, plus a
//! minimal REST export endpoint), checks its signatures with libsecp256k1
//! and its derived keys with the `bip32` crate, and checks its state
//! directory: modes, layout, refresh durability, no token anywhere. Also
//! checks exported keys with libsecp256k1, `verify-backup` on real
//! backups, tampered ones and backups of other keys, and `verify` on the
//! signatures `sign` printed, altered ones and other keys.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "shared/example_binary.rs"]
mod example_binary;
#[path = "client/server.rs"]
mod server;
#[path = "client/support.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use mpc_core::KeyId;
use serde_json::{json, Value};

use server::{
    Server, EXPORT_FAULT_NONE, EXPORT_FAULT_PLAIN_500, EXPORT_FAULT_TAMPER, FAULT_AT_CONFIRMED,
    FAULT_AT_READY, FAULT_NONE, STEP_UP_TOKEN, TOKEN,
};
use support::{
    backup_json, bip32_child, check_export, check_state, client_command, example_binary, export,
    export_with_rest, failed, flip_byte, invalid, keygen, ok, random_prehash, recovery_key, run,
    run_command, run_with_token, show, sign, signed, str_of, valid, verify, verify_backup, with,
};

// ---------------------------------------------------------------------------
// Tests

#[test]
fn keygen_sign_derive_refresh_sign() {
    let server = Server::start();
    let scratch = tempfile::tempdir().unwrap();
    // The client creates the directory, and its parents.
    let state = scratch.path().join("client").join("state");

    let (key_id, public_key, xpub) = keygen(&server, &state);
    check_state(&state, &key_id, 0, &[0]);
    assert_eq!(bip32_child(&xpub, &[]), public_key);

    assert_eq!(sign(&server, &state, &key_id, None), public_key);
    let child = sign(&server, &state, &key_id, Some("m/0/5"));
    assert_ne!(child, public_key);
    assert_eq!(child, bip32_child(&xpub, &[0, 5]));
    assert_eq!(sign(&server, &state, &key_id, Some("m")), public_key);

    let out = ok(&run(&server, &state, &["refresh", "--key-id", &key_id]));
    assert_eq!(out.as_object().unwrap().len(), 2, "{out}");
    assert_eq!(str_of(&out, "key_id"), key_id);
    assert_eq!(out["epoch"], 1);
    check_state(&state, &key_id, 1, &[1]);
    let key = KeyId(hex::decode(&key_id).unwrap().try_into().unwrap());
    assert_eq!(server.store.epochs(&key), [1]);

    // Same key, same children, new epoch.
    assert_eq!(sign(&server, &state, &key_id, None), public_key);
    assert_eq!(sign(&server, &state, &key_id, Some("m/0/5")), child);

    let shown = show(&server, &state, &key_id);
    assert_eq!(str_of(&shown, "key_id"), key_id);
    assert_eq!(str_of(&shown, "public_key"), public_key);
    assert_eq!(str_of(&shown, "xpub"), xpub);
    assert_eq!(shown["epoch"], 1);
    assert_eq!(shown["ot_burned"], false);

    // A second key; `list` shows both, sorted by key id.
    let (key_id2, public_key2, _) = keygen(&server, &state);
    let listed = ok(&run_with_token(&server, &state, None, &["list"]));
    let mut expected = vec![
        (key_id.clone(), public_key.clone(), 1),
        (key_id2, public_key2, 0),
    ];
    expected.sort();
    let keys: Vec<(String, String, u64)> = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            assert_eq!(k.as_object().unwrap().len(), 3, "{k}");
            (
                str_of(k, "key_id").to_owned(),
                str_of(k, "public_key").to_owned(),
                k["epoch"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(keys, expected);
    check_state(&state, &key_id, 1, &[1]);
}

#[test]
fn interrupted_refreshes_leave_a_state_both_sides_sign_with() {
    let server = Server::start();
    let scratch = tempfile::tempdir().unwrap();
    let state = scratch.path().join("state");
    let (key_id, public_key, _) = keygen(&server, &state);
    let key = KeyId(hex::decode(&key_id).unwrap().try_into().unwrap());

    // Cut when ready: the client wrote epoch 1 but still signs with 0.
    server.set_refresh_fault(FAULT_AT_READY);
    let message = failed(
        &run(&server, &state, &["refresh", "--key-id", &key_id]),
        2,
        "rejected",
    );
    assert!(message.contains("signing uses epoch 0"), "{message}");
    check_state(&state, &key_id, 0, &[0, 1]);
    assert_eq!(server.store.epochs(&key), [0, 1]);
    assert_eq!(show(&server, &state, &key_id)["epoch"], 0);
    assert_eq!(sign(&server, &state, &key_id, None), public_key);

    // Cut when confirmed: the client signs with 1 and keeps 0 until a
    // refresh finishes.
    server.set_refresh_fault(FAULT_AT_CONFIRMED);
    let message = failed(
        &run(&server, &state, &["refresh", "--key-id", &key_id]),
        2,
        "rejected",
    );
    assert!(message.contains("signing uses epoch 1"), "{message}");
    check_state(&state, &key_id, 1, &[0, 1]);
    assert_eq!(server.store.epochs(&key), [0, 1]);
    assert_eq!(sign(&server, &state, &key_id, Some("m/3")), {
        let shown = show(&server, &state, &key_id);
        assert_eq!(shown["epoch"], 1);
        bip32_child(str_of(&shown, "xpub"), &[3])
    });

    // A leftover newer share file is ignored, then overwritten.
    std::fs::write(state.join(format!("{key_id}.2.share")), b"garbage").unwrap();
    std::fs::set_permissions(
        state.join(format!("{key_id}.2.share")),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    assert_eq!(sign(&server, &state, &key_id, None), public_key);
    server.set_refresh_fault(FAULT_NONE);
    let out = ok(&run(&server, &state, &["refresh", "--key-id", &key_id]));
    assert_eq!(out["epoch"], 2);
    check_state(&state, &key_id, 2, &[2]);
    assert_eq!(sign(&server, &state, &key_id, None), public_key);
}

#[test]
fn refuses_bad_usage_credentials_and_open_permissions() {
    let server = Server::start();
    let scratch = tempfile::tempdir().unwrap();
    let state = scratch.path().join("state");

    failed(
        &run_with_token(&server, &state, None, &["keygen"]),
        1,
        "usage",
    );
    failed(
        &run_with_token(&server, &state, Some("wrong-token"), &["keygen"]),
        2,
        "unauthorized",
    );
    failed(&run(&server, &state, &["frobnicate"]), 1, "usage");
    failed(
        &run(
            &server,
            &state,
            &["sign", "--key-id", "00", "--prehash", "00"],
        ),
        1,
        "usage",
    );
    let unknown = "ab".repeat(32);
    failed(
        &run(&server, &state, &["show", "--key-id", &unknown]),
        1,
        "unknown_key",
    );
    // The token as a command-line argument works and is not echoed in an
    // error that quotes the arguments.
    let mut command = Command::new(example_binary());
    let output = command
        .env_remove("MPC_TOKEN")
        .args(["--server", &server.url, "--token", TOKEN, "--state"])
        .arg(&state)
        .arg(TOKEN)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&output.stderr).contains(TOKEN));
    let output = Command::new(example_binary())
        .env_remove("MPC_TOKEN")
        .args(["--server", &server.url, "--token", TOKEN, "--state"])
        .arg(&state)
        .arg("keygen")
        .output()
        .unwrap();
    assert!(output.status.success());
    let key_id = str_of(
        &serde_json::from_slice::<Value>(&output.stdout).unwrap(),
        "key_id",
    )
    .to_owned();
    check_state(&state, &key_id, 0, &[0]);

    // Open permissions on the directory or a share file: refused.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o750)).unwrap();
    let message = failed(
        &run(
            &server,
            &state,
            &["sign", "--key-id", &key_id, "--prehash", &random_prehash()],
        ),
        1,
        "insecure_permissions",
    );
    assert!(message.contains("group or others"), "{message}");
    failed(&run(&server, &state, &["list"]), 1, "insecure_permissions");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let share = state.join(format!("{key_id}.0.share"));
    std::fs::set_permissions(&share, std::fs::Permissions::from_mode(0o644)).unwrap();
    failed(
        &run(&server, &state, &["show", "--key-id", &key_id]),
        1,
        "insecure_permissions",
    );
    std::fs::set_permissions(&share, std::fs::Permissions::from_mode(0o600)).unwrap();
    sign(&server, &state, &key_id, None);

    // A signing request for a key the server does not hold: exit 2.
    server.store.shares.lock().unwrap().clear();
    failed(
        &run(
            &server,
            &state,
            &["sign", "--key-id", &key_id, "--prehash", &random_prehash()],
        ),
        2,
        "server_not_found",
    );
}

#[test]
fn export_returns_the_key_and_reports_problems() {
    let server = Server::start();
    let scratch = tempfile::tempdir().unwrap();
    let state = scratch.path().join("state");
    let (key_id, public_key, _) = keygen(&server, &state);

    check_export(&export(&server, &state, &key_id), public_key.as_str());
    // The base URL from MPC_REST (with a trailing slash) works as well.
    let mut command = client_command();
    command
        .arg("--state")
        .arg(&state)
        .env("MPC_REST", format!("{}/", server.rest));
    check_export(
        &run_command(
            &server,
            command,
            Some(STEP_UP_TOKEN),
            &["export", "--key-id", &key_id],
        ),
        &public_key,
    );
    // A fresh one-time key each time, and the client's epoch.
    {
        let requests = server.store.export_requests.lock().unwrap();
        assert_eq!(requests.len(), 2);
        assert_ne!(requests[0].0, requests[1].0);
        assert!(requests.iter().all(|(_, epoch)| *epoch == 0));
    }
    // Nothing is stored.
    check_state(&state, &key_id, 0, &[0]);

    // A token without the second factor: the server's 403 problem.
    let message = failed(
        &run(
            &server,
            &state,
            &["export", "--key-id", &key_id, "--rest", &server.rest],
        ),
        2,
        "step_up_required",
    );
    assert!(message.contains("second-factor"), "{message}");
    failed(
        &run_with_token(
            &server,
            &state,
            Some("wrong-token"),
            &["export", "--key-id", &key_id, "--rest", &server.rest],
        ),
        2,
        "unauthorized",
    );
    // No token, a bad URL, an unknown key: local errors.
    failed(
        &run_with_token(
            &server,
            &state,
            None,
            &["export", "--key-id", &key_id, "--rest", &server.rest],
        ),
        1,
        "usage",
    );
    failed(
        &export_with_rest(&server, &state, &key_id, "ftp://127.0.0.1:1"),
        1,
        "usage",
    );
    let unknown = "cd".repeat(32);
    failed(&export(&server, &state, &unknown), 1, "unknown_key");

    // Server faults: a problem-less error, a tampered ciphertext, nothing
    // listening.
    server.set_export_fault(EXPORT_FAULT_PLAIN_500);
    failed(&export(&server, &state, &key_id), 2, "http_500");
    server.set_export_fault(EXPORT_FAULT_TAMPER);
    failed(&export(&server, &state, &key_id), 2, "export_failed");
    server.set_export_fault(EXPORT_FAULT_NONE);
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    failed(
        &export_with_rest(&server, &state, &key_id, &closed),
        2,
        "connection",
    );

    // After a refresh the client asks for its new epoch.
    ok(&run(&server, &state, &["refresh", "--key-id", &key_id]));
    check_export(&export(&server, &state, &key_id), &public_key);
    assert_eq!(
        server
            .store
            .export_requests
            .lock()
            .unwrap()
            .last()
            .unwrap()
            .1,
        1
    );
    // The server no longer holds the key: its 404 problem's code.
    server.store.shares.lock().unwrap().clear();
    failed(&export(&server, &state, &key_id), 2, "key_not_found");
}

#[test]
fn verify_backup_checks_the_proof_the_label_and_the_state() {
    let server = Server::start();
    let scratch = tempfile::tempdir().unwrap();
    let state = scratch.path().join("state");
    let other_state = scratch.path().join("other");
    let empty = scratch.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (key_id, _, _) = keygen(&server, &state);
    let (other_key_id, _, _) = keygen(&server, &other_state);
    let share = server.share(&key_id, 0);
    let other_share = server.share(&other_key_id, 0);
    let recovery = recovery_key();
    let file = backup_json(&share, &recovery);
    let other_file = backup_json(&other_share, &recovery);

    // Genuine: without a state, with one that holds the key, with one that
    // does not, and with no --state at all.
    valid(&verify_backup(&server, &empty, &file, &[]));
    valid(&verify_backup(&server, &state, &file, &[]));
    valid(&verify_backup(
        &server,
        &state,
        &file,
        &["--key-id", &key_id],
    ));
    valid(&verify_backup(&server, &state, &other_file, &[]));
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backup.json");
        std::fs::write(&path, file.to_string()).unwrap();
        let mut command = client_command();
        command.arg("verify-backup").arg("--file").arg(&path);
        valid(&run_command(&server, command, None, &[]));
    }

    // A flipped byte in the backup (the last row's opened seed).
    let mut bytes = hex::decode(str_of(&file, "backup")).unwrap();
    *bytes.last_mut().unwrap() ^= 0x01;
    let reason = invalid(&verify_backup(
        &server,
        &empty,
        &with(&file, "backup", json!(hex::encode(&bytes))),
        &[],
    ));
    assert!(reason.contains("proof does not verify"), "{reason}");
    // Truncated: does not decode.
    let reason = invalid(&verify_backup(
        &server,
        &empty,
        &with(&file, "backup", json!(hex::encode(&bytes[..100]))),
        &[],
    ));
    assert!(reason.contains("backup does not decode"), "{reason}");

    // Another recovery key.
    let reason = invalid(&verify_backup(
        &server,
        &empty,
        &with(
            &file,
            "recovery_public_key",
            json!(hex::encode(recovery_key().to_sec1_bytes())),
        ),
        &[],
    ));
    assert!(reason.contains("proof does not verify"), "{reason}");

    // The public share of another key.
    let reason = invalid(&verify_backup(
        &server,
        &empty,
        &with(&file, "public_share", other_file["public_share"].clone()),
        &[],
    ));
    assert!(reason.contains("proof does not verify"), "{reason}");

    // Another epoch than the backup's label.
    let reason = invalid(&verify_backup(
        &server,
        &empty,
        &with(&file, "epoch", json!(1)),
        &[],
    ));
    assert!(
        reason.contains("not of the file's key_id, epoch and role"),
        "{reason}"
    );

    // A genuine backup of another key, filed under this key's id: the state
    // holds this key, whose server public share is another.
    let mut disguised = other_file.clone();
    disguised["key_id"] = json!(key_id);
    let reason = invalid(&verify_backup(&server, &state, &disguised, &[]));
    assert!(
        reason.contains("public share does not match this key"),
        "{reason}"
    );
    // Checked against this key with --key-id.
    let reason = invalid(&verify_backup(
        &server,
        &state,
        &other_file,
        &["--key-id", &key_id],
    ));
    assert!(
        reason.contains("public share does not match this key"),
        "{reason}"
    );
    assert!(reason.contains("not of --key-id"), "{reason}");

    // Not a backup file: exit 1.
    let mut missing = file.clone();
    missing.as_object_mut().unwrap().remove("backup");
    failed(
        &verify_backup(&server, &empty, &missing, &[]),
        1,
        "invalid_file",
    );
    failed(
        &verify_backup(&server, &empty, &json!([1, 2, 3]), &[]),
        1,
        "invalid_file",
    );
    failed(
        &verify_backup(&server, &empty, &with(&file, "epoch", json!("0")), &[]),
        1,
        "invalid_file",
    );
    failed(
        &run(
            &server,
            &empty,
            &["verify-backup", "--file", "/nonexistent/backup.json"],
        ),
        1,
        "file",
    );
    // A state directory that is not there is not created.
    let absent = scratch.path().join("absent");
    failed(&verify_backup(&server, &absent, &file, &[]), 1, "state");
    assert!(!absent.exists());

    // After a refresh the epoch-0 backup cannot restore the key with the
    // client's share; a new one can.
    ok(&run(&server, &state, &["refresh", "--key-id", &key_id]));
    let reason = invalid(&verify_backup(&server, &state, &file, &[]));
    assert!(reason.contains("holds no share"), "{reason}");
    valid(&verify_backup(&server, &empty, &file, &[]));
    valid(&verify_backup(
        &server,
        &state,
        &backup_json(&server.share(&key_id, 1), &recovery),
        &[],
    ));
}

// ---------------------------------------------------------------------------
// Signature verification

#[test]
fn verify_accepts_what_sign_printed_and_nothing_else() {
    let server = Server::start();
    let scratch = tempfile::tempdir().unwrap();
    let state = scratch.path().join("state");
    let (key_id, public_key, _) = keygen(&server, &state);
    let (_, other_key, _) = keygen(&server, &state);
    let root = signed(&server, &state, &key_id, None);
    let child = signed(&server, &state, &key_id, Some("m/0/5"));
    let prehash = str_of(&root, "prehash");
    let signature = str_of(&root, "signature");
    assert_eq!(str_of(&root, "public_key"), public_key);

    // What `sign` printed verifies, for the root and a child key, and with
    // the key uncompressed.
    valid(&verify(&public_key, prehash, signature));
    valid(&verify(
        str_of(&child, "public_key"),
        str_of(&child, "prehash"),
        str_of(&child, "signature"),
    ));
    let uncompressed = secp256k1::PublicKey::from_slice(&hex::decode(&public_key).unwrap())
        .unwrap()
        .serialize_uncompressed();
    valid(&verify(&hex::encode(uncompressed), prehash, signature));

    // A flipped byte in r, in s or in the prehash.
    for index in [0, 31, 32, 63] {
        let reason = invalid(&verify(&public_key, prehash, &flip_byte(signature, index)));
        assert!(reason.contains("does not verify"), "{index}: {reason}");
    }
    let reason = invalid(&verify(&public_key, &flip_byte(prehash, 7), signature));
    assert!(reason.contains("does not verify"), "{reason}");

    // Another key: the other key in the state, the child key, the root key
    // for the child's signature.
    for (key, prehash, signature) in [
        (other_key.as_str(), prehash, signature),
        (str_of(&child, "public_key"), prehash, signature),
        (
            public_key.as_str(),
            str_of(&child, "prehash"),
            str_of(&child, "signature"),
        ),
    ] {
        let reason = invalid(&verify(key, prehash, signature));
        assert!(reason.contains("does not verify"), "{reason}");
    }

    // The same signature with s negated: valid in itself, but not low-S.
    let low = k256::ecdsa::Signature::from_slice(&hex::decode(signature).unwrap()).unwrap();
    let high =
        k256::ecdsa::Signature::from_scalars(low.r().to_bytes(), (-*low.s()).to_bytes()).unwrap();
    let reason = invalid(&verify(&public_key, prehash, &hex::encode(high.to_bytes())));
    assert!(reason.contains("low-S"), "{reason}");

    // Well-formed, but no key or no signature.
    let reason = invalid(&verify(
        &format!("02{}", "ff".repeat(32)),
        prehash,
        signature,
    ));
    assert!(reason.contains("not a point"), "{reason}");
    let reason = invalid(&verify(
        &public_key,
        prehash,
        &format!("{}{}", &signature[..64], "ff".repeat(32)),
    ));
    assert!(reason.contains("group order"), "{reason}");

    // Not hex, or of the wrong length: usage errors.
    for (key, prehash, signature) in [
        ("zz", prehash, signature),
        (&public_key[2..], prehash, signature),
        (&public_key, &prehash[2..], signature),
        (&public_key, prehash, &signature[2..]),
        (&public_key, prehash, &format!("{signature}00")),
        (&public_key, prehash, "not hex"),
    ] {
        failed(&verify(key, prehash, signature), 1, "usage");
    }
}
