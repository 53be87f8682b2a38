//! Ablations: one RON file naming an experiment (the base: a fine-tuning or
//! a pretraining run), the variants to compare and the seeds. Each variant
//! overrides a few settings of the base; everything else is the base's.
//! Every variant is trained once per seed as its own run, so TensorBoard
//! overlays them.
//!
//! ```ron
//! Ablation(
//!     name: "ablation_fig4_swissroll",
//!     base: "sft_pg_swissroll.ron",
//!     seeds: [0, 1, 2],
//!     epochs: 150,
//!     variants: [
//!         (name: "sft_gp", label: "SFT (GP)", agent: Pathwise,
//!          regularizer: GradientPenalty(eta: 0.001)),
//!         (name: "sft_pg_b", label: "SFT-PG (B)"),
//!     ],
//! )
//! ```

use std::path::{Path, PathBuf};

use agents::critic::CriticRegularizer;
use agents::generator::VarianceConfig;
use serde::{Deserialize, Serialize};

use crate::config::{self, AgentConfig, Checker, Experiment, Task};
use crate::error::ConfigError;

/// A set of variants of one experiment, each run under several seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ablation {
    /// Name of the ablation; its runs and results go to `<base's record.dir>/<name>/`.
    pub name: String,
    /// The experiment (path relative to this file) the variants modify: a
    /// fine-tuning run, or a pretraining run (then variants may set `ema` only).
    pub base: String,
    /// Seeds; every variant is trained once per seed.
    pub seeds: Vec<u64>,
    /// Epochs of every run (default: the base's).
    #[serde(default)]
    pub epochs: Option<usize>,
    /// The variants, in table order.
    pub variants: Vec<Variant>,
}

/// One variant: the settings it changes in the base experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// Short name (letters, digits, '_', '-'): its runs are `<name>-seed<k>`.
    pub name: String,
    /// Row label in the table and legend (default: the name).
    #[serde(default)]
    pub label: Option<String>,
    /// The agent (task.agent).
    #[serde(default)]
    pub agent: Option<AgentConfig>,
    /// The critic regulariser (task.critic.regularizer).
    #[serde(default)]
    pub regularizer: Option<CriticRegularizer>,
    /// Generator steps per critic round (task.generator.n_generator).
    #[serde(default)]
    pub n_generator: Option<usize>,
    /// Grad-norm clip gamma (task.generator.grad_clip).
    #[serde(default)]
    pub grad_clip: Option<f64>,
    /// KL-to-pretrained weight (task.generator.kl_weight).
    #[serde(default)]
    pub kl_weight: Option<f64>,
    /// Fixed or learned variance (task.generator.variance).
    #[serde(default)]
    pub variance: Option<VarianceConfig>,
    /// Decay of the moving average of the weights (task.ema, pretraining bases).
    #[serde(default)]
    pub ema: Option<f64>,
}

impl Variant {
    /// The fine-tuning settings this variant overrides, by field name.
    fn finetune_overrides(&self) -> Vec<&'static str> {
        [
            ("agent", self.agent.is_some()),
            ("regularizer", self.regularizer.is_some()),
            ("n_generator", self.n_generator.is_some()),
            ("grad_clip", self.grad_clip.is_some()),
            ("kl_weight", self.kl_weight.is_some()),
            ("variance", self.variance.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }

    /// Applies the fine-tuning settings this variant overrides to `task`.
    fn apply_finetune(&self, task: &mut crate::config::FineTuneTask) {
        if let Some(agent) = self.agent {
            task.agent = agent;
        }
        if let Some(regularizer) = self.regularizer {
            task.critic.regularizer = regularizer;
        }
        if let Some(n) = self.n_generator {
            task.generator.n_generator = n;
        }
        if self.grad_clip.is_some() {
            task.generator.grad_clip = self.grad_clip;
        }
        if let Some(w) = self.kl_weight {
            task.generator.kl_weight = w;
        }
        if let Some(v) = self.variance {
            task.generator.variance = v;
        }
    }

    /// The row label.
    pub fn label(&self) -> &str {
        self.label.as_deref().unwrap_or(&self.name)
    }
}

/// One run of an ablation: a variant under a seed, as a complete experiment.
#[derive(Debug, Clone)]
pub struct AblationRun {
    /// Index of the variant in [`Ablation::variants`].
    pub variant: usize,
    /// The seed.
    pub seed: u64,
    /// The experiment (its `init` an absolute path).
    pub experiment: Experiment,
}

impl Ablation {
    /// Reads, parses and validates an ablation file, and derives its runs.
    pub fn load(path: &Path) -> Result<(Self, Experiment, Vec<AblationRun>), ConfigError> {
        let text = crate::error::read_text(path)?;
        let ablation: Ablation = config::deserialize(&text, path, config::user_options())?;
        let invalid = |field: String, message: String| ConfigError::Invalid {
            file: path.to_path_buf(),
            line: variant_index(&field).map_or_else(
                || config::locate_field(&text, &field),
                |i| variant_line(&text, i),
            ),
            field,
            message,
        };
        ablation
            .validate()
            .map_err(|(field, message)| invalid(field, message))?;
        let base_path = Experiment::resolve_relative(path, &ablation.base);
        let base = Experiment::load(&base_path)?;
        let runs = ablation
            .derive(&base, &base_path)
            .map_err(|(field, message)| invalid(field, message))?;
        Ok((ablation, base, runs))
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let mut check = Checker::default();
        let simple = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
        };
        check.that(
            simple(&self.name),
            "name",
            format!(
                "must be non-empty letters, digits, '_' or '-', got {:?}",
                self.name
            ),
        );
        check.at_least("seeds", self.seeds.len(), 1);
        let mut seeds = self.seeds.clone();
        seeds.sort_unstable();
        seeds.dedup();
        check.that(
            seeds.len() == self.seeds.len(),
            "seeds",
            "must not repeat a seed".into(),
        );
        if let Some(epochs) = self.epochs {
            check.at_least("epochs", epochs, 1);
        }
        check.at_least("variants", self.variants.len(), 1);
        for (i, v) in self.variants.iter().enumerate() {
            check.that(
                simple(&v.name),
                &format!("variants[{i}].name"),
                format!(
                    "must be non-empty letters, digits, '_' or '-', got {:?}",
                    v.name
                ),
            );
            check.that(
                self.variants[..i].iter().all(|o| o.name != v.name),
                &format!("variants[{i}].name"),
                format!("the name {:?} is used twice", v.name),
            );
        }
        check.result()
    }

    /// Every (variant, seed) run as an experiment derived from `base`.
    fn derive(
        &self,
        base: &Experiment,
        base_path: &Path,
    ) -> Result<Vec<AblationRun>, (String, String)> {
        let init = match &base.task {
            Task::FineTune(task) => Some(absolute(&Experiment::resolve_relative(
                base_path, &task.init,
            ))),
            Task::Pretrain(_) => None,
            Task::Distill(_) | Task::CovarianceHead(_) => {
                return Err((
                    "base".into(),
                    format!(
                        "{} neither pretrains nor fine-tunes; ablations vary pretraining or fine-tuning runs",
                        self.base
                    ),
                ))
            }
        };
        let mut runs = Vec::new();
        for (index, variant) in self.variants.iter().enumerate() {
            let refuse = |message: String| (format!("variants[{index}]"), message);
            match &base.task {
                Task::FineTune(_) if variant.ema.is_some() => {
                    return Err(refuse(format!(
                        "variant {:?} sets ema, a pretraining setting, but the base {} fine-tunes",
                        variant.name, self.base
                    )));
                }
                Task::Pretrain(_) if !variant.finetune_overrides().is_empty() => {
                    return Err(refuse(format!(
                        "variant {:?} sets {}, fine-tuning settings, but the base {} is a pretraining run (it may set ema)",
                        variant.name,
                        variant.finetune_overrides().join(", "),
                        self.base
                    )));
                }
                _ => {}
            }
            for &seed in &self.seeds {
                let mut exp = base.clone();
                exp.name = format!("{}-seed{seed}", variant.name);
                exp.seed = seed;
                exp.record.dir = self.run_dir(base);
                exp.compare.clear();
                match &mut exp.task {
                    Task::FineTune(task) => {
                        if let Some(init) = &init {
                            task.init = init.display().to_string();
                        }
                        if let Some(epochs) = self.epochs {
                            task.epochs = epochs;
                        }
                        variant.apply_finetune(task);
                    }
                    Task::Pretrain(task) => {
                        if let Some(epochs) = self.epochs {
                            task.epochs = epochs;
                        }
                        if variant.ema.is_some() {
                            task.ema = variant.ema;
                        }
                    }
                    Task::Distill(_) | Task::CovarianceHead(_) => unreachable!("refused above"),
                }
                exp.validate().map_err(|(field, message)| {
                    refuse(format!(
                        "variant {:?} makes {field} invalid: {message}",
                        variant.name
                    ))
                })?;
                runs.push(AblationRun {
                    variant: index,
                    seed,
                    experiment: exp,
                });
            }
        }
        Ok(runs)
    }

    /// The folder of the ablation's runs and results.
    pub fn run_dir(&self, base: &Experiment) -> PathBuf {
        base.record.dir.join(&self.name)
    }
}

/// `i` of a field `variants[i]...`.
fn variant_index(field: &str) -> Option<usize> {
    field
        .strip_prefix("variants[")?
        .split_once(']')?
        .0
        .parse()
        .ok()
}

/// The line of the `i`-th variant's `name:` after `variants:`.
fn variant_line(text: &str, i: usize) -> usize {
    let start = text.find("variants:").unwrap_or(0);
    let offset = text[start..]
        .match_indices("name:")
        .nth(i)
        .map_or(start, |(at, _)| start + at);
    text[..offset].lines().count().max(1) + usize::from(text[..offset].ends_with('\n'))
}

fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    })
}
