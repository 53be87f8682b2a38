//! Pre-flight: which inputs an experiment lacks, and which catalog
//! resource a missing path is: the hint `rl-run` adds to a
//! "missing" error, and what `rl-run EXPERIMENT --fetch` fetches first.
//!
//! A path is recognised by its own name or that of the folder holding it:
//! `cifar-10-batches-bin`, `mnist`, `ddpm-cifar10-32` (a hub model's last
//! name component), `ddpm-ema-cifar10-32` (the converted DDIM checkpoint)
//! are the catalog's resources of that folder name.

use std::collections::HashSet;
use std::error::Error;
use std::path::{Path, PathBuf};

use crate::config::Experiment;
use crate::error::{ConfigError, RunError};
use crate::fetch::catalog::{default_parent, Catalog, Resource};
use crate::fetch::is_complete;
use crate::overrides::Override;
use crate::weights::WeightsError;
use envs::datasets::DataSet;

/// A resource that would supply a missing folder.
#[derive(Debug, Clone, PartialEq)]
pub struct Need {
    /// The resource.
    pub resource: Resource,
    /// The missing (or incomplete) folder.
    pub dir: PathBuf,
    /// The folder to fetch it into (the missing folder's parent).
    pub parent: PathBuf,
}

impl Need {
    /// The command that fetches it.
    pub fn command(&self) -> String {
        let into = if self.parent == default_parent(self.resource.place()) {
            String::new()
        } else {
            format!(" --into {}", self.parent.display())
        };
        format!("rl-run fetch {}{into}", self.resource.name)
    }
}

/// The resource whose folder is `path` or the folder holding it (a file
/// missing in it), if that folder is not a complete one. Folders further up
/// are not looked at: a project that lives in a folder called `mnist` is
/// not a data set.
pub fn for_path(catalog: &Catalog, path: &Path) -> Option<Need> {
    path.ancestors().take(2).find_map(|dir| {
        let resource = catalog.by_folder(dir.file_name()?.to_str()?)?;
        if is_complete(resource, dir) {
            return None;
        }
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Some(Need {
            resource: resource.clone(),
            dir: dir.to_path_buf(),
            parent,
        })
    })
}

fn env_path(e: &envs::EnvError) -> Option<&Path> {
    match e {
        envs::EnvError::Data { path, .. } => Some(path),
        _ => None,
    }
}

fn weights_path(e: &WeightsError) -> Option<&Path> {
    match e {
        WeightsError::Read { path, .. } | WeightsError::Format { path, .. } => Some(path),
        _ => None,
    }
}

fn config_path(e: &ConfigError) -> Option<&Path> {
    match e {
        ConfigError::Read { file, .. } => Some(file),
        _ => None,
    }
}

/// The path a "missing or unreadable" error names, if `error` is one.
fn missing_path<'a>(error: &'a (dyn Error + 'static)) -> Option<&'a Path> {
    if let Some(e) = error.downcast_ref::<RunError>() {
        return match e {
            RunError::Env(e) => env_path(e),
            RunError::Weights(e) => weights_path(e),
            RunError::Config(e) => config_path(e),
            _ => None,
        };
    }
    if let Some(e) = error.downcast_ref::<envs::EnvError>() {
        return env_path(e);
    }
    if let Some(e) = error.downcast_ref::<WeightsError>() {
        return weights_path(e);
    }
    error.downcast_ref::<ConfigError>().and_then(config_path)
}

/// For an error about a missing data set or model folder of the catalog,
/// the line that says how to fetch it.
pub fn hint(error: &(dyn Error + 'static), catalog: &Catalog) -> Option<String> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(need) = missing_path(e).and_then(|p| for_path(catalog, p)) {
            return Some(format!(
                "`{}` downloads {} into {} (or run the experiment again with --fetch)",
                need.command(),
                need.resource.summary,
                need.dir.display()
            ));
        }
        current = e.source();
    }
    None
}

/// An input of a run that is not there: a data set's folder or a
/// pretrained model's folder.
#[derive(Debug, Clone, PartialEq)]
pub struct MissingInput {
    /// The missing folder.
    pub dir: PathBuf,
    /// What it is (`data.set.dir of sft_pg_cifar.ron`, ...).
    pub role: String,
    /// The catalog resource that supplies it, if one does.
    pub fetch: Option<Need>,
}

impl std::fmt::Display for MissingInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.dir.display(), self.role)?;
        match &self.fetch {
            Some(need) => write!(
                f,
                ": `{}` downloads {}",
                need.command(),
                need.resource.summary
            ),
            None => write!(
                f,
                ": not in the fetch catalog; point the setting at your copy"
            ),
        }
    }
}

/// The missing folders of the catalog that the experiment or ablation in
/// `path` (and the runs it starts from or compares with) needs: a data
/// set's `dir`, a fine-tuning `init` that names a hub model's folder.
pub fn needs(
    path: &Path,
    overrides: &[Override],
    catalog: &Catalog,
) -> Result<Vec<Need>, RunError> {
    Ok(missing_inputs(path, overrides, catalog)?
        .into_iter()
        .filter_map(|m| m.fetch)
        .collect())
}

/// Every data set folder and pretrained model folder that the experiment,
/// ablation or comparison in `path` (and the runs it starts from or
/// compares with) needs and that is not there, each with the catalog
/// resource that supplies it where there is one: what a run reports at once
/// before it starts, rather than one missing input per attempt.
pub fn missing_inputs(
    path: &Path,
    overrides: &[Override],
    catalog: &Catalog,
) -> Result<Vec<MissingInput>, RunError> {
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    collect(path, overrides, catalog, &mut seen, &mut found)?;
    Ok(found)
}

fn collect(
    path: &Path,
    overrides: &[Override],
    catalog: &Catalog,
    seen: &mut HashSet<PathBuf>,
    found: &mut Vec<MissingInput>,
) -> Result<(), RunError> {
    if !seen.insert(path.to_path_buf()) {
        return Ok(());
    }
    let text = crate::error::read_text(path)?;
    if crate::config::top_level_name(&text) == Some("Control") {
        // A control task needs no data set or pretrained model.
        return Ok(());
    }
    if crate::config::top_level_name(&text) == Some("Ablation") {
        let (ablation, _, _) = crate::ablation::Ablation::load(path)?;
        let base = Experiment::resolve_relative(path, &ablation.base);
        return collect(&base, &[], catalog, seen, found);
    }
    if crate::config::top_level_name(&text) == Some("Comparison") {
        let comparison = crate::comparison::Comparison::load(path)?;
        for file in std::iter::once(&comparison.model).chain(&comparison.fine_tuned) {
            collect(
                &Experiment::resolve_relative(path, file),
                &[],
                catalog,
                seen,
                found,
            )?;
        }
        return Ok(());
    }
    let exp = crate::overrides::apply(Experiment::parse(&text, path)?, overrides, path)?;
    let file = path.display();
    let mut add = |dir: &Path, role: String| {
        if !dir.exists() && !found.iter().any(|m: &MissingInput| m.dir == dir) {
            found.push(MissingInput {
                dir: dir.to_path_buf(),
                role,
                fetch: for_path(catalog, dir),
            });
        }
    };
    match &exp.data.set {
        DataSet::Mnist { dir, .. }
        | DataSet::Cifar10 { dir }
        | DataSet::Digits { dir }
        | DataSet::ImageFolder { dir, .. } => {
            add(dir, format!("data.set.dir of {file}"));
        }
        _ => {}
    }
    let mut others: Vec<PathBuf> = exp
        .compare
        .iter()
        .map(|c| Experiment::resolve_relative(path, c))
        .collect();
    if let Some(init) = exp.task.init() {
        let init = Experiment::resolve_relative(path, init);
        if init.exists() {
            others.insert(0, init);
        } else if init.extension().is_none_or(|e| e != "ron") {
            // A missing experiment file is a configuration error of its own.
            add(&init, format!("task.init of {file}, a pretrained model"));
        }
    }
    for other in others.into_iter().filter(|p| p.is_file()) {
        // A run that is trained already needs nothing more; one that is not
        // reads its data where the run will point it (a data folder set on
        // the command line reaches it, as the runner carries it).
        let Ok(dep) = Experiment::load(&other) else {
            collect(&other, &[], catalog, seen, found)?;
            continue;
        };
        if !crate::checkpoint::Checkpoint::exists(
            &crate::runner::model::run_dir(&dep).join("final"),
        ) {
            let carried = crate::overrides::carried_to_dependency(overrides, &exp, &dep);
            collect(&other, &carried, catalog, seen, found)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_paths_map_to_the_resource_of_their_folder() {
        let c = Catalog::load(None).unwrap();
        let root = Path::new("/nonexistent-shortcut");
        let need = for_path(&c, &root.join("data/cifar-10-batches-bin/data_batch_1.bin")).unwrap();
        assert_eq!(need.resource.name, "cifar10");
        assert_eq!(need.dir, root.join("data/cifar-10-batches-bin"));
        assert_eq!(
            need.command(),
            "rl-run fetch cifar10 --into /nonexistent-shortcut/data"
        );
        let need = for_path(&c, &root.join("models/ddpm-cifar10-32/config.json")).unwrap();
        assert_eq!(need.resource.name, "google/ddpm-cifar10-32");
        assert_eq!(need.parent, root.join("models"));
        let need = for_path(&c, &root.join("models/ddpm-ema-cifar10-32")).unwrap();
        assert_eq!(need.resource.name, "ddim-ema-cifar10");
        assert_eq!(
            need.command(),
            "rl-run fetch ddim-ema-cifar10 --into /nonexistent-shortcut/models"
        );
        let need = for_path(
            &c,
            &root.join("models/ddpm-noema-cifar10-32/diffusion_pytorch_model.safetensors"),
        )
        .unwrap();
        assert_eq!(need.resource.name, "ddim-cifar10");
        let need = for_path(&c, Path::new("mnist")).unwrap();
        assert_eq!(need.parent, Path::new("."));
        assert!(for_path(&c, Path::new("data/mnist5000/x")).is_none());
        assert!(for_path(&c, &root.join("mnist/experiments/x.ron")).is_none());
    }

    #[test]
    fn a_missing_file_error_gets_a_hint_and_others_do_not() {
        let c = Catalog::load(None).unwrap();
        let missing = RunError::Env(envs::EnvError::Data {
            path: "/nonexistent-shortcut/mnist/train-images-idx3-ubyte".into(),
            message: "missing".into(),
        });
        let hint = hint(&missing, &c).unwrap();
        assert!(
            hint.contains("rl-run fetch mnist --into /nonexistent-shortcut"),
            "{hint}"
        );
        let other = RunError::Diverged("NaN".into());
        assert!(super::hint(&other, &c).is_none());
    }
}
