//! Data-parallel shares computed in one process (docs/conventions.md
//! section 7): what each of N ranks computes on its rows adds up to what
//! one process computes on the whole batch. A test binary of its own, so
//! that no other test draws from libtorch's generator between a test's
//! seeded draws.

use agents::buffer::TransitionBatch;
use agents::critic::{AdversarialCritic, CriticConfig, CriticRegularizer};
use agents::generator::{Generator, GeneratorConfig};
use agents::reservoir::Reservoir;
use envs::rows::Rows;
use tch::Kind;

/// Runs the tests of this file one at a time: each draws from libtorch's
/// one generator, some outside `envs::testing::seeded`.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A three-step linear schedule.
fn tiny_schedule() -> Schedule {
    Schedule::new(
        BetaSchedule::Linear {
            start: 0.05,
            end: 0.2,
        }
        .betas(3)
        .unwrap(),
        Variance::Beta,
    )
    .unwrap()
}

/// A small toy generator on the tiny schedule, Adam at `lr`.
fn tiny_generator(lr: f64) -> Generator {
    let policy = DiffusionPolicy::toy(&tiny_schedule(), 2, 32, 3, Device::Cpu);
    Generator::new(
        GeneratorConfig {
            optimizer: OptimizerConfig::Adam { lr },
            ..GeneratorConfig::default()
        },
        policy,
    )
    .unwrap()
}

use collective::{Collective, CollectiveError};
use envs::samplers::CovarianceTarget;
use envs::schedule::{BetaSchedule, Schedule, Variance};
use tch::{Device, Tensor};

use agents::covariance::{covariance_policy, CovarianceFitter};
use agents::distill::{DistillConfig, DistillWeighting, Distiller};
use agents::optim::OptimizerConfig;
use agents::policy::DiffusionPolicy;
use agents::pretrain::{DdpmPretrainer, PretrainConfig};
use agents::unet::UNetConfig;

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
    let _serial = serial();
    // A rank holding none of a minibatch descends on a stand-in row
    // whose loss may be NaN (stale behaviour densities): every
    // parameter gets a zero gradient, the loss is not read, and the
    // weights do not move.
    let _rng = envs::testing::seeded(2);
    let mut generator = tiny_generator(1e-2);
    let weights = |g: &mut agents::generator::Generator| -> Vec<Tensor> {
        g.optimizer_mut()
            .params()
            .iter()
            .map(|p| p.detach().copy())
            .collect()
    };
    let before = weights(&mut generator);
    let first = generator.optimizer_mut().params()[0].shallow_clone();
    let nan_loss = (first.sum(tch::Kind::Float) * f64::NAN).sum(tch::Kind::Float);
    let mut stats = agents::UpdateStats::default();
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
    let _serial = serial();
    let schedule = tiny_schedule();
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

/// Every gradient of the critic's and the baseline's variables, by name.
fn gradients(c: &mut AdversarialCritic) -> Vec<(String, Tensor)> {
    let mut grads: Vec<(String, Tensor)> = c
        .critic_vars()
        .variables()
        .into_iter()
        .map(|(k, v)| (k, v.grad().copy()))
        .collect();
    grads.extend(
        c.baseline_vars()
            .variables()
            .into_iter()
            .map(|(k, v)| (format!("v.{k}"), v.grad().copy())),
    );
    grads.sort_by(|a, b| a.0.cmp(&b.0));
    grads
}

#[test]
fn the_shares_gradients_add_up_to_the_whole_batchs() {
    let _serial = serial();
    // Two ranks' weighted gradients (rows 0..7 and 7..12 of a batch of
    // 12), summed, are the one-process gradient, under every
    // regulariser; the gradient penalty's mixing weights are drawn over
    // the whole batch by both.
    for regularizer in [
        CriticRegularizer::Baseline { lambda: 0.5 },
        CriticRegularizer::GradientPenalty { eta: 2.0 },
        CriticRegularizer::None,
    ] {
        let config = CriticConfig {
            regularizer,
            width: 16,
            ..CriticConfig::default()
        };
        let grads_of = |rows: Rows| {
            let _rng = envs::testing::seeded(21);
            let mut c = AdversarialCritic::new(config.clone(), &[2], 3, Device::Cpu).unwrap();
            let x0 = Tensor::randn([12, 2], (Kind::Float, Device::Cpu));
            let real = Tensor::randn([12, 2], (Kind::Float, Device::Cpu)) - 1.0;
            let states: Vec<(Tensor, usize)> = (1..=3)
                .map(|t| (rows.of(&(&x0 * (t as f64 + 1.0))), t))
                .collect();
            c.backward_held(&states, &rows.of(&x0), &rows.of(&real), rows)
                .unwrap();
            gradients(&mut c)
        };
        let whole = grads_of(Rows::all(12));
        let (first, second) = (
            grads_of(Rows::share(0, 7, 12)),
            grads_of(Rows::share(7, 5, 12)),
        );
        for ((name, g), ((_, a), (_, b))) in whole.iter().zip(first.iter().zip(&second)) {
            if !g.defined() {
                assert!(!a.defined() && !b.defined(), "{regularizer:?} {name}");
                continue;
            }
            let diff = (g - (a + b)).abs().max().double_value(&[]);
            let scale = g.abs().max().double_value(&[]).max(1e-6);
            assert!(
                diff < 1e-5 * scale,
                "{regularizer:?} {name}: differs by {diff} of {scale}"
            );
        }
    }
}

/// Two episode batches of 5 chains and 3 steps, holding the chains `rows`:
/// the state of (episode e, step k, chain b) is 100e + 10k + b, its x_0
/// 1000e + b.
fn filled_share(with_log_prob: bool, rows: Rows) -> agents::buffer::TrajectoryBuffer {
    let mut collector = agents::buffer::EpisodeCollector::default();
    let chains = || {
        Tensor::arange_start(
            rows.start,
            rows.start + rows.len,
            (Kind::Float, Device::Cpu),
        )
        .view([rows.len, 1])
    };
    for e in 0..2 {
        for k in 0..3 {
            let ids = chains() + (100 * e + 10 * k) as f64;
            let log_prob = with_log_prob.then(|| &ids * 3.0);
            collector.step(&ids, &(&ids + 0.5), 3 - k as usize, log_prob, rows);
        }
        collector.finish(&(chains() + 1000.0 * e as f64));
    }
    collector.buffer
}

/// Offers `episodes` episodes of `steps` steps of the chains `rows` to a
/// reservoir: the state of (episode e, step k, chain b) is 1000e + 10k + b
/// in every one of `dim` entries, its action the state + 0.5, its x_0
/// 100000 + 1000e + b.
fn offer_share(reservoir: &mut Reservoir, episodes: i64, steps: i64, rows: Rows, dim: i64) {
    let chains = || {
        Tensor::arange_start(
            rows.start,
            rows.start + rows.len,
            (Kind::Float, Device::Cpu),
        )
        .view([rows.len, 1])
    };
    for e in 0..episodes {
        for k in 0..steps {
            let ids = chains() + (1000 * e + 10 * k) as f64;
            let state = ids.expand([rows.len, dim], false).contiguous();
            reservoir.step(&state, &(&state + 0.5), (steps - k) as usize, None, rows);
        }
        let finals = chains() + (100000 + 1000 * e) as f64;
        reservoir.finish(&finals.expand([rows.len, dim], false).contiguous());
    }
}

/// The ids of a reservoir minibatch's states, checking each row against
/// its action, step and x_0.
fn checked_ids(batch: &TransitionBatch, steps: i64) -> Vec<i64> {
    let first = |t: &Tensor| Vec::<f32>::try_from(t.select(1, 0)).unwrap();
    let (s, a, f) = (
        first(&batch.state),
        first(&batch.action),
        first(&batch.final_sample),
    );
    let t = Vec::<i64>::try_from(&batch.step).unwrap();
    (0..s.len())
        .map(|i| {
            let id = s[i] as i64;
            let (episode, k, chain) = (id / 1000, (id % 1000) / 10, id % 10);
            assert_eq!(a[i], s[i] + 0.5, "action of its own state");
            assert_eq!(t[i], steps - k, "step of its own state");
            assert_eq!(
                f[i] as i64,
                100000 + 1000 * episode + chain,
                "x_0 of its own chain"
            );
            id
        })
        .collect()
}

/// The state ids of a minibatch.
fn ids(batch: &TransitionBatch) -> Vec<f32> {
    Vec::<f32>::try_from(batch.state.flatten(0, -1)).unwrap()
}

#[test]
fn the_ranks_shares_of_a_minibatch_are_its_rows_with_their_x0() {
    let _serial = serial();
    // Two ranks holding chains 0..3 and 3..5 draw the same minibatches
    // as one process holding all 5; each gets its rows of them, in the
    // drawn order, and the shares add up to 1.
    let draw = |rows: Rows| {
        let _rng = envs::testing::seeded(7);
        filled_share(true, rows).minibatches(8, 3, Device::Cpu)
    };
    let whole = draw(Rows::all(5));
    let ranks = [draw(Rows::share(0, 3, 5)), draw(Rows::share(3, 2, 5))];
    for (i, batch) in whole.iter().enumerate() {
        assert_eq!(batch.share, 1.0);
        let all = ids(batch);
        let mut together = Vec::new();
        let mut share = 0.0;
        for (rank, batches) in ranks.iter().enumerate() {
            let part = &batches[i];
            share += part.share;
            if part.share == 0.0 {
                continue;
            }
            let mine: Vec<f32> = all
                .iter()
                .copied()
                .filter(|id| (*id as i64 % 10 >= 3) == (rank == 1))
                .collect();
            assert_eq!(ids(part), mine, "rank {rank}, minibatch {i}");
            assert_eq!(part.share, mine.len() as f64 / 8.0);
            let finals = Vec::<f32>::try_from(part.final_sample.flatten(0, -1)).unwrap();
            for (id, x0) in mine.iter().zip(finals) {
                let (episode, chain) = (*id as i64 / 100, *id as i64 % 10);
                assert_eq!(x0 as i64, 1000 * episode + chain);
            }
            together.extend(mine);
        }
        assert!((share - 1.0).abs() < 1e-12);
        together.sort_by(f32::total_cmp);
        let mut sorted = all.clone();
        sorted.sort_by(f32::total_cmp);
        assert_eq!(together, sorted);
    }
}

#[test]
fn the_ranks_shares_of_a_minibatch_are_its_transitions_with_their_x0() {
    let _serial = serial();
    // Ranks holding chains 0..2 and 2..5 keep the slots one process
    // holding all 5 keeps; each minibatch gives each rank its held
    // transitions of it, in the drawn order, and the shares add up to 1.
    let draw = |rows: Rows| {
        let _rng = envs::testing::seeded(11);
        let mut r = Reservoir::new(12);
        offer_share(&mut r, 3, 4, rows, 2);
        assert_eq!((r.seen(), r.len()), (60, 12));
        r.minibatches(5, 3, Device::Cpu)
    };
    let whole = draw(Rows::all(5));
    let ranks = [draw(Rows::share(0, 2, 5)), draw(Rows::share(2, 3, 5))];
    for (i, batch) in whole.iter().enumerate() {
        let all = checked_ids(batch, 4);
        let mut share = 0.0;
        for (rank, batches) in ranks.iter().enumerate() {
            let part = &batches[i];
            share += part.share;
            let mine: Vec<i64> = all
                .iter()
                .copied()
                .filter(|id| (id % 10 >= 2) == (rank == 1))
                .collect();
            assert_eq!(part.share, mine.len() as f64 / 5.0);
            if !mine.is_empty() {
                assert_eq!(checked_ids(part, 4), mine, "rank {rank}, minibatch {i}");
            }
        }
        assert!((share - 1.0).abs() < 1e-12);
    }
}
