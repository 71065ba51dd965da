//! Test fixtures: a fresh database per test on each backend, and keys made
//! by running the real protocols in process.
//!
//! SQLite databases live in a temporary directory. PostgreSQL tests need
//! `MPC_TEST_POSTGRES_URL` (start a throwaway server with
//! `eval "$(scripts/postgres.sh start)"`); each test gets its own schema
//! there, so tests run in parallel without seeing each other's rows. With
//! `MPC_TEST_POSTGRES=skip` the PostgreSQL half of each test is skipped.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use mpc_core::local::run_pair;
use mpc_core::wire::Role;
use mpc_core::{Dkg, KeyShare, Presign, Presignature, Refresh};
use rand_core::{OsRng, RngCore};
use sqlx::{AnyConnection, Connection, Executor};
use tempfile::TempDir;

use crate::seal::LocalKek;
use crate::vault::Vault;

/// Which backend a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Sqlite,
    Postgres,
}

/// A database for one test.
pub(crate) struct TestDb {
    pub(crate) kind: Kind,
    pub(crate) url: String,
    /// The SQLite file, for tests that read it raw.
    pub(crate) sqlite_path: Option<PathBuf>,
    _dir: Option<TempDir>,
}

/// A fresh database of `kind`, or `None` if the PostgreSQL half is skipped
/// with `MPC_TEST_POSTGRES=skip`. Panics, saying how to start one, if
/// PostgreSQL is wanted but `MPC_TEST_POSTGRES_URL` is unset.
pub(crate) async fn test_db(kind: Kind) -> Option<TestDb> {
    match kind {
        Kind::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("vault.db");
            Some(TestDb {
                kind,
                url: format!("sqlite://{}", path.display()),
                sqlite_path: Some(path),
                _dir: Some(dir),
            })
        }
        Kind::Postgres => {
            let base = match std::env::var("MPC_TEST_POSTGRES_URL") {
                Ok(url) if !url.trim().is_empty() => url.trim().to_owned(),
                _ => {
                    if std::env::var("MPC_TEST_POSTGRES").as_deref() == Ok("skip") {
                        // Written past libtest's output capture, so that
                        // the skip shows in a normal run.
                        let _ = writeln!(
                            std::io::stderr(),
                            "MPC_TEST_POSTGRES=skip: skipped the PostgreSQL half of a storage test"
                        );
                        return None;
                    }
                    panic!(
                        "MPC_TEST_POSTGRES_URL is not set: run `eval \"$(scripts/postgres.sh start)\"` \
                         first (or set MPC_TEST_POSTGRES=skip to skip the PostgreSQL tests)"
                    );
                }
            };
            let mut id = [0u8; 8];
            OsRng.fill_bytes(&mut id);
            let schema = format!("test_{}", hex::encode(id));
            sqlx::any::install_default_drivers();
            let mut conn = AnyConnection::connect(&base).await.unwrap_or_else(|e| {
                panic!("cannot connect to MPC_TEST_POSTGRES_URL ({e}); is the server running?")
            });
            conn.execute(format!("CREATE SCHEMA {schema}").as_str())
                .await
                .unwrap();
            conn.close().await.unwrap();
            let separator = if base.contains('?') { '&' } else { '?' };
            Some(TestDb {
                kind,
                url: format!("{base}{separator}options[search_path]={schema}"),
                sqlite_path: None,
                _dir: None,
            })
        }
    }
}

/// Runs each named `async fn(TestDb)` once on SQLite and once on
/// PostgreSQL, as `sqlite::NAME` and `postgres::NAME`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::store::testkit::test_db($crate::store::testkit::Kind::Sqlite)
                        .await
                        .unwrap();
                    super::$name(db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(db) =
                        $crate::store::testkit::test_db($crate::store::testkit::Kind::Postgres).await
                    {
                        super::$name(db).await;
                    }
                }
            )*
        }
    };
}
pub(crate) use on_both_backends;

/// A local master key from a seed byte.
pub(crate) fn kek(seed: u8) -> Arc<LocalKek> {
    Arc::new(LocalKek::from_bytes([seed; 32]))
}

/// Opens a vault on `db` with master key `kek(seed)`.
pub(crate) async fn vault(db: &TestDb, seed: u8) -> Vault {
    Vault::open(&db.url, kek(seed)).await.unwrap()
}

const CONTEXT: &[u8] = b"mpc-server storage tests";

/// A fresh key: (client share, server share).
pub(crate) fn dkg() -> (KeyShare, KeyShare) {
    let (a, b, _) = run_pair(
        &mut OsRng,
        &mut Dkg::new(Role::A, CONTEXT),
        &mut Dkg::new(Role::B, CONTEXT),
    )
    .unwrap();
    (a, b)
}

/// Both shares of the next epoch.
pub(crate) fn refresh(a: &KeyShare, b: &KeyShare) -> (KeyShare, KeyShare) {
    let (a, b, _) = run_pair(
        &mut OsRng,
        &mut Refresh::new(a, CONTEXT),
        &mut Refresh::new(b, CONTEXT),
    )
    .unwrap();
    (a, b)
}

/// The server's presignature of a fresh presigning run.
pub(crate) fn presign(a: &KeyShare, b: &KeyShare) -> Presignature {
    let (_, server, _) = run_pair(&mut OsRng, &mut Presign::new(a), &mut Presign::new(b)).unwrap();
    server
}

/// Takes the refresh lease of `key_id` at `now` for `ttl_ms`; panics if it
/// is held.
pub(crate) async fn lease_at(
    vault: &Vault,
    key_id: &mpc_core::KeyId,
    now: i64,
    ttl_ms: u64,
) -> crate::vault::RefreshLease {
    vault
        .take_refresh_lease(key_id, std::time::Duration::from_millis(ttl_ms), now)
        .await
        .unwrap()
        .expect("the refresh lease is free")
}
