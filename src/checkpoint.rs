//! Checkpoints: a directory of safetensors files (weights and optimiser
//! state), the run's progress as JSON and the experiment that produced them.
//! Writes are atomic: everything goes to `<dir>.tmp`, which then replaces
//! `<dir>` by renames, so a crash leaves either the old or the new checkpoint.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::Tensor;

use crate::error::RunError;

/// The file holding the experiment inside a checkpoint.
pub const EXPERIMENT_FILE: &str = "experiment.ron";
const STATE_FILE: &str = "state.json";

/// Progress of a run at the moment it was checkpointed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Epochs completed.
    pub epochs_done: usize,
    /// Optimisation steps taken (the x axis of the logs).
    pub global_step: u64,
    /// What the training has cost so far (absent from runs written before
    /// it was counted: zero).
    #[serde(default)]
    pub cost: TrainingCost,
}

impl RunState {
    /// A run before its first epoch.
    pub fn start() -> Self {
        Self {
            epochs_done: 0,
            global_step: 0,
            cost: TrainingCost::default(),
        }
    }
}

/// What a training has cost: its epochs' wall time and the images its
/// networks evaluated, evaluations for measuring aside.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingCost {
    /// Seconds spent in epochs (evaluations and checkpoint writing aside).
    pub seconds: f64,
    /// Images the sampler's networks were evaluated on in training (one per
    /// row of every forward pass; see [`crate::trainer::Training::network_evaluations`]).
    pub network_evaluations: u64,
}

/// A set of named tensor groups to write as one checkpoint.
pub struct CheckpointWriter {
    parts: Vec<(String, Vec<(String, Tensor)>)>,
}

impl CheckpointWriter {
    /// An empty checkpoint.
    pub fn new() -> Self {
        Self { parts: Vec::new() }
    }

    /// Adds the variables of `vs` as `<name>.safetensors`.
    pub fn vars(mut self, name: &str, vs: &VarStore) -> Self {
        let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        self.parts.push((name.to_string(), named));
        self
    }

    /// Adds named tensors (e.g. an optimiser state) as `<name>.safetensors`.
    pub fn tensors(mut self, name: &str, tensors: Vec<(String, Tensor)>) -> Self {
        self.parts.push((name.to_string(), tensors));
        self
    }

    /// A 64-bit digest (SHA-256's first 8 bytes) of every part's names,
    /// shapes, kinds and values: equal on the ranks of a data-parallel run
    /// exactly when their weights and optimiser states are.
    pub fn fingerprint(&self) -> u64 {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        for (part, tensors) in &self.parts {
            hash.update(part.as_bytes());
            for (name, tensor) in tensors {
                let flat = tensor.detach().to_device(tch::Device::Cpu).contiguous();
                hash.update(name.as_bytes());
                hash.update(format!("{:?}{:?}", flat.kind(), flat.size()).as_bytes());
                let mut bytes = vec![0u8; flat.numel() * flat.kind().elt_size_in_bytes()];
                flat.copy_data_u8(&mut bytes, flat.numel());
                hash.update(&bytes);
            }
        }
        u64::from_le_bytes(hash.finalize()[..8].try_into().expect("8 bytes"))
    }

    /// Writes everything to `dir` atomically.
    pub fn write(
        &self,
        dir: &Path,
        state: &RunState,
        experiment_ron: &str,
    ) -> Result<(), RunError> {
        let tmp = sibling(dir, "tmp");
        let old = sibling(dir, "old");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RunError::Io { path, source }
        };
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        for (name, tensors) in &self.parts {
            let file = tmp.join(format!("{name}.safetensors"));
            let cpu: Vec<(String, Tensor)> = tensors
                .iter()
                .map(|(k, t)| (k.clone(), t.detach().to_device(tch::Device::Cpu)))
                .collect();
            Tensor::write_safetensors(&cpu, &file)?;
            sync(&file)?;
        }
        let state_json = serde_json::to_string_pretty(state).expect("run state serialises");
        for (file, text) in [
            (STATE_FILE, state_json.as_str()),
            (EXPERIMENT_FILE, experiment_ron),
        ] {
            let path = tmp.join(file);
            fs::write(&path, text).map_err(io(&path))?;
            sync(&path)?;
        }
        if old.exists() {
            fs::remove_dir_all(&old).map_err(io(&old))?;
        }
        if dir.exists() {
            fs::rename(dir, &old).map_err(io(dir))?;
        }
        fs::rename(&tmp, dir).map_err(io(dir))?;
        if old.exists() {
            fs::remove_dir_all(&old).map_err(io(&old))?;
        }
        Ok(())
    }
}

impl Default for CheckpointWriter {
    fn default() -> Self {
        Self::new()
    }
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".{suffix}"));
    dir.with_file_name(name)
}

fn sync(path: &Path) -> Result<(), RunError> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|source| RunError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// A checkpoint directory to read from.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    dir: PathBuf,
}

impl Checkpoint {
    /// Opens `dir`, falling back to `<dir>.old` when a crash interrupted the final rename.
    pub fn open(dir: &Path) -> Result<Self, RunError> {
        for candidate in [dir.to_path_buf(), sibling(dir, "old")] {
            if candidate.join(STATE_FILE).is_file() {
                return Ok(Self { dir: candidate });
            }
        }
        Err(RunError::Checkpoint {
            path: dir.to_path_buf(),
            message: format!("no checkpoint here (expected {STATE_FILE} and *.safetensors)"),
        })
    }

    /// Whether a checkpoint exists at `dir` (or its `.old` fallback).
    pub fn exists(dir: &Path) -> bool {
        Self::open(dir).is_ok()
    }

    /// The directory read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The run's progress.
    pub fn state(&self) -> Result<RunState, RunError> {
        let path = self.dir.join(STATE_FILE);
        let text = fs::read_to_string(&path).map_err(|source| RunError::Io {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| RunError::Checkpoint {
            path,
            message: e.to_string(),
        })
    }

    /// The experiment text stored with the checkpoint.
    pub fn experiment_ron(&self) -> Result<String, RunError> {
        let path = self.dir.join(EXPERIMENT_FILE);
        fs::read_to_string(&path).map_err(|source| RunError::Io { path, source })
    }

    /// The tensors of `<name>.safetensors`.
    pub fn tensors(&self, name: &str) -> Result<Vec<(String, Tensor)>, RunError> {
        let path = self.dir.join(format!("{name}.safetensors"));
        if !path.is_file() {
            return Err(RunError::Checkpoint {
                path,
                message: "file missing".into(),
            });
        }
        Tensor::read_safetensors(&path).map_err(|e| RunError::Checkpoint {
            path,
            message: e.to_string(),
        })
    }

    /// Loads `<name>.safetensors` into `vs`: every variable must be present with its shape.
    pub fn load_vars(&self, name: &str, vs: &mut VarStore) -> Result<(), RunError> {
        let path = self.dir.join(format!("{name}.safetensors"));
        let saved: HashMap<String, Tensor> = self.tensors(name)?.into_iter().collect();
        let variables = vs.variables();
        let mut names: Vec<&String> = variables.keys().collect();
        names.sort();
        for key in names {
            let mut var = variables[key].shallow_clone();
            let Some(src) = saved.get(key) else {
                return Err(RunError::Checkpoint {
                    path,
                    message: format!("tensor {key} missing"),
                });
            };
            if src.size() != var.size() {
                return Err(RunError::Checkpoint {
                    path,
                    message: format!(
                        "tensor {key}: expected shape {:?}, file has {:?}",
                        var.size(),
                        src.size()
                    ),
                });
            }
            tch::no_grad(|| var.copy_(&src.to_device(var.device())));
        }
        if let Some(extra) = saved.keys().find(|k| !variables.contains_key(*k)) {
            return Err(RunError::Checkpoint {
                path,
                message: format!("unexpected tensor {extra} (a different model?)"),
            });
        }
        Ok(())
    }
}

/// Where a trainer keeps its checkpoints (border's checkpointing, as a
/// trait): the latest one, replaced as training goes, and the final result.
pub trait CheckpointStore {
    /// Writes `checkpoint` with the run's progress and experiment as the
    /// latest checkpoint, atomically.
    fn save(
        &mut self,
        checkpoint: &CheckpointWriter,
        state: &RunState,
        experiment_ron: &str,
    ) -> Result<(), RunError>;
    /// The latest checkpoint, if one was saved.
    fn latest(&self) -> Result<Option<Checkpoint>, RunError>;
    /// The published result, if the run finished.
    fn published(&self) -> Result<Option<Checkpoint>, RunError>;
    /// Publishes the latest checkpoint as the final result and says where it is.
    fn publish(&mut self) -> Result<PathBuf, RunError>;
}

/// The checkpoints of a run folder: `checkpoint/` (the latest) and `final/`
/// (the published result), each replaced atomically.
#[derive(Debug, Clone)]
pub struct RunFolderStore {
    run_dir: PathBuf,
}

impl RunFolderStore {
    /// The store of the run folder `run_dir`.
    pub fn new(run_dir: &Path) -> Self {
        Self {
            run_dir: run_dir.to_path_buf(),
        }
    }

    /// Where the latest checkpoint lives.
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.run_dir.join("checkpoint")
    }

    /// Where the published result lives.
    pub fn final_dir(&self) -> PathBuf {
        self.run_dir.join("final")
    }
}

impl CheckpointStore for RunFolderStore {
    fn save(
        &mut self,
        checkpoint: &CheckpointWriter,
        state: &RunState,
        experiment_ron: &str,
    ) -> Result<(), RunError> {
        checkpoint.write(&self.checkpoint_dir(), state, experiment_ron)
    }

    fn latest(&self) -> Result<Option<Checkpoint>, RunError> {
        Ok(Checkpoint::open(&self.checkpoint_dir()).ok())
    }

    fn published(&self) -> Result<Option<Checkpoint>, RunError> {
        Ok(Checkpoint::open(&self.final_dir()).ok())
    }

    fn publish(&mut self) -> Result<PathBuf, RunError> {
        let checkpoint = Checkpoint::open(&self.checkpoint_dir())?;
        let final_dir = self.final_dir();
        copy_dir(checkpoint.dir(), &final_dir)?;
        Ok(final_dir)
    }
}

/// Copies the files of `from` to `to` through `<to>.tmp` and renames (the
/// old `to` moves to `<to>.old` first), so `to` is, at any moment, absent
/// for at most the instant between two renames and otherwise the old folder
/// or the complete copy.
fn copy_dir(from: &Path, to: &Path) -> Result<(), RunError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RunError::Io { path, source }
    };
    let tmp = to.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        std::fs::copy(entry.path(), tmp.join(entry.file_name())).map_err(io(&entry.path()))?;
    }
    // The old folder steps aside before the copy takes its place, so a
    // crash leaves one of the two under a name a later publish cleans up.
    let old = to.with_extension("old");
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    if to.exists() {
        std::fs::rename(to, &old).map_err(io(to))?;
    }
    std::fs::rename(&tmp, to).map_err(io(to))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_folder_store_saves_the_latest_and_publishes_it_whole() {
        let dir = std::env::temp_dir().join(format!("store-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut store = RunFolderStore::new(&dir);
        assert!(store.latest().unwrap().is_none());
        assert!(store.publish().is_err(), "nothing to publish yet");
        for epoch in 1..=2 {
            let weights = vec![(
                "w".to_string(),
                Tensor::full([3], epoch as f64, (tch::Kind::Float, tch::Device::Cpu)),
            )];
            let state = RunState {
                epochs_done: epoch,
                global_step: 10 * epoch as u64,
                cost: Default::default(),
            };
            store
                .save(
                    &CheckpointWriter::new().tensors("net", weights),
                    &state,
                    "X()",
                )
                .unwrap();
        }
        let latest = store.latest().unwrap().unwrap();
        assert_eq!(latest.state().unwrap().epochs_done, 2);
        let published = Checkpoint::open(&store.publish().unwrap()).unwrap();
        assert_eq!(published.dir(), dir.join("final"));
        assert_eq!(published.state().unwrap().global_step, 20);
        assert_eq!(published.experiment_ron().unwrap(), "X()");
        let w = &published.tensors("net").unwrap()[0].1;
        assert_eq!(Vec::<f32>::try_from(w).unwrap(), [2.0; 3]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
