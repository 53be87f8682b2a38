//! Experiment configuration, read from RON files.
//!
//! Every struct rejects unknown fields; [`Experiment::load`] parses and then
//! validates, so a typo, a wrong type or an impossible value (T = 0, a
//! negative learning rate, n_critic = 0, ...) stops the run before any work
//! starts, with the file, the line and the field named.

use std::path::{Path, PathBuf};

use agents::critic::CriticConfig;
use agents::generator::{DeterministicStep, GeneratorConfig};
use agents::networks::BaselineHead;
use agents::optim::OptimizerConfig;
use agents::pretrain::PretrainConfig;
pub use agents::registry::AgentConfig;
use agents::unet::UNetConfig;
pub use envs::check::Checker;
use envs::datasets::DataSet;
use envs::sampler::{DdpmDefaults, SamplerConfig, SamplerContext};
use envs::schedule::{BetaSchedule, Variance};
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

mod covariance;
mod distill;
pub mod migrate;

pub use covariance::CovarianceTask;
pub use distill::DistillTask;

/// One runnable experiment: what to train, on what, and how to record it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Name of the run; its outputs go to `<record.dir>/<name>/`.
    pub name: String,
    /// Seed of everything random in the run (data order, noise, initialisation).
    #[serde(default)]
    pub seed: u64,
    /// Where tensors live.
    #[serde(default)]
    pub device: DeviceChoice,
    /// libtorch intra-op threads. Small networks run fastest on 1 thread.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// The data set.
    pub data: DataConfig,
    /// The diffusion environment (sampler).
    pub env: EnvConfig,
    /// The generator network.
    #[serde(default)]
    pub model: ModelConfig,
    /// What to train.
    pub task: Task,
    /// How and how often to evaluate.
    #[serde(default)]
    pub eval: EvalConfig,
    /// Where to write logs and checkpoints.
    #[serde(default)]
    pub record: RecordConfig,
    /// Other experiments (paths relative to this file) evaluated beside this
    /// one in the final table; they are trained first if they have no final checkpoint.
    #[serde(default)]
    pub compare: Vec<String>,
    /// Other samplers of this run's own final model, evaluated beside it in
    /// the final table (e.g. DDIM and FastDPM with 10 steps beside the full chain).
    #[serde(default)]
    pub compare_samplers: Vec<SamplerConfig>,
    /// The version of the settings' meaning. `rl-run` writes it into the
    /// experiments it stores with a run, so that runs of earlier versions
    /// keep their meaning when read back; files you write leave it out
    /// (they are read as the current version).
    #[serde(default = "current_schema")]
    pub schema: u32,
}

/// The current [`Experiment::schema`]: 3.
/// - Schema 3: fine-tuning rollouts draw a deterministic sampler step with
///   the std of its log-density (`generator.deterministic_step: Noisy`), and
///   the baseline's last layer is chosen by `critic.baseline_head` (a plain
///   linear layer for images). Stored experiments of schemas 1 and 2 drew it
///   without noise and had a conditional head: they are read as
///   `deterministic_step: Noiseless` and `baseline_head: Conditional`.
/// - Schema 2: `Baseline(lambda)` is the paper's lambda (R_B summed over
///   the sampler steps). Schema 1 (stored experiments without the field)
///   averaged R_B over the steps, so its lambda was T' times the paper's.
pub const CURRENT_SCHEMA: u32 = 3;

fn current_schema() -> u32 {
    CURRENT_SCHEMA
}

fn default_threads() -> usize {
    1
}

/// Where tensors live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DeviceChoice {
    /// The CPU.
    #[default]
    Cpu,
    /// CUDA device `n`.
    Cuda(usize),
    /// CUDA device 0 when available, else the CPU.
    Auto,
}

impl DeviceChoice {
    /// The libtorch device. On several ranks each takes the GPU of its
    /// local rank among those it sees (modulo their number: under
    /// `srun --gpus-per-task=1` each rank sees one), whatever `Cuda(n)` says
    /// (docs/distributed.md).
    pub fn resolve(&self) -> tch::Device {
        let engine = collective::current();
        let gpu = |n| {
            if engine.world_size() > 1 {
                let visible = (tch::Cuda::device_count().max(1)) as usize;
                tch::Device::Cuda(engine.local_rank() % visible)
            } else {
                tch::Device::Cuda(n)
            }
        };
        match *self {
            DeviceChoice::Cpu => tch::Device::Cpu,
            DeviceChoice::Cuda(n) => gpu(n),
            DeviceChoice::Auto if tch::Cuda::is_available() => gpu(0),
            DeviceChoice::Auto => tch::Device::Cpu,
        }
    }
}

/// The data set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Which distribution or images (`SwissRoll`, `TwoMoons`, `Digits(..)`,
    /// `Mnist(..)`, `Cifar10(..)`, `ImageFolder(..)`; `rl-run envs` lists them).
    pub set: DataSet,
    /// Number of training points: for toy sets the number generated
    /// (default 10,000, the paper's), for images the first `n` training
    /// images (default all).
    #[serde(default)]
    pub n: Option<usize>,
    /// Seed of the toy training points (shared by all runs that compare on them).
    #[serde(default)]
    pub seed: u64,
    /// Flip training images horizontally at random, per batch (images
    /// only). Default: on for CIFAR-10 and image folders (as Ho et al. and
    /// the DDIM code train them), off for digits, MNIST and toy sets; a
    /// loaded experiment always holds the resolved value.
    #[serde(default)]
    pub flip: Option<bool>,
}

/// Training points of a toy set when `data.n` is not given (the paper's).
pub const DEFAULT_TOY_POINTS: usize = 10_000;

impl DataConfig {
    /// Checks the sample count and that flips are asked only of images.
    pub fn validate(&self, check: &mut Checker) {
        if let Some(n) = self.n {
            check.at_least("n", n, 2);
        }
        check.that(
            !self.flips() || self.set.is_images(),
            "flip",
            "flips are for images; this data set is a toy distribution".into(),
        );
    }

    /// Whether training images are flipped at random (the setting, or the
    /// data set's default).
    pub fn flips(&self) -> bool {
        self.flip.unwrap_or(matches!(
            self.set,
            DataSet::Cifar10 { .. } | DataSet::ImageFolder { .. }
        ))
    }

    /// The number of training points of a toy set.
    pub fn toy_points(&self) -> usize {
        self.n.unwrap_or(DEFAULT_TOY_POINTS)
    }
}

/// The diffusion environment: the model's training schedule and the sampler on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvConfig {
    /// Number of diffusion steps T the model is trained with (and the
    /// sampling steps of the full-chain sampler).
    pub steps: usize,
    /// The beta schedule of training.
    pub schedule: BetaSchedule,
    /// The step variance of the full chain and of DDPM sub-sequences.
    #[serde(default)]
    pub variance: Variance,
    /// Clamp the predicted x_0 to [-1, 1] in the steps of the full chain and
    /// of DDPM sub-sequences, as the DDPM samplers of Ho et al. and of the
    /// DDIM code do for images. Default: on for images, off for toy sets
    /// (the authors' toy code does not clip); a loaded experiment always
    /// holds the resolved value. FastDPM, DDIM and so the SFT-PG samplers
    /// never clip (neither does the authors' code).
    #[serde(default)]
    pub clip_x0: Option<bool>,
    /// How the model is sampled: its full chain (the default) or a
    /// T'-step sampler built on its training schedule.
    #[serde(default)]
    pub sampler: SamplerConfig,
}

impl EnvConfig {
    /// Checks the chain's settings for samples of `set` drawn by `model`:
    /// x_0 clipping for images only, T >= 1, the beta schedule, the sampler.
    pub fn validate(&self, check: &mut Checker, set: &DataSet, model: &ModelConfig) {
        check.that(
            self.clip_x0 != Some(true) || set.is_images(),
            "clip_x0",
            "clips x_0 to [-1, 1], the range of images; this data set is a toy distribution".into(),
        );
        check.at_least("steps", self.steps, 1);
        check.within("schedule", |c| self.schedule.validate(c));
        let context = SamplerContext {
            training_steps: self.steps,
            linear_schedule: matches!(self.schedule, BetaSchedule::Linear { .. }),
            images: set.is_images(),
        };
        check.within("sampler", |c| self.sampler.validate(c, context));
        // A sampler that builds must call the network at times it takes
        // (one that does not build is reported by the checks above or at run time).
        let built = self
            .schedule
            .betas(self.steps)
            .ok()
            .and_then(|betas| self.sampler.build(&betas, self.ddpm_defaults()).ok());
        if let Some(Err(reason)) = built.map(|sampler| model.check_times(&sampler)) {
            check.that(false, "sampler", reason);
        }
    }

    /// The variance and clipping that `Full` and `Ddpm` samplers take from
    /// the environment.
    pub fn ddpm_defaults(&self) -> DdpmDefaults {
        DdpmDefaults {
            variance: self.variance,
            clip_x0: self.clip_x0.unwrap_or(false),
        }
    }
}

/// The generator network: `Toy(width: 128)` or `UNet(...)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ModelConfig {
    /// The toy eps-predictor of the paper's 2-D experiments.
    Toy(ToyModelConfig),
    /// The DDPM U-Net of Ho et al. for images (diffusers' `UNet2DModel`).
    UNet(UNetConfig),
}

impl ModelConfig {
    /// Whether the network can be called at the times of `sampler` (the
    /// toy network embeds whole time indices, so FastDPM VAR's real-valued
    /// times are refused): the one rule, read by validation and by
    /// `runner::model::build_policy`.
    pub fn check_times(&self, sampler: &envs::schedule::Schedule) -> Result<(), String> {
        if matches!(self, ModelConfig::Toy(_)) && !sampler.has_integer_times() {
            return Err("the toy network embeds whole time indices; this sampler calls it at real-valued times (FastDpm Var): use Ddpm, Ddim or FastDpm Step".into());
        }
        Ok(())
    }

    /// The network's sampler, freshly initialised: an eps-network of this
    /// kind stepping through `sampler` (a schedule the network takes, see
    /// [`ModelConfig::check_times`]), for samples of `set`, trained on
    /// `training_steps` steps; on `device`.
    pub fn build(
        &self,
        sampler: &envs::schedule::Schedule,
        set: &DataSet,
        training_steps: usize,
        device: tch::Device,
    ) -> Result<agents::policy::DiffusionPolicy, String> {
        self.check_times(sampler)?;
        Ok(match self {
            ModelConfig::Toy(toy) => agents::policy::DiffusionPolicy::toy(
                sampler,
                set.numel(),
                toy.width,
                training_steps as i64,
                device,
            ),
            ModelConfig::UNet(config) => {
                agents::policy::DiffusionPolicy::unet(sampler, config, device)
            }
        })
    }

    /// Checks the network's settings and that it takes samples of `set`.
    pub fn validate(&self, check: &mut Checker, set: &DataSet) {
        match self {
            ModelConfig::Toy(toy) => {
                check.that(
                    toy.width >= 1,
                    "width",
                    format!("must be at least 1, got {}", toy.width),
                );
                check.that(
                    set.element_shape().len() == 1,
                    "",
                    format!(
                        "the toy network takes vectors; {set:?} has samples of shape {:?} (use UNet)",
                        set.element_shape()
                    ),
                );
            }
            ModelConfig::UNet(unet) => {
                if let Err((field, message)) = unet.validate() {
                    check.that(false, field, message);
                }
                let wanted = vec![unet.in_channels, unet.resolution, unet.resolution];
                check.that(
                    set.element_shape() == wanted,
                    "",
                    format!(
                        "the U-Net takes images of shape {wanted:?}; {set:?} has samples of shape {:?}",
                        set.element_shape()
                    ),
                );
            }
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig::Toy(ToyModelConfig::default())
    }
}

/// Settings of the toy eps-predictor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ToyModelConfig {
    /// Hidden width of the eps-predictor.
    pub width: i64,
}

impl Default for ToyModelConfig {
    fn default() -> Self {
        Self { width: 128 }
    }
}

/// What an experiment trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Task {
    /// DDPM pretraining by denoising score matching.
    Pretrain(PretrainTask),
    /// Fine-tuning a pretrained sampler against an adversarial critic (SFT-PG).
    FineTune(Box<FineTuneTask>),
    /// Progressive distillation of a pretrained model's DDIM sampler.
    Distill(DistillTask),
    /// A covariance head on a frozen pretrained model (SN-DDPM, NPR-DDPM).
    CovarianceHead(CovarianceTask),
}

impl Task {
    /// The pretrained model a task starts from (`task.init`: an experiment
    /// file or a diffusers folder, relative to the experiment's file);
    /// `None` for pretraining.
    pub fn init(&self) -> Option<&str> {
        match self {
            Task::Pretrain(_) => None,
            Task::FineTune(task) => Some(&task.init),
            Task::Distill(task) => Some(&task.init),
            Task::CovarianceHead(task) => Some(&task.init),
        }
    }

    /// The run's epochs (a distillation's: all its rounds').
    pub fn epochs(&self, sampler: &SamplerConfig) -> usize {
        match self {
            Task::Pretrain(p) => p.epochs,
            Task::FineTune(f) => f.epochs,
            Task::Distill(d) => d.epochs(sampler),
            Task::CovarianceHead(c) => c.epochs,
        }
    }
}

/// DDPM pretraining settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainTask {
    /// Passes over the training set.
    pub epochs: usize,
    /// Minibatch size.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// The optimiser.
    #[serde(default = "default_pretrain_optimizer")]
    pub optimizer: OptimizerConfig,
    /// Clip the gradient norm at this value.
    #[serde(default = "default_pretrain_clip")]
    pub grad_clip: Option<f64>,
    /// Keep an exponential moving average of the weights with this decay
    /// (`ema: 0.9999`, Ho et al.'s value) and sample, evaluate and publish
    /// the average instead of the last weights; `ema: 0.0` publishes the
    /// last weights. When not given: off for the toy network (the authors'
    /// toy recipe has none), 0.9999 for the U-Net.
    #[serde(default)]
    pub ema: Option<f64>,
}

/// The moving-average decay of U-Net pretraining when `ema` is not given.
pub const DEFAULT_IMAGE_EMA: f64 = 0.9999;

fn default_batch() -> usize {
    128
}

fn default_pretrain_optimizer() -> OptimizerConfig {
    PretrainConfig::default().optimizer
}

fn default_pretrain_clip() -> Option<f64> {
    PretrainConfig::default().grad_clip
}

impl PretrainTask {
    /// Checks epochs, batch, the optimiser, clipping and the EMA decay.
    pub fn validate(&self, check: &mut Checker) {
        check.at_least("epochs", self.epochs, 1);
        check.at_least("batch", self.batch, 1);
        check.within("optimizer", |c| self.optimizer.validate(c));
        check.positive_opt("grad_clip", self.grad_clip);
        if let Some(decay) = self.ema {
            check.that(
                (0.0..1.0).contains(&decay),
                "ema",
                format!("the decay must lie in [0, 1) (0: no average), got {decay}"),
            );
        }
    }

    /// The decay of the weight average for `model`, `None` when off.
    pub fn ema_decay(&self, model: &ModelConfig) -> Option<f64> {
        let decay = match (self.ema, model) {
            (Some(d), _) => d,
            (None, ModelConfig::Toy(_)) => 0.0,
            (None, ModelConfig::UNet(_)) => DEFAULT_IMAGE_EMA,
        };
        (decay > 0.0).then_some(decay)
    }

    /// The agents-crate settings.
    pub fn pretrain_config(&self) -> PretrainConfig {
        PretrainConfig {
            optimizer: self.optimizer,
            grad_clip: self.grad_clip,
        }
    }
}

/// Fine-tuning settings (Algorithm 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FineTuneTask {
    /// The pretraining experiment (path relative to this file) whose final
    /// generator is the starting point; it is run first if it has not been.
    pub init: String,
    /// Epochs; one epoch is ceil(n / (batch * n_critic)) rounds of Algorithm 1.
    pub epochs: usize,
    /// Chains per critic step, data points per critic step, transitions per generator step (m).
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Critic steps per round.
    #[serde(default = "default_n_critic")]
    pub n_critic: usize,
    /// Chains whose noise prediction is computed at once in the rollouts
    /// (no gradients are kept there); not given: all `batch` chains at once.
    /// Lower it when a round runs out of memory in its rollouts; the
    /// samples drawn are the same either way.
    #[serde(default)]
    pub rollout_chunk: Option<usize>,
    /// What every agent honours: optimiser, n_generator, grad clip gamma,
    /// log-prob reduction, KL penalty, fixed or learned variance.
    #[serde(default)]
    pub generator: GeneratorConfig,
    /// The generator's learning algorithm: `Reinforce(..)`, `Ppo(..)` or `Pathwise`.
    pub agent: AgentConfig,
    /// The critic and baseline.
    #[serde(default)]
    pub critic: CriticConfig,
}

impl FineTuneTask {
    /// Checks the round's sizes, then the generator, agent and critic
    /// settings (each validating its own), and the one rule between them:
    /// a pathwise last step is a term of the REINFORCE loss only.
    pub fn validate(&self, check: &mut Checker, shape: &[i64]) {
        check.that(
            !self.init.trim().is_empty(),
            "init",
            "must name the pretraining experiment".into(),
        );
        check.at_least("epochs", self.epochs, 1);
        check.at_least("batch", self.batch, 1);
        check.at_least("n_critic", self.n_critic, 1);
        if let Some(chunk) = self.rollout_chunk {
            check.at_least("rollout_chunk", chunk, 1);
        }
        check.within("generator", |c| {
            self.generator.validate(c);
            c.that(
                self.generator.deterministic_step != DeterministicStep::Pathwise
                    || self.agent.takes_pathwise_term(),
                "deterministic_step",
                format!(
                    "Pathwise is a term of the REINFORCE loss; {} does not take it (use Noisy, Noiseless or Excluded)",
                    self.agent.label()
                ),
            );
        });
        check.within("agent", |c| self.agent.validate(c));
        check.within("critic", |c| self.critic.validate(c, shape));
    }
}

fn default_n_critic() -> usize {
    5
}

/// Which features FID and KID are taken on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FeatureConfig {
    /// FID's Inception (pool3, 2048 features; `rl-run fetch fid-inception`,
    /// fetched on first use): the paper's FID.
    Inception,
    /// A TorchScript file in the Inception network's input convention
    /// (relative to the working folder, as data folders are), such as
    /// pytorch-fid's converted weights.
    TorchScript(String),
    /// A classifier trained by the framework on the model's data set
    /// (labelled sets: digits, MNIST), kept in
    /// `<record.dir>/classifier_<data set>/`: a CPU-sized feature network
    /// whose FIDs are comparable only with each other.
    Classifier {
        /// Training epochs.
        epochs: usize,
    },
}

impl FeatureConfig {
    /// A short name of the kind of network: `inception`, `torchscript`,
    /// `classifier` (in the names of logged values).
    pub fn name(&self) -> &'static str {
        match self {
            FeatureConfig::Inception => "inception",
            FeatureConfig::TorchScript(_) => "torchscript",
            FeatureConfig::Classifier { .. } => "classifier",
        }
    }

    /// A name for files that tells this network from others of its kind:
    /// `inception`, `torchscript_<file stem>`, `classifier_<epochs>ep`.
    pub fn file_stem(&self) -> String {
        match self {
            FeatureConfig::Inception => "inception".into(),
            FeatureConfig::TorchScript(file) => {
                let stem = std::path::Path::new(file)
                    .file_stem()
                    .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
                let stem: String = stem
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                format!("torchscript_{stem}")
            }
            FeatureConfig::Classifier { epochs } => format!("classifier_{epochs}ep"),
        }
    }
}

/// FID logged at every evaluation of an image run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FidEvalConfig {
    /// Samples measured, against all training images (drawn apart from the
    /// W2's samples, from their own fixed noise).
    pub n: usize,
    /// The feature network (`eval/fid`, or `eval/classifier_fid` for the
    /// classifier; the `fid` column of eval.csv).
    pub features: FeatureConfig,
    /// Further feature networks measured on the same samples and logged
    /// beside (`eval/<name>_fid` and a `<name>_fid` column of eval.csv, name
    /// `inception`, `classifier` or `torchscript`): e.g. the framework's
    /// classifier beside Inception on MNIST.
    #[serde(default)]
    pub also: Vec<FeatureConfig>,
    /// Images per forward pass of the feature network.
    #[serde(default = "fid_batch")]
    pub batch: usize,
}

fn fid_batch() -> usize {
    50
}

/// Evaluation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Evaluate every this many epochs (and always at the end).
    pub every: usize,
    /// Generated points for the sliced W2 (against as many training points).
    pub n: usize,
    /// Points per side for the exact W2.
    pub exact_n: usize,
    /// Random directions of the sliced W2.
    pub projections: usize,
    /// Independent sample sets (each with its own sliced directions) measured
    /// in the final table and by `rl-run eval`; the table shows mean ± spread.
    pub repeats: usize,
    /// Compute the exact W2 at intermediate evaluations too (not only at the end).
    pub exact_during_training: bool,
    /// Chains sampled at once by evaluations (bounds their memory).
    pub chunk: usize,
    /// FID of image runs at every evaluation, to TensorBoard (`eval/fid`)
    /// and `eval.csv` (none by default).
    pub fid: Option<FidEvalConfig>,
}

impl EvalConfig {
    /// Checks the evaluation's sizes against the data (`exact_n` at most
    /// `n` and `data.n`) and the FID settings (images only, each feature
    /// network once).
    pub fn validate(&self, check: &mut Checker, data: &DataConfig) {
        check.at_least("every", self.every, 1);
        check.at_least("n", self.n, 2);
        check.at_least("exact_n", self.exact_n, 2);
        let most = self.n.min(data.n.unwrap_or(usize::MAX));
        check.that(
            self.exact_n <= most,
            "exact_n",
            format!(
                "must not exceed eval.n and data.n ({most}), got {}",
                self.exact_n
            ),
        );
        check.at_least("projections", self.projections, 1);
        check.at_least("repeats", self.repeats, 1);
        check.at_least("chunk", self.chunk, 1);
        if let Some(fid) = &self.fid {
            check.within("fid", |c| fid.validate(c, &data.set));
        }
    }
}

impl FidEvalConfig {
    /// Checks that `set` holds images, the sizes, and that each feature
    /// network is measured once.
    pub fn validate(&self, check: &mut Checker, set: &DataSet) {
        check.that(
            set.is_images(),
            "",
            format!(
                "FID measures images; {} is a toy data set (its runs report W2)",
                set.name()
            ),
        );
        check.at_least("n", self.n, 2);
        check.at_least("batch", self.batch, 1);
        if let FeatureConfig::Classifier { epochs } = self.features {
            check.at_least("features.epochs", epochs, 1);
        }
        for (i, also) in self.also.iter().enumerate() {
            if let FeatureConfig::Classifier { epochs } = also {
                check.at_least("also.epochs", *epochs, 1);
            }
            let earlier = std::iter::once(&self.features).chain(&self.also[..i]);
            check.that(
                earlier.clone().all(|f| f.name() != also.name()),
                "also",
                format!(
                    "{} is measured already; each feature network once",
                    also.name()
                ),
            );
        }
    }
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            every: 10,
            n: 10_000,
            exact_n: 3_000,
            projections: 100,
            repeats: 3,
            exact_during_training: false,
            chunk: 10_000,
            fid: None,
        }
    }
}

/// Recording settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordConfig {
    /// Directory holding one folder per run (relative to the working directory).
    pub dir: PathBuf,
    /// Write a checkpoint every this many epochs (and at the end).
    pub checkpoint_every: usize,
}

impl Default for RecordConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("runs"),
            checkpoint_every: 10,
        }
    }
}

impl Experiment {
    /// Reads, parses and validates an experiment file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = crate::error::read_text(path)?;
        Self::parse(&text, path)
    }

    /// Parses and validates experiment text as users write it; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        Self::parse_with(text, path, user_options())
    }

    /// Parses experiment text as users write it without checking the values
    /// against their domains (for edits that are validated once complete).
    pub fn parse_unvalidated(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut experiment: Experiment = deserialize(text, path, user_options())?;
        experiment.resolve_defaults();
        Ok(experiment)
    }

    /// Writes out the settings whose default depends on the data (image
    /// flips, x_0 clipping, the baseline's head), so that a stored
    /// experiment holds them.
    fn resolve_defaults(&mut self) {
        self.data.flip = Some(self.data.flips());
        self.env.clip_x0 = Some(self.env.clip_x0.unwrap_or(self.data.set.is_images()));
        let shape = self.data.set.element_shape();
        if let Task::FineTune(task) = &mut self.task {
            let head = &mut task.critic.baseline_head;
            *head = Some(head.unwrap_or_else(|| BaselineHead::default_for(&shape)));
        }
    }

    /// Parses and validates text written by [`Experiment::to_ron`] (as stored
    /// in checkpoints), including that of earlier versions (see [`migrate`]).
    pub fn parse_serialized(text: &str, path: &Path) -> Result<Self, ConfigError> {
        // Files of every version read `n: 10000` as `Some(10000)`.
        let options = || {
            ron::Options::default()
                .with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME)
        };
        let mut experiment = Self::parse_with(text, path, options()).or_else(|error| {
            migrate::migrate_v1(text)
                .and_then(|migrated| Self::parse_with(&migrated, path, options()).ok())
                .ok_or(error)
        })?;
        let stored_schema = if text.contains("schema:") {
            experiment.schema
        } else {
            1
        };
        migrate::from_schema(&mut experiment, stored_schema);
        Ok(experiment)
    }

    fn parse_with(text: &str, path: &Path, options: ron::Options) -> Result<Self, ConfigError> {
        let mut experiment: Experiment = match deserialize(text, path, options.clone()) {
            Ok(e) => e,
            // `model: (width: 128)`, written before the U-Net, is the toy model.
            Err(error) => migrate::migrate_toy_model(text)
                .into_iter()
                .flatten()
                .find_map(|migrated| deserialize(&migrated, path, options.clone()).ok())
                .ok_or(error)?,
        };
        experiment.resolve_defaults();
        if let Err((field, message)) = experiment.validate() {
            return Err(ConfigError::Invalid {
                file: path.to_path_buf(),
                line: locate_field(text, &field),
                field,
                message,
            });
        }
        Ok(experiment)
    }

    /// Serialises the experiment to RON in the form users write (the file
    /// names its extensions), readable by both [`Experiment::parse`] and
    /// [`Experiment::parse_serialized`].
    pub fn to_ron(&self) -> String {
        to_ron(self)
    }

    /// Checks every value against its domain; returns the dotted field path and what is wrong.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let mut check = Checker::new();
        check.that(
            (1..=CURRENT_SCHEMA).contains(&self.schema),
            "schema",
            format!(
                "this rl-run reads schemas 1 to {CURRENT_SCHEMA}, the file says {}",
                self.schema
            ),
        );
        check.that(
            !self.name.trim().is_empty(),
            "name",
            "must not be empty".into(),
        );
        check.that(
            self.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)),
            "name",
            format!(
                "may hold only letters, digits, '_', '-' and '.', got {:?}",
                self.name
            ),
        );
        check.at_least("threads", self.threads, 1);
        check.within("data", |c| self.data.validate(c));
        check.within("env", |c| self.env.validate(c, &self.data.set, &self.model));
        check.within("model", |c| self.model.validate(c, &self.data.set));
        let shape = self.data.set.element_shape();
        check.within("task", |c| match &self.task {
            Task::Pretrain(p) => p.validate(c),
            Task::FineTune(f) => f.validate(c, &shape),
            Task::Distill(d) => d.validate(
                c,
                &self.env.sampler,
                self.env.steps,
                matches!(self.model, ModelConfig::Toy(_)),
            ),
            Task::CovarianceHead(t) => t.validate(
                c,
                &self.env.sampler,
                matches!(self.model, ModelConfig::UNet(_)),
            ),
        });
        check.within("eval", |c| self.eval.validate(c, &self.data));
        check.within("record", |c| {
            c.at_least("checkpoint_every", self.record.checkpoint_every, 1)
        });
        check.result()
    }

    /// Path of another experiment named relative to this one's file.
    /// The path is cleaned lexically (`experiments/../models/x` is
    /// `models/x`), so that messages name it as a user would.
    pub fn resolve_relative(own_path: &Path, other: &str) -> PathBuf {
        path_clean::clean(own_path.parent().unwrap_or(Path::new(".")).join(other))
    }
}

/// Deserialises RON `text` with `options`; errors name `path`, line and column.
pub(crate) fn deserialize<T: serde::de::DeserializeOwned>(
    text: &str,
    path: &Path,
    options: ron::Options,
) -> Result<T, ConfigError> {
    options.from_str(text).map_err(|e| ConfigError::Parse {
        file: path.to_path_buf(),
        line: e.span.start.line,
        column: e.span.start.col,
        message: e.code.to_string(),
    })
}

/// RON options for files users write (see [`ron_extensions`]).
pub(crate) fn user_options() -> ron::Options {
    ron::Options::default().with_default_extension(ron_extensions())
}

/// The first identifier of a RON file (`Experiment`, `Ablation`), after
/// comments and white space.
pub fn top_level_name(text: &str) -> Option<&str> {
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix("//") {
            rest = after.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r);
        } else {
            break;
        }
    }
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

/// RON extensions of experiment files: `grad_clip: 1.0` for `Some(1.0)`, and
/// `Pretrain(epochs: 10)` for `Pretrain((epochs: 10))`.
/// `value` in RON as the files are written (the extensions user files may
/// use: implicit `Some`, unwrapped variant newtypes), every field out.
pub(crate) fn to_ron<T: Serialize>(value: &T) -> String {
    let pretty = ron::ser::PrettyConfig::default().extensions(ron_extensions());
    ron::ser::to_string_pretty(value, pretty).expect("settings serialise")
}

fn ron_extensions() -> ron::extensions::Extensions {
    ron::extensions::Extensions::IMPLICIT_SOME
        | ron::extensions::Extensions::UNWRAP_VARIANT_NEWTYPES
}

/// The 1-based line of the dotted `field` in RON `text`: each path segment is
/// searched for (as `name:`) after the previous one; falls back to the best
/// partial match.
pub(crate) fn locate_field(text: &str, field: &str) -> usize {
    let mut offset = 0;
    for segment in field.split('.') {
        let needle = format!("{segment}:");
        let found = text[offset..].match_indices(&needle).find(|(i, _)| {
            let before = text[..offset + i].chars().next_back();
            !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
        });
        match found {
            Some((i, _)) => offset += i,
            None => break,
        }
    }
    text[..offset].lines().count().max(1) + usize::from(text[..offset].ends_with('\n'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use agents::critic::CriticRegularizer;

    #[test]
    fn experiments_round_trip_through_ron() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/sft_pg_swissroll.ron");
        let exp = Experiment::load(&path).unwrap();
        assert_eq!(
            Experiment::parse_serialized(&exp.to_ron(), Path::new("copy.ron")).unwrap(),
            exp
        );
    }

    #[test]
    fn checkpoints_of_the_first_schema_still_load() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/experiment_v1_reinforce.ron");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(Experiment::parse_with(&text, &path, ron::Options::default()).is_err());
        let exp = Experiment::parse_serialized(&text, &path).unwrap();
        let Task::FineTune(task) = &exp.task else {
            panic!("a fine-tuning experiment")
        };
        assert_eq!(task.generator.optimizer, OptimizerConfig::Adam { lr: 5e-5 });
        assert_eq!(task.generator.n_generator, 1);
        assert_eq!(task.generator.grad_clip, None);
        assert_eq!(
            task.agent,
            AgentConfig::Reinforce(agents::reinforce::ReinforceConfig::default())
        );
        assert_eq!(task.epochs, 300);
        // Its lambda weighted R_B averaged over the 10 steps: the paper's 0.1.
        assert_eq!(
            task.critic.regularizer,
            CriticRegularizer::Baseline { lambda: 0.1 }
        );
        assert_eq!(exp.schema, CURRENT_SCHEMA);
    }

    #[test]
    fn flips_default_on_for_cifar10_and_folders_only() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/ddpm_digits.ron");
        let text = std::fs::read_to_string(&path).unwrap();
        let digits = Experiment::parse(&text, &path).unwrap();
        assert_eq!(digits.data.flip, Some(false));
        let cifar = text
            .replace(r#"Digits(dir: "data/digits")"#, r#"Cifar10(dir: "x")"#)
            .replace(
                "in_channels: 1,\n        resolution: 8,",
                "in_channels: 3,\n        resolution: 32,",
            );
        let cifar = Experiment::parse(&cifar, &path).unwrap();
        assert_eq!(cifar.data.flip, Some(true));
        let off = text
            .replace(
                r#"(set: Digits(dir: "data/digits"))"#,
                r#"(set: Cifar10(dir: "x"), flip: false)"#,
            )
            .replace(
                "in_channels: 1,\n        resolution: 8,",
                "in_channels: 3,\n        resolution: 32,",
            );
        assert_eq!(
            Experiment::parse(&off, &path).unwrap().data.flip,
            Some(false)
        );
    }

    /// `user` as a stored experiment of schema 1 or 2 reads back: rollouts
    /// without noise at deterministic steps, a conditional baseline head.
    fn as_schema_2(user: &Experiment) -> Experiment {
        let mut old = user.clone();
        old.env.clip_x0 = Some(false);
        if let Task::FineTune(task) = &mut old.task {
            task.generator.deterministic_step = DeterministicStep::Noiseless;
            task.critic.baseline_head = Some(BaselineHead::Conditional);
        }
        old
    }

    #[test]
    fn lambda_of_schema_1_is_divided_by_the_steps_once() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/sft_pg_swissroll.ron");
        let user = Experiment::load(&path).unwrap();
        let lambda = |e: &Experiment| match &e.task {
            Task::FineTune(f) => f.critic.regularizer,
            _ => panic!("a fine-tuning experiment"),
        };
        assert_eq!(lambda(&user), CriticRegularizer::Baseline { lambda: 0.1 });
        // What rl-run stores names the schema and reads back unchanged.
        let stored = user.to_ron();
        assert!(stored.contains("schema: 3"), "{stored}");
        assert_eq!(Experiment::parse_serialized(&stored, &path).unwrap(), user);
        // A stored experiment of schema 1 said 1.0 for the same training.
        let old = stored
            .replace("schema: 3,", "")
            .replace("lambda: 0.1", "lambda: 1.0")
            .replace("deterministic_step: Noisy,", "")
            .replace("baseline_head: Conditional,", "")
            .replace("clip_x0: false,", "");
        assert!(
            !old.contains("schema") && !old.contains("baseline_head"),
            "{old}"
        );
        assert_eq!(
            Experiment::parse_serialized(&old, &path).unwrap(),
            as_schema_2(&user)
        );
        // Files users write are read as the current schema, as they are.
        let written = Experiment::parse(&old, &path).unwrap();
        assert_eq!(
            lambda(&written),
            CriticRegularizer::Baseline { lambda: 1.0 }
        );
        let future = stored.replace("schema: 3", "schema: 4");
        let err = Experiment::parse(&future, &path).unwrap_err().to_string();
        assert!(
            err.contains("schema") && err.contains("reads schemas 1 to 3"),
            "{err}"
        );
    }

    #[test]
    fn stored_runs_of_schema_2_keep_their_noiseless_rollouts_and_conditional_head() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/sft_pg_digits.ron");
        let user = Experiment::load(&path).unwrap();
        let task = |e: &Experiment| match &e.task {
            Task::FineTune(f) => (f.generator.deterministic_step, f.critic.baseline_head),
            _ => panic!("a fine-tuning experiment"),
        };
        // Today's defaults: the authors' noisy last step and image head.
        assert_eq!(
            task(&user),
            (DeterministicStep::Noisy, Some(BaselineHead::Linear))
        );
        let stored = user.to_ron();
        assert_eq!(Experiment::parse_serialized(&stored, &path).unwrap(), user);
        let old = stored
            .replace("schema: 3,", "schema: 2,")
            .replace("deterministic_step: Noisy,", "")
            .replace("baseline_head: Linear,", "")
            .replace("clip_x0: true,", "");
        assert!(
            !old.contains("baseline_head")
                && !old.contains("deterministic_step")
                && !old.contains("clip_x0"),
            "{old}"
        );
        let read = Experiment::parse_serialized(&old, &path).unwrap();
        assert_eq!(read, as_schema_2(&user));
        assert_eq!(read.schema, CURRENT_SCHEMA);
        // The toy's default head is the conditional one of the authors' toy code.
        let toy = Experiment::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/sft_pg_swissroll.ron"),
        )
        .unwrap();
        assert_eq!(task(&toy).1, Some(BaselineHead::Conditional));
        // Images clip the DDPM samplers' x_0 by default, toy sets do not.
        assert_eq!(user.env.clip_x0, Some(true));
        assert_eq!(toy.env.clip_x0, Some(false));
    }

    #[test]
    fn files_from_before_the_unet_read_as_the_toy_model() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/ddpm_swissroll_t10.ron");
        let current = std::fs::read_to_string(&path).unwrap();
        let legacy = current.replace(
            "model: Toy(width: 128)",
            "model: (\n        width: 128,\n    )",
        );
        assert_ne!(legacy, current);
        assert_eq!(
            Experiment::parse(&legacy, &path).unwrap(),
            Experiment::parse(&current, &path).unwrap()
        );
        assert_eq!(
            migrate::migrate_toy_model("a: 1, model: (width: (2)), b: 3"),
            Some([
                "a: 1, model: Toy(width: (2)), b: 3".to_string(),
                "a: 1, model: Toy((width: (2))), b: 3".to_string()
            ])
        );
        assert_eq!(
            migrate::migrate_toy_model("model: UNet(channels: 64)"),
            None
        );
    }

    #[test]
    fn the_top_level_name_skips_comments() {
        assert_eq!(
            top_level_name("// c\n/* block */\n  Ablation(\n name: \"x\")"),
            Some("Ablation")
        );
        assert_eq!(
            top_level_name("Experiment(name: \"x\")"),
            Some("Experiment")
        );
        assert_eq!(top_level_name("#![enable(implicit_some)]\n("), None);
        assert_eq!(top_level_name("// only a comment"), None);
    }

    #[test]
    fn locates_nested_fields() {
        let text = "Experiment(\n  task: FineTune(\n    agent: Reinforce(optimizer: Adam(lr: 1)),\n    critic: (\n      optimizer: Adam(lr: -1),\n    ),\n  ),\n)";
        assert_eq!(locate_field(text, "task.critic.optimizer.lr"), 5);
        assert_eq!(locate_field(text, "task.agent.optimizer.lr"), 3);
        assert_eq!(locate_field(text, "name"), 1);
    }
}
