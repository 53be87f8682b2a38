//! Progressive distillation settings (`task: Distill(...)`): a pretrained
//! model's deterministic DDIM sampler halved round by round (Salimans & Ho
//! 2022) into the experiment's sampler, `DdimEven(steps: S)`.

use agents::distill::{DistillConfig, DistillWeighting};
use agents::optim::OptimizerConfig;
use envs::check::Checker;
use envs::sampler::SamplerConfig;
use serde::{Deserialize, Serialize};

/// Progressive distillation of the model of `init` into an S-step sampler.
///
/// The first teacher is the pretrained model sampled by deterministic DDIM
/// at `from_steps` even times (`DdimEven(steps: from_steps)`); each round
/// trains a student with half the steps from its teacher's weights for
/// `epochs_per_round` passes over the data, then becomes the next teacher,
/// until the student has the S steps of `env.sampler` (which must be
/// `DdimEven(steps: S)`, with `from_steps` = S times a power of 2). The
/// run's epochs are the rounds' epochs in turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillTask {
    /// The pretrained model: an experiment file (trained first if it has
    /// not been) or a diffusers folder, relative to this file.
    pub init: String,
    /// The first teacher's DDIM steps (S 2^k).
    pub from_steps: usize,
    /// Passes over the training set per round.
    pub epochs_per_round: usize,
    /// Minibatch size.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// The student's optimiser, fresh each round.
    #[serde(default = "default_optimizer")]
    pub optimizer: OptimizerConfig,
    /// Anneal the learning rate linearly to 0 within each round (Salimans
    /// & Ho's schedule); off: constant.
    #[serde(default = "default_true")]
    pub anneal: bool,
    /// Clip the gradient's global norm at this value.
    #[serde(default = "default_clip")]
    pub grad_clip: Option<f64>,
    /// The weight of each image's error: `StepOutput` (the error of the
    /// step's z_t'', the default) or `TruncatedSnr` (Salimans & Ho's).
    #[serde(default)]
    pub weighting: DistillWeighting,
}

fn default_batch() -> usize {
    128
}

fn default_optimizer() -> OptimizerConfig {
    OptimizerConfig::Adam { lr: 1e-4 }
}

fn default_true() -> bool {
    true
}

fn default_clip() -> Option<f64> {
    Some(1.0)
}

impl DistillTask {
    /// The rounds: log2(from_steps / S).
    pub fn rounds(&self, sampler: &SamplerConfig) -> usize {
        let target = student_steps(sampler).unwrap_or(self.from_steps).max(1);
        (self.from_steps / target).max(1).ilog2() as usize
    }

    /// All epochs: rounds times epochs per round.
    pub fn epochs(&self, sampler: &SamplerConfig) -> usize {
        self.rounds(sampler) * self.epochs_per_round
    }

    /// The student's steps in round `round` (0-based): from_steps / 2^(round + 1).
    pub fn student_steps_in(&self, round: usize) -> usize {
        self.from_steps >> (round + 1)
    }

    /// The agents-crate settings of a round.
    pub fn distill_config(&self) -> DistillConfig {
        DistillConfig {
            optimizer: self.optimizer,
            grad_clip: self.grad_clip,
            weighting: self.weighting,
        }
    }

    /// Checks the sizes, the optimiser, that `sampler` (the experiment's
    /// `env.sampler`) is the even grid it halves to and, for a network that
    /// embeds whole times only (`whole_times`), that every grid's times
    /// i T / from_steps - 1 on the T = `training_steps` are whole.
    pub fn validate(
        &self,
        check: &mut Checker,
        sampler: &SamplerConfig,
        training_steps: usize,
        whole_times: bool,
    ) {
        check.that(
            self.from_steps <= training_steps,
            "from_steps",
            format!(
                "the first teacher's grid i T/from_steps - 1 must stay within the {training_steps} training steps (at most {training_steps}), got {}",
                self.from_steps
            ),
        );
        check.that(
            !whole_times || training_steps.is_multiple_of(self.from_steps.max(1)),
            "from_steps",
            format!(
                "the toy network embeds whole times: from_steps must divide env.steps ({training_steps}), got {}",
                self.from_steps
            ),
        );
        check.that(
            !self.init.trim().is_empty(),
            "init",
            "must name the pretrained model's experiment file or diffusers folder".into(),
        );
        check.at_least("epochs_per_round", self.epochs_per_round, 1);
        check.at_least("batch", self.batch, 1);
        check.within("optimizer", |c| self.optimizer.validate(c));
        check.positive_opt("grad_clip", self.grad_clip);
        match student_steps(sampler) {
            None => check.that(
                false,
                "",
                format!("distils into DdimEven(steps: S), the grid it halves; env.sampler is {sampler:?}"),
            ),
            Some(target) => check.that(
                self.from_steps > target
                    && self.from_steps.is_multiple_of(target)
                    && (self.from_steps / target).is_power_of_two(),
                "from_steps",
                format!(
                    "must be env.sampler's {target} steps times a power of 2 (at least 2), got {}",
                    self.from_steps
                ),
            ),
        }
    }
}

/// The S of `DdimEven(steps: S)`.
fn student_steps(sampler: &SamplerConfig) -> Option<usize> {
    match sampler {
        SamplerConfig::DdimEven(even) => Some(even.steps),
        _ => None,
    }
}
