//! A data-parallel rank's share of a batch and of the quantities computed
//! on it (docs/conventions.md section 7, "Data-parallel training").
//!
//! Each rank computes a loss as the mean over the rows it holds and
//! back-propagates it weighted by its share of the batch
//! ([`backward_weighted`]); the optimisers sum the gradients over the
//! ranks before stepping ([`crate::optim::Optimizer::reduce_gradients`]),
//! which gives the gradient of the global mean. Logged statistics are
//! weighted the same way and summed over the ranks
//! ([`crate::UpdateStats::add_weighted`],
//! [`crate::UpdateStats::summed_over_ranks`]). Statistics that decide what
//! the update does (advantage normalisation, PPO's early stop on the KL)
//! are combined over the ranks where they are used, so that every rank
//! takes the same decision. On one process all of it reduces to the plain
//! computation.

use envs::rows::Rows;
use tch::{Kind, Tensor};

use crate::AgentError;

/// This rank's rows of a global batch of `global` (all of them on one
/// process; [`collective::shard`]).
pub fn own_rows(global: i64) -> Rows {
    let range = collective::shard(global as usize);
    Rows::share(range.start as i64, range.len() as i64, global)
}

/// This rank's rows of a global batch of `global` and the weight of a
/// mean over them (their fraction of the batch). A rank whose share is
/// empty (a short last batch) gets row 0 with weight 0: it still runs the
/// network so that its gradients exist (as zeros) like every other rank's.
pub fn own_rows_weighted(global: i64) -> (Rows, f64) {
    let rows = own_rows(global);
    if rows.len == 0 {
        (Rows::share(0, 1, global), 0.0)
    } else {
        (rows, rows.fraction())
    }
}

/// Back-propagates `loss` weighted by `share` (plainly when it is 1).
pub fn backward_weighted(loss: &Tensor, share: f64) {
    if share == 1.0 {
        loss.backward();
    } else {
        (loss * share).backward();
    }
}

/// The optimisation step's backward pass of a loss over rows that are
/// `share` of the batch: [`backward_weighted`], except that a share of 0
/// (a rank holding none of a minibatch, whose loss is of a stand-in row)
/// gives every parameter of `params` a zero gradient without reading the
/// loss, which may not be finite (a stand-in's stale behaviour density).
pub fn backward_share(loss: &Tensor, share: f64, params: &[Tensor]) {
    if share == 0.0 {
        let touched: Vec<Tensor> = params.iter().map(|p| p.sum(p.kind()) * 0.0).collect();
        if !touched.is_empty() {
            Tensor::stack(&touched, 0).sum(Kind::Float).backward();
        }
    } else {
        backward_weighted(loss, share);
    }
}

/// The mean over the ranks of `value`, each rank's weighted by its `share`
/// (the shares sum to 1): the global mean of a quantity each rank averaged
/// over its rows.
pub fn mean_over_ranks(value: f64, share: f64) -> Result<f64, AgentError> {
    let engine = collective::current();
    if engine.world_size() == 1 {
        return Ok(value);
    }
    Ok(engine.sum_f64(if share == 0.0 { 0.0 } else { value * share })?)
}

/// `values` (`[n]`, this rank's rows) standardised to zero mean and unit
/// variance (unbiased, plus 1e-8 on the deviation) over the rows of every
/// rank. A rank holding no rows of the batch (`share` 0) contributes none.
pub fn standardized_over_ranks(values: &Tensor, share: f64) -> Result<Tensor, AgentError> {
    if collective::current().world_size() == 1 {
        return Ok((values - values.mean(Kind::Float)) / (values.std(true) + 1e-8));
    }
    let (mean, std) = moments_over_ranks(values, share)?;
    Ok((values - mean) / (std + 1e-8))
}

/// The mean and unbiased standard deviation of `values` (`[n]`, this
/// rank's rows) over the rows of every rank (one all-reduce of three
/// float64 sums on several ranks); a rank with `share` 0 contributes none.
pub fn moments_over_ranks(values: &Tensor, share: f64) -> Result<(f64, f64), AgentError> {
    let engine = collective::current();
    if engine.world_size() == 1 {
        return Ok((
            values.mean(Kind::Float).double_value(&[]),
            values.std(true).double_value(&[]),
        ));
    }
    let held = if share == 0.0 {
        values.zeros_like()
    } else {
        values.shallow_clone()
    };
    let count = if share == 0.0 { 0 } else { values.size()[0] };
    let v = held.to_kind(Kind::Double);
    let mut moments = [Tensor::stack(
        &[
            Tensor::from(count as f64).to_device(v.device()),
            v.sum(Kind::Double),
            v.square().sum(Kind::Double),
        ],
        0,
    )];
    engine.all_reduce_sum(&mut moments)?;
    let m = Vec::<f64>::try_from(&moments[0].to_device(tch::Device::Cpu)).expect("f64 moments");
    let (n, sum, squares) = (m[0], m[1], m[2]);
    let mean = sum / n;
    let variance = ((squares - n * mean * mean) / (n - 1.0).max(1.0)).max(0.0);
    Ok((mean, variance.sqrt()))
}

#[cfg(test)]
mod tests {
    use collective::{Collective, CollectiveError};
    use envs::samplers::CovarianceTarget;
    use envs::schedule::{BetaSchedule, Schedule, Variance};
    use tch::{Device, Tensor};

    use crate::covariance::{covariance_policy, CovarianceFitter};
    use crate::distill::{DistillConfig, DistillWeighting, Distiller};
    use crate::optim::OptimizerConfig;
    use crate::policy::DiffusionPolicy;
    use crate::pretrain::{DdpmPretrainer, PretrainConfig};
    use crate::unet::UNetConfig;

    /// Rank `rank` of `world` for [`collective::shard`], in one process:
    /// the losses under test only ask which rows are theirs. Communicating
    /// through it is a test error.
    struct PretendRank {
        rank: usize,
        world: usize,
    }

    impl Collective for PretendRank {
        fn engine(&self) -> &'static str {
            "pretend"
        }
        fn rank(&self) -> usize {
            self.rank
        }
        fn world_size(&self) -> usize {
            self.world
        }
        fn local_rank(&self) -> usize {
            self.rank
        }
        fn all_reduce_sum(&self, _: &mut [Tensor]) -> Result<(), CollectiveError> {
            unreachable!("a pretend rank does not communicate")
        }
        fn broadcast(&self, _: &mut [Tensor], _: usize) -> Result<(), CollectiveError> {
            unreachable!("a pretend rank does not communicate")
        }
        fn all_gather_u64(&self, _: u64) -> Result<Vec<u64>, CollectiveError> {
            unreachable!("a pretend rank does not communicate")
        }
        fn barrier(&self) -> Result<(), CollectiveError> {
            unreachable!("a pretend rank does not communicate")
        }
        fn abort(&self, _: i32) -> ! {
            unreachable!("a pretend rank does not abort")
        }
    }

    /// The gradients of `loss()` with respect to `policy`'s variables, with
    /// the draws seeded, as rank `rank` of `world` sees them.
    fn gradients_as(
        rank: usize,
        world: usize,
        policy: &DiffusionPolicy,
        loss: &dyn Fn() -> Tensor,
    ) -> Vec<Tensor> {
        collective::install(Box::new(PretendRank { rank, world }));
        let _rng = envs::testing::seeded(17);
        for v in policy.var_store().trainable_variables() {
            let mut g = v.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        loss().backward();
        let mut named: Vec<(String, Tensor)> = policy.var_store().variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named.into_iter().map(|(_, v)| v.grad().copy()).collect()
    }

    /// Over 3 ranks of a batch of 7, the ranks' weighted gradients add up
    /// to the one-process gradient.
    fn shares_add_up(what: &str, policy: &DiffusionPolicy, loss: &dyn Fn() -> Tensor) {
        let whole = gradients_as(0, 1, policy, loss);
        let parts: Vec<Vec<Tensor>> = (0..3).map(|r| gradients_as(r, 3, policy, loss)).collect();
        collective::install(Box::new(collective::SingleProcess));
        let mut compared = 0;
        for (i, g) in whole.iter().enumerate() {
            if !g.defined() {
                continue;
            }
            let sum = parts
                .iter()
                .map(|p| p[i].shallow_clone())
                .reduce(|a, b| a + b)
                .unwrap();
            let diff = (g - sum).abs().max().double_value(&[]);
            let scale = g.abs().max().double_value(&[]).max(1e-6);
            assert!(
                diff < 1e-5 * scale,
                "{what}: parameter {i} differs by {diff} of {scale}"
            );
            compared += 1;
        }
        assert!(compared > 0, "{what}: no gradient");
    }

    #[test]
    fn a_share_of_zero_steps_with_zero_gradients_whatever_its_loss() {
        // A rank holding none of a minibatch descends on a stand-in row
        // whose loss may be NaN (stale behaviour densities): every
        // parameter gets a zero gradient, the loss is not read, and the
        // weights do not move.
        let _rng = envs::testing::seeded(2);
        let mut generator = crate::testing::tiny_generator(1e-2);
        let weights = |g: &mut crate::generator::Generator| -> Vec<Tensor> {
            g.optimizer_mut()
                .params()
                .iter()
                .map(|p| p.detach().copy())
                .collect()
        };
        let before = weights(&mut generator);
        let first = generator.optimizer_mut().params()[0].shallow_clone();
        let nan_loss = (first.sum(tch::Kind::Float) * f64::NAN).sum(tch::Kind::Float);
        let mut stats = crate::UpdateStats::default();
        generator.descend(&nan_loss, 0.0, &mut stats).unwrap();
        assert_eq!(stats.get("generator/loss"), Some(0.0));
        for p in generator.optimizer_mut().params() {
            assert!(p.grad().defined(), "every parameter has a gradient");
            assert_eq!(p.grad().abs().max().double_value(&[]), 0.0);
        }
        for (a, b) in before.iter().zip(&weights(&mut generator)) {
            assert!(a.equal(b), "a zero share moved the weights");
        }
    }

    #[test]
    fn the_ranks_shares_of_each_batch_loss_add_up_to_the_whole() {
        let schedule = crate::testing::tiny_schedule();
        let x0 = Tensor::randn([7, 3], (tch::Kind::Float, Device::Cpu));

        let policy = DiffusionPolicy::toy(&schedule, 3, 16, 3, Device::Cpu);
        let ddpm = DdpmPretrainer::new(PretrainConfig::default(), &policy, &schedule);
        shares_add_up("pretraining", &policy, &|| ddpm.loss(&policy, &x0));

        // A 4-step teacher and a 2-step student: whole network times.
        let betas = BetaSchedule::Linear {
            start: 0.05,
            end: 0.2,
        }
        .betas(4)
        .unwrap();
        let four = Schedule::new(betas.clone(), Variance::Beta).unwrap();
        let (teacher, student) = (
            DiffusionPolicy::toy(&four, 3, 16, 4, Device::Cpu),
            DiffusionPolicy::toy(&four, 3, 16, 4, Device::Cpu),
        );
        let config = DistillConfig {
            optimizer: OptimizerConfig::Adam { lr: 1e-3 },
            grad_clip: None,
            weighting: DistillWeighting::TruncatedSnr,
        };
        let distiller = Distiller::new(config, &student, &betas, 2);
        shares_add_up("distillation", &student, &|| {
            distiller.loss(&teacher, &student, &x0)
        });

        let unet = UNetConfig {
            in_channels: 1,
            resolution: 8,
            channels: 8,
            channel_mult: vec![1, 2],
            res_blocks: 1,
            attention_resolutions: vec![],
            norm_groups: 4,
            dropout: 0.0,
            ..UNetConfig::cifar10()
        };
        let images = Tensor::randn([7, 1, 8, 8], (tch::Kind::Float, Device::Cpu));
        let sn = covariance_policy(&schedule, &unet, Device::Cpu);
        let fitter = CovarianceFitter::new(
            CovarianceTarget::SquaredNoise,
            OptimizerConfig::Adam { lr: 1e-3 },
            &sn,
            &schedule,
        );
        shares_add_up("covariance head", &sn, &|| fitter.loss(&sn, &images));
    }
}
