//! SQL storage on SQLite or PostgreSQL.
//!
//! Both backends go through sqlx's `Any` driver: every query in
//! `queries` is written once, with `$1`-style placeholders that both
//! SQLite and PostgreSQL accept, and only the schema (per-backend migrations
//! under `mpc-server/migrations/{sqlite,postgres}/`, embedded at build time)
//! and the connection setup differ. Integers are bound and read as `i64`,
//! binary columns as `Vec<u8>`, text as `String`.
//!
//! This module holds no secrets: sealed columns are opaque ciphertexts
//! produced and opened by [`crate::vault`] with [`crate::seal`]. Nothing here
//! logs a database URL (it may hold a password).
//!
//! Durability: SQLite runs in WAL mode with `synchronous=FULL` (every commit
//! is fsynced before it is acknowledged), a 30 s busy timeout and foreign keys
//! on; writing transactions start with `BEGIN IMMEDIATE` so that concurrent
//! writers queue on the busy timeout instead of failing on a lock upgrade.
//! On PostgreSQL, writing transactions lock the key's row first (see
//! `queries::lock_key`), which serializes changes to one key across
//! server processes.

pub(crate) mod buckets;
pub(crate) mod lease;
pub(crate) mod outbox;
#[cfg(test)]
mod page_tests;
pub(crate) mod pending;
#[cfg(test)]
mod pending_tests;
pub(crate) mod queries;
#[cfg(test)]
mod quota_tests;
pub(crate) mod quotas;
pub(crate) mod records;
#[cfg(test)]
mod rollback_tests;
#[cfg(test)]
mod sqlite_file_tests;
pub(crate) mod step_up;
#[cfg(test)]
mod step_up_tests;
#[cfg(test)]
pub(crate) mod testkit;
pub(crate) mod tombstones;
#[cfg(test)]
mod uses_tests;
#[cfg(test)]
mod vault_tests;
#[cfg(test)]
mod vault_tests_sealed;

use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, ConnectOptions, Connection, Executor, Transaction};

use crate::vault::VaultError;

static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// SQLite's `synchronous=FULL`, busy timeout and foreign keys are
/// per-connection settings: applied to every pooled connection.
const SQLITE_CONNECTION_PRAGMAS: [&str; 3] = [
    "PRAGMA synchronous = FULL",
    "PRAGMA busy_timeout = 30000",
    "PRAGMA foreign_keys = ON",
];

/// Tries at setting up a SQLite file that another opener may be setting up
/// at the same time (see [`Store::migrate`]).
const SQLITE_MIGRATION_ATTEMPTS: u32 = 5;
const SQLITE_MAX_CONNECTIONS: u32 = 4;
const POSTGRES_MAX_CONNECTIONS: u32 = 8;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// The database product behind a [`Store`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub(crate) fn from_url(url: &str) -> Result<Self, VaultError> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => Ok(Self::Sqlite),
            "postgres" | "postgresql" => Ok(Self::Postgres),
            _ => Err(VaultError::Database(
                "unsupported database URL: expected sqlite://PATH or postgres://...".into(),
            )),
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// A connection pool with the schema migrated.
pub(crate) struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// A transaction; dropping it without [`commit`](Transaction::commit) rolls
/// it back.
pub(crate) type Tx = Transaction<'static, Any>;

impl Store {
    /// Connects and runs the migrations.
    #[cfg(test)]
    pub(crate) async fn open(url: &str) -> Result<Self, VaultError> {
        let store = Self::connect(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects (creating a SQLite file if missing) without migrating.
    pub(crate) async fn connect(url: &str) -> Result<Self, VaultError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let url = match backend {
            Backend::Sqlite => sqlite_url(url),
            Backend::Postgres => url.to_owned(),
        };
        let options: AnyConnectOptions = url
            .parse()
            .map_err(|e| db_error("invalid database URL", &e))?;
        // Connection-level statement logging would print bound values.
        let options = options.disable_statement_logging();
        if backend == Backend::Sqlite {
            make_sqlite_files_private(&url)?;
            // A concurrent first open may hold the lock the switch needs.
            let mut attempt = 1;
            while let Err(e) = enable_wal(&options).await {
                if attempt >= SQLITE_MIGRATION_ATTEMPTS {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                attempt += 1;
            }
        }
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => SQLITE_MAX_CONNECTIONS,
                Backend::Postgres => POSTGRES_MAX_CONNECTIONS,
            })
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A SQLite connection is a file in this process: the ping before
            // each acquire would only be a round trip to its worker thread
            // (sqlx pings every released connection anyway). A PostgreSQL
            // connection may have died with the server: it is tested.
            .test_before_acquire(backend == Backend::Postgres)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        for pragma in SQLITE_CONNECTION_PRAGMAS {
                            conn.execute(pragma).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| db_error("cannot connect to the database", &e))?;
        Ok(Self { pool, backend })
    }

    /// Runs the migrations that are not applied yet.
    ///
    /// On PostgreSQL sqlx holds an advisory lock meanwhile, so two processes
    /// opening one database at once are safe. sqlx takes no lock on SQLite:
    /// there, two first opens may both try to apply a migration and the
    /// loser fails (each migration is one transaction, so nothing is half
    /// applied); it retries and then finds the migration applied.
    pub(crate) async fn migrate(&self) -> Result<(), VaultError> {
        let (migrator, attempts) = match self.backend {
            Backend::Sqlite => (&SQLITE_MIGRATOR, SQLITE_MIGRATION_ATTEMPTS),
            Backend::Postgres => (&POSTGRES_MIGRATOR, 1),
        };
        let mut attempt = 1;
        loop {
            // On failure the store is dropped by the caller, closing its
            // connections and so any migration lock a session still holds.
            match migrator.run(&self.pool).await {
                Ok(()) => return Ok(()),
                Err(_) if attempt < attempts => {
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                    attempt += 1;
                }
                Err(e) => {
                    return Err(VaultError::Database(format!(
                        "database migration failed: {}",
                        migrate_error_text(&e)
                    )))
                }
            }
        }
    }

    pub(crate) fn backend(&self) -> Backend {
        self.backend
    }

    #[cfg(test)]
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A pooled connection for reads or single-statement writes.
    pub(crate) async fn acquire(&self) -> Result<PoolConnection<Any>, VaultError> {
        self.pool
            .acquire()
            .await
            .map_err(|e| db_error("cannot get a database connection", &e))
    }

    /// Starts a writing transaction (`BEGIN IMMEDIATE` on SQLite).
    pub(crate) async fn begin(&self) -> Result<Tx, VaultError> {
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        };
        tx.map_err(|e| db_error("cannot begin a transaction", &e))
    }

    /// Checks that the database answers.
    pub(crate) async fn ping(&self) -> Result<(), VaultError> {
        let mut conn = self.acquire().await?;
        conn.ping().await.map_err(|e| db_error("database ping", &e))
    }
}

/// Commits `tx`.
pub(crate) async fn commit(tx: Tx) -> Result<(), VaultError> {
    tx.commit()
        .await
        .map_err(|e| db_error("committing a transaction", &e))
}

/// The value of the `mode=` parameter of a SQLite URL, if any.
fn sqlite_mode(url: &str) -> Option<&str> {
    let (_, query) = url.split_once('?')?;
    query.split('&').find_map(|pair| pair.strip_prefix("mode="))
}

/// The database file of a SQLite URL (as sqlx reads it), `None` for an
/// in-memory database.
fn sqlite_file(url: &str) -> Result<Option<std::path::PathBuf>, VaultError> {
    use std::str::FromStr;
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)
        .map_err(|e| db_error("invalid database URL", &e))?;
    let path = options.get_filename();
    let in_memory = sqlite_mode(url) == Some("memory")
        || path.as_os_str().is_empty()
        || path
            .to_str()
            .is_some_and(|p| p == ":memory:" || p.starts_with("file:"));
    Ok((!in_memory).then(|| path.to_path_buf()))
}

/// Makes the SQLite database and its `-wal`, `-shm` and `-journal` files
/// readable by the server's user only (0600), before SQLite opens them.
///
/// A missing database file is created 0600 here (when the URL lets SQLite
/// create it): SQLite creates the `-wal`, `-shm` and `-journal` files with
/// the database file's mode, so they are private from their first byte.
/// Existing files with group or other permission bits are tightened to 0600
/// with a warning (not refused: an upgrade from a version that created them
/// 0644 must keep working); a file this user cannot `chmod` is an error.
#[cfg(unix)]
fn make_sqlite_files_private(url: &str) -> Result<(), VaultError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let Some(path) = sqlite_file(url)? else {
        return Ok(());
    };
    let failed = |what: &str, path: &std::path::Path, e: &std::io::Error| {
        VaultError::Database(format!(
            "cannot {what} the SQLite file {}: {}",
            path.display(),
            e.kind()
        ))
    };
    if sqlite_mode(url) == Some("rwc") {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(failed("create", &path, &e)),
        }
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = path.clone().into_os_string();
        name.push(suffix);
        let file = std::path::PathBuf::from(name);
        let mode = match std::fs::metadata(&file) {
            Ok(meta) => meta.permissions().mode(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(failed("inspect", &file, &e)),
        };
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| failed("restrict", &file, &e))?;
            tracing::warn!(
                file = %file.display(),
                old_mode = format!("{:o}", mode & 0o777),
                "SQLite file was readable by others: permissions set to 0600"
            );
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn make_sqlite_files_private(_url: &str) -> Result<(), VaultError> {
    Ok(())
}

/// Adds `mode=rwc` (create if missing) unless the URL chooses a mode.
fn sqlite_url(url: &str) -> String {
    let has_mode = url
        .split_once('?')
        .map(|(_, query)| query.split('&').any(|pair| pair.starts_with("mode=")))
        .unwrap_or(false);
    if has_mode {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

/// Switches the file to WAL once, on a lone connection: the journal mode is
/// persistent, and changing it needs an exclusive lock that the busy timeout
/// does not wait for, so pooled connections must not race to set it.
async fn enable_wal(options: &AnyConnectOptions) -> Result<(), VaultError> {
    let mut conn = AnyConnection::connect_with(options)
        .await
        .map_err(|e| db_error("cannot open the SQLite database", &e))?;
    conn.execute("PRAGMA busy_timeout = 30000")
        .await
        .map_err(|e| db_error("cannot configure SQLite", &e))?;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode = WAL")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| db_error("cannot enable the SQLite WAL journal", &e))?;
    conn.close()
        .await
        .map_err(|e| db_error("cannot configure SQLite", &e))?;
    // In-memory databases report "memory"; files must be in WAL mode.
    if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
        return Err(VaultError::Database(format!(
            "SQLite refused the WAL journal (journal mode is {mode})"
        )));
    }
    Ok(())
}

/// A `VaultError::Database` describing `error` without bound values or
/// connection strings.
pub(crate) fn db_error(context: &str, error: &sqlx::Error) -> VaultError {
    let detail = match error {
        sqlx::Error::Database(e) => match e.code() {
            Some(code) => format!("{} (code {code})", e.message()),
            None => e.message().to_owned(),
        },
        sqlx::Error::Configuration(_) => "invalid database configuration".to_owned(),
        sqlx::Error::Io(e) => format!("I/O error: {}", e.kind()),
        sqlx::Error::Tls(_) => "TLS error".to_owned(),
        sqlx::Error::PoolTimedOut => "timed out waiting for a database connection".to_owned(),
        sqlx::Error::PoolClosed => "the connection pool is closed".to_owned(),
        sqlx::Error::ColumnNotFound(name) => format!("column {name} not found"),
        sqlx::Error::ColumnDecode { index, .. } => format!("cannot decode column {index}"),
        sqlx::Error::Migrate(e) => migrate_error_text(e),
        other => other.to_string(),
    };
    VaultError::Database(format!("{context}: {detail}"))
}

fn migrate_error_text(error: &sqlx::migrate::MigrateError) -> String {
    match error {
        sqlx::migrate::MigrateError::Execute(e)
        | sqlx::migrate::MigrateError::ExecuteMigration(e, _) => match db_error("executing", e) {
            VaultError::Database(text) => text,
            _ => "executing a migration failed".to_owned(),
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_from_url() {
        assert_eq!(Backend::from_url("sqlite://x.db").unwrap(), Backend::Sqlite);
        assert_eq!(
            Backend::from_url("sqlite::memory:").unwrap(),
            Backend::Sqlite
        );
        assert_eq!(
            Backend::from_url("postgres://u@h/db").unwrap(),
            Backend::Postgres
        );
        assert_eq!(
            Backend::from_url("postgresql://u@h/db").unwrap(),
            Backend::Postgres
        );
        let err = Backend::from_url("mysql://user:hunter2@h/db").unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn sqlite_url_creates_unless_told() {
        assert_eq!(sqlite_url("sqlite://a.db"), "sqlite://a.db?mode=rwc");
        assert_eq!(
            sqlite_url("sqlite://a.db?cache=private"),
            "sqlite://a.db?cache=private&mode=rwc"
        );
        assert_eq!(sqlite_url("sqlite://a.db?mode=ro"), "sqlite://a.db?mode=ro");
    }

    #[test]
    fn sqlite_file_of_urls() {
        let file = |url: &str| sqlite_file(url).unwrap();
        assert_eq!(
            file("sqlite:///d/mpc.db?mode=rwc"),
            Some(std::path::PathBuf::from("/d/mpc.db"))
        );
        assert_eq!(
            file("sqlite://a%3Fb.db"),
            Some(std::path::PathBuf::from("a?b.db"))
        );
        for memory in [
            "sqlite::memory:",
            "sqlite://?mode=memory",
            "sqlite://x?mode=memory",
        ] {
            assert_eq!(file(memory), None, "{memory}");
        }
    }

    /// Files made 0644 by an older version (or a loose umask) are tightened
    /// on open; new files are private from the start.
    #[cfg(unix)]
    #[tokio::test]
    async fn sqlite_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("private.db");
        let url = format!("sqlite://{}", path.display());
        let modes = || {
            ["", "-wal", "-shm"].map(|suffix| {
                let mut name = path.clone().into_os_string();
                name.push(suffix);
                std::fs::metadata(&name).unwrap().permissions().mode() & 0o777
            })
        };
        let store = Store::open(&url).await.unwrap();
        let mut conn = store.acquire().await.unwrap();
        sqlx::query("INSERT INTO meta (name, value) VALUES ('x', x'00')")
            .execute(&mut *conn)
            .await
            .unwrap();
        assert_eq!(modes(), [0o600; 3]);
        for suffix in ["", "-wal", "-shm"] {
            let mut name = path.clone().into_os_string();
            name.push(suffix);
            std::fs::set_permissions(&name, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        drop(conn);
        let _again = Store::open(&url).await.unwrap();
        assert_eq!(modes(), [0o600; 3]);
    }

    #[tokio::test]
    async fn sqlite_settings_apply_to_pooled_connections() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("settings.db").display());
        let store = Store::open(&url).await.unwrap();
        assert_eq!(store.backend().as_str(), "sqlite");
        let mut conn = store.acquire().await.unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(mode.to_ascii_lowercase(), "wal");
        for (pragma, want) in [
            ("PRAGMA synchronous", 2i64),
            ("PRAGMA foreign_keys", 1),
            ("PRAGMA busy_timeout", 30000),
        ] {
            let got: i64 = sqlx::query_scalar(pragma)
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!(got, want, "{pragma}");
        }
        store.ping().await.unwrap();
        // Opening again runs no migration twice.
        drop(conn);
        Store::open(&url).await.unwrap();
    }
}
