//! Progressive distillation (Salimans & Ho 2022, Algorithm 2): a student
//! whose one deterministic DDIM step matches two of its teacher's.
//!
//! The student takes S steps at the even real times tau_i = i T / S - 1
//! ([`envs::samplers::even_times`]; continuous time t = i / S), its
//! teacher 2S. For a training image x, a step i drawn uniformly from 1..=S
//! and noise eps: z_t = alpha_t x + sigma_t eps; two teacher DDIM steps
//! t -> t' = t - 1/(2S) -> t'' = t - 1/S give z_t''; the target is the x
//! whose single DDIM step from z_t lands there,
//! x~ = (z_t'' - (sigma_t''/sigma_t) z_t) / (alpha_t'' - (sigma_t''/sigma_t) alpha_t),
//! and the loss is w ||x~ - x^_student(z_t)||^2 (pixel mean, batch mean),
//! w the truncated SNR max(alpha_t^2/sigma_t^2, 1) of the paper or, by
//! default, (alpha_t'' - (sigma_t''/sigma_t) alpha_t)^2 ([`DistillWeighting`]). Our networks
//! predict eps, so x^ = (z - sigma eps^)/alpha: the eps-parameterisation
//! (Salimans & Ho's own rows used v; the student starts from its teacher's
//! eps-network, as the algorithm's theta <- eta requires).

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::ensure_finite;
use crate::optim::{Optimizer, OptimizerConfig};
use crate::policy::DiffusionPolicy;
use crate::AgentError;
use envs::samplers::interpolated_alpha_bar;

/// Settings of a distillation round.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillConfig {
    /// The student's optimiser (fresh each round).
    pub optimizer: OptimizerConfig,
    /// Clip the gradient's global norm at this value.
    pub grad_clip: Option<f64>,
    /// The weight of each image's x_0 error.
    pub weighting: DistillWeighting,
}

/// The weight of a student step's squared x_0 error (docs/conventions.md,
/// section 4b).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DistillWeighting {
    /// Salimans & Ho's truncated SNR, max(alpha_t^2 / sigma_t^2, 1): in an
    /// eps-network's units max(1, 1/SNR), which puts nearly all the weight
    /// on the noisiest step of a short grid.
    TruncatedSnr,
    /// The squared error of the step's landing point z_t'' instead of x_0:
    /// (alpha_t'' - (sigma_t''/sigma_t) alpha_t)^2, the weight that makes
    /// the loss the distance between the student's and the teacher's
    /// z_t'' (ours; better conditioned for eps-networks, and better on the
    /// digits: docs/decisions.md). The default.
    #[default]
    StepOutput,
}

/// The levels of the student's steps at t, t' and t'': each `[S, 3]`,
/// computed in f64 and stored in f32 (1 - abar is not taken in f32).
#[derive(Debug)]
struct StepLevels {
    /// sqrt(abar).
    alpha: Tensor,
    /// sqrt(1 - abar).
    sigma: Tensor,
    /// The network times.
    times: Tensor,
}

/// One round of progressive distillation: the student's optimiser and the
/// levels of its S steps.
pub struct Distiller {
    config: DistillConfig,
    optimizer: Optimizer,
    levels: StepLevels,
    student_steps: usize,
}

impl Distiller {
    /// A round distilling a 2S-step teacher into `student` (S =
    /// `student_steps`) on a model trained with `training_betas`.
    pub fn new(
        config: DistillConfig,
        student: &DiffusionPolicy,
        training_betas: &[f64],
        student_steps: usize,
    ) -> Self {
        let t = training_betas.len() as f64;
        let s = student_steps as f64;
        let mut alphas = Vec::with_capacity(3 * student_steps);
        let mut sigmas = Vec::with_capacity(3 * student_steps);
        let mut times = Vec::with_capacity(3 * student_steps);
        for i in 1..=student_steps {
            for half_steps_back in 0..3 {
                let tau = (i as f64 - 0.5 * half_steps_back as f64) * t / s - 1.0;
                let bar = interpolated_alpha_bar(training_betas, tau);
                alphas.push(bar.sqrt());
                sigmas.push((1.0 - bar).max(0.0).sqrt());
                times.push(tau);
            }
        }
        let device = student.var_store().device();
        let table = |v: Vec<f64>| {
            Tensor::from_slice(&v)
                .view([student_steps as i64, 3])
                .to_kind(Kind::Float)
                .to_device(device)
        };
        Self {
            optimizer: config.optimizer.build(student.var_store()),
            config,
            levels: StepLevels {
                alpha: table(alphas),
                sigma: table(sigmas),
                times: table(times),
            },
            student_steps,
        }
    }

    /// The student's steps S.
    pub fn student_steps(&self) -> usize {
        self.student_steps
    }

    /// The optimiser, for checkpoints and the learning-rate schedule.
    pub fn optimizer_mut(&mut self) -> &mut Optimizer {
        &mut self.optimizer
    }

    /// The weighted loss (`weighting`) of `student` against two steps of
    /// `teacher` on a batch of images `x0` (any element shape). On several
    /// ranks `x0` is the global batch, the steps and noise are drawn for
    /// all of it and the loss is this rank's rows' share of the global mean
    /// (docs/conventions.md section 7).
    pub fn loss(
        &self,
        teacher: &DiffusionPolicy,
        student: &DiffusionPolicy,
        x0: &Tensor,
    ) -> Tensor {
        let device = x0.device();
        let global = x0.size()[0];
        let step = Tensor::randint(self.student_steps as i64, [global], (Kind::Int64, device));
        let noise = x0.randn_like();
        let (rows, share) = crate::shares::own_rows_weighted(global);
        let (x0, step, noise) = (&rows.of(x0), rows.of(&step), rows.of(&noise));
        let b = rows.len;
        let alphas = self.levels.alpha.index_select(0, &step);
        let sigmas = self.levels.sigma.index_select(0, &step);
        let times = self.levels.times.index_select(0, &step);
        let mut shape = vec![b];
        shape.extend(std::iter::repeat_n(1, x0.dim() - 1));
        let column = |table: &Tensor, k: i64| table.select(1, k).contiguous();
        let scale = |k: i64| {
            (
                column(&alphas, k).view(shape.as_slice()),
                column(&sigmas, k).view(shape.as_slice()),
            )
        };
        let (alpha, sigma) = scale(0);
        let (alpha_mid, sigma_mid) = scale(1);
        let (alpha_end, sigma_end) = scale(2);
        let z = x0 * &alpha + &noise * &sigma;
        let target = tch::no_grad(|| {
            let ddim =
                |z: &Tensor, k: i64, (a, s): (&Tensor, &Tensor), (a2, s2): (&Tensor, &Tensor)| {
                    let eps = teacher.eps_at_network_steps(z, &column(&times, k));
                    let x = (z - &eps * s) / a;
                    x * a2 + eps * s2
                };
            let z_mid = ddim(&z, 0, (&alpha, &sigma), (&alpha_mid, &sigma_mid));
            let z_end = ddim(
                &z_mid,
                1,
                (&alpha_mid, &sigma_mid),
                (&alpha_end, &sigma_end),
            );
            let ratio = &sigma_end / &sigma;
            (z_end - &z * &ratio) / (&alpha_end - &alpha * &ratio)
        });
        let eps = student.eps_at_network_steps(&z, &column(&times, 0));
        let predicted = (&z - eps * &sigma) / &alpha;
        let weight = match self.config.weighting {
            DistillWeighting::TruncatedSnr => (alpha.square() / sigma.square()).clamp_min(1.0),
            DistillWeighting::StepOutput => (&alpha_end - &alpha * (&sigma_end / &sigma)).square(),
        };
        let per_image = (predicted - target).square().mean_dim(
            Some((1..x0.dim() as i64).collect::<Vec<_>>().as_slice()),
            false,
            Kind::Float,
        );
        let loss = (per_image * weight.view([b])).mean(Kind::Float);
        if rows.is_all() {
            loss
        } else {
            loss * share
        }
    }

    /// One optimisation step of the student on a batch at learning rate
    /// `lr`, teacher and student both without dropout (the authors'
    /// distillation configs: "same as teacher but with 0 dropout"; with
    /// it, the truncated-SNR weight amplifies dropout's noise at the top
    /// step thousands of times); returns the loss.
    pub fn step(
        &mut self,
        teacher: &DiffusionPolicy,
        student: &DiffusionPolicy,
        x0: &Tensor,
        lr: f64,
    ) -> Result<f64, AgentError> {
        self.optimizer.set_learning_rate("", lr);
        self.optimizer.zero_grad();
        teacher.set_training(false);
        student.set_training(false);
        let loss = self.loss(teacher, student, x0);
        let value = ensure_finite("distillation loss", loss.double_value(&[]))?;
        loss.backward();
        self.optimizer.clip_grad_norm(self.config.grad_clip);
        self.optimizer.step();
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use envs::sampler::SamplerConfig;
    use envs::samplers::DdimEvenSampler;
    use envs::schedule::{BetaSchedule, Variance};
    use tch::Device;

    use super::*;

    /// `StepOutput` is the squared distance between where the student's one
    /// DDIM step and the teacher's two land, z_t'', per pixel and image.
    #[test]
    fn step_output_weighting_is_the_distance_of_the_landing_points() {
        let _rng = envs::testing::seeded(7);
        let betas = BetaSchedule::Linear {
            start: 0.05,
            end: 0.6,
        }
        .betas(8)
        .unwrap();
        let schedule = SamplerConfig::DdimEven(DdimEvenSampler { steps: 8 })
            .build(&betas, Variance::PosteriorBetaTilde)
            .unwrap();
        let teacher = DiffusionPolicy::toy(&schedule, 3, 16, 8, Device::Cpu);
        let student = DiffusionPolicy::toy(&schedule, 3, 16, 8, Device::Cpu);
        let config = DistillConfig {
            optimizer: OptimizerConfig::Adam { lr: 1e-3 },
            grad_clip: None,
            weighting: DistillWeighting::StepOutput,
        };
        let distiller = Distiller::new(config, &student, &betas, 4);
        let x0 = Tensor::randn([64, 3], (Kind::Float, Device::Cpu));
        tch::manual_seed(3);
        let loss = tch::no_grad(|| distiller.loss(&teacher, &student, &x0)).double_value(&[]);

        // The same draws, then both chains by hand.
        tch::manual_seed(3);
        let step = Tensor::randint(4, [64], (Kind::Int64, Device::Cpu));
        let noise = x0.randn_like();
        let levels = &distiller.levels;
        let at = |table: &Tensor, k: i64| table.index_select(0, &step).select(1, k).view([64, 1]);
        let (a, s) = (at(&levels.alpha, 0), at(&levels.sigma, 0));
        let z = &x0 * &a + &noise * &s;
        let ddim = |net: &DiffusionPolicy, z: &Tensor, k: i64, a2: &Tensor, s2: &Tensor| {
            let times = at(&levels.times, k).view([64]);
            let (a1, s1) = (at(&levels.alpha, k), at(&levels.sigma, k));
            let eps = net.eps_at_network_steps(z, &times);
            (z - &eps * &s1) / a1 * a2 + eps * s2
        };
        let expected = tch::no_grad(|| {
            let (a_mid, s_mid) = (at(&levels.alpha, 1), at(&levels.sigma, 1));
            let (a_end, s_end) = (at(&levels.alpha, 2), at(&levels.sigma, 2));
            let mid = ddim(&teacher, &z, 0, &a_mid, &s_mid);
            let teacher_end = ddim(&teacher, &mid, 1, &a_end, &s_end);
            let student_end = ddim(&student, &z, 0, &a_end, &s_end);
            (student_end - teacher_end)
                .square()
                .mean_dim(Some([1i64].as_slice()), false, Kind::Float)
                .mean(Kind::Float)
                .double_value(&[])
        });
        assert!(
            (loss - expected).abs() <= 1e-5 * expected.abs().max(1e-6),
            "{loss} vs {expected}"
        );
        assert!(expected > 0.0);
    }
}
