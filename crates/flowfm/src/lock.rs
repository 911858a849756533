//! Advisory locks so that two processes never write the same run directory or store: a lock file
//! created with `create_new` holding the owner's PID and host. A second writer gets an error
//! naming the holder; a lock left by a process that no longer exists (on this host) is taken over
//! with a notice. The lock file is removed when the guard is dropped.
//!
//! Liveness is `flowfm_core::fs::process_alive` (`/proc/<pid>` on Linux). Where that cannot be
//! told, a lock is assumed held and the error says which file to remove once its owner is gone.

use anyhow::{bail, Context, Result};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A held lock; dropping it removes the lock file.
#[derive(Debug)]
pub struct Lock {
    path: PathBuf,
}

/// The owner recorded in a lock file.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Owner {
    pid: u32,
    host: String,
}

fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown-host".into())
}

fn parse_owner(text: &str) -> Option<Owner> {
    let mut pid = None;
    let mut host = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("pid=") {
            pid = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("host=") {
            host = Some(v.trim().to_string());
        }
    }
    Some(Owner {
        pid: pid?,
        host: host?,
    })
}

impl Lock {
    /// Takes the lock `path` for `what` (named in messages, e.g. "run directory runs/x").
    pub fn acquire(path: &Path, what: &str) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let me = Owner {
            pid: std::process::id(),
            host: host_name(),
        };
        // Two attempts: the second after removing a stale lock.
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(path) {
                Ok(mut f) => {
                    writeln!(f, "pid={}\nhost={}", me.pid, me.host)
                        .with_context(|| format!("writing lock {}", path.display()))?;
                    return Ok(Lock {
                        path: path.to_path_buf(),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = fs::read_to_string(path).unwrap_or_default();
                    let owner = parse_owner(&text);
                    let stale = match &owner {
                        // A half-written lock (its writer died between create and write).
                        None => true,
                        Some(o) if o.host == me.host => !flowfm_core::fs::process_alive(o.pid),
                        Some(_) => false,
                    };
                    if !stale {
                        let holder = owner
                            .map(|o| format!("process {} on {}", o.pid, o.host))
                            .unwrap_or_else(|| "another process".into());
                        bail!(
                            "{what} is in use by {holder} (lock file {}); wait for it to finish, or remove the lock file if that process is gone",
                            path.display()
                        );
                    }
                    eprintln!(
                        "flowfm: taking over the stale lock {} of {what} (its process no longer exists)",
                        path.display()
                    );
                    fs::remove_file(path)
                        .with_context(|| format!("removing stale lock {}", path.display()))?;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("creating lock {}", path.display()))
                }
            }
        }
        bail!(
            "{what}: could not take the lock {} (another process keeps taking it)",
            path.display()
        )
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_with_the_holder_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".lock");
        let first = Lock::acquire(&path, "run directory x").unwrap();
        let err = Lock::acquire(&path, "run directory x")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("run directory x is in use by process"),
            "{err}"
        );
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        drop(first);
        assert!(!path.exists(), "the lock file goes with the guard");
        let _again = Lock::acquire(&path, "run directory x").unwrap();
    }

    #[test]
    fn a_lock_of_a_dead_process_is_taken_over() {
        if !Path::new("/proc/self").exists() {
            flowfm_core::testing::skip_or_fail("/proc is not available to tell live processes");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".lock");
        // PIDs are below 2^22 on Linux: this one cannot be running.
        fs::write(&path, format!("pid=4294967\nhost={}\n", host_name())).unwrap();
        let lock = Lock::acquire(&path, "store s").unwrap();
        let text = fs::read_to_string(lock.path()).unwrap();
        assert!(
            text.contains(&format!("pid={}", std::process::id())),
            "{text}"
        );
    }

    #[test]
    fn a_lock_held_on_another_host_is_never_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".lock");
        fs::write(&path, "pid=4294967\nhost=some-other-machine\n").unwrap();
        let err = Lock::acquire(&path, "store s").unwrap_err().to_string();
        assert!(err.contains("some-other-machine"), "{err}");
    }
}
