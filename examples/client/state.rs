//! The state directory: private, atomically written share and epoch files
//! (see the crate documentation).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use mpc_core::wire::Role;
use mpc_core::{KeyId, KeyShare};
use zeroize::Zeroizing;

use crate::cli::parse_key_id;
use crate::output::Failure;

use os::{create_private_dir, create_private_file, sync_dir};

/// No share file is anywhere near this big; a bigger file is not read.
pub(crate) const MAX_FILE_BYTES: u64 = 16 << 20;

/// Makes temporary file names unique within this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The client's state directory (see the crate documentation).
pub(crate) struct StateDir {
    dir: PathBuf,
}

/// What differs between Unix and other systems: modes and directory
/// fsync exist on Unix only.
#[cfg(unix)]
mod os {
    use std::fs::{self, File, OpenOptions};
    use std::io;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    use std::path::Path;

    /// The permission bits.
    pub(crate) fn mode_of(meta: &fs::Metadata) -> Option<u32> {
        Some(meta.permissions().mode() & 0o7777)
    }

    /// Creates `path` (and missing parents) with mode 0700.
    pub(crate) fn create_private_dir(path: &Path) -> io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)?;
        // Exactly 0700, whatever the umask.
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))
    }

    /// Creates a new file with mode 0600; fails if it exists.
    pub(crate) fn create_private_file(path: &Path) -> io::Result<File> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        Ok(file)
    }

    /// Makes renames and deletions in `dir` durable.
    pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// Elsewhere there are no modes to set or check.
#[cfg(not(unix))]
mod os {
    use std::fs::{self, File, OpenOptions};
    use std::io;
    use std::path::Path;

    pub(crate) fn mode_of(_meta: &fs::Metadata) -> Option<u32> {
        None
    }

    pub(crate) fn create_private_dir(path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    pub(crate) fn create_private_file(path: &Path) -> io::Result<File> {
        OpenOptions::new().write(true).create_new(true).open(path)
    }

    pub(crate) fn sync_dir(_dir: &Path) -> io::Result<()> {
        Ok(())
    }
}

/// Refuses a file or directory that group or others may access.
fn check_private(path: &Path, meta: &fs::Metadata) -> Result<(), Failure> {
    match os::mode_of(meta) {
        Some(mode) if mode & 0o077 != 0 => Err(Failure::local(
            "insecure_permissions",
            format!(
                "{} is accessible by group or others (mode {mode:04o}); \
                 it must be 0700 for the state directory, 0600 for its files",
                path.display()
            ),
        )),
        _ => Ok(()),
    }
}

fn share_name(key_id: &KeyId, epoch: u64) -> String {
    format!("{key_id}.{epoch}.share")
}

fn current_name(key_id: &KeyId) -> String {
    format!("{key_id}.current")
}

/// `<key_id>.<epoch>.share` → key id and epoch.
fn parse_share_name(name: &str) -> Option<(KeyId, u64)> {
    let (key, epoch) = name.strip_suffix(".share")?.split_once('.')?;
    if key.len() != 64 || !epoch.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((parse_key_id(key).ok()?, epoch.parse().ok()?))
}

/// `<key_id>.current` → key id.
fn parse_current_name(name: &str) -> Option<KeyId> {
    let key = name.strip_suffix(".current")?;
    if key.len() != 64 {
        return None;
    }
    parse_key_id(key).ok()
}

impl StateDir {
    /// Opens (creating it if missing) and checks the state directory.
    pub(crate) fn open(dir: PathBuf) -> Result<Self, Failure> {
        Self::open_with(dir, true)
    }

    /// Opens and checks an existing state directory; fails if it is
    /// missing.
    pub(crate) fn open_existing(dir: PathBuf) -> Result<Self, Failure> {
        Self::open_with(dir, false)
    }

    fn open_with(dir: PathBuf, create: bool) -> Result<Self, Failure> {
        match fs::metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(Failure::local(
                    "state",
                    format!("{} is not a directory", dir.display()),
                ))
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound && create => {
                create_private_dir(&dir).map_err(|e| Failure::io("creating", &dir, &e))?;
            }
            Err(err) => return Err(Failure::io("reading", &dir, &err)),
        }
        let state = Self { dir };
        state.check_permissions()?;
        Ok(state)
    }

    /// The directory and every share, epoch and temporary file in it must
    /// be private to the owner.
    fn check_permissions(&self) -> Result<(), Failure> {
        let meta = fs::metadata(&self.dir).map_err(|e| Failure::io("reading", &self.dir, &e))?;
        check_private(&self.dir, &meta)?;
        for name in self.file_names()? {
            if [".share", ".current", ".tmp"]
                .iter()
                .any(|suffix| name.ends_with(suffix))
            {
                let path = self.dir.join(&name);
                match fs::metadata(&path) {
                    Ok(meta) => check_private(&path, &meta)?,
                    // Renamed or deleted since the listing.
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                    Err(err) => return Err(Failure::io("reading", &path, &err)),
                }
            }
        }
        Ok(())
    }

    /// The names of the entries of the directory (names that are not UTF-8
    /// are none of ours and are skipped).
    fn file_names(&self) -> Result<Vec<String>, Failure> {
        let entries = fs::read_dir(&self.dir).map_err(|e| Failure::io("listing", &self.dir, &e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Failure::io("listing", &self.dir, &e))?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// Writes `bytes` to `name` atomically, with mode 0600.
    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), Failure> {
        let target = self.dir.join(name);
        let temp = self.dir.join(format!(
            ".{name}.{}.{}.tmp",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let write = || -> io::Result<()> {
            let mut file = create_private_file(&temp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            drop(file);
            fs::rename(&temp, &target)?;
            sync_dir(&self.dir)
        };
        write().map_err(|err| {
            // Gone already if the rename happened.
            let _ = fs::remove_file(&temp);
            Failure::io("writing", &target, &err)
        })
    }

    /// Reads a private file; `None` if it does not exist.
    fn read_private(&self, path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, Failure> {
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(Failure::io("reading", path, &err)),
        };
        let meta = file
            .metadata()
            .map_err(|e| Failure::io("reading", path, &e))?;
        check_private(path, &meta)?;
        if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
            return Err(Failure::corrupt(path, "not a share or epoch file"));
        }
        // One allocation of the right size, so no copy of a share is left
        // behind by a reallocation.
        let capacity = usize::try_from(meta.len()).unwrap_or(0).saturating_add(1);
        let mut bytes = Zeroizing::new(Vec::with_capacity(capacity));
        file.read_to_end(&mut bytes)
            .map_err(|e| Failure::io("reading", path, &e))?;
        Ok(Some(bytes))
    }

    /// The epoch `<key_id>.current` names.
    fn current_epoch(&self, key_id: &KeyId) -> Result<u64, Failure> {
        self.held_epoch(key_id)?.ok_or_else(|| {
            Failure::local(
                "unknown_key",
                format!("no key {key_id} in {}", self.dir.display()),
            )
        })
    }

    /// The epoch `<key_id>.current` names; `None` if the directory does
    /// not hold the key.
    pub(crate) fn held_epoch(&self, key_id: &KeyId) -> Result<Option<u64>, Failure> {
        let path = self.dir.join(current_name(key_id));
        let Some(bytes) = self.read_private(&path)? else {
            return Ok(None);
        };
        std::str::from_utf8(&bytes)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| Failure::corrupt(&path, "not an epoch number"))
    }

    /// The share of `key_id` at `epoch`, checked: right key, epoch and
    /// role.
    fn load_share(&self, key_id: &KeyId, epoch: u64) -> Result<KeyShare, Failure> {
        self.load_share_if_present(key_id, epoch)?.ok_or_else(|| {
            Failure::corrupt(
                &self.dir.join(share_name(key_id, epoch)),
                format!("missing, but {} names epoch {epoch}", current_name(key_id)),
            )
        })
    }

    /// The share of `key_id` at `epoch`, checked; `None` if there is no
    /// share file of that epoch.
    pub(crate) fn load_share_if_present(
        &self,
        key_id: &KeyId,
        epoch: u64,
    ) -> Result<Option<KeyShare>, Failure> {
        let path = self.dir.join(share_name(key_id, epoch));
        let Some(bytes) = self.read_private(&path)? else {
            return Ok(None);
        };
        let share =
            KeyShare::from_bytes_for(&bytes, key_id).map_err(|e| Failure::corrupt(&path, e))?;
        if share.epoch() != epoch || share.role() != Role::A {
            return Err(Failure::corrupt(
                &path,
                "not this client's share of that epoch",
            ));
        }
        Ok(Some(share))
    }

    /// The share the client signs with: the epoch `current` names.
    pub(crate) fn load_current(&self, key_id: &KeyId) -> Result<KeyShare, Failure> {
        let epoch = self.current_epoch(key_id)?;
        self.load_share(key_id, epoch)
    }

    pub(crate) fn save_share(&self, share: &KeyShare) -> Result<(), Failure> {
        self.write_atomic(
            &share_name(share.key_id(), share.epoch()),
            &share.to_bytes(),
        )
    }

    pub(crate) fn set_current(&self, key_id: &KeyId, epoch: u64) -> Result<(), Failure> {
        self.write_atomic(&current_name(key_id), format!("{epoch}\n").as_bytes())
    }

    /// Deletes the share files of `key_id` older than `epoch`.
    pub(crate) fn remove_shares_before(&self, key_id: &KeyId, epoch: u64) -> Result<(), Failure> {
        let mut removed = false;
        for name in self.file_names()? {
            if matches!(parse_share_name(&name), Some((k, e)) if k == *key_id && e < epoch) {
                let path = self.dir.join(&name);
                fs::remove_file(&path).map_err(|e| Failure::io("deleting", &path, &e))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&self.dir).map_err(|e| Failure::io("syncing", &self.dir, &e))?;
        }
        Ok(())
    }

    /// The keys that have a `current` file, sorted.
    pub(crate) fn keys(&self) -> Result<Vec<KeyId>, Failure> {
        let mut keys: Vec<KeyId> = self
            .file_names()?
            .iter()
            .filter_map(|name| parse_current_name(name))
            .collect();
        keys.sort();
        Ok(keys)
    }
}
