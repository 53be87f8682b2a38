//! One trainer per run folder: a lock file holding the trainer's process id.
//! A second `rl-run` that needs the same run waits for it (a dependency) or
//! refuses (the run it was asked for), instead of training it twice.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::RunError;

const LOCK_FILE: &str = "train.lock";

/// Held while a run is being trained; removes its lock file when dropped.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
}

/// Who holds a run folder's lock, if a live process does.
fn holder(path: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    let alive = Path::new(&format!("/proc/{pid}")).exists() && pid != std::process::id();
    alive.then_some(pid)
}

impl RunLock {
    /// Takes the lock of `run_dir` (a stale lock of a dead process is taken over).
    /// If a live process holds it: with `wait`, waits until it is released;
    /// without, fails naming the process.
    pub fn acquire(run_dir: &Path, wait: bool) -> Result<Self, RunError> {
        std::fs::create_dir_all(run_dir).map_err(|source| RunError::Io {
            path: run_dir.to_path_buf(),
            source,
        })?;
        let path = run_dir.join(LOCK_FILE);
        let mut announced = false;
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    write!(file, "{}", std::process::id()).map_err(|source| RunError::Io {
                        path: path.clone(),
                        source,
                    })?;
                    return Ok(Self { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match holder(&path) {
                    Some(pid) if wait => {
                        if !announced {
                            eprintln!(
                                "rl-run: waiting for process {pid}, which is training {}",
                                run_dir.display()
                            );
                            announced = true;
                        }
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    Some(pid) => {
                        return Err(RunError::Checkpoint {
                            path: run_dir.to_path_buf(),
                            message: format!("process {pid} is training this run right now"),
                        })
                    }
                    None => {
                        // Stale: its owner died. Remove and retry.
                        let _ = std::fs::remove_file(&path);
                    }
                },
                Err(source) => return Err(RunError::Io { path, source }),
            }
        }
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_holder_blocks_and_a_dead_one_does_not() {
        let dir = std::env::temp_dir().join(format!("shortcut-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // PID 1 is always alive: the lock is refused.
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(LOCK_FILE), "1").unwrap();
        let err = RunLock::acquire(&dir, false).unwrap_err().to_string();
        assert!(err.contains("process 1 is training"), "{err}");
        // A pid that cannot exist is stale: the lock is taken over, and released on drop.
        std::fs::write(dir.join(LOCK_FILE), "4294967295").unwrap();
        let lock = RunLock::acquire(&dir, false).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap(),
            std::process::id().to_string()
        );
        drop(lock);
        assert!(!dir.join(LOCK_FILE).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
