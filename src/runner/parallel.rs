//! Training independent runs side by side: the experiments a run depends on
//! are trained by child `rl-run` processes, up to `jobs` at a time, while the
//! main run waits only for the one it starts from. Each child seeds itself
//! from its own experiment, so results do not depend on the schedule.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::checkpoint::{CheckpointStore, RunFolderStore};
use crate::config::Experiment;
use crate::error::RunError;
use crate::overrides::Override;

use super::model::run_dir;

/// A dependency being trained by a child process.
pub struct Background {
    children: Vec<(String, PathBuf, Child)>,
    queue: Vec<(String, PathBuf, Vec<Override>)>,
    executable: PathBuf,
    jobs: usize,
}

impl Background {
    /// Starts training those of `deps` (experiment files, each with the
    /// `--set` overrides it takes) that have no final result yet, at most
    /// `jobs` at a time; the rest wait in a queue.
    pub fn start(
        executable: &Path,
        deps: &[(PathBuf, Vec<Override>)],
        jobs: usize,
    ) -> Result<Self, RunError> {
        let mut queue = Vec::new();
        for (path, overrides) in deps {
            let exp = crate::overrides::apply(Experiment::load(path)?, overrides, path)?;
            let done = RunFolderStore::new(&run_dir(&exp)).published()?.is_some();
            if !done && !queue.iter().any(|(name, _, _)| *name == exp.name) {
                queue.push((exp.name.clone(), path.clone(), overrides.clone()));
            }
        }
        queue.reverse();
        let mut background = Self {
            children: Vec::new(),
            queue,
            executable: executable.to_path_buf(),
            jobs: jobs.max(1),
        };
        background.fill(background.jobs)?;
        Ok(background)
    }

    fn fill(&mut self, slots: usize) -> Result<(), RunError> {
        while self.children.len() < slots {
            let Some((name, path, overrides)) = self.queue.pop() else {
                break;
            };
            let exp = crate::overrides::apply(Experiment::load(&path)?, &overrides, &path)?;
            let dir = run_dir(&exp);
            std::fs::create_dir_all(&dir).map_err(|source| RunError::Io {
                path: dir.clone(),
                source,
            })?;
            let log = dir.join("log.txt");
            let file = std::fs::File::create(&log).map_err(|source| RunError::Io {
                path: log.clone(),
                source,
            })?;
            let mut cmd = Command::new(&self.executable);
            // As a dependency, the child resumes an interrupted run and waits
            // if another process is training it.
            cmd.arg(&path)
                .args(["--quiet", "--no-table", "--jobs", "1", "--as-dependency"]);
            for o in &overrides {
                cmd.arg("--set").arg(o.to_arg());
            }
            // Side by side on shared cores, libgomp's default of spinning in
            // its barriers makes multi-threaded runs wait on each other (two
            // 2-thread processes on 2 cores: 4.6x slower than passive
            // waiting, docs/performance.md); the numbers do not change.
            if self.jobs > 1 && std::env::var_os("OMP_WAIT_POLICY").is_none() {
                cmd.env("OMP_WAIT_POLICY", "PASSIVE");
            }
            let child = cmd
                .stdout(Stdio::null())
                .stderr(file)
                .spawn()
                .map_err(|source| RunError::Io {
                    path: self.executable.clone(),
                    source,
                })?;
            eprintln!(
                "rl-run: training {name} in the background (log: {})",
                log.display()
            );
            self.children.push((name, log, child));
        }
        Ok(())
    }

    /// Waits until the run `name` has finished (no-op if it is not ours),
    /// starting queued runs as slots free up.
    pub fn wait_for(&mut self, name: &str) -> Result<(), RunError> {
        while self.children.iter().any(|(n, _, _)| n == name)
            || self.queue.iter().any(|(n, _, _)| n == name)
        {
            self.poll(self.jobs)?;
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// Reaps finished children and refills up to `slots` running ones.
    pub fn poll(&mut self, slots: usize) -> Result<(), RunError> {
        let mut i = 0;
        while i < self.children.len() {
            let status = self.children[i]
                .2
                .try_wait()
                .map_err(|source| RunError::Io {
                    path: self.executable.clone(),
                    source,
                })?;
            match status {
                None => i += 1,
                Some(status) => {
                    let (name, log, _) = self.children.remove(i);
                    if !status.success() {
                        let tail = std::fs::read_to_string(&log).unwrap_or_default();
                        let last = tail
                            .lines()
                            .rev()
                            .find(|l| !l.trim().is_empty())
                            .unwrap_or("")
                            .to_string();
                        return Err(RunError::Diverged(format!(
                            "training {name} failed ({status}): {last} (see {})",
                            log.display()
                        )));
                    }
                    eprintln!("rl-run: {name} finished");
                }
            }
        }
        self.fill(slots)
    }

    /// Waits for every remaining run.
    pub fn finish(mut self) -> Result<(), RunError> {
        while !self.children.is_empty() || !self.queue.is_empty() {
            self.poll(self.jobs)?;
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }
}
