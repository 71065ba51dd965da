//! Runs the `client` example binary against an in-process server party
//! (built on the server API of `mpc-transport-ws`, with refresh), checks its
//! signatures with libsecp256k1 and its derived keys with the `bip32` crate,
//! and checks its state directory: modes, layout, refresh durability, no
//! token anywhere.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mpc_core::wire::Role;
use mpc_core::{Dkg, KeyId, KeyShare, Refresh, Sign};
use mpc_transport_ws::frames::Frames;
use mpc_transport_ws::server::{accept, bearer_token, HttpRejection};
use mpc_transport_ws::{
    serve, Operation, Rejection, ServerSession, TransportConfig, TransportError,
};
use rand_core::{OsRng, RngCore};
use serde_json::Value;

const TOKEN: &str = "client-test-token-5f0c2a9e71d4";

/// Builds the example with the same profile as this test (cargo has
/// released its lock while tests run) and returns its path.
fn example_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let mut dir = std::env::current_exe().unwrap();
            dir.pop(); // the test binary
            if dir.ends_with("deps") {
                dir.pop();
            }
            let mut build = Command::new(env!("CARGO"));
            build.args([
                "build",
                "--quiet",
                "-p",
                "mpc-examples",
                "--example",
                "client",
            ]);
            if dir.ends_with("release") {
                build.arg("--release");
            }
            let status = build.status().unwrap();
            assert!(status.success(), "building the example failed");
            let path = dir
                .join("examples")
                .join(format!("client{}", std::env::consts::EXE_SUFFIX));
            assert!(path.exists(), "no example binary at {}", path.display());
            path
        })
        .clone()
}

// ---------------------------------------------------------------------------
// The in-process server party

/// What the server does wrong in a refresh.
const FAULT_NONE: u8 = 0;
/// Fails (1011) when its new share is ready, before its round-4 message.
const FAULT_AT_READY: u8 = 1;
/// Fails (1011) when it is confirmed, before its round-5 message.
const FAULT_AT_CONFIRMED: u8 = 2;

/// The server's shares by key and epoch: it signs with any epoch it holds
/// (PROTOCOL.md §18.1).
#[derive(Default)]
struct Store {
    shares: Mutex<HashMap<(KeyId, u64), Arc<KeyShare>>>,
    refresh_fault: AtomicU8,
}

impl Store {
    fn get(&self, key_id: &KeyId, epoch: u64) -> Option<Arc<KeyShare>> {
        self.shares.lock().unwrap().get(&(*key_id, epoch)).cloned()
    }

    fn put(&self, share: KeyShare) {
        self.shares
            .lock()
            .unwrap()
            .insert((*share.key_id(), share.epoch()), Arc::new(share));
    }

    fn epochs(&self, key_id: &KeyId) -> Vec<u64> {
        let mut epochs: Vec<u64> = self
            .shares
            .lock()
            .unwrap()
            .keys()
            .filter(|(k, _)| k == key_id)
            .map(|(_, e)| *e)
            .collect();
        epochs.sort_unstable();
        epochs
    }
}

async fn handle<F: Frames>(
    mut session: ServerSession<F>,
    store: Arc<Store>,
) -> Result<(), TransportError> {
    let opening = session.opening().clone();
    let mut rng = OsRng;
    match opening.operation {
        Operation::Keygen => {
            let mut dkg = Dkg::new(Role::B, opening.context());
            let share = session.run(&mut dkg, &mut rng).await?;
            store.put(share);
        }
        Operation::Sign {
            key_id,
            epoch,
            prehash,
            path,
        } => {
            let Some(share) = store.get(&key_id, epoch) else {
                return Err(session.reject(Rejection::NOT_FOUND).await);
            };
            let Ok(mut sign) = Sign::with_path(&share, prehash, &path) else {
                return Err(session.reject(Rejection::INTERNAL).await);
            };
            session.run(&mut sign, &mut rng).await?;
        }
        Operation::Refresh { key_id, epoch } => {
            let Some(old) = store.get(&key_id, epoch) else {
                return Err(session.reject(Rejection::NOT_FOUND).await);
            };
            let fault = store.refresh_fault.load(Ordering::SeqCst);
            let mut refresh = Refresh::new(&old, opening.context());
            let hook_store = store.clone();
            let mut saved = false;
            let mut hook = move |refresh: &Refresh<'_>| {
                let mut result = Ok(());
                if !saved {
                    if let Some(new) = refresh.ready_share() {
                        // "Ready": keep old and new.
                        hook_store.put(KeyShare::from_bytes(&new.to_bytes()).unwrap());
                        saved = true;
                        if fault == FAULT_AT_READY {
                            result = Err(Rejection::INTERNAL);
                        }
                    }
                }
                if refresh.is_confirmed() && fault == FAULT_AT_CONFIRMED {
                    result = Err(Rejection::INTERNAL);
                }
                std::future::ready(result)
            };
            session.run_with(&mut refresh, &mut rng, &mut hook).await?;
            // "Finalized": the client is confirmed, the old epoch can go.
            store.shares.lock().unwrap().remove(&(key_id, epoch));
        }
        _ => return Err(session.reject(Rejection::UNSUPPORTED_OPERATION).await),
    }
    session.finish().await
}

/// A server party on 127.0.0.1; dropping it stops it.
struct Server {
    url: String,
    store: Arc<Store>,
    _runtime: tokio::runtime::Runtime,
}

impl Server {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let store = Arc::new(Store::default());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = TransportConfig::default();
        config.message_timeout = Duration::from_secs(10);
        config.session_timeout = Duration::from_secs(20);
        let server_store = store.clone();
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let config = config.clone();
                let store = server_store.clone();
                tokio::spawn(async move {
                    let accepted = accept(stream, &config, |request| {
                        if bearer_token(request.headers()) == Some(TOKEN) {
                            Ok(())
                        } else {
                            Err(HttpRejection::UNAUTHORIZED)
                        }
                    })
                    .await;
                    if let Ok((socket, ())) = accepted {
                        let _ = serve(socket, config, |session| handle(session, store)).await;
                    }
                });
            }
        });
        Self {
            url: format!("ws://{addr}"),
            store,
            _runtime: runtime,
        }
    }

    fn set_refresh_fault(&self, fault: u8) {
        self.store.refresh_fault.store(fault, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------
// Running the client

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the client with the token in `MPC_TOKEN` (or none).
fn run_with_token(server: &Server, state: &Path, token: Option<&str>, args: &[&str]) -> Run {
    let mut command = Command::new(example_binary());
    command
        .env_remove("MPC_TOKEN")
        .env_remove("MPC_SERVER")
        .arg("--server")
        .arg(&server.url)
        .arg("--state")
        .arg(state)
        .args(args);
    if let Some(token) = token {
        command.env("MPC_TOKEN", token);
    }
    let output = command.output().unwrap();
    let run = Run {
        code: output.status.code().expect("killed by a signal"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    };
    for text in [&run.stdout, &run.stderr] {
        assert!(!text.contains(TOKEN), "the token was printed: {text}");
    }
    run
}

fn run(server: &Server, state: &Path, args: &[&str]) -> Run {
    run_with_token(server, state, Some(TOKEN), args)
}

/// Asserts success and exactly one JSON object on one line on stdout.
fn ok(run: &Run) -> Value {
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
fn failed(run: &Run, exit: i32, code: &str) -> String {
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

fn str_of<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("no string {field:?} in {value}"))
}

fn random_prehash() -> String {
    let mut digest = [0u8; 32];
    OsRng.fill_bytes(&mut digest);
    hex::encode(digest)
}

/// Signs with the client and checks the output with libsecp256k1 (and
/// ecrecover); returns the public key it printed.
fn sign(server: &Server, state: &Path, key_id: &str, path: Option<&str>) -> String {
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
    str_of(&out, "public_key").to_owned()
}

fn keygen(server: &Server, state: &Path) -> (String, String, String) {
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
fn check_state(state: &Path, key_id: &str, current: u64, epochs: &[u64]) {
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
        assert!(
            !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "the token is in {name}"
        );
    }
    let text = std::fs::read_to_string(state.join(format!("{key_id}.current"))).unwrap();
    assert_eq!(text.trim().parse::<u64>().unwrap(), current);
}

fn show(server: &Server, state: &Path, key_id: &str) -> Value {
    ok(&run_with_token(
        server,
        state,
        None,
        &["show", "--key-id", key_id],
    ))
}

/// The child public key at `path` by the `bip32` crate, from the xpub.
fn bip32_child(xpub: &str, path: &[u32]) -> String {
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
// Tests

#[test]
fn keygen_sign_derive_refresh_sign() {
    let started = Instant::now();
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
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
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
