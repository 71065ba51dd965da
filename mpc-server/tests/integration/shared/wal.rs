//! Counting commits in a SQLite WAL file; shared by the integration tests
//! and the storage unit tests through `#[path]`.

/// The commits in a SQLite WAL file: (the salt of its current generation,
/// commit frames of that generation). Each commit is one fsync with
/// `synchronous=FULL`. Format: a 32-byte header (page size at 8, salt at
/// 16..24), then frames of a 24-byte header (database size after a commit
/// at 4, non-zero only in a transaction's last frame; salt at 8..16) and a
/// page; frames with another salt are left over from an earlier
/// generation and end the log.
pub(crate) fn wal_commits(db: &std::path::Path) -> ([u8; 8], usize) {
    let wal = std::fs::read(db.with_extension("db-wal")).unwrap();
    assert!(wal.len() >= 32, "no WAL header");
    let be32 = |at: usize| u32::from_be_bytes(wal[at..at + 4].try_into().unwrap());
    assert_eq!(be32(0) & !1, 0x377f_0682, "not a WAL file");
    let page = usize::try_from(be32(8)).unwrap();
    let salt: [u8; 8] = wal[16..24].try_into().unwrap();
    let mut commits = 0;
    let mut frame = 32;
    while frame + 24 + page <= wal.len() && wal[frame + 8..frame + 16] == salt {
        if be32(frame + 4) != 0 {
            commits += 1;
        }
        frame += 24 + page;
    }
    (salt, commits)
}
