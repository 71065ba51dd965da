//! Running the client binary and checking what it prints and stores.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use mpc_core::backup::Backup;
use mpc_core::wire::{encode_point, Role};
use mpc_core::KeyShare;
use rand_core::{OsRng, RngCore};
use serde_json::{json, Value};

use crate::server::{Server, STEP_UP_TOKEN, TOKEN};

/// The built client example.
pub(crate) fn example_binary() -> PathBuf {
    crate::example_binary::build_example("client")
}

// ---------------------------------------------------------------------------
// Running the client

pub(crate) struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the client with the token in `MPC_TOKEN` (or none).
pub(crate) fn run_with_token(
    server: &Server,
    state: &Path,
    token: Option<&str>,
    args: &[&str],
) -> Run {
    let mut command = client_command();
    command.arg("--state").arg(state);
    run_command(server, command, token, args)
}

/// The client binary, without the `MPC_*` variables of the environment.
pub(crate) fn client_command() -> Command {
    let mut command = Command::new(example_binary());
    command
        .env_remove("MPC_TOKEN")
        .env_remove("MPC_SERVER")
        .env_remove("MPC_REST");
    command
}

/// Runs `command` (from `client_command`, maybe with arguments) with the
/// server's URL, the token in `MPC_TOKEN` (or none) and `args`.
pub(crate) fn run_command(
    server: &Server,
    mut command: Command,
    token: Option<&str>,
    args: &[&str],
) -> Run {
    command.arg("--server").arg(&server.url).args(args);
    if let Some(token) = token {
        command.env("MPC_TOKEN", token);
    }
    output_of(command)
}

/// Runs `command`; checks that it printed no token.
fn output_of(mut command: Command) -> Run {
    let output = command.output().unwrap();
    let run = Run {
        code: output.status.code().expect("killed by a signal"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    };
    for text in [&run.stdout, &run.stderr] {
        assert!(!text.contains(TOKEN), "the token was printed: {text}");
        assert!(
            !text.contains(STEP_UP_TOKEN),
            "the token was printed: {text}"
        );
    }
    run
}

pub(crate) fn run(server: &Server, state: &Path, args: &[&str]) -> Run {
    run_with_token(server, state, Some(TOKEN), args)
}

/// Asserts success and exactly one JSON object on one line on stdout.
pub(crate) fn ok(run: &Run) -> Value {
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert!(run.stderr.is_empty(), "stderr: {}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout: {}", run.stdout);
    let value: Value = serde_json::from_str(lines[0]).unwrap();
    assert!(value.is_object());
    value
}

/// Asserts failure with `exit` and `code`: nothing on stdout, one JSON
/// error line on stderr.
pub(crate) fn failed(run: &Run, exit: i32, code: &str) -> String {
    assert_eq!(
        run.code, exit,
        "stdout: {} stderr: {}",
        run.stdout, run.stderr
    );
    assert!(run.stdout.is_empty(), "stdout: {}", run.stdout);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "stderr: {}", run.stderr);
    let value: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(value.as_object().unwrap().len(), 2, "{value}");
    assert_eq!(value["error"], code, "{value}");
    value["message"].as_str().unwrap().to_owned()
}

pub(crate) fn str_of<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("no string {field:?} in {value}"))
}

pub(crate) fn random_prehash() -> String {
    let mut digest = [0u8; 32];
    OsRng.fill_bytes(&mut digest);
    hex::encode(digest)
}

/// Signs with the client and checks the output with libsecp256k1 (and
/// ecrecover); returns the public key it printed.
pub(crate) fn sign(server: &Server, state: &Path, key_id: &str, path: Option<&str>) -> String {
    str_of(&signed(server, state, key_id, path), "public_key").to_owned()
}

/// Signs with the client and checks the output with libsecp256k1 (and
/// ecrecover); returns the output.
pub(crate) fn signed(server: &Server, state: &Path, key_id: &str, path: Option<&str>) -> Value {
    let prehash = random_prehash();
    let mut args = vec!["sign", "--key-id", key_id, "--prehash", &prehash];
    if let Some(path) = path {
        args.extend(["--path", path]);
    }
    let out = ok(&run(server, state, &args));
    assert_eq!(out.as_object().unwrap().len(), 4, "{out}");
    assert_eq!(str_of(&out, "prehash"), prehash);
    let pk_bytes = hex::decode(str_of(&out, "public_key")).unwrap();
    assert_eq!(pk_bytes.len(), 33);
    let pk = secp256k1::PublicKey::from_slice(&pk_bytes).unwrap();
    let digest: [u8; 32] = hex::decode(&prehash).unwrap().try_into().unwrap();
    let msg = secp256k1::Message::from_digest(digest);
    let sig_bytes = hex::decode(str_of(&out, "signature")).unwrap();
    assert_eq!(sig_bytes.len(), 64);
    let sig = secp256k1::ecdsa::Signature::from_compact(&sig_bytes).unwrap();
    let secp = secp256k1::Secp256k1::verification_only();
    secp.verify_ecdsa(&msg, &sig, &pk)
        .expect("libsecp256k1 rejects the signature");
    let recid = i32::try_from(out["recovery_id"].as_i64().unwrap()).unwrap();
    let recid = secp256k1::ecdsa::RecoveryId::from_i32(recid).unwrap();
    let recoverable =
        secp256k1::ecdsa::RecoverableSignature::from_compact(&sig_bytes, recid).unwrap();
    assert_eq!(secp.recover_ecdsa(&msg, &recoverable).unwrap(), pk);
    out
}

pub(crate) fn keygen(server: &Server, state: &Path) -> (String, String, String) {
    let out = ok(&run(server, state, &["keygen"]));
    assert_eq!(out.as_object().unwrap().len(), 3, "{out}");
    let key_id = str_of(&out, "key_id").to_owned();
    assert_eq!(key_id.len(), 64);
    assert!(key_id.bytes().all(|b| b.is_ascii_hexdigit()));
    let public_key = str_of(&out, "public_key").to_owned();
    let pk = hex::decode(&public_key).unwrap();
    assert_eq!(pk.len(), 33);
    secp256k1::PublicKey::from_slice(&pk).unwrap();
    let xpub = str_of(&out, "xpub").to_owned();
    assert!(xpub.starts_with("xpub"), "{xpub}");
    (key_id, public_key, xpub)
}

// ---------------------------------------------------------------------------
// State directory checks

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// The names in the state directory, sorted.
fn names(state: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(state)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Mode 0700 for the directory, 0600 for every file, no token in any file,
/// and the files of `key_id` are exactly `<key>.current` naming `current`
/// and the share files of `epochs`.
pub(crate) fn check_state(state: &Path, key_id: &str, current: u64, epochs: &[u64]) {
    assert_eq!(mode(state), 0o700);
    let mut expected: Vec<String> = epochs
        .iter()
        .map(|e| format!("{key_id}.{e}.share"))
        .collect();
    expected.push(format!("{key_id}.current"));
    expected.sort();
    let ours: Vec<String> = names(state)
        .into_iter()
        .filter(|n| n.starts_with(key_id))
        .collect();
    assert_eq!(ours, expected);
    for name in names(state) {
        assert!(!name.ends_with(".tmp"), "temporary file left: {name}");
        let path = state.join(&name);
        assert_eq!(mode(&path), 0o600, "{name}");
        let bytes = std::fs::read(&path).unwrap();
        for token in [TOKEN, STEP_UP_TOKEN] {
            assert!(
                !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
                "the token is in {name}"
            );
        }
    }
    let text = std::fs::read_to_string(state.join(format!("{key_id}.current"))).unwrap();
    assert_eq!(text.trim().parse::<u64>().unwrap(), current);
}

pub(crate) fn show(server: &Server, state: &Path, key_id: &str) -> Value {
    ok(&run_with_token(
        server,
        state,
        None,
        &["show", "--key-id", key_id],
    ))
}

/// The child public key at `path` by the `bip32` crate, from the xpub.
pub(crate) fn bip32_child(xpub: &str, path: &[u32]) -> String {
    use bip32::PublicKey as _;
    let mut key = bip32::XPub::from_str(xpub).unwrap();
    for index in path {
        key = key
            .derive_child(bip32::ChildNumber::new(*index, false).unwrap())
            .unwrap();
    }
    hex::encode(key.public_key().to_bytes())
}

// ---------------------------------------------------------------------------
// Export

/// Runs `export` with the step-up token against the server's REST API.
pub(crate) fn export(server: &Server, state: &Path, key_id: &str) -> Run {
    run_with_token(
        server,
        state,
        Some(STEP_UP_TOKEN),
        &["export", "--key-id", key_id, "--rest", &server.rest],
    )
}

/// Checks an export's output with libsecp256k1: the secret key's public
/// key is the printed one, which is `public_key`.
pub(crate) fn check_export(run: &Run, public_key: &str) {
    let out = ok(run);
    assert_eq!(out.as_object().unwrap().len(), 2, "{out}");
    assert_eq!(str_of(&out, "public_key"), public_key);
    let secret = str_of(&out, "secret_key");
    assert_eq!(secret.len(), 64);
    assert!(secret
        .bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    let secret = secp256k1::SecretKey::from_slice(&hex::decode(secret).unwrap()).unwrap();
    let derived = secp256k1::PublicKey::from_secret_key(&secp256k1::Secp256k1::new(), &secret);
    assert_eq!(hex::encode(derived.serialize()), public_key);
}

pub(crate) fn export_with_rest(server: &Server, state: &Path, key_id: &str, rest: &str) -> Run {
    run_with_token(
        server,
        state,
        Some(STEP_UP_TOKEN),
        &["export", "--key-id", key_id, "--rest", rest],
    )
}

// ---------------------------------------------------------------------------
// Backup verification

/// The server's answer to `POST /v1/keys/{key_id}/backup` for `share`.
pub(crate) fn backup_json(share: &KeyShare, recovery: &k256::PublicKey) -> Value {
    let backup = Backup::create(&mut OsRng, share, recovery);
    json!({
        "key_id": share.key_id().to_string(),
        "epoch": share.epoch(),
        "role": "b",
        "public_share": hex::encode(encode_point(&share.public_share(Role::B))),
        "recovery_public_key": hex::encode(recovery.to_sec1_bytes()),
        "backup": hex::encode(backup.to_bytes()),
        "created_at": 1_767_225_600_000_u64,
    })
}

pub(crate) fn recovery_key() -> k256::PublicKey {
    k256::SecretKey::random(&mut OsRng).public_key()
}

/// Writes `file` and runs `verify-backup` on it with `state` and `extra`
/// arguments.
pub(crate) fn verify_backup(server: &Server, state: &Path, file: &Value, extra: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backup.json");
    std::fs::write(&path, file.to_string()).unwrap();
    let path = path.to_str().unwrap().to_owned();
    let mut args = vec!["verify-backup", "--file", path.as_str()];
    args.extend_from_slice(extra);
    run_with_token(server, state, None, &args)
}

/// Asserts `{"valid": true}`.
pub(crate) fn valid(run: &Run) {
    let out = ok(run);
    assert_eq!(out, json!({ "valid": true }));
}

/// Asserts `{"valid": false, "reason"}`; returns the reason.
pub(crate) fn invalid(run: &Run) -> String {
    let out = ok(run);
    assert_eq!(out.as_object().unwrap().len(), 2, "{out}");
    assert_eq!(out["valid"], false, "{out}");
    str_of(&out, "reason").to_owned()
}

/// A copy of `file` with `field` set to `value`.
pub(crate) fn with(file: &Value, field: &str, value: Value) -> Value {
    let mut file = file.clone();
    file[field] = value;
    file
}

// ---------------------------------------------------------------------------
// Signature verification

/// Runs `verify` without a state directory, token or server.
pub(crate) fn verify(public_key: &str, prehash: &str, signature: &str) -> Run {
    let mut command = client_command();
    command.args([
        "verify",
        "--public-key",
        public_key,
        "--prehash",
        prehash,
        "--signature",
        signature,
    ]);
    output_of(command)
}

/// `text` (hex) with the byte at `index` flipped in its lowest bit.
pub(crate) fn flip_byte(text: &str, index: usize) -> String {
    let mut bytes = hex::decode(text).unwrap();
    bytes[index] ^= 0x01;
    hex::encode(bytes)
}
