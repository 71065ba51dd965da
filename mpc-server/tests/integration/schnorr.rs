//! Two-party BIP340 signing through the real server binary (PROTOCOL.md
//! §20): keygen, then Schnorr signatures at the root, under a BIP32 path and
//! with the Taproot tweak, each checked by libsecp256k1 under an output key
//! computed without our code; the same ownership, epoch and ban rules as
//! ECDSA; a tampering client aborts without a signature or a ban; many
//! concurrent sessions on one key; the audit log and metrics name the scheme.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::common;

use std::collections::HashSet;

use common::*;
use k256::elliptic_curve::sec1::ToEncodedPoint;
use mpc_core::{DerivationPath, KeyShare, SchnorrSignature, SignSchnorr, Taproot};
use mpc_transport_ws::{Client, CloseCode, Opening, Operation, TransportError};
use rand_core::OsRng;

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// `(internal, output)` x-only keys computed from the `bip32`-checked
/// derivation of `mpc_core` and libsecp256k1's x-only tweak, with the
/// BIP341 tagged hash written out here.
fn expected_keys(
    share: &KeyShare,
    path: &DerivationPath,
    taproot: Taproot,
) -> ([u8; 32], [u8; 32]) {
    let (derived, _) = share.derive(path).unwrap();
    let internal: [u8; 32] = derived.to_encoded_point(true).as_bytes()[1..]
        .try_into()
        .unwrap();
    let root = match taproot {
        Taproot::Off => return (internal, internal),
        Taproot::KeyPathOnly => None,
        Taproot::MerkleRoot(root) => Some(root),
    };
    let tag = sha256(b"TapTweak");
    let mut data = [tag, tag].concat();
    data.extend_from_slice(&internal);
    if let Some(root) = root {
        data.extend_from_slice(&root);
    }
    let tweak = secp256k1::Scalar::from_be_bytes(sha256(&data)).unwrap();
    let secp = secp256k1::Secp256k1::verification_only();
    let (output, _) = secp256k1::XOnlyPublicKey::from_slice(&internal)
        .unwrap()
        .add_tweak(&secp, &tweak)
        .unwrap();
    (internal, output.serialize())
}

fn verify_independently(
    share: &KeyShare,
    path: &DerivationPath,
    taproot: Taproot,
    message: &[u8; 32],
    out: &SchnorrSignature,
) {
    let (internal, output) = expected_keys(share, path, taproot);
    assert_eq!(out.internal_key, internal);
    assert_eq!(out.public_key, output);
    let secp = secp256k1::Secp256k1::verification_only();
    let key = secp256k1::XOnlyPublicKey::from_slice(&output).unwrap();
    let sig = secp256k1::schnorr::Signature::from_slice(&out.signature).unwrap();
    secp.verify_schnorr(&sig, &secp256k1::Message::from_digest(*message), &key)
        .expect("libsecp256k1 rejects the signature");
}

async fn sign_checked(
    client: &Client,
    share: &KeyShare,
    message: &[u8],
    path: &DerivationPath,
    taproot: Taproot,
) -> SchnorrSignature {
    let message = sha256(message);
    let out = client
        .sign_schnorr(share, message, path, taproot)
        .await
        .unwrap();
    verify_independently(share, path, taproot, &message, &out);
    out
}

async fn rest_json(server: &TestServer, owner: &str, route: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("{}{route}", server.rest_url))
        .bearer_auth(token(owner))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn root_path_and_taproot(db: &Db) {
    let server = Launch::new(db).start();
    let client = server.client("alice");
    let share = client.keygen().await.unwrap();
    let root = DerivationPath::root();
    let child = path("m/0/5");
    let merkle_root = sha256(b"a script tree");
    let cases = [
        (&root, Taproot::Off),
        (&child, Taproot::Off),
        (&root, Taproot::KeyPathOnly),
        (&child, Taproot::KeyPathOnly),
        (&child, Taproot::MerkleRoot(merkle_root)),
    ];
    let mut nonces = HashSet::new();
    for (i, (path, taproot)) in cases.iter().enumerate() {
        let out = sign_checked(&client, &share, &[u8::try_from(i).unwrap()], path, *taproot).await;
        assert!(nonces.insert(out.signature[..32].to_vec()));
    }
    // ECDSA still signs with the same share afterwards.
    sign_and_verify(&client, &share, b"ecdsa after schnorr").await;

    // The audit log names the scheme and the tweak of each signature.
    let log = rest_json(
        &server,
        "alice",
        &format!("/v1/keys/{}/audit", share.key_id()),
    )
    .await;
    let schnorr: Vec<_> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "sign" && e["detail"]["scheme"] == "bip340")
        .collect();
    assert_eq!(schnorr.len(), cases.len(), "{log}");
    let modes: HashSet<_> = schnorr
        .iter()
        .map(|e| e["detail"]["taproot"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        modes,
        HashSet::from(["off", "key-path", "merkle-root"].map(String::from))
    );
    assert!(schnorr
        .iter()
        .any(|e| e["detail"]["merkle_root"] == hex::encode(merkle_root)));
    // Metrics count the scheme apart from ECDSA signing (counted as each
    // session ends on the server, so polled).
    metrics_containing(
        &server.rest_url,
        &[
            r#"mpc_sessions_total{protocol="sign-bip340",outcome="ok"} 5"#,
            r#"mpc_sessions_total{protocol="sign",outcome="ok"} 1"#,
        ],
    )
    .await;
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_then_bip340_at_root_path_and_taproot_on_sqlite() {
    bounded(root_path_and_taproot(&Db::sqlite())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_then_bip340_at_root_path_and_taproot_on_postgres() {
    if skip_postgres() {
        return;
    }
    bounded(async { root_path_and_taproot(&Db::postgres().await).await }).await;
}

/// A client socket that flips one byte, `back` bytes before the end, of its
/// `message`-th protocol message.
struct FlipByte<F> {
    inner: F,
    message: usize,
    back: usize,
    seen: usize,
}

impl<F: mpc_transport_ws::Frames> mpc_transport_ws::Frames for FlipByte<F> {
    async fn send_binary(&mut self, mut data: Vec<u8>) -> Result<(), mpc_transport_ws::FrameError> {
        // Frame kind 2: a protocol message.
        if data.first() == Some(&2) {
            self.seen += 1;
            if self.seen == self.message {
                let at = data.len() - 1 - self.back;
                data[at] ^= 1;
            }
        }
        self.inner.send_binary(data).await
    }

    async fn send_ping(&mut self) -> Result<(), mpc_transport_ws::FrameError> {
        self.inner.send_ping().await
    }

    async fn recv(
        &mut self,
    ) -> Option<Result<mpc_transport_ws::Incoming, mpc_transport_ws::FrameError>> {
        self.inner.recv().await
    }

    async fn flush(&mut self) -> Result<(), mpc_transport_ws::FrameError> {
        self.inner.flush().await
    }

    async fn close(&mut self, code: u16, reason: &str) -> Result<(), mpc_transport_ws::FrameError> {
        self.inner.close(code, reason).await
    }
}

/// Signs as a client that alters its round-2 message `back` bytes from the
/// end; returns the client's error.
async fn sign_tampered(client: &Client, share: &KeyShare, back: usize) -> TransportError {
    let message = sha256(b"tampered");
    let root = DerivationPath::root();
    let opening = Opening::new(
        Operation::SignSchnorr {
            key_id: *share.key_id(),
            epoch: share.epoch(),
            message,
            path: root.clone(),
            taproot: Taproot::KeyPathOnly,
        },
        &mut OsRng,
    );
    let frames = FlipByte {
        inner: client.connect().await.unwrap(),
        message: 2,
        back,
        seen: 0,
    };
    let mut sign = SignSchnorr::new(share, &message, &root, Taproot::KeyPathOnly).unwrap();
    mpc_transport_ws::run_client(frames, &opening, &mut sign, &mut OsRng, client.config())
        .await
        .unwrap_err()
}

/// A wrong partial signature (last byte of `s_A`) or a different message
/// digest (last byte of the message): the server aborts (4001) and releases
/// nothing; the failure is abort-class, so the key is not banned and signs
/// again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_client_is_aborted_without_a_ban() {
    bounded(async {
        let db = Db::sqlite();
        let server = Launch::new(&db).start();
        let client = server.client("carol");
        let share = client.keygen().await.unwrap();
        for back in [32, 0] {
            let error = sign_tampered(&client, &share, back).await;
            assert_eq!(
                error.close_code(),
                Some(CloseCode::PROTOCOL_ABORT),
                "{error}"
            );
        }
        let log = rest_json(
            &server,
            "carol",
            &format!("/v1/keys/{}/audit", share.key_id()),
        )
        .await;
        assert!(
            !log["entries"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["event"] == "sign" || e["event"] == "key.banned"),
            "{log}"
        );
        sign_checked(
            &client,
            &share,
            b"after",
            &DerivationPath::root(),
            Taproot::Off,
        )
        .await;
        server.kill();
    })
    .await;
}

/// The rules of ECDSA signing hold for Schnorr: another owner's key is
/// reported as missing, an epoch the server does not hold is refused, and a
/// key banned by a (ECDSA) ban-class failure signs no Schnorr either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ownership_epoch_and_ban_rules_apply() {
    bounded(async {
        let db = Db::sqlite();
        let server = Launch::new(&db).start();
        let share = server.client("dave").keygen().await.unwrap();
        let root = DerivationPath::root();
        let message = sha256(b"m");
        let stranger = server
            .client("eve")
            .sign_schnorr(&share, message, &root, Taproot::Off)
            .await
            .unwrap_err();
        assert_eq!(
            stranger.close_code(),
            Some(CloseCode::NOT_FOUND),
            "{stranger}"
        );
        // A share claiming another epoch: the server has no share of it.
        let wrong_epoch = server
            .client("dave")
            .run(
                Operation::SignSchnorr {
                    key_id: *share.key_id(),
                    epoch: 9,
                    message,
                    path: root.clone(),
                    taproot: Taproot::Off,
                },
                |_| SignSchnorr::new(&share, &message, &root, Taproot::Off).unwrap(),
            )
            .await
            .unwrap_err();
        assert_eq!(
            wrong_epoch.close_code(),
            Some(CloseCode(4104)),
            "{wrong_epoch}"
        );
        let error = sign_maliciously(&server.client("dave"), &share).await;
        assert_eq!(error.close_code(), Some(CloseCode::PROTOCOL_BAN), "{error}");
        let banned = server
            .client("dave")
            .sign_schnorr(&share, message, &root, Taproot::KeyPathOnly)
            .await
            .unwrap_err();
        assert_eq!(banned.close_code(), Some(CloseCode(4102)), "{banned}");
        server.kill();
    })
    .await;
}

/// Eight Schnorr sessions on one key at once (with two ECDSA ones mixed
/// in): every signature verifies and no two share a nonce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sessions_on_one_key() {
    bounded(async {
        let db = Db::sqlite();
        let server = Launch::new(&db).start();
        let client = server.client("fay");
        let share = client.keygen().await.unwrap();
        let root = DerivationPath::root();
        let schnorr = (0..8u8).map(|i| {
            let (client, share, root) = (&client, &share, &root);
            async move { sign_checked(client, share, &[i], root, Taproot::KeyPathOnly).await }
        });
        let ecdsa = (0..2u8).map(|i| {
            let (client, share) = (&client, &share);
            async move { sign_and_verify(client, share, &[i]).await }
        });
        let (outs, _) = futures_util::future::join(
            futures_util::future::join_all(schnorr),
            futures_util::future::join_all(ecdsa),
        )
        .await;
        let nonces: HashSet<_> = outs.iter().map(|o| o.signature[..32].to_vec()).collect();
        assert_eq!(nonces.len(), 8);
        server.kill();
    })
    .await;
}

/// Two server processes on one PostgreSQL database: a key made on one signs
/// BIP340 on the other, and a ban stored by one refuses Schnorr signing on
/// the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_postgres_share_keys_and_bans() {
    if skip_postgres() {
        return;
    }
    bounded(async {
        let db = Db::postgres().await;
        let one = Launch::new(&db).start();
        let two = Launch::new(&db).start();
        let share = one.client("gus").keygen().await.unwrap();
        let root = DerivationPath::root();
        sign_checked(
            &two.client("gus"),
            &share,
            b"on two",
            &root,
            Taproot::KeyPathOnly,
        )
        .await;
        let error = sign_maliciously(&one.client("gus"), &share).await;
        assert_eq!(error.close_code(), Some(CloseCode::PROTOCOL_BAN), "{error}");
        let banned = two
            .client("gus")
            .sign_schnorr(&share, sha256(b"after the ban"), &root, Taproot::Off)
            .await
            .unwrap_err();
        assert_eq!(banned.close_code(), Some(CloseCode(4102)), "{banned}");
        one.kill();
        two.kill();
    })
    .await;
}
