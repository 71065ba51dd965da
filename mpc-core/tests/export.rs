//! Export: the combined key is checked by libsecp256k1; ciphertexts for
//! another key, epoch or one-time key fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    unreachable_pub
)]

mod common;

use common::dkg_pair;
use mpc_core::export::{export_share, import_export, ExportCiphertext};
use mpc_core::{Error, KeyShare};

#[test]
fn exported_key_matches_the_public_key_under_libsecp256k1() {
    let mut rng = common::rng(1);
    for seed in 0..3 {
        let (client, server) = dkg_pair(seed);
        let onetime = k256::SecretKey::random(&mut rng);
        let ciphertext = export_share(&mut rng, &server, &onetime.public_key()).unwrap();
        let decoded = ExportCiphertext::from_bytes(&ciphertext.to_bytes()).unwrap();
        assert_eq!(decoded, ciphertext);
        let secret = import_export(&client, &onetime, &decoded).unwrap();
        let secp = secp256k1::Secp256k1::signing_only();
        let sk = secp256k1::SecretKey::from_slice(&secret.to_bytes()).unwrap();
        let pk = secp256k1::PublicKey::from_secret_key(&secp, &sk);
        assert_eq!(
            pk.serialize().as_slice(),
            client.public_key().to_sec1_bytes().as_ref()
        );
    }
}

#[test]
fn wrong_key_epoch_onetime_key_or_tampering_fails() {
    let mut rng = common::rng(2);
    let (client, server) = dkg_pair(10);
    let onetime = k256::SecretKey::random(&mut rng);
    let ciphertext = export_share(&mut rng, &server, &onetime.public_key()).unwrap();
    let bytes = ciphertext.to_bytes();

    // Another key's owner.
    let (other_client, _) = dkg_pair(11);
    assert_eq!(
        import_export(&other_client, &onetime, &ciphertext).err(),
        Some(Error::KeyMismatch)
    );
    // Another one-time key.
    let other_onetime = k256::SecretKey::random(&mut rng);
    assert_eq!(
        import_export(&client, &other_onetime, &ciphertext).err(),
        Some(Error::ExportFailed)
    );
    // The server's own share as "owner" (wrong role).
    assert_eq!(
        import_export(&server, &onetime, &ciphertext).err(),
        Some(Error::KeyMismatch)
    );
    // Another epoch: the label says epoch 1, the AEAD's associated data
    // bound epoch 0 and the share is epoch 0.
    let mut epoch = bytes.clone();
    epoch[1 + 32 + 7] = 1;
    let relabelled = ExportCiphertext::from_bytes(&epoch).unwrap();
    assert_eq!(
        import_export(&client, &onetime, &relabelled).err(),
        Some(Error::KeyMismatch)
    );
    let mut client_epoch1 = client.to_bytes().to_vec();
    client_epoch1[34] = 1;
    let client_epoch1 = KeyShare::from_bytes(&client_epoch1).unwrap();
    assert_eq!(
        import_export(&client_epoch1, &onetime, &relabelled).err(),
        Some(Error::ExportFailed)
    );
    // Any flipped byte after the header fails to decrypt.
    for offset in [42, 43, 60, 75, 76, 90, 99, 100, 130, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[offset] ^= 1;
        let result =
            ExportCiphertext::from_bytes(&bad).map(|c| import_export(&client, &onetime, &c));
        assert!(
            matches!(result, Ok(Err(_)) | Err(_)),
            "offset {offset} accepted"
        );
    }
    assert_eq!(
        ExportCiphertext::from_bytes(&bytes[1..]).err(),
        Some(Error::WrongLength)
    );
}
