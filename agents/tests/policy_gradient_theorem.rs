//! Theorem 4.1 on a chain where everything is Gaussian: with a linear
//! eps-model the sampler's output x_0 is Gaussian, E|x_0 - a|^2 has a closed
//! form, and autograd of that closed form is the exact gradient. The
//! pathwise (SFT) and policy-gradient (SFT-PG) estimates of our agents must
//! both agree with it in expectation. The Eq. 20 loss averages over the T'
//! transitions of a chain, so its gradient is the exact one divided by T'.

use agents::agent::Critics;
use agents::buffer::TransitionBatch;
use agents::generator::{Generator, GeneratorConfig};
use agents::networks::EpsModel;
use agents::pathwise::Pathwise;
use agents::policy::DiffusionPolicy;
use agents::reinforce::{Reinforce, ReinforceConfig};
use agents::{rollout, UpdateStats};
use envs::diffusion::DiffusionEnv;
use envs::rows::Rows;
use envs::schedule::{BetaSchedule, Schedule, Variance};
use envs::RewardModel;
use tch::nn::{Init, VarStore};
use tch::{Device, Kind, Tensor};

const DIM: i64 = 2;
const STEPS: usize = 3;
const CHAINS: i64 = 400_000;

/// eps(x, t) = W x + b_t.
struct LinearEps {
    w: Tensor,
    b: Tensor,
}

impl EpsModel for LinearEps {
    fn eps(&self, x: &Tensor, net_steps: &Tensor) -> Tensor {
        x.matmul(&self.w.tr()) + self.b.index_select(0, &net_steps.to_kind(Kind::Int64))
    }
}

/// f(x) = |x - a|^2.
struct SquaredDistance(Tensor);

impl RewardModel for SquaredDistance {
    fn value(&self, x: &Tensor) -> Tensor {
        (x - &self.0)
            .square()
            .sum_dim_intlist(1, false, Kind::Float)
    }
}

fn schedule() -> Schedule {
    Schedule::new(
        BetaSchedule::Linear {
            start: 0.1,
            end: 0.3,
        }
        .betas(STEPS)
        .unwrap(),
        Variance::Beta,
    )
    .unwrap()
}

fn linear_policy() -> (DiffusionPolicy, Tensor, Tensor) {
    let vs = VarStore::new(Device::Cpu);
    let w = vs
        .root()
        .var("w", &[DIM, DIM], Init::Uniform { lo: -0.5, up: 0.5 });
    let b = vs.root().var(
        "b",
        &[STEPS as i64, DIM],
        Init::Uniform { lo: -0.5, up: 0.5 },
    );
    let net = LinearEps {
        w: w.shallow_clone(),
        b: b.shallow_clone(),
    };
    (
        DiffusionPolicy::with_model(&schedule(), vs, Box::new(net)),
        w,
        b,
    )
}

/// E f(x_0) in closed form: propagate the mean m and covariance P of the
/// chain, x_{t-1} = A_t x_t + c_t + sigma_t z with A_t = k_t (I - s_t W) and
/// c_t = -k_t s_t b_t; then E|x_0 - a|^2 = |m - a|^2 + tr P.
fn exact_expected_cost(policy: &DiffusionPolicy, w: &Tensor, b: &Tensor, a: &Tensor) -> Tensor {
    let c = policy.coefficients();
    let eye = Tensor::eye(DIM, (Kind::Float, Device::Cpu));
    let mut m = Tensor::zeros([DIM], (Kind::Float, Device::Cpu));
    let mut p = eye.shallow_clone();
    for t in (1..=STEPS as i64).rev() {
        let s = c.eps_scale.double_value(&[t - 1]);
        let k = c.x_scale.double_value(&[t - 1]);
        let sigma = c.sigma.double_value(&[t - 1]);
        let a_t = (&eye - w * s) * k;
        let c_t = b.get(t - 1) * (-k * s);
        m = a_t.matmul(&m) + c_t;
        p = a_t.matmul(&p).matmul(&a_t.tr()) + &eye * (sigma * sigma);
    }
    (m - a).square().sum(Kind::Float) + p.trace()
}

fn gradient(loss: &Tensor, vars: &[&Tensor]) -> Tensor {
    let grads = Tensor::run_backward(&[loss], vars, false, false);
    Tensor::cat(
        &grads.iter().map(|g| g.flatten(0, -1)).collect::<Vec<_>>(),
        0,
    )
}

fn relative_error(estimate: &Tensor, exact: &Tensor) -> f64 {
    (estimate - exact).norm().double_value(&[]) / exact.norm().double_value(&[])
}

#[test]
fn policy_gradient_and_pathwise_gradient_agree_with_the_exact_gradient() {
    tch::set_num_threads(1);
    tch::manual_seed(41);
    let a = Tensor::from_slice(&[1.0f32, -0.5]);
    let critic = SquaredDistance(a.shallow_clone());
    let critics = Critics {
        reward: &critic,
        baseline: None,
    };

    let (policy, w, b) = linear_policy();
    let exact = gradient(&exact_expected_cost(&policy, &w, &b, &a), &[&w, &b]);

    // Pathwise: mean f(x_0) over reparameterised chains.
    let generator = Generator::new(GeneratorConfig::default(), policy).unwrap();
    let pathwise = Pathwise::new(generator, CHAINS, &[DIM]);
    let loss = pathwise
        .loss(Rows::all(CHAINS), &critics, &mut UpdateStats::default())
        .unwrap();
    let pathwise_grad = gradient(&loss, &[&w, &b]);

    // Policy gradient: the Eq. 20 loss over every transition of CHAINS chains.
    let (policy, w, b) = linear_policy_with_weights(&w, &b);
    let generator = Generator::new(GeneratorConfig::default(), policy).unwrap();
    let mut agent = Reinforce::new(
        ReinforceConfig {
            use_baseline: false,
            ..ReinforceConfig::default()
        },
        generator,
        CHAINS,
    );
    let mut env = DiffusionEnv::new(schedule(), &[DIM], CHAINS, Device::Cpu).unwrap();
    let episode = rollout(&mut env, &mut agent, None).unwrap();
    let mut next: Vec<Tensor> = episode.observations[1..]
        .iter()
        .map(|o| o.x.shallow_clone())
        .collect();
    next.push(episode.terminal.x.shallow_clone());
    let batch = TransitionBatch {
        state: Tensor::cat(
            &episode
                .observations
                .iter()
                .map(|o| o.x.shallow_clone())
                .collect::<Vec<_>>(),
            0,
        ),
        action: Tensor::cat(&next, 0),
        final_sample: episode.terminal.x.repeat([STEPS as i64, 1]),
        step: Tensor::cat(
            &episode
                .observations
                .iter()
                .map(|o| Tensor::full([CHAINS], o.t as i64, (Kind::Int64, Device::Cpu)))
                .collect::<Vec<_>>(),
            0,
        ),
        behaviour_log_prob: None,
        share: 1.0,
    };
    let loss = agent
        .surrogate_loss(&batch, &critics, &mut UpdateStats::default())
        .unwrap();
    let pg_grad = gradient(&loss, &[&w, &b]) * STEPS as f64;

    let pathwise_error = relative_error(&pathwise_grad, &exact);
    let pg_error = relative_error(&pg_grad, &exact);
    eprintln!("relative errors: pathwise {pathwise_error:.4}, policy gradient {pg_error:.4}");
    assert!(
        pathwise_error < 0.03,
        "pathwise {pathwise_grad:?} vs exact {exact:?}: {pathwise_error}"
    );
    assert!(
        pg_error < 0.08,
        "policy gradient {pg_grad:?} vs exact {exact:?}: {pg_error}"
    );
}

/// A linear policy holding copies of `w` and `b`.
fn linear_policy_with_weights(w: &Tensor, b: &Tensor) -> (DiffusionPolicy, Tensor, Tensor) {
    let (policy, w2, b2) = linear_policy();
    tch::no_grad(|| {
        w2.shallow_clone().copy_(w);
        b2.shallow_clone().copy_(b);
    });
    (policy, w2, b2)
}
