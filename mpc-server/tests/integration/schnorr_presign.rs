//! Presigned BIP340 signing through the real server binary (PROTOCOL.md
//! §20.5), on SQLite and PostgreSQL: presign, then the online round at the
//! root, under a path and with the Taproot tweak, each signature checked by
//! libsecp256k1 under an output key computed without our code; a replayed
//! online opening of a used presignature is refused; a presignature of one
//! scheme is never found by the other scheme's online step (and stays
//! usable by its own); an online opening naming another path spends the
//! presignature without signing; audit and metrics name the scheme.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::common;

use common::*;
use k256::elliptic_curve::sec1::ToEncodedPoint;
use mpc_core::sign::ClaimSet;
use mpc_core::{
    DerivationPath, KeyShare, OnlineSign, Prehash, SchnorrOnline, SchnorrPresignature,
    SchnorrSignature, Taproot,
};
use mpc_transport_ws::{Client, CloseCode, Operation};

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// Checks `out` with libsecp256k1 under the output key computed from the
/// derived key with libsecp256k1's x-only tweak and a hand-written BIP341
/// tagged hash.
fn verify_independently(
    share: &KeyShare,
    path: &DerivationPath,
    taproot: Taproot,
    message: &[u8; 32],
    out: &SchnorrSignature,
) {
    let (derived, _) = share.derive(path).unwrap();
    let internal: [u8; 32] = derived.to_encoded_point(true).as_bytes()[1..]
        .try_into()
        .unwrap();
    let secp = secp256k1::Secp256k1::verification_only();
    let internal_key = secp256k1::XOnlyPublicKey::from_slice(&internal).unwrap();
    let output = match taproot {
        Taproot::Off => internal_key,
        Taproot::KeyPathOnly | Taproot::MerkleRoot(_) => {
            let tag = sha256(b"TapTweak");
            let mut data = [tag, tag].concat();
            data.extend_from_slice(&internal);
            if let Taproot::MerkleRoot(root) = taproot {
                data.extend_from_slice(&root);
            }
            let tweak = secp256k1::Scalar::from_be_bytes(sha256(&data)).unwrap();
            internal_key.add_tweak(&secp, &tweak).unwrap().0
        }
    };
    assert_eq!(out.internal_key, internal);
    assert_eq!(out.public_key, output.serialize());
    let sig = secp256k1::schnorr::Signature::from_slice(&out.signature).unwrap();
    secp.verify_schnorr(&sig, &secp256k1::Message::from_digest(*message), &output)
        .expect("libsecp256k1 rejects the signature");
}

/// Runs an online opening for `presignature` (a session id of either
/// scheme) with the client side of `protocol`, bypassing the client's own
/// checks, as a replaying or confused client would.
async fn raw_online_schnorr(
    client: &Client,
    share: &KeyShare,
    presignature: mpc_core::wire::SessionId,
    path: &DerivationPath,
    protocol: SchnorrOnline<'_>,
) -> mpc_transport_ws::TransportError {
    client
        .run(
            Operation::OnlineSignSchnorr {
                key_id: *share.key_id(),
                presignature,
                message: [7; 32],
                path: path.clone(),
                taproot: Taproot::Off,
            },
            move |_| protocol,
        )
        .await
        .unwrap_err()
}

async fn presign_then_online(db: &Db) {
    let server = Launch::new(db).start();
    let client = server.client("alice");
    let share = client.keygen().await.unwrap();
    let root = DerivationPath::root();
    let child = path("m/0/5");
    let cases = [
        (&root, Taproot::Off),
        (&child, Taproot::Off),
        (&root, Taproot::KeyPathOnly),
        (&child, Taproot::MerkleRoot(sha256(b"a script tree"))),
    ];
    let mut first_bytes = None;
    for (i, (path, taproot)) in cases.iter().enumerate() {
        let presignature = client
            .presign_schnorr(&share, path, *taproot)
            .await
            .unwrap();
        first_bytes.get_or_insert_with(|| presignature.to_bytes().to_vec());
        let message = sha256(&[u8::try_from(i).unwrap()]);
        let out = client
            .online_sign_schnorr(
                &share,
                presignature,
                message,
                path,
                *taproot,
                &mut ClaimSet::new(),
            )
            .await
            .unwrap();
        verify_independently(&share, path, *taproot, &message, &out);
    }

    // Replay: the client restores its used presignature (and forgets its
    // claim); the server's row is claimed, so the opening is refused.
    let restored = SchnorrPresignature::from_bytes(first_bytes.as_ref().unwrap()).unwrap();
    let sid = restored.session_id();
    let protocol = SchnorrOnline::new(
        &share,
        restored,
        &[7; 32],
        &root,
        Taproot::Off,
        &mut ClaimSet::new(),
    )
    .unwrap();
    let replay = raw_online_schnorr(&client, &share, sid, &root, protocol).await;
    assert_eq!(replay.close_code(), Some(CloseCode::NOT_FOUND), "{replay}");

    // Cross-scheme, ECDSA -> Schnorr: an ECDSA presignature's id in a
    // Schnorr online opening is not found, and the row stays usable.
    let ecdsa = client.presign(&share).await.unwrap();
    let spare = client
        .presign_schnorr(&share, &root, Taproot::Off)
        .await
        .unwrap();
    let protocol = SchnorrOnline::new(
        &share,
        spare,
        &[7; 32],
        &root,
        Taproot::Off,
        &mut ClaimSet::new(),
    )
    .unwrap();
    let crossed = raw_online_schnorr(&client, &share, ecdsa.session_id(), &root, protocol).await;
    assert_eq!(
        crossed.close_code(),
        Some(CloseCode::NOT_FOUND),
        "{crossed}"
    );
    let prehash = Prehash::sha256(b"ecdsa after the crossed attempt");
    let out = client
        .online_sign(&share, ecdsa, prehash, &mut ClaimSet::new())
        .await
        .unwrap();
    verify_with_libsecp(&share.public_key(), &prehash, &out);

    // Cross-scheme, Schnorr -> ECDSA: the same, the other way.
    let schnorr = client
        .presign_schnorr(&share, &root, Taproot::Off)
        .await
        .unwrap();
    let decoy = client.presign(&share).await.unwrap();
    let online = OnlineSign::new(&share, decoy, prehash, &mut ClaimSet::new()).unwrap();
    let crossed = client
        .run(
            Operation::OnlineSign {
                key_id: *share.key_id(),
                presignature: schnorr.session_id(),
                prehash,
            },
            move |_| online,
        )
        .await
        .unwrap_err();
    assert_eq!(
        crossed.close_code(),
        Some(CloseCode::NOT_FOUND),
        "{crossed}"
    );
    let message = sha256(b"schnorr after the crossed attempt");
    let out = client
        .online_sign_schnorr(
            &share,
            schnorr,
            message,
            &root,
            Taproot::Off,
            &mut ClaimSet::new(),
        )
        .await
        .unwrap();
    verify_independently(&share, &root, Taproot::Off, &message, &out);

    // An online opening naming another path than the presignature's: the
    // server claims the row, refuses (4105) and signs nothing; the
    // presignature is spent.
    let presignature = client
        .presign_schnorr(&share, &root, Taproot::Off)
        .await
        .unwrap();
    let sid = presignature.session_id();
    let bytes = presignature.to_bytes();
    let protocol = SchnorrOnline::new(
        &share,
        presignature,
        &[7; 32],
        &root,
        Taproot::Off,
        &mut ClaimSet::new(),
    )
    .unwrap();
    let wrong = raw_online_schnorr(&client, &share, sid, &child, protocol).await;
    assert_eq!(wrong.close_code(), Some(CloseCode(4105)), "{wrong}");
    let again = SchnorrPresignature::from_bytes(&bytes).unwrap();
    let protocol = SchnorrOnline::new(
        &share,
        again,
        &[7; 32],
        &root,
        Taproot::Off,
        &mut ClaimSet::new(),
    )
    .unwrap();
    let spent = raw_online_schnorr(&client, &share, sid, &root, protocol).await;
    assert_eq!(spent.close_code(), Some(CloseCode::NOT_FOUND), "{spent}");

    // Audit: five presigned BIP340 signatures, none for the refused ones.
    let log: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}/v1/keys/{}/audit",
            server.rest_url,
            share.key_id()
        ))
        .bearer_auth(token("alice"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let presigned = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["event"] == "sign"
                && e["detail"]["scheme"] == "bip340"
                && e["detail"]["presigned"] == true
        })
        .count();
    assert_eq!(presigned, cases.len() + 1, "{log}");
    // Counted as each session ends on the server (polled, bounded).
    let want = [
        r#"mpc_sessions_total{protocol="online-sign-bip340",outcome="ok"} 5"#,
        r#"mpc_sessions_total{protocol="presign-bip340",outcome="ok"} 7"#,
    ];
    metrics_containing(&server.rest_url, &want).await;
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_bip340_replay_and_cross_scheme_on_sqlite() {
    bounded(presign_then_online(&Db::sqlite())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_bip340_replay_and_cross_scheme_on_postgres() {
    if skip_postgres() {
        return;
    }
    bounded(async { presign_then_online(&Db::postgres().await).await }).await;
}
