//! The one file-touching helper of flowfm-core: atomic replacement of a file, and clean-up of the
//! temporary files it leaves when a process is killed.
//!
//! Every file flowfm writes (window stores, checkpoints, run files, embeddings) goes through
//! here, so a reader never sees a half-written file and a failed or interrupted write never
//! destroys the previous version:
//!
//! 1. the content is written to a temporary file **in the same directory** (so the final rename
//!    stays on one file system), named `.flowfm-tmp-<pid>-<seq>-<file name>`;
//! 2. the temporary file is flushed to disk (`fsync`);
//! 3. it is renamed over the target (atomic on POSIX), and the directory is synced (best effort).
//!
//! On every error path, and when the writing closure panics, the temporary file is removed. Only a
//! killed process leaves one behind; its name carries the dead process's id, so
//! [`remove_stale_temp_files`] can tell it from the temporary file of a process still writing.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Every temporary file of ours starts with this (then `<pid>-<seq>-<file name>`).
pub const TEMP_PREFIX: &str = ".flowfm-tmp-";

/// Distinguishes concurrent temporary files of one process (threads writing beside each other).
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// A failed file operation: which file, what was being done, and the OS error.
#[derive(Debug, thiserror::Error)]
#[error("{}: {action}", path.display())]
pub struct FsError {
    /// The file the operation was on (the target, or the temporary file beside it).
    pub path: PathBuf,
    /// What was being done, e.g. `"renaming the temporary file over it"`.
    pub action: &'static str,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

impl FsError {
    fn new(path: &Path, action: &'static str, source: std::io::Error) -> Self {
        Self {
            path: path.to_path_buf(),
            action,
            source,
        }
    }
}

/// Removes the temporary file when dropped, unless disarmed (after a successful rename).
struct TempGuard {
    path: Option<PathBuf>,
}

impl TempGuard {
    fn disarm(&mut self) {
        self.path = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            // Best effort: the original error is what the caller needs to see.
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The directory `path` lives in (`.` for a bare file name) and its file name.
fn split_target(path: &Path) -> Result<(PathBuf, String), FsError> {
    let name = path
        .file_name()
        .ok_or_else(|| {
            FsError::new(
                path,
                "choosing a temporary file",
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the path has no file name",
                ),
            )
        })?
        .to_string_lossy()
        .into_owned();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name))
}

/// Creates a fresh temporary file beside `path` (`O_EXCL`: never an existing file or a symlink).
fn create_temp(path: &Path) -> Result<(PathBuf, File), FsError> {
    let (dir, name) = split_target(path)?;
    let pid = std::process::id();
    let mut last_err = None;
    // A name can only be taken by a dead process of the same id that left its file behind.
    for _ in 0..16 {
        let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("{TEMP_PREFIX}{pid}-{seq}-{name}"));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => return Err(FsError::new(&tmp, "creating a temporary file", e)),
        }
    }
    Err(FsError::new(
        &dir,
        "creating a temporary file",
        last_err.unwrap_or_else(|| std::io::Error::other("no free temporary name")),
    ))
}

/// Renames `tmp` over `path` and syncs the directory (best effort: not every file system can).
fn commit(tmp: &Path, path: &Path) -> Result<(), FsError> {
    std::fs::rename(tmp, path)
        .map_err(|e| FsError::new(path, "renaming the temporary file over it", e))?;
    if let Ok((dir, _)) = split_target(path) {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, `fsync`, rename.
/// The directory must exist. On error nothing is left behind and an existing `path` is
/// untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    let (tmp, mut file) = create_temp(path)?;
    let mut guard = TempGuard {
        path: Some(tmp.clone()),
    };
    file.write_all(bytes)
        .map_err(|e| FsError::new(&tmp, "writing the temporary file", e))?;
    file.sync_all()
        .map_err(|e| FsError::new(&tmp, "syncing the temporary file", e))?;
    drop(file);
    commit(&tmp, path)?;
    guard.disarm();
    Ok(())
}

/// Atomic replacement for writers that need a path (HDF5, zip, ...): `write` is called with the
/// path of an empty temporary file beside `path` (it may truncate or recreate it); when it returns
/// `Ok`, the file is synced and renamed over `path`. When `write` fails or panics, or syncing or
/// renaming fails, the temporary file is removed and `path` is untouched.
///
/// The error type is the caller's, so `write` can return its own errors unchanged.
pub fn write_atomic_with<E, F>(path: &Path, write: F) -> Result<(), E>
where
    E: From<FsError>,
    F: FnOnce(&Path) -> Result<(), E>,
{
    let (tmp, file) = create_temp(path)?;
    drop(file);
    let mut guard = TempGuard {
        path: Some(tmp.clone()),
    };
    write(&tmp)?;
    let file = File::open(&tmp)
        .map_err(|e| FsError::new(&tmp, "reopening the temporary file to sync it", e))?;
    file.sync_all()
        .map_err(|e| FsError::new(&tmp, "syncing the temporary file", e))?;
    drop(file);
    commit(&tmp, path)?;
    guard.disarm();
    Ok(())
}

/// The process id in the name of one of our temporary files, or `None` for any other name.
pub fn temp_file_pid(file_name: &str) -> Option<u32> {
    let rest = file_name.strip_prefix(TEMP_PREFIX)?;
    let (pid, rest) = rest.split_once('-')?;
    let (seq, target) = rest.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(pid) && digits(seq) && !target.is_empty())
        .then(|| pid.parse().ok())
        .flatten()
}

/// The process id in the name of a temporary file written by flowfm before this module existed:
/// `.<file name>.tmp-<pid>` (run files) or `.<file name>.tmp-<pid>-<nanos>` (checkpoints).
pub fn legacy_temp_file_pid(file_name: &str) -> Option<u32> {
    let rest = file_name.strip_prefix('.')?;
    let (target, tail) = rest.rsplit_once(".tmp-")?;
    let pid = match tail.split_once('-') {
        Some((pid, nanos)) if !nanos.is_empty() && nanos.bytes().all(|b| b.is_ascii_digit()) => pid,
        Some(_) => return None,
        None => tail,
    };
    let digits = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
    (digits && !target.is_empty())
        .then(|| pid.parse().ok())
        .flatten()
}

/// Whether a process with id `pid` is running. Where that cannot be told (no `/proc`), every
/// process counts as running, so nothing of a live writer is ever removed.
pub fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let proc_root = Path::new("/proc");
    if !proc_root.join("self").exists() {
        return true;
    }
    proc_root.join(pid.to_string()).exists()
}

/// Removes the temporary files of ours in `dir` whose writing process is no longer running (left
/// by a killed process); returns the paths removed, sorted. Ours are those named by
/// [`write_atomic`] / [`write_atomic_with`] and the older `.<name>.tmp-<pid>[-<nanos>]` files
/// ([`legacy_temp_file_pid`]). Files of running processes and every other file are left alone;
/// so are symlinks and directories, whatever their names.
pub fn remove_stale_temp_files(dir: &Path) -> Result<Vec<PathBuf>, FsError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| FsError::new(dir, "listing stale temporary files", e))?;
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| FsError::new(dir, "listing stale temporary files", e))?;
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| temp_file_pid(n).or_else(|| legacy_temp_file_pid(n)))
        else {
            continue;
        };
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if !is_file || process_alive(pid) {
            continue;
        }
        let path = entry.path();
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            // Another process cleaned it up first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(FsError::new(&path, "removing a stale temporary file", e)),
        }
    }
    removed.sort();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh, empty directory under the system temp dir, removed on drop.
    struct TestDir(PathBuf);

    impl TestDir {
        fn new(tag: &str) -> Self {
            let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
            let p = std::env::temp_dir()
                .join(format!("flowfm-core-fs-{tag}-{}-{seq}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
        fn names(&self) -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn write_atomic_replaces_the_file_and_leaves_no_temp() {
        let d = TestDir::new("replace");
        let p = d.0.join("a.bin");
        std::fs::write(&p, b"old").unwrap();
        write_atomic(&p, b"new content").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new content");
        assert_eq!(d.names(), vec!["a.bin".to_string()]);
    }

    #[test]
    fn write_atomic_into_a_missing_directory_fails_naming_it() {
        let d = TestDir::new("missing");
        let p = d.0.join("no_such_dir").join("a.bin");
        let e = write_atomic(&p, b"x").unwrap_err();
        assert!(e.to_string().contains("no_such_dir"), "{e}");
        assert!(d.names().is_empty());
    }

    #[derive(Debug)]
    #[allow(dead_code)] // the payloads are read only through `Debug`, in failure messages
    enum TestError {
        Fs(FsError),
        Writer(&'static str),
    }
    impl From<FsError> for TestError {
        fn from(e: FsError) -> Self {
            TestError::Fs(e)
        }
    }

    #[test]
    fn write_atomic_with_a_failing_writer_keeps_the_old_file_and_removes_the_temp() {
        let d = TestDir::new("failing");
        let p = d.0.join("store.h5");
        std::fs::write(&p, b"old store").unwrap();
        let mut seen_tmp = None;
        let r: Result<(), TestError> = write_atomic_with(&p, |tmp| {
            std::fs::write(tmp, b"half a st").unwrap();
            seen_tmp = Some(tmp.to_path_buf());
            Err(TestError::Writer("disk full"))
        });
        assert!(matches!(r, Err(TestError::Writer("disk full"))), "{r:?}");
        let tmp = seen_tmp.unwrap();
        let tmp_name = tmp.file_name().unwrap().to_string_lossy().into_owned();
        assert!(tmp_name.starts_with(TEMP_PREFIX), "{tmp_name}");
        assert!(tmp_name.ends_with("-store.h5"), "{tmp_name}");
        assert_eq!(temp_file_pid(&tmp_name), Some(std::process::id()));
        assert_eq!(tmp.parent(), Some(d.0.as_path()));
        assert!(!tmp.exists());
        assert_eq!(std::fs::read(&p).unwrap(), b"old store");
        assert_eq!(d.names(), vec!["store.h5".to_string()]);
    }

    #[test]
    fn write_atomic_with_a_panicking_writer_removes_the_temp() {
        let d = TestDir::new("panic");
        let p = d.0.join("k.h5");
        let dir = d.0.clone();
        let r = std::panic::catch_unwind(move || {
            let _: Result<(), TestError> = write_atomic_with(&dir.join("k.h5"), |tmp| {
                std::fs::write(tmp, b"partial").unwrap();
                panic!("writer bug");
            });
        });
        assert!(r.is_err());
        assert!(!p.exists());
        assert!(d.names().is_empty(), "{:?}", d.names());
    }

    #[test]
    fn write_atomic_with_a_working_writer_renames_its_file() {
        let d = TestDir::new("ok");
        let p = d.0.join("z.h5");
        let r: Result<(), TestError> = write_atomic_with(&p, |tmp| {
            std::fs::write(tmp, b"complete").map_err(|e| TestError::Fs(FsError::new(tmp, "w", e)))
        });
        r.unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"complete");
        assert_eq!(d.names(), vec!["z.h5".to_string()]);
    }

    #[test]
    fn legacy_temp_names_are_recognised_by_their_exact_shape() {
        assert_eq!(legacy_temp_file_pid(".last.safetensors.tmp-42"), Some(42));
        assert_eq!(legacy_temp_file_pid(".enc.safetensors.tmp-42-99"), Some(42));
        for other in [
            "last.safetensors.tmp-42",
            ".tmp-42",
            ".a.tmp-",
            ".a.tmp-x",
            ".a.tmp-42-",
            ".a.tmp-42-x",
            ".z.h5.42.tmp",
        ] {
            assert_eq!(legacy_temp_file_pid(other), None, "{other}");
        }
    }

    #[test]
    fn temp_file_pid_parses_only_our_names() {
        assert_eq!(temp_file_pid(".flowfm-tmp-123-4-a.h5"), Some(123));
        assert_eq!(temp_file_pid(".flowfm-tmp-123-4-a-b.h5"), Some(123));
        for other in [
            "a.h5",
            ".flowfm-tmp-x-4-a.h5",
            ".flowfm-tmp-123-a.h5",
            ".flowfm-tmp-123-4-",
            ".last.safetensors.tmp-123",
            ".flowfm-tmp--4-a",
        ] {
            assert_eq!(temp_file_pid(other), None, "{other}");
        }
    }

    /// The id of a process that has certainly exited: a child we started and waited for.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawning `true`");
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn stale_temps_of_dead_processes_are_removed_and_live_ones_kept() {
        if !Path::new("/proc/self").exists() {
            // Without /proc every process counts as alive: nothing may be removed.
            let d = TestDir::new("noproc");
            std::fs::write(d.0.join(format!("{TEMP_PREFIX}1-0-a")), b"").unwrap();
            assert!(remove_stale_temp_files(&d.0).unwrap().is_empty());
            return;
        }
        let d = TestDir::new("stale");
        let dead = dead_pid();
        assert!(!process_alive(dead));
        let me = std::process::id();
        let stale = d.0.join(format!("{TEMP_PREFIX}{dead}-7-run.safetensors"));
        let live = d.0.join(format!("{TEMP_PREFIX}{me}-7-run.safetensors"));
        let legacy_run = d.0.join(format!(".last.safetensors.tmp-{dead}"));
        let legacy_ckpt = d.0.join(format!(".enc.safetensors.tmp-{dead}-123456"));
        let legacy_live = d.0.join(format!(".metrics.json.tmp-{me}"));
        let other = d.0.join(format!(".z.h5.{dead}.tmp"));
        let stale_dir = d.0.join(format!("{TEMP_PREFIX}{dead}-8-dir"));
        for p in [
            &stale,
            &live,
            &legacy_run,
            &legacy_ckpt,
            &legacy_live,
            &other,
        ] {
            std::fs::write(p, b"x").unwrap();
        }
        std::fs::create_dir(&stale_dir).unwrap();
        let removed = remove_stale_temp_files(&d.0).unwrap();
        let mut want = vec![stale.clone(), legacy_run.clone(), legacy_ckpt.clone()];
        want.sort();
        assert_eq!(removed, want);
        assert!(!stale.exists() && !legacy_run.exists() && !legacy_ckpt.exists());
        assert!(live.exists() && legacy_live.exists() && other.exists() && stale_dir.exists());
    }
}
