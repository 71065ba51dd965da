//! The wallet against the real `mpc-server` binary (SQLite in a temporary
//! directory, 127.0.0.1 only): every operation with signatures checked by
//! libsecp256k1, refresh cut after every WebSocket frame, presignatures
//! never used twice across failures and restores, and the file store
//! against tampering, swapping, wrong keys, open permissions and crashes.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mpc_client::{
    ClientError, FileStore, MemoryStore, SchnorrSignature, ShareStore, Signature, StoreError,
    Taproot, Wallet, WalletConfig,
};
use mpc_server::auth::TokenBuilder;
use mpc_transport_ws::TransportConfig;
use rand_core::{OsRng, RngCore};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use zeroize::Zeroizing;

// ---------------------------------------------------------------------------
// The server binary (same launch as mpc-server/tests/common, which this
// package cannot include: it names the binary with CARGO_BIN_EXE_mpc-server).

#[path = "../../examples/tests/shared/example_binary.rs"]
mod example_binary;

const JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123";
const MASTER_KEY: &str = "5f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const AUDIENCE: &str = "mpc-server";
const RECOVERY_SECRET: [u8; 32] = [0x42; 32];
const STORAGE_KEY: [u8; 32] = [0x5a; 32];

async fn bounded<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(240), future)
        .await
        .expect("test exceeded its time bound")
}

/// The `mpc-server` binary of the workspace.
fn server_binary() -> PathBuf {
    example_binary::build_binary("mpc-server")
}

struct Server {
    child: Child,
    ws: String,
    rest: String,
    _data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn recovery_hex() -> String {
    let secret = k256::SecretKey::from_slice(&RECOVERY_SECRET).unwrap();
    hex::encode(secret.public_key().to_sec1_bytes())
}

fn start_server() -> Server {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(server_binary())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("MPC_WS_ADDR", "127.0.0.1:0")
        .env("MPC_REST_ADDR", "127.0.0.1:0")
        .env("MPC_LOG_FORMAT", "json")
        .env("MPC_LOG", "info")
        .env("MPC_DATA_DIR", data.path())
        .env("MPC_JWT_SECRET", JWT_SECRET)
        .env("MPC_MASTER_KEY", MASTER_KEY)
        .env("MPC_BACKUP_RECOVERY_KEY", recovery_hex())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let Ok(value) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let fields = &value["fields"];
            if fields["message"] == "listening" {
                let _ = tx.send((
                    fields["ws_addr"].as_str().unwrap_or_default().to_owned(),
                    fields["rest_addr"].as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
    });
    let (ws, rest) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the server did not start");
    Server {
        child,
        ws: format!("ws://{ws}"),
        rest: format!("http://{rest}"),
        _data: data,
    }
}

fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn token(subject: &str) -> String {
    TokenBuilder::new(subject, AUDIENCE)
        .expires_in(3600)
        .sign_hs256(JWT_SECRET.as_bytes())
        .unwrap()
}

/// A single-use token with a fresh second factor.
fn step_up_token(subject: &str) -> String {
    let mut jti = [0u8; 16];
    OsRng.fill_bytes(&mut jti);
    TokenBuilder::new(subject, AUDIENCE)
        .expires_in(600)
        .amr(&["pwd", "otp"])
        .auth_time(now() - 5)
        .token_id(hex::encode(jti))
        .sign_hs256(JWT_SECRET.as_bytes())
        .unwrap()
}

fn wallet_at(
    ws: &str,
    rest: &str,
    subject: &str,
    store: Arc<dyn ShareStore>,
    key: [u8; 32],
) -> Wallet {
    let mut transport = TransportConfig::default();
    transport.message_timeout = Duration::from_secs(20);
    transport.session_timeout = Duration::from_secs(60);
    Wallet::new(
        WalletConfig {
            server_url: ws.to_owned(),
            rest_url: rest.to_owned(),
            token: Zeroizing::new(token(subject)),
            storage_key: Zeroizing::new(key),
        },
        store,
    )
    .unwrap()
    .with_transport_config(transport)
}

fn wallet(server: &Server, subject: &str, store: Arc<dyn ShareStore>) -> Wallet {
    wallet_at(&server.ws, &server.rest, subject, store, STORAGE_KEY)
}

/// One REST call with `token`: status and JSON body.
async fn rest(server: &Server, method: &str, path: &str, token: &str, body: Value) -> (u16, Value) {
    let client = reqwest::Client::new();
    let url = format!("{}{path}", server.rest);
    let request = match method {
        "POST" => client.post(url),
        "DELETE" => client.delete(url),
        _ => client.get(url),
    };
    let response = request
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// libsecp256k1's verdict on a signature the wallet returned.
fn assert_libsecp(signature: &Signature, expected_key: &[u8; 33], prehash: [u8; 32]) {
    use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
    assert_eq!(&signature.public_key, expected_key);
    assert_eq!(signature.prehash, prehash);
    let secp = secp256k1::Secp256k1::new();
    let key = secp256k1::PublicKey::from_slice(expected_key).unwrap();
    let message = secp256k1::Message::from_digest(prehash);
    let sig = secp256k1::ecdsa::Signature::from_compact(&signature.r_s).unwrap();
    secp.verify_ecdsa(&message, &sig, &key).unwrap();
    let recoverable = RecoverableSignature::from_compact(
        &signature.r_s,
        RecoveryId::from_i32(i32::from(signature.recovery_id)).unwrap(),
    )
    .unwrap();
    assert_eq!(secp.recover_ecdsa(&message, &recoverable).unwrap(), key);
}

/// Checks a BIP340 signature with libsecp256k1, and its keys against keys
/// computed here: the x-only form of `derived` (SEC1), and the BIP341
/// output key from libsecp256k1's x-only tweak with a TapTweak hashed here.
fn assert_bip340(
    signed: &SchnorrSignature,
    derived: &[u8; 33],
    taproot: Taproot,
    message: [u8; 32],
) {
    use sha2::Digest;
    let secp = secp256k1::Secp256k1::new();
    assert_eq!(&signed.public_key, derived);
    let (internal, _) = secp256k1::PublicKey::from_slice(derived)
        .unwrap()
        .x_only_public_key();
    assert_eq!(signed.internal_key, internal.serialize());
    let expected_output = match taproot {
        Taproot::Off => internal,
        Taproot::KeyPathOnly | Taproot::MerkleRoot(_) => {
            let tag = sha2::Sha256::digest(b"TapTweak");
            let mut hash = sha2::Sha256::new();
            hash.update(tag);
            hash.update(tag);
            hash.update(internal.serialize());
            if let Taproot::MerkleRoot(root) = taproot {
                hash.update(root);
            }
            let tweak = secp256k1::Scalar::from_be_bytes(hash.finalize().into()).unwrap();
            internal.add_tweak(&secp, &tweak).unwrap().0
        }
    };
    assert_eq!(signed.output_key, expected_output.serialize());
    assert_eq!(signed.message, message);
    let signature = secp256k1::schnorr::Signature::from_slice(&signed.signature).unwrap();
    secp.verify_schnorr(
        &signature,
        &secp256k1::Message::from_digest(message),
        &expected_output,
    )
    .unwrap();
}

fn prehash(label: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(label.as_bytes()).into()
}

/// Retries a call while the server still runs the refresh of a cut
/// connection (it has not noticed the cut yet); a bounded poll, not a
/// timing check.
async fn retrying<T, F, Fut>(mut call: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    for _ in 0..100 {
        match call().await {
            Err(ClientError::RefreshInProgress) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => return other,
        }
    }
    call().await
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_against_the_server() {
    let server = start_server();
    bounded(async {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("wallet");
        let store: Arc<dyn ShareStore> = Arc::new(FileStore::open(&dir).unwrap());
        let wallet = wallet(&server, "alice", Arc::clone(&store));

        let key = wallet.keygen().await.unwrap();
        assert_eq!(key.epoch, 0);
        assert_eq!(wallet.keys().unwrap(), vec![key.clone()]);
        assert_eq!(wallet.key(&key.key_id).unwrap(), key);

        // Root and derived keys, checked by libsecp256k1; the child key is
        // the xpub's (independent BIP32 code in the bip32-free check: the
        // same path twice gives the same key, another path another).
        let root = wallet
            .sign(&key.key_id, prehash("root"), None)
            .await
            .unwrap();
        assert_libsecp(&root, &key.public_key, prehash("root"));
        let child = wallet
            .sign(&key.key_id, prehash("child"), Some("m/0/5"))
            .await
            .unwrap();
        assert_ne!(child.public_key, key.public_key);
        assert_libsecp(&child, &child.public_key, prehash("child"));
        let again = wallet
            .sign(&key.key_id, prehash("c2"), Some("m/0/5"))
            .await
            .unwrap();
        assert_eq!(again.public_key, child.public_key);
        assert!(matches!(
            wallet.sign(&key.key_id, prehash("x"), Some("m/0'/1")).await,
            Err(ClientError::InvalidInput { .. })
        ));

        // BIP340 (PROTOCOL.md §20) at the root, under the same path, and
        // for Taproot output keys, each checked independently.
        for (path, derived, taproot) in [
            (None, key.public_key, Taproot::Off),
            (Some("m/0/5"), child.public_key, Taproot::Off),
            (Some("m/0/5"), child.public_key, Taproot::KeyPathOnly),
            (
                None,
                key.public_key,
                Taproot::MerkleRoot(prehash("scripts")),
            ),
        ] {
            let message = prehash(&format!("bip340 {path:?} {taproot:?}"));
            let signed = wallet
                .sign_schnorr(&key.key_id, message, path, taproot)
                .await
                .unwrap();
            assert_bip340(&signed, &derived, taproot, message);
        }
        assert!(matches!(
            wallet
                .sign_schnorr(&key.key_id, prehash("x"), Some("m/0'/1"), Taproot::Off)
                .await,
            Err(ClientError::InvalidInput { .. })
        ));

        // Presign into the pool, sign online from it.
        assert_eq!(wallet.presign(&key.key_id, 3).await.unwrap(), 3);
        for i in 0..2 {
            let label = format!("online {i}");
            let online = wallet
                .sign_online(&key.key_id, prehash(&label))
                .await
                .unwrap();
            assert_libsecp(&online, &key.public_key, prehash(&label));
        }
        assert_eq!(wallet.key(&key.key_id).unwrap().presignatures, 1);

        // Refresh: next epoch, same key; the pool of the old epoch is gone
        // (the server dropped its halves), and so are the old shares.
        assert_eq!(wallet.refresh(&key.key_id).await.unwrap(), 1);
        let refreshed = wallet.key(&key.key_id).unwrap();
        assert_eq!((refreshed.epoch, refreshed.presignatures), (1, 0));
        assert_eq!(refreshed.public_key, key.public_key);
        assert_eq!(refreshed.xpub, key.xpub);
        assert!(matches!(
            wallet.sign_online(&key.key_id, prehash("none")).await,
            Err(ClientError::NoPresignatures)
        ));
        let mut names = store.list().unwrap();
        names.sort();
        assert_eq!(
            names,
            vec![
                format!("{}.1.share", key.key_id),
                format!("{}.current", key.key_id)
            ]
        );
        let after = wallet
            .sign(&key.key_id, prehash("after"), None)
            .await
            .unwrap();
        assert_libsecp(&after, &key.public_key, prehash("after"));

        // Export: needs a step-up token, spends it, and x*G is the key.
        assert_eq!(
            wallet
                .export(&key.key_id, &token("alice"))
                .await
                .unwrap_err(),
            ClientError::StepUpRequired
        );
        let step_up = step_up_token("alice");
        let exported = wallet.export(&key.key_id, &step_up).await.unwrap();
        let secret = k256::SecretKey::from_slice(&*exported.secret_key).unwrap();
        assert_eq!(
            secret.public_key().to_sec1_bytes().as_ref(),
            &key.public_key[..]
        );
        assert_eq!(exported.public_key, key.public_key);
        assert!(!format!("{exported:?}").contains(&hex::encode(*exported.secret_key)));
        assert_eq!(
            wallet.export(&key.key_id, &step_up).await.unwrap_err(),
            ClientError::StepUpTokenUsed
        );
        // Another owner's key looks like no key.
        let bob = wallet_at(
            &server.ws,
            &server.rest,
            "bob",
            Arc::clone(&store),
            STORAGE_KEY,
        );
        assert_eq!(
            bob.export(&key.key_id, &step_up_token("bob"))
                .await
                .unwrap_err(),
            ClientError::NotFound { what: "key".into() }
        );
        assert_eq!(
            bob.sign(&key.key_id, prehash("bob"), None)
                .await
                .unwrap_err(),
            ClientError::NotFound { what: "key".into() }
        );

        // Backup verification: the server's genuine backup passes, against
        // the wallet's share too; a changed one lists its failures.
        let (status, backup) = rest(
            &server,
            "POST",
            &format!("/v1/keys/{}/backup", key.key_id),
            &step_up_token("alice"),
            json!({}),
        )
        .await;
        assert_eq!(status, 200, "{backup}");
        let file = serde_json::to_vec(&backup).unwrap();
        wallet.verify_backup(&file, None).unwrap();
        wallet.verify_backup(&file, Some(&key.key_id)).unwrap();
        mpc_client::verify_backup(&file, None).unwrap();
        let mut forged = backup.clone();
        forged["epoch"] = json!(0);
        match wallet.verify_backup(&serde_json::to_vec(&forged).unwrap(), None) {
            Err(ClientError::BackupInvalid { reasons }) => {
                assert!(reasons.len() >= 2, "{reasons:?}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            wallet.verify_backup(b"{\"key_id\": 1}", None),
            Err(ClientError::InvalidInput { .. })
        ));

        // A bad token, and a token change.
        wallet.set_token(Zeroizing::new("not-a-token".into()));
        assert_eq!(
            wallet.keygen().await.unwrap_err(),
            ClientError::Unauthorized
        );
        wallet.set_token(Zeroizing::new(token("alice")));

        // Rotation required, then revoked: typed errors a UI acts on.
        let (status, body) = rest(
            &server,
            "POST",
            &format!("/v1/keys/{}/rotate", key.key_id),
            &token("alice"),
            json!({}),
        )
        .await;
        assert!(status < 300, "{status} {body}");
        assert_eq!(
            wallet
                .sign(&key.key_id, prehash("r"), None)
                .await
                .unwrap_err(),
            ClientError::RotationRequired
        );
        assert_eq!(wallet.refresh(&key.key_id).await.unwrap(), 2);
        wallet.sign(&key.key_id, prehash("r2"), None).await.unwrap();
        let (status, body) = rest(
            &server,
            "DELETE",
            &format!("/v1/keys/{}", key.key_id),
            &step_up_token("alice"),
            json!({ "confirm": key.key_id }),
        )
        .await;
        assert!(status < 300, "{status} {body}");
        assert_eq!(
            wallet
                .sign(&key.key_id, prehash("gone"), None)
                .await
                .unwrap_err(),
            ClientError::Revoked
        );

        // Nothing in the directory is open to others; no token in it.
        assert_eq!(mode(&dir), 0o700);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            assert_eq!(mode(&path), 0o600, "{}", path.display());
            let bytes = std::fs::read(&path).unwrap();
            let alice = token("alice");
            assert!(!bytes
                .windows(16)
                .any(|w| alice.as_bytes().windows(16).any(|t| t == w)));
        }
    })
    .await;
}

// ---------------------------------------------------------------------------
// Refresh cut after every frame

/// Forwards one WebSocket connection to `upstream` and cuts both sides
/// once `cut_after` frames (either direction, after the HTTP upgrade) have
/// been forwarded.
async fn proxy(listener: TcpListener, upstream: String, cut_after: Arc<AtomicUsize>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            return;
        };
        let limit = cut_after.load(Ordering::SeqCst);
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(&upstream).await else {
                return;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let count = Arc::new(AtomicUsize::new(0));
            let cut = Arc::new(tokio::sync::Notify::new());
            let up = tokio::spawn(pump(
                client_read,
                server_write,
                Arc::clone(&count),
                limit,
                Arc::clone(&cut),
            ));
            let down = tokio::spawn(pump(
                server_read,
                client_write,
                count,
                limit,
                Arc::clone(&cut),
            ));
            cut.notified().await;
            // Dropping both halves closes both connections.
            up.abort();
            down.abort();
        });
    }
}

/// Copies the HTTP head, then whole frames; notifies `cut` after the
/// `limit`-th frame of the connection (or when either side closes).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    count: Arc<AtomicUsize>,
    limit: usize,
    cut: Arc<tokio::sync::Notify>,
) {
    let result: std::io::Result<()> = async {
        // The HTTP request or response head.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let byte = from.read_u8().await?;
            head.push(byte);
        }
        to.write_all(&head).await?;
        loop {
            let mut header = [0u8; 2];
            from.read_exact(&mut header).await?;
            let mut frame = header.to_vec();
            let masked = header[1] & 0x80 != 0;
            let mut len = u64::from(header[1] & 0x7f);
            if len == 126 {
                let mut ext = [0u8; 2];
                from.read_exact(&mut ext).await?;
                frame.extend_from_slice(&ext);
                len = u64::from(u16::from_be_bytes(ext));
            } else if len == 127 {
                let mut ext = [0u8; 8];
                from.read_exact(&mut ext).await?;
                frame.extend_from_slice(&ext);
                len = u64::from_be_bytes(ext);
            }
            let rest = usize::try_from(len).unwrap() + if masked { 4 } else { 0 };
            let start = frame.len();
            frame.resize(start + rest, 0);
            from.read_exact(&mut frame[start..]).await?;
            to.write_all(&frame).await?;
            if count.fetch_add(1, Ordering::SeqCst) + 1 >= limit {
                cut.notify_one();
                return Ok(());
            }
        }
    }
    .await;
    let _ = result;
    cut.notify_one();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_cut_after_every_frame_leaves_a_common_epoch() {
    let server = start_server();
    bounded(async {
        let store: Arc<dyn ShareStore> = Arc::new(MemoryStore::new());
        let direct = wallet(&server, "carol", Arc::clone(&store));
        let key = direct.keygen().await.unwrap();
        // A pending key is not refreshed: its first signature confirms it.
        direct
            .sign(&key.key_id, prehash("confirm"), None)
            .await
            .unwrap();

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_url = format!("ws://{}", listener.local_addr().unwrap());
        let cut_after = Arc::new(AtomicUsize::new(usize::MAX));
        let upstream = server.ws.trim_start_matches("ws://").to_owned();
        let proxy_task = tokio::spawn(proxy(listener, upstream, Arc::clone(&cut_after)));
        let cut = wallet_at(
            &proxy_url,
            &server.rest,
            "carol",
            Arc::clone(&store),
            STORAGE_KEY,
        );

        let mut cuts = 0;
        let mut epochs_seen = Vec::new();
        for frames in 1..64 {
            cut_after.store(frames, Ordering::SeqCst);
            let before = direct.key(&key.key_id).unwrap().epoch;
            let result = retrying(|| cut.refresh(&key.key_id)).await;
            let after = direct.key(&key.key_id).unwrap().epoch;
            assert!(
                after == before || after == before + 1,
                "{before} -> {after}"
            );
            epochs_seen.push(after);
            // Whatever happened, the wallet's epoch signs with the server.
            let label = format!("after cut {frames}");
            let signed = direct
                .sign(&key.key_id, prehash(&label), None)
                .await
                .unwrap();
            assert_libsecp(&signed, &key.public_key, prehash(&label));
            match result {
                Ok(epoch) => {
                    assert_eq!(epoch, after);
                    break;
                }
                Err(_) => cuts += 1,
            }
        }
        // Cut at many points, and at least one cut after the confirmation
        // moved the wallet forward without finishing.
        assert!(cuts >= 8, "only {cuts} cuts");
        assert!(
            epochs_seen.windows(2).any(|w| w[1] > w[0]),
            "{epochs_seen:?}"
        );
        // An uncut refresh from the final state works, and finalizes.
        let epoch = retrying(|| direct.refresh(&key.key_id)).await.unwrap();
        let shares: Vec<String> = store
            .list()
            .unwrap()
            .into_iter()
            .filter(|n| n.ends_with(".share"))
            .collect();
        assert_eq!(shares, vec![format!("{}.{epoch}.share", key.key_id)]);
        direct
            .sign(&key.key_id, prehash("final"), None)
            .await
            .unwrap();
        proxy_task.abort();
    })
    .await;
}

// ---------------------------------------------------------------------------
// Presignatures are used once

/// A store that keeps a copy of every deleted blob, to restore it as a
/// backup of the device would.
#[derive(Default)]
struct RecordingStore {
    inner: MemoryStore,
    deleted: Mutex<HashMap<String, Vec<u8>>>,
}

impl ShareStore for RecordingStore {
    fn put(&self, name: &str, sealed: &[u8]) -> Result<(), StoreError> {
        self.inner.put(name, sealed)
    }
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(name)
    }
    fn delete(&self, name: &str) -> Result<(), StoreError> {
        if let Some(blob) = self.inner.get(name)? {
            self.deleted.lock().unwrap().insert(name.to_owned(), blob);
        }
        self.inner.delete(name)
    }
    fn list(&self) -> Result<Vec<String>, StoreError> {
        self.inner.list()
    }
}

fn presig_names(store: &RecordingStore) -> Vec<String> {
    store
        .list()
        .unwrap()
        .into_iter()
        .filter(|n| n.contains(".presig."))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presignature_is_never_used_twice() {
    let server = start_server();
    bounded(async {
        let store = Arc::new(RecordingStore::default());
        let shared: Arc<dyn ShareStore> = Arc::clone(&store) as Arc<dyn ShareStore>;
        let wallet = wallet(&server, "dave", Arc::clone(&shared));
        let key = wallet.keygen().await.unwrap();
        assert_eq!(wallet.presign(&key.key_id, 4).await.unwrap(), 4);

        // Two online signatures at once take two different presignatures.
        let (a, b) = tokio::join!(
            wallet.sign_online(&key.key_id, prehash("a")),
            wallet.sign_online(&key.key_id, prehash("b"))
        );
        assert_libsecp(&a.unwrap(), &key.public_key, prehash("a"));
        assert_libsecp(&b.unwrap(), &key.public_key, prehash("b"));
        let used: Vec<String> = store.deleted.lock().unwrap().keys().cloned().collect();
        assert_eq!(used.len(), 2);

        // The send fails after the presignature left the store (the process
        // could as well have died here): it is gone for good.
        let dead = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("ws://{}", listener.local_addr().unwrap())
        };
        let offline = wallet_at(
            &dead,
            &server.rest,
            "dave",
            Arc::clone(&shared),
            STORAGE_KEY,
        );
        assert!(matches!(
            offline.sign_online(&key.key_id, prehash("lost")).await,
            Err(ClientError::Network { .. })
        ));
        assert_eq!(presig_names(&store).len(), 1);
        let lost = store
            .deleted
            .lock()
            .unwrap()
            .keys()
            .find(|n| !used.contains(n))
            .cloned()
            .unwrap();

        // A restored blob of a taken presignature is refused by the wallet:
        // the next online step takes the other one, then the pool is empty.
        for name in used.iter().chain([&lost]) {
            let blob = store.deleted.lock().unwrap()[name].clone();
            store.inner.put(name, &blob).unwrap();
        }
        assert_eq!(wallet.key(&key.key_id).unwrap().presignatures, 1);
        let last = wallet
            .sign_online(&key.key_id, prehash("last"))
            .await
            .unwrap();
        assert_libsecp(&last, &key.public_key, prehash("last"));
        assert_eq!(
            wallet
                .sign_online(&key.key_id, prehash("again"))
                .await
                .unwrap_err(),
            ClientError::NoPresignatures
        );

        // A restore of an older device backup (blob and no spent marker) of a
        // presignature the server used: the server refuses it.
        for name in &used {
            store
                .inner
                .delete(&name.replace(".presig.", ".spent."))
                .unwrap();
        }
        assert_eq!(wallet.key(&key.key_id).unwrap().presignatures, 2);
        for _ in 0..2 {
            assert_eq!(
                wallet
                    .sign_online(&key.key_id, prehash("replay"))
                    .await
                    .unwrap_err(),
                ClientError::NotFound {
                    what: "presignature".into()
                }
            );
        }
        // The key still signs: a refused replay is not a ban.
        wallet
            .sign(&key.key_id, prehash("still"), None)
            .await
            .unwrap();

        // The wallet is dropped mid-send (the task is aborted while its
        // connection waits on a server that never answers): the
        // presignature it took is gone, and its restored blob is refused.
        let before: Vec<String> = store.deleted.lock().unwrap().keys().cloned().collect();
        assert_eq!(wallet.presign(&key.key_id, 2).await.unwrap(), 2);
        let black_hole = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hole_url = format!("ws://{}", black_hole.local_addr().unwrap());
        let hanging = Arc::new(wallet_at(
            &hole_url,
            &server.rest,
            "dave",
            Arc::clone(&shared),
            STORAGE_KEY,
        ));
        let task = {
            let hanging = Arc::clone(&hanging);
            let key_id = key.key_id.clone();
            tokio::spawn(async move { hanging.sign_online(&key_id, prehash("dropped")).await })
        };
        let (_held, _) = black_hole.accept().await.unwrap();
        // Connected: the presignature left the store before this.
        assert_eq!(wallet.key(&key.key_id).unwrap().presignatures, 1);
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        drop(hanging);
        let taken = store
            .deleted
            .lock()
            .unwrap()
            .keys()
            .filter(|n| n.contains(".presig.") && !before.contains(n))
            .cloned()
            .collect::<Vec<_>>();
        assert_eq!(taken.len(), 1);
        let blob = store.deleted.lock().unwrap()[&taken[0]].clone();
        store.inner.put(&taken[0], &blob).unwrap();
        assert_eq!(wallet.key(&key.key_id).unwrap().presignatures, 1);
        wallet
            .sign_online(&key.key_id, prehash("other"))
            .await
            .unwrap();
        assert_eq!(
            wallet
                .sign_online(&key.key_id, prehash("none"))
                .await
                .unwrap_err(),
            ClientError::NoPresignatures
        );

        // Agreeing on the epoch: the wallet lost the record that a refresh
        // finished (its old share and pointer restored). The server refuses
        // the old epoch (4104); the wallet signs, and refreshes, with the
        // newer share it holds and makes it current.
        let share0 = format!("{}.0.share", key.key_id);
        let current = format!("{}.current", key.key_id);
        let roll_back = |epoch: u64| {
            let name = format!("{}.{epoch}.share", key.key_id);
            let blob = store.deleted.lock().unwrap()[&name].clone();
            store.inner.put(&name, &blob).unwrap();
            store
                .inner
                .put(&current, format!("{epoch}\n").as_bytes())
                .unwrap();
        };
        assert_eq!(wallet.refresh(&key.key_id).await.unwrap(), 1);
        roll_back(0);
        assert_eq!(wallet.key(&key.key_id).unwrap().epoch, 0);
        let signed = wallet
            .sign(&key.key_id, prehash("agree"), None)
            .await
            .unwrap();
        assert_libsecp(&signed, &key.public_key, prehash("agree"));
        assert_eq!(wallet.key(&key.key_id).unwrap().epoch, 1);
        assert_eq!(store.get(&share0).unwrap(), None);
        roll_back(0);
        assert_eq!(wallet.refresh(&key.key_id).await.unwrap(), 2);
        assert_eq!(wallet.key(&key.key_id).unwrap().epoch, 2);
        wallet
            .sign(&key.key_id, prehash("agreed"), None)
            .await
            .unwrap();
    })
    .await;
}

// ---------------------------------------------------------------------------
// The file store

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_refuses_tampered_swapped_foreign_and_open_files() {
    let server = start_server();
    bounded(async {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("w");
        let open = || -> Arc<dyn ShareStore> { Arc::new(FileStore::open(&dir).unwrap()) };
        let wallet = wallet(&server, "erin", open());
        let k1 = wallet.keygen().await.unwrap();
        let k2 = wallet.keygen().await.unwrap();
        let share1 = dir.join(format!("{}.0.share", k1.key_id));
        let share2 = dir.join(format!("{}.0.share", k2.key_id));
        let good1 = std::fs::read(&share1).unwrap();
        let good2 = std::fs::read(&share2).unwrap();
        let corrupt = |name: &Path| ClientError::Corrupt {
            name: name.file_name().unwrap().to_str().unwrap().to_owned(),
        };

        // Tampered (one bit), truncated, swapped between keys: typed
        // errors, for signing as for listing.
        let mut flipped = good1.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x10;
        for bad in [
            flipped,
            good1[..good1.len() - 1].to_vec(),
            good1[..10].to_vec(),
            Vec::new(),
            good2.clone(),
        ] {
            std::fs::write(&share1, &bad).unwrap();
            assert_eq!(wallet.key(&k1.key_id).unwrap_err(), corrupt(&share1));
            assert_eq!(
                wallet
                    .sign(&k1.key_id, prehash("t"), None)
                    .await
                    .unwrap_err(),
                corrupt(&share1)
            );
            assert_eq!(wallet.keys().unwrap_err(), corrupt(&share1));
        }
        std::fs::write(&share1, &good1).unwrap();
        wallet.sign(&k1.key_id, prehash("ok"), None).await.unwrap();

        // Another storage key opens nothing.
        let foreign = wallet_at(&server.ws, &server.rest, "erin", open(), [1; 32]);
        assert_eq!(foreign.key(&k2.key_id).unwrap_err(), corrupt(&share2));

        // A garbled epoch pointer is typed too.
        let current = dir.join(format!("{}.current", k1.key_id));
        std::fs::write(&current, b"zero\n").unwrap();
        assert_eq!(wallet.key(&k1.key_id).unwrap_err(), corrupt(&current));
        std::fs::write(&current, b"0\n").unwrap();

        // Open permissions: the file, then the directory, are refused.
        std::fs::set_permissions(&share1, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            wallet.key(&k1.key_id),
            Err(ClientError::Store(StoreError::InsecurePermissions {
                mode: 0o640,
                ..
            }))
        ));
        assert!(matches!(
            FileStore::open(&dir),
            Err(StoreError::InsecurePermissions { .. })
        ));
        std::fs::set_permissions(&share1, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(
            FileStore::open(&dir),
            Err(StoreError::InsecurePermissions { mode: 0o755, .. })
        ));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();

        // A crash during a write: a stray, partial temporary file next to
        // the share. Reopened, the previous version is read and the stray
        // file is no entry; the next write replaces the share atomically.
        let stray = dir.join(format!(".{}.0.share.00000000deadbeef.tmp", k1.key_id));
        std::fs::write(&stray, &good1[..good1.len() / 3]).unwrap();
        std::fs::set_permissions(&stray, std::fs::Permissions::from_mode(0o600)).unwrap();
        let reopened = wallet_at(&server.ws, &server.rest, "erin", open(), STORAGE_KEY);
        assert_eq!(
            reopened.key(&k1.key_id).unwrap(),
            wallet.key(&k1.key_id).unwrap()
        );
        assert!(!open().list().unwrap().iter().any(|n| n.ends_with(".tmp")));
        reopened
            .sign(&k1.key_id, prehash("after crash"), None)
            .await
            .unwrap();
        reopened.refresh(&k1.key_id).await.unwrap();
        assert_eq!(reopened.key(&k1.key_id).unwrap().epoch, 1);
    })
    .await;
}
