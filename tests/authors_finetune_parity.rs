//! The SFT-PG generator update against the authors' code: a PyTorch
//! transcription of finetune.py (tests/python/authors_finetune.py) samples
//! FastDPM VAR chains from a small random-weight U-Net the way their
//! fine-tuning does (the last step drawn with std 1e-3) and takes the
//! gradient of their generator loss, mean[(f(x_0) - v(x_{t+1}, t)) log p],
//! on the B transitions of each step and on a mixed minibatch. Ours must
//! give the same sampler coefficients, draw the same chains from the same
//! seed, and give the same gradient to 1e-5 relative at every step, the last
//! included. Both sides run in float64 (see the script for why).
//!
//! The second test is the reason for the first: with the last step drawn
//! without noise (shortcut before schema 3), the last step's policy gradient
//! is zero on a round's first minibatch (but for float rounding); drawn as
//! the authors draw it, or through the pathwise term, it is not.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use agents::agent::Critics;
use agents::generator::{DeterministicStep, Generator, GeneratorConfig};
use agents::networks::ValueModel;
use agents::optim::OptimizerConfig;
use agents::policy::DiffusionPolicy;
use agents::reinforce::{Reinforce, ReinforceConfig};
use agents::{Agent, FineTuneAgent, UpdateStats};
use common::{python, run_ok, temp_dir};
use envs::diffusion::{ChainState, DiffusionEnv};
use envs::gaussian::LogProbReduction;
use envs::sampler::{FastDpmKind, FastDpmSampler, FastDpmSchedule, SamplerConfig};
use envs::schedule::{BetaSchedule, Schedule, Variance};
use envs::RewardModel;
use shortcut::weights::{diffusers::DiffusersFolder, import};
use tch::{Device, Kind, Tensor};

const TOLERANCE: f64 = 1e-5;

fn schedule() -> Schedule {
    let betas = BetaSchedule::Linear {
        start: 1e-4,
        end: 0.02,
    }
    .betas(1000)
    .unwrap();
    SamplerConfig::FastDpm(FastDpmSampler {
        steps: 10,
        kind: FastDpmKind::Var,
        schedule: FastDpmSchedule::Quadratic,
        kappa: 1.0,
    })
    .build(&betas, Variance::Beta)
    .unwrap()
}

/// The script's network as our policy, in float64.
fn policy(model: &Path, schedule: &Schedule) -> DiffusionPolicy {
    let folder = DiffusersFolder::open(model).unwrap();
    let policy = DiffusionPolicy::unet(schedule, &folder.config, Device::Cpu);
    import::load_strict(&folder.weights().unwrap(), policy.var_store()).unwrap();
    policy
}

fn reinforce(policy: DiffusionPolicy, deterministic_step: DeterministicStep) -> Reinforce {
    let config = GeneratorConfig {
        optimizer: OptimizerConfig::Adam { lr: 1e-6 },
        log_prob: LogProbReduction::Mean,
        deterministic_step,
        ..GeneratorConfig::default()
    };
    Reinforce::new(
        ReinforceConfig::default(),
        Generator::new(config, policy).unwrap(),
        1,
    )
}

fn npz(path: &Path) -> BTreeMap<String, Tensor> {
    Tensor::read_npz(path).unwrap().into_iter().collect()
}

/// The script's f(x) = sum(wf * x) + bf.
struct LinearCritic {
    w: Tensor,
    b: f64,
}

impl RewardModel for LinearCritic {
    fn value(&self, x: &Tensor) -> Tensor {
        (x * &self.w).sum_dim_intlist([1i64, 2, 3].as_slice(), false, x.kind()) + self.b
    }
}

/// The script's v(x, k) = sum(wv * x) + cv[k], k counted from the first
/// sampling step; ours is indexed by the 1-based step t less one, t = S - k.
struct LinearBaseline {
    w: Tensor,
    c_by_our_index: Tensor,
}

impl ValueModel for LinearBaseline {
    fn value(&self, x: &Tensor, index: &Tensor) -> Tensor {
        (x * &self.w).sum_dim_intlist([1i64, 2, 3].as_slice(), false, x.kind())
            + self.c_by_our_index.index_select(0, index)
    }
}

/// |a - b| / |b| over all parameters (global norms).
fn relative_difference(ours: &BTreeMap<String, Tensor>, theirs: &BTreeMap<String, Tensor>) -> f64 {
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>(),
        "the same parameters"
    );
    let (mut diff, mut norm) = (0.0, 0.0);
    for (name, theirs) in theirs {
        let ours = &ours[name];
        assert_eq!(ours.size(), theirs.size(), "{name}");
        diff += (ours - theirs).square().sum(Kind::Double).double_value(&[]);
        norm += theirs.square().sum(Kind::Double).double_value(&[]);
    }
    (diff / norm).sqrt()
}

fn gradients(agent: &Reinforce) -> BTreeMap<String, Tensor> {
    agent
        .generator()
        .policy()
        .var_store()
        .variables()
        .into_iter()
        .map(|(name, v)| (name, v.grad().copy()))
        .collect()
}

fn zero_gradients(agent: &Reinforce) {
    for mut v in agent
        .generator()
        .policy()
        .var_store()
        .variables()
        .into_values()
    {
        v.zero_grad();
    }
}

/// libtorch's default generator is one per process: a test that seeds it
/// and replays the authors' draws holds this lock, and so does every test
/// here that draws from it, so that no other test's draws fall between.
static GLOBAL_GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn the_generator_update_matches_the_authors_finetune_step_by_step() {
    let _generator = GLOBAL_GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    let dir = temp_dir("authors_finetune_parity");
    run_ok(
        python()
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/authors_finetune.py"))
            .arg(&dir),
    );
    let shape: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("shape.json")).unwrap()).unwrap();
    let (s, b, seed) = (
        shape["S"].as_i64().unwrap(),
        shape["B"].as_i64().unwrap(),
        shape["seed"].as_i64().unwrap(),
    );
    let schedule = schedule();
    assert_eq!(schedule.len() as i64, s);
    let mut policy = policy(&dir.join("model"), &schedule);
    policy.set_kind(Kind::Double);

    // The sampler: their index i (first sampling step first) is our step S - i.
    let theirs = npz(&dir.join("coefficients.npz"));
    let c = policy.coefficients();
    let first_step_first = |t: &Tensor| t.flip([0]);
    let ours = [
        ("x_prev_multiplier", first_step_first(&c.x_scale)),
        (
            "theta_multiplier",
            first_step_first(&(-(&c.eps_scale * &c.x_scale))),
        ),
        ("std", first_step_first(&c.log_prob_sigma)),
        ("diffusion_steps_list", first_step_first(&c.network_times)),
    ];
    for (name, ours) in ours {
        let reference = &theirs[name];
        let error = (&ours - reference).abs().max().double_value(&[]);
        let scale = reference.abs().max().double_value(&[]);
        assert!(
            error <= 1e-9 * scale.max(1.0),
            "{name}: {ours} vs {reference}"
        );
    }

    // The rollout: the same seed draws the same x_T and step noise.
    let mut agent = reinforce(policy, DeterministicStep::Noisy);
    let x_seq = Tensor::read_npy(dir.join("x_seq.npy")).unwrap();
    tch::manual_seed(seed);
    let mut state = ChainState::new(
        Tensor::randn(x_seq.get(0).size().as_slice(), (Kind::Double, Device::Cpu)),
        s as usize,
    );
    for k in 0..=s {
        let error = (&state.x - x_seq.get(k)).abs().max().double_value(&[]);
        assert!(error < 1e-10, "state {k} of the rollout differs by {error}");
        if k < s {
            state = ChainState::new(
                Agent::<DiffusionEnv>::act(&mut agent, &state).unwrap(),
                state.t - 1,
            );
        }
    }
    let last = x_seq.get(s) - x_seq.get(s - 1);
    assert!(
        last.abs().max().double_value(&[]) > 0.0,
        "the chains moved at the last step"
    );

    // The gradient of the generator loss on the same transitions.
    let critic = npz(&dir.join("critic.npz"));
    let f = LinearCritic {
        w: critic["wf"].shallow_clone(),
        b: critic["bf"].double_value(&[]),
    };
    let v = LinearBaseline {
        w: critic["wv"].shallow_clone(),
        c_by_our_index: critic["cv"].flip([0]),
    };
    let critics = Critics {
        reward: &f,
        baseline: Some(&v),
    };
    let rows_of = |k: i64| {
        // Buffer row r of the script is chain r % B of its step index r / B.
        let (state, action) = (x_seq.get(k), x_seq.get(k + 1));
        (state, action, x_seq.get(s), s - k)
    };
    let gradient_of = |agent: &Reinforce, batch: agents::buffer::TransitionBatch| {
        zero_gradients(agent);
        let loss = agent
            .surrogate_loss(&batch, &critics, &mut UpdateStats::default())
            .unwrap();
        loss.backward();
        gradients(agent)
    };
    let mut worst: f64 = 0.0;
    for k in 0..s {
        let (state, action, final_sample, t) = rows_of(k);
        let batch = agents::buffer::TransitionBatch {
            state,
            action,
            final_sample,
            step: Tensor::full([b], t, (Kind::Int64, Device::Cpu)),
            behaviour_log_prob: None,
            share: 1.0,
        };
        let ours = gradient_of(&agent, batch);
        let theirs = npz(&dir.join(format!("grads_step{k}.npz")));
        let error = relative_difference(&ours, &theirs);
        println!(
            "step index {k} (our t = {}): relative difference {error:.2e}",
            s - k
        );
        assert!(error < TOLERANCE, "step index {k}: {error}");
        worst = worst.max(error);
    }
    // A minibatch mixing the steps, rows as the script's buffer holds them.
    let rows =
        Vec::<i64>::try_from(&Tensor::read_npy(dir.join("mixed_rows.npy")).unwrap()).unwrap();
    let pick = |f: &dyn Fn(i64) -> Tensor| {
        let parts: Vec<Tensor> = rows.iter().map(|&r| f(r).unsqueeze(0)).collect();
        Tensor::cat(&parts, 0)
    };
    let batch = agents::buffer::TransitionBatch {
        state: pick(&|r| x_seq.get(r / b).get(r % b)),
        action: pick(&|r| x_seq.get(r / b + 1).get(r % b)),
        final_sample: pick(&|r| x_seq.get(s).get(r % b)),
        step: Tensor::from_slice(&rows.iter().map(|&r| s - r / b).collect::<Vec<i64>>()),
        behaviour_log_prob: None,
        share: 1.0,
    };
    let error = relative_difference(
        &gradient_of(&agent, batch),
        &npz(&dir.join("grads_mixed.npz")),
    );
    println!("mixed minibatch: relative difference {error:.2e} (worst step {worst:.2e})");
    assert!(error < TOLERANCE, "mixed minibatch: {error}");
}

/// A critic with a gradient everywhere: f(x) = mean((x - 0.3)^2).
struct Quadratic;

impl RewardModel for Quadratic {
    fn value(&self, x: &Tensor) -> Tensor {
        (x - 0.3)
            .square()
            .mean_dim([1i64, 2, 3].as_slice(), false, Kind::Float)
    }
}

#[test]
fn the_last_step_has_a_policy_gradient_on_the_rounds_first_minibatch() {
    let _generator = GLOBAL_GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    let dir = temp_dir("last_step_gradient");
    run_ok(
        python()
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/make_unets.py"))
            .arg(&dir)
            .arg("no_attention"),
    );
    let schedule = schedule();
    let last_step_gradient = |setting: DeterministicStep| -> f64 {
        let policy = policy(&dir.join("no_attention"), &schedule);
        let mut agent = reinforce(policy, setting);
        let mut env = DiffusionEnv::new(schedule.clone(), &[1, 8, 8], 32, Device::Cpu).unwrap();
        let episode = agents::rollout(&mut env, &mut agent, Some(3)).unwrap();
        // The last transition, x_1 -> x_0, as the first minibatch holds it.
        let x1 = &episode.observations.last().unwrap().x;
        let x0 = &episode.terminal.x;
        let batch = agents::buffer::TransitionBatch {
            state: x1.shallow_clone(),
            action: x0.shallow_clone(),
            final_sample: x0.shallow_clone(),
            step: Tensor::full([32], 1, (Kind::Int64, Device::Cpu)),
            behaviour_log_prob: None,
            share: 1.0,
        };
        let critics = Critics {
            reward: &Quadratic,
            baseline: None,
        };
        zero_gradients(&agent);
        agent
            .surrogate_loss(&batch, &critics, &mut UpdateStats::default())
            .unwrap()
            .backward();
        gradients(&agent)
            .values()
            .map(|g| g.square().sum(Kind::Double).double_value(&[]))
            .sum::<f64>()
            .sqrt()
    };
    let noisy = last_step_gradient(DeterministicStep::Noisy);
    let noiseless = last_step_gradient(DeterministicStep::Noiseless);
    let pathwise = last_step_gradient(DeterministicStep::Pathwise);
    println!("last-step gradient norm: noisy {noisy:.3e}, noiseless {noiseless:.3e}, pathwise {pathwise:.3e}");
    assert!(noisy > 0.0 && noisy.is_finite());
    assert!(pathwise > 0.0 && pathwise.is_finite());
    // Drawn without noise the action is the mean, so the score term is zero
    // but for the float rounding of the mean recomputed in the update.
    assert!(
        noiseless < 1e-4 * noisy,
        "noiseless {noiseless} against noisy {noisy}"
    );
}
