//! Verifiable backup: valid backups verify and decrypt to the share; any
//! change, a wrong label, public share or recovery key is rejected.
use crate::common;

use common::dkg_pair;
use k256::elliptic_curve::ops::MulByGenerator;
use mpc_core::backup::{Backup, BACKUP_BYTES};
use mpc_core::wire::{encode_point, Role};
use mpc_core::Error;

#[test]
fn valid_backup_verifies_and_decrypts_to_the_share() {
    let mut rng = common::rng(1);
    let (client, server) = dkg_pair(1);
    for share in [&server, &client] {
        let recovery = k256::SecretKey::random(&mut rng);
        let backup = Backup::create(&mut rng, share, &recovery.public_key());
        let bytes = backup.to_bytes();
        assert_eq!(bytes.len(), BACKUP_BYTES);
        let decoded = Backup::from_bytes(&bytes).unwrap();
        assert_eq!(decoded, backup);
        let public_share = share.public_share(share.role());
        decoded
            .verify(&public_share, &recovery.public_key())
            .unwrap();
        assert_eq!(decoded.label().key_id, *share.key_id());
        assert_eq!(decoded.label().role, share.role());
        let secret = decoded.decrypt(&recovery).unwrap();
        assert_eq!(
            k256::ProjectivePoint::mul_by_generator(&*secret.to_nonzero_scalar()),
            public_share
        );
        // Wrong recovery secret: nothing decrypts.
        let other = k256::SecretKey::random(&mut rng);
        assert_eq!(
            decoded.decrypt(&other).err(),
            Some(Error::BackupDecryptionFailed)
        );
    }
}

#[test]
fn any_change_or_wrong_context_is_rejected() {
    let mut rng = common::rng(2);
    let (_, server) = dkg_pair(2);
    let recovery = k256::SecretKey::random(&mut rng);
    let backup = Backup::create(&mut rng, &server, &recovery.public_key());
    let bytes = backup.to_bytes();
    let public_share = server.public_share(Role::B);
    let check = |b: &[u8]| {
        Backup::from_bytes(b)
            .and_then(|backup| backup.verify(&public_share, &recovery.public_key()))
    };
    assert!(check(&bytes).is_ok());

    // Label: version, key id, role, epoch.
    for offset in [0, 1, 32, 33, 41] {
        let mut bad = bytes.clone();
        bad[offset] ^= 1;
        assert!(check(&bad).is_err(), "label byte {offset}");
    }
    // Public share, recovery key, challenge, and every part of the first,
    // a middle and the last row: X_0, c_0, c_1, unopened R, opened seed.
    let header = 42 + 33 + 33 + 16;
    let mut offsets = vec![42 + 5, 42 + 33 + 5, header - 16, header - 1];
    for row in [0, 63, 127] {
        for field in [1, 33 + 31, 65 + 31, 97 + 5, 130 + 31] {
            offsets.push(header + row * 162 + field);
        }
    }
    for offset in offsets {
        let mut bad = bytes.clone();
        bad[offset] ^= 0x01;
        assert!(check(&bad).is_err(), "byte {offset} accepted");
    }
    // The stored public share or recovery key swapped for another valid
    // point: the proof is checked against the caller's, so only the
    // comparison with the stored ones refuses it (decryption uses the
    // stored ones: such a backup would verify and never decrypt).
    let other = k256::SecretKey::random(&mut rng);
    let swaps = [
        (42, server.public_share(Role::A)),
        (75, other.public_key().to_projective()),
    ];
    for (offset, point) in swaps {
        let mut swapped = bytes.clone();
        swapped[offset..offset + 33].copy_from_slice(&encode_point(&point));
        assert_eq!(
            check(&swapped).err(),
            Some(Error::InvalidBackup),
            "stored point at {offset} swapped"
        );
    }
    // Wrong public share, wrong recovery key.
    assert_eq!(
        backup
            .verify(&server.public_share(Role::A), &recovery.public_key())
            .err(),
        Some(Error::InvalidBackup)
    );
    let other = k256::SecretKey::random(&mut rng);
    assert_eq!(
        backup.verify(&public_share, &other.public_key()).err(),
        Some(Error::InvalidBackup)
    );
    assert_eq!(
        Backup::from_bytes(&bytes[1..]).err(),
        Some(Error::WrongLength)
    );
}

/// Decryption tries rows until one gives the share (PROTOCOL.md §17): one intact row is
/// enough, whichever of its halves the challenge opened, and a backup with
/// no intact row decrypts to nothing.
#[test]
fn any_one_intact_row_decrypts_whichever_half_it_opened() {
    const HEADER: usize = 42 + 33 + 33 + 16;
    const ROW: usize = 162;
    let mut rng = common::rng(3);
    let (client, _) = dkg_pair(3);
    let recovery = k256::SecretKey::random(&mut rng);
    let bytes = Backup::create(&mut rng, &client, &recovery.public_key()).to_bytes();
    let public_share = client.public_share(client.role());
    let challenge = &bytes[HEADER - 16..HEADER];
    let opened = |row: usize| (challenge[row / 8] >> (row % 8)) & 1;
    // Both ciphertexts of a row set to the scalar 1: still decodable, no
    // longer the share.
    let spoil = |backup: &mut [u8], row: usize| {
        let mut one = [0u8; 32];
        one[31] = 1;
        let c = HEADER + row * ROW + 33;
        backup[c..c + 32].copy_from_slice(&one);
        backup[c + 32..c + 64].copy_from_slice(&one);
    };
    for half in [0u8, 1] {
        // The last row with this half opened, so that every row tried
        // before it is a spoiled one.
        let intact = (0..128).rev().find(|&row| opened(row) == half).unwrap();
        let mut spoiled = bytes.clone();
        for row in (0..128).filter(|&row| row != intact) {
            spoil(&mut spoiled, row);
        }
        let secret = Backup::from_bytes(&spoiled)
            .unwrap()
            .decrypt(&recovery)
            .unwrap();
        assert_eq!(
            k256::ProjectivePoint::mul_by_generator(&*secret.to_nonzero_scalar()),
            public_share,
            "only row {intact} (opened half {half}) intact"
        );
    }
    let mut spoiled = bytes.clone();
    for row in 0..128 {
        spoil(&mut spoiled, row);
    }
    assert_eq!(
        Backup::from_bytes(&spoiled)
            .unwrap()
            .decrypt(&recovery)
            .err(),
        Some(Error::BackupDecryptionFailed)
    );
}
