//! One trainer per run folder. The trainer holds an OS lock (`flock`) on the
//! run's `train.lock`; the kernel releases it when the holder's file is
//! closed, which happens however the process ends (`kill -9` included, and
//! before the dead process is reaped). The file also holds the holder's
//! process id, but only as information for the message: whether a run is
//! locked is decided by the kernel's lock alone, so a stale file left by a
//! crash, a reboot or another container never blocks a run.
//!
//! A second `rl-run` that needs the same run waits for it (a dependency) or
//! refuses (the run it was asked for), instead of training it twice.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::RunError;

const LOCK_FILE: &str = "train.lock";

/// How long a run that was asked for keeps trying a held lock before it
/// refuses: a process killed a moment ago releases its lock only once the
/// kernel has torn it down (its memory first, then its files), which can take
/// a fraction of a second for a large process.
const DYING_HOLDER_GRACE: Duration = Duration::from_secs(5);

/// How often a held lock is tried again while waiting.
const POLL: Duration = Duration::from_millis(50);

/// Held while a run is being trained; releases the lock and removes the lock
/// file when dropped (or when the process ends in any way).
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
    file: File,
}

impl RunLock {
    /// Takes the lock of `run_dir`. If another process holds it: with `wait`,
    /// waits until it is released; without, tries for a few seconds (a holder
    /// that was just killed is still dying) and then fails, naming the
    /// holder's process id.
    pub fn acquire(run_dir: &Path, wait: bool) -> Result<Self, RunError> {
        Self::acquire_with_grace(run_dir, wait, DYING_HOLDER_GRACE)
    }

    fn acquire_with_grace(run_dir: &Path, wait: bool, grace: Duration) -> Result<Self, RunError> {
        std::fs::create_dir_all(run_dir).map_err(|source| RunError::Io {
            path: run_dir.to_path_buf(),
            source,
        })?;
        let path = run_dir.join(LOCK_FILE);
        let io = |source| RunError::Io {
            path: path.clone(),
            source,
        };
        let started = Instant::now();
        let mut announced = false;
        loop {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io)?;
            match file.try_lock() {
                Ok(()) => {
                    // A holder that was releasing removed the file after we
                    // opened it: our lock is on a file nobody else will see.
                    if !names_same_file(&path, &file) {
                        continue;
                    }
                    file.set_len(0).map_err(io)?;
                    file.rewind().map_err(io)?;
                    write!(file, "{}", std::process::id()).map_err(io)?;
                    return Ok(Self { path, file });
                }
                Err(TryLockError::WouldBlock) => {
                    let holder = holder_pid(&mut file);
                    if wait {
                        if !announced {
                            eprintln!(
                                "rl-run: waiting for {}, which is training {}",
                                describe(holder),
                                run_dir.display()
                            );
                            announced = true;
                        }
                    } else if started.elapsed() >= grace {
                        return Err(RunError::Checkpoint {
                            path: run_dir.to_path_buf(),
                            message: format!("{} is training this run right now", describe(holder)),
                        });
                    }
                    std::thread::sleep(POLL);
                }
                Err(TryLockError::Error(source)) => return Err(io(source)),
            }
        }
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Unlink while still holding the lock, so that a waiter that gets the
        // lock next sees that the file it holds is gone and opens a new one.
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// Whether `path` still names the open `file` (same device and inode).
fn names_same_file(path: &Path, file: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The process id the holder wrote into the lock file, if readable.
fn holder_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

fn describe(holder: Option<u32>) -> String {
    holder.map_or_else(
        || "another process".to_string(),
        |pid| format!("process {pid}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shortcut-lock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_stale_file_never_blocks_whatever_pid_it_names() {
        let dir = fresh_dir("stale");
        // PID 1 is alive, but holds no lock on the file: the file is stale
        // (a crash, a reboot, another container), and the lock is taken.
        std::fs::write(dir.join(LOCK_FILE), "1").unwrap();
        let lock = RunLock::acquire(&dir, false).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap(),
            std::process::id().to_string()
        );
        drop(lock);
        assert!(!dir.join(LOCK_FILE).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_held_lock_refuses_naming_the_holder_and_is_free_once_released() {
        let dir = fresh_dir("held");
        let held = RunLock::acquire(&dir, false).unwrap();
        // flock locks belong to an open file: a second open of the same file,
        // even in this process, is another contender.
        let err = RunLock::acquire_with_grace(&dir, false, Duration::from_millis(120))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("process {} is training", std::process::id())),
            "{err}"
        );
        drop(held);
        let again = RunLock::acquire_with_grace(&dir, false, Duration::ZERO).unwrap();
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_waiter_gets_the_lock_when_the_holder_lets_go() {
        let dir = fresh_dir("wait");
        let held = RunLock::acquire(&dir, false).unwrap();
        let waiter = {
            let dir = dir.clone();
            std::thread::spawn(move || RunLock::acquire(&dir, true).map(|_| ()))
        };
        std::thread::sleep(Duration::from_millis(200));
        assert!(!waiter.is_finished(), "the waiter must wait for the holder");
        drop(held);
        waiter.join().unwrap().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
