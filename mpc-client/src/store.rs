//! Where the sealed blobs live: the [`ShareStore`] trait, an in-memory
//! store and a file store.
//!
//! A store only ever sees ciphertext (the wallet seals each blob under the
//! caller's storage key with the entry name as associated data,
//! [`crate::seal`]), so its job is durability and privacy of the
//! directory, not secrecy.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use crate::error::StoreError;

/// No blob this library writes is near this size; a bigger entry is not
/// read.
pub const MAX_ENTRY_BYTES: u64 = 16 << 20;

/// Where sealed blobs live. Implemented by [`FileStore`], [`MemoryStore`]
/// and by foreign code (the Keychain, the Keystore, a database).
///
/// The calls are synchronous and made from async code: an implementation
/// must be quick (a small file or Keychain call), or the caller wraps the
/// wallet call in `spawn_blocking`. Names are chosen by the library: ASCII
/// `[a-z0-9._-]`, not starting with `.`.
pub trait ShareStore: Send + Sync {
    /// Stores `sealed` under `name`, replacing any previous blob
    /// atomically: after a crash, `get` returns the old or the new blob,
    /// never a mix, and once `put` returned the new blob survives a crash.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if the blob is not durably stored.
    fn put(&self, name: &str, sealed: &[u8]) -> Result<(), StoreError>;

    /// The blob under `name`; `None` if there is none.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if it cannot be read.
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Removes `name` durably; removing a missing name succeeds.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if it may still be there.
    fn delete(&self, name: &str) -> Result<(), StoreError>;

    /// Every name in the store (any order).
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if the listing fails.
    fn list(&self) -> Result<Vec<String>, StoreError>;
}

/// Checks an entry name: ASCII `[a-z0-9._-]`, 1-160 bytes, not starting
/// with `.` (so it never collides with the file store's temporary files
/// and is never a path).
///
/// # Errors
///
/// [`StoreError::InvalidName`].
pub fn check_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 160
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidName {
            name: name.chars().take(200).collect(),
        })
    }
}

/// A store in memory, for tests and for callers that persist elsewhere.
#[derive(Default)]
pub struct MemoryStore {
    entries: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        // A panic elsewhere cannot leave a map half-updated: every update
        // is one call.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.entries().len())
            .finish()
    }
}

impl ShareStore for MemoryStore {
    fn put(&self, name: &str, sealed: &[u8]) -> Result<(), StoreError> {
        check_name(name)?;
        self.entries().insert(name.to_owned(), sealed.to_vec());
        Ok(())
    }

    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check_name(name)?;
        Ok(self.entries().get(name).cloned())
    }

    fn delete(&self, name: &str) -> Result<(), StoreError> {
        check_name(name)?;
        self.entries().remove(name);
        Ok(())
    }

    fn list(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.entries().keys().cloned().collect())
    }
}

/// One file per entry in a private directory: mode 0700 for the
/// directory, 0600 for every file whatever the umask, each write atomic
/// (temporary file in the same directory, fsync, rename, fsync of the
/// directory). A directory or file that group or others may access is
/// refused ([`StoreError::InsecurePermissions`]). Temporary files left by a
/// crash (names starting with `.`) are ignored.
///
/// The directory is not locked: one process per directory at a time.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
}

/// What differs between Unix and other systems: modes and directory fsync
/// exist on Unix only.
#[cfg(unix)]
mod os {
    use std::fs::{self, File, OpenOptions};
    use std::io;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    use std::path::Path;

    pub(super) fn mode_of(meta: &fs::Metadata) -> Option<u32> {
        Some(meta.permissions().mode() & 0o7777)
    }

    pub(super) fn create_private_dir(path: &Path) -> io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)?;
        // Exactly 0700, whatever the umask.
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))
    }

    pub(super) fn create_private_file(path: &Path) -> io::Result<File> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        Ok(file)
    }

    pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

#[cfg(not(unix))]
mod os {
    use std::fs::{self, File, OpenOptions};
    use std::io;
    use std::path::Path;

    pub(super) fn mode_of(_meta: &fs::Metadata) -> Option<u32> {
        None
    }

    pub(super) fn create_private_dir(path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    pub(super) fn create_private_file(path: &Path) -> io::Result<File> {
        OpenOptions::new().write(true).create_new(true).open(path)
    }

    pub(super) fn sync_dir(_dir: &Path) -> io::Result<()> {
        Ok(())
    }
}

fn io_error(op: &'static str, path: &Path, err: &io::Error) -> StoreError {
    StoreError::Io {
        op,
        name: path.display().to_string(),
        message: err.to_string(),
    }
}

fn check_private(path: &Path, meta: &fs::Metadata) -> Result<(), StoreError> {
    match os::mode_of(meta) {
        Some(mode) if mode & 0o077 != 0 => Err(StoreError::InsecurePermissions {
            path: path.display().to_string(),
            mode,
        }),
        _ => Ok(()),
    }
}

impl FileStore {
    /// Opens the directory `dir`, creating it (mode 0700) if missing.
    ///
    /// # Errors
    ///
    /// [`StoreError::InsecurePermissions`] if it, or a file in it, is
    /// accessible by group or others; [`StoreError::Io`] if it cannot be
    /// created or read, or is not a directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        Self::open_with(dir.into(), true)
    }

    /// Opens the existing directory `dir`.
    ///
    /// # Errors
    ///
    /// As [`FileStore::open`], and [`StoreError::Io`] if it is missing.
    pub fn open_existing(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        Self::open_with(dir.into(), false)
    }

    fn open_with(dir: PathBuf, create: bool) -> Result<Self, StoreError> {
        match fs::metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(io_error(
                    "opening",
                    &dir,
                    &io::Error::other("not a directory"),
                ))
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound && create => {
                os::create_private_dir(&dir).map_err(|e| io_error("creating", &dir, &e))?;
            }
            Err(err) => return Err(io_error("opening", &dir, &err)),
        }
        let store = Self { dir };
        store.check_permissions()?;
        Ok(store)
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory and every file in it must be private to the owner.
    fn check_permissions(&self) -> Result<(), StoreError> {
        let meta = fs::metadata(&self.dir).map_err(|e| io_error("reading", &self.dir, &e))?;
        check_private(&self.dir, &meta)?;
        for name in self.all_names()? {
            let path = self.dir.join(&name);
            match fs::symlink_metadata(&path) {
                Ok(meta) => check_private(&path, &meta)?,
                // Renamed or deleted since the listing.
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(io_error("reading", &path, &err)),
            }
        }
        Ok(())
    }

    /// Every entry of the directory whose name is UTF-8.
    fn all_names(&self) -> Result<Vec<String>, StoreError> {
        let entries = fs::read_dir(&self.dir).map_err(|e| io_error("listing", &self.dir, &e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error("listing", &self.dir, &e))?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn sync(&self) -> Result<(), StoreError> {
        os::sync_dir(&self.dir).map_err(|e| io_error("syncing", &self.dir, &e))
    }
}

impl ShareStore for FileStore {
    fn put(&self, name: &str, sealed: &[u8]) -> Result<(), StoreError> {
        check_name(name)?;
        let target = self.dir.join(name);
        // A random suffix: unique across processes without std::process
        // (not available on every mobile target).
        let temp = self
            .dir
            .join(format!(".{name}.{:016x}.tmp", OsRng.next_u64()));
        let write = || -> io::Result<()> {
            let mut file = os::create_private_file(&temp)?;
            file.write_all(sealed)?;
            file.sync_all()?;
            drop(file);
            fs::rename(&temp, &target)?;
            os::sync_dir(&self.dir)
        };
        write().map_err(|err| {
            // Gone already if the rename happened.
            let _ = fs::remove_file(&temp);
            io_error("writing", &target, &err)
        })
    }

    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check_name(name)?;
        let path = self.dir.join(name);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(io_error("reading", &path, &err)),
        };
        let meta = file
            .metadata()
            .map_err(|e| io_error("reading", &path, &e))?;
        check_private(&path, &meta)?;
        if !meta.is_file() || meta.len() > MAX_ENTRY_BYTES {
            return Err(StoreError::TooLarge {
                name: name.to_owned(),
            });
        }
        // One allocation of the right size: no reallocation leaves a copy.
        let capacity = usize::try_from(meta.len()).unwrap_or(0).saturating_add(1);
        let mut bytes = Zeroizing::new(Vec::with_capacity(capacity));
        Read::by_ref(&mut file)
            .take(MAX_ENTRY_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| io_error("reading", &path, &e))?;
        Ok(Some(std::mem::take(&mut *bytes)))
    }

    fn delete(&self, name: &str) -> Result<(), StoreError> {
        check_name(name)?;
        let path = self.dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => self.sync(),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(io_error("deleting", &path, &err)),
        }
    }

    fn list(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .all_names()?
            .into_iter()
            .filter(|name| check_name(name).is_ok())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn names_are_never_paths_or_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path().join("s")).unwrap();
        for bad in [
            "",
            "../x",
            "a/b",
            ".hidden",
            "Upper",
            "a b",
            "a\0b",
            &"x".repeat(161),
        ] {
            assert!(
                matches!(check_name(bad), Err(StoreError::InvalidName { .. })),
                "{bad:?}"
            );
            assert!(store.put(bad, b"v").is_err(), "{bad:?}");
            assert!(store.get(bad).is_err(), "{bad:?}");
            assert!(store.delete(bad).is_err(), "{bad:?}");
            assert!(MemoryStore::new().put(bad, b"v").is_err(), "{bad:?}");
        }
        assert!(!dir.path().join("x").exists());
    }

    #[test]
    fn a_crash_during_a_write_leaves_the_previous_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let store = FileStore::open(&path).unwrap();
        store.put("k.0.share", b"version one").unwrap();
        // What a crash between create and rename leaves: partial temporary
        // files (private, as put creates them), one of them empty.
        for (name, bytes) in [
            (".k.0.share.0123456789abcdef.tmp", &b"version t"[..]),
            (".k.0.share.fedcba9876543210.tmp", &b""[..]),
        ] {
            let mut file = os::create_private_file(&path.join(name)).unwrap();
            file.write_all(bytes).unwrap();
        }
        drop(store);
        let store = FileStore::open(&path).unwrap();
        assert_eq!(store.get("k.0.share").unwrap().unwrap(), b"version one");
        assert_eq!(store.list().unwrap(), vec!["k.0.share".to_owned()]);
        store.put("k.0.share", b"version two").unwrap();
        assert_eq!(store.get("k.0.share").unwrap().unwrap(), b"version two");
        store.delete("k.0.share").unwrap();
        store.delete("k.0.share").unwrap();
        assert_eq!(store.get("k.0.share").unwrap(), None);
    }

    /// Runs in a child process whose umask is 000 (set by `sh`, since this
    /// crate has no unsafe code to call umask itself).
    #[cfg(unix)]
    #[test]
    fn nothing_is_written_open_under_a_permissive_umask() {
        use std::os::unix::fs::PermissionsExt;
        const CHILD: &str = "MPC_CLIENT_UMASK_CHILD";
        let name = "store::tests::nothing_is_written_open_under_a_permissive_umask";
        if std::env::var_os(CHILD).is_none() {
            let status = std::process::Command::new("sh")
                .arg("-c")
                .arg("umask 000 && exec \"$0\" --exact \"$1\" --test-threads 1")
                .arg(std::env::current_exe().unwrap())
                .arg(name)
                .env(CHILD, "1")
                .status()
                .unwrap();
            assert!(status.success(), "the child under umask 000 failed");
            return;
        }
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        // The umask really is permissive here.
        let plain = dir.path().join("plain");
        fs::write(&plain, b"x").unwrap();
        assert_eq!(mode(&plain), 0o666);
        fs::remove_file(&plain).unwrap();

        let path = dir.path().join("a").join("store");
        let store = FileStore::open(&path).unwrap();
        assert_eq!(mode(&path), 0o700);
        store.put("k.0.share", b"one").unwrap();
        store.put("k.0.share", b"two").unwrap();
        store.put("k.current", b"0\n").unwrap();
        for entry in fs::read_dir(&path).unwrap() {
            let entry = entry.unwrap().path();
            assert_eq!(mode(&entry), 0o600, "{}", entry.display());
        }
        // A directory made open by someone else is refused.
        let open_dir = dir.path().join("open");
        fs::create_dir(&open_dir).unwrap();
        assert_eq!(mode(&open_dir), 0o777);
        assert!(matches!(
            FileStore::open(&open_dir),
            Err(StoreError::InsecurePermissions { mode: 0o777, .. })
        ));
    }
}
