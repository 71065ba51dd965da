//! The raw SQLite files (database, WAL) hold no plaintext secret.

use std::collections::HashSet;

use super::testkit::{dkg, presign, refresh, test_db, vault, Kind};

/// Every 32-byte window of `secret` found in `haystack`, except windows of
/// the public values (stored in clear in their own columns) and windows
/// with no entropy to speak of: the share encoding has runs of zero bytes
/// (e.g. a punctured seed slot), and so has any database file. A window of
/// secret random bytes has about 24 distinct byte values; fewer than 8
/// happens by chance with probability far below 2^-40.
fn leaked_windows(secret: &[u8], haystack: &HashSet<&[u8]>, public: &[&[u8]]) -> usize {
    let distinct = |w: &[u8]| w.iter().collect::<HashSet<_>>().len();
    secret
        .windows(32)
        .filter(|w| distinct(w) >= 8)
        .filter(|w| haystack.contains(w))
        .filter(|w| !public.iter().any(|p| p.windows(32).any(|pw| pw == *w)))
        .count()
}

/// SQLite only: the files of a PostgreSQL server are not ours to read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_in_sqlite_files() {
    let db = test_db(Kind::Sqlite).await.unwrap();
    let path = db.sqlite_path.clone().unwrap();
    let opened = vault(&db, 1).await;
    let (a, b) = dkg();
    let key = opened.create_key("alice", &b, 1).await.unwrap();
    let presig = presign(&a, &b);
    opened.store_presignature(&key, &presig, 2).await.unwrap();
    let (_, next) = refresh(&a, &b);
    let lease = super::testkit::lease_at(&opened, &key.key_id, 0, 3_600_000).await;
    opened
        .store_refreshed(&lease, &key, &next, 3)
        .await
        .unwrap();
    let secrets = [b.to_bytes(), next.to_bytes(), presig.to_bytes()];
    let public_key = key.public_key;
    // The share encodes the public key and chain code next to each other,
    // as SQLite stores the two columns: windows across both are public too.
    let public_pair = [&public_key[..], &key.chain_code[..]].concat();
    let public: [&[u8]; 1] = [&public_pair];

    let check = |label: &str| {
        let mut files = Vec::new();
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut name = path.clone().into_os_string();
            name.push(suffix);
            if let Ok(bytes) = std::fs::read(&name) {
                files.push(bytes);
            }
        }
        assert!(!files.is_empty());
        let windows: HashSet<&[u8]> = files.iter().flat_map(|f| f.windows(32)).collect();
        for secret in &secrets {
            assert!(secret.len() > 64);
            assert!(files
                .iter()
                .all(|f| !f.windows(secret.len()).any(|w| w == &secret[..])));
            assert_eq!(leaked_windows(secret, &windows, &public), 0, "{label}");
        }
        // The check itself finds what is there: the stored public key.
        assert!(windows.contains(&public_key[..32]));
    };
    check("open, WAL in use");
    drop(opened);
    let reopened = vault(&db, 1).await;
    reopened.ping().await.unwrap();
    check("reopened");
}
