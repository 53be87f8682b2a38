//! Gymnasium's `CartPole-v1`, batch-first: `B` parallel episodes of the
//! classic cart-pole balancing task that may end at different times.
//!
//! The dynamics are those of gymnasium's
//! `gymnasium/envs/classic_control/cartpole.py` (1.x) with its default
//! `"euler"` integrator, operation for operation, and the time limit is
//! `gymnasium.make("CartPole-v1")`'s `TimeLimit(max_episode_steps = 500)`.
//! The state is kept in `f64` on the host and stepped with the C library's
//! `cos` and `sin`, as gymnasium steps it in NumPy floats: the pole is an
//! unstable system (with fixed actions a difference of 1e-16 in the state
//! grows to order 1 within 500 steps), so only the same floating-point
//! operations give gymnasium's trajectories, and libtorch's vectorised
//! `cos` / `sin` do not always round as the C library does.
//! `tests/cartpole_gymnasium.rs` checks the parity step by step.
//!
//! The tensors handed out (observations, rewards, flags, states) live on
//! the device given to [`CartPole::new`]; actions and masks may come from
//! any device.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tch::{Device, Kind, Tensor};

use crate::{Env, EnvError, Info, Space, Step};

/// Gravitational acceleration, m/s².
pub const GRAVITY: f64 = 9.8;
/// Mass of the cart, kg.
pub const MASS_CART: f64 = 1.0;
/// Mass of the pole, kg.
pub const MASS_POLE: f64 = 0.1;
/// Mass of cart and pole together, computed as gymnasium does (`masspole + masscart`).
pub const TOTAL_MASS: f64 = MASS_POLE + MASS_CART;
/// Half the pole's length, m (gymnasium's `length`).
pub const LENGTH: f64 = 0.5;
/// `MASS_POLE * LENGTH`, gymnasium's `polemass_length`.
pub const POLE_MASS_LENGTH: f64 = MASS_POLE * LENGTH;
/// Magnitude of the force an action applies to the cart, N.
pub const FORCE_MAG: f64 = 10.0;
/// Seconds between two states (one Euler step).
pub const TAU: f64 = 0.02;
/// An episode terminates when the pole's angle leaves `[-12°, 12°]`, in radians
/// (gymnasium's `12 * 2 * math.pi / 360`).
pub const THETA_THRESHOLD_RADIANS: f64 = 12.0 * 2.0 * std::f64::consts::PI / 360.0;
/// An episode terminates when the cart's position leaves `[-2.4, 2.4]`.
pub const X_THRESHOLD: f64 = 2.4;
/// Every coordinate of a reset state is drawn uniformly from `[-RESET_BOUND, RESET_BOUND)`.
pub const RESET_BOUND: f64 = 0.05;
/// Episodes are truncated after this many steps (`CartPole-v1`'s `TimeLimit`).
pub const MAX_EPISODE_STEPS: i64 = 500;
/// The reward of every step, the terminating one included.
pub const REWARD: f64 = 1.0;
/// The task counts as solved when the mean return over [`SOLVED_EPISODES`]
/// consecutive episodes reaches this (`CartPole-v1`'s `reward_threshold`).
pub const SOLVED_RETURN: f64 = 475.0;
/// The number of consecutive episodes [`SOLVED_RETURN`] is averaged over.
pub const SOLVED_EPISODES: usize = 100;
/// The action that pushes the cart to the left (with `-FORCE_MAG`).
pub const PUSH_LEFT: i64 = 0;
/// The action that pushes the cart to the right (with `FORCE_MAG`).
pub const PUSH_RIGHT: i64 = 1;

/// One cart-pole state: position, velocity, pole angle, angular velocity.
type State = [f64; 4];

/// What one call to [`CartPole::step`] returns; row `i` is episode `i`.
#[derive(Debug)]
pub struct CartPoleStep {
    /// The next observations, `[B, 4]` float32 (the `f64` state rounded, as gymnasium's `np.float32`).
    pub obs: Tensor,
    /// The rewards, `[B]` float32, all [`REWARD`].
    pub reward: Tensor,
    /// Whether the pole fell or the cart left the track, `[B]` bool.
    pub terminated: Tensor,
    /// Whether the episode reached [`MAX_EPISODE_STEPS`], `[B]` bool (also
    /// when it terminated on that step, as gymnasium's `TimeLimit` reports it).
    pub truncated: Tensor,
}

/// `B` parallel `CartPole-v1` episodes.
///
/// An episode that terminated or was truncated must be restarted with
/// [`CartPole::reset_where`] (or [`CartPole::reset`]) before the next
/// [`CartPole::step`], which otherwise fails naming it.
#[derive(Debug)]
pub struct CartPole {
    num_envs: i64,
    device: Device,
    rng: StdRng,
    states: Vec<State>,
    elapsed: Vec<i64>,
    ended: Vec<bool>,
    started: bool,
}

impl CartPole {
    /// `num_envs` episodes whose tensors live on `device`; call
    /// [`CartPole::reset`] (or [`CartPole::set_state`]) before stepping.
    /// Until a reset is seeded, resets draw from an entropy-seeded generator.
    pub fn new(num_envs: i64, device: Device) -> Result<Self, EnvError> {
        if num_envs < 1 {
            return Err(EnvError::Invalid {
                field: "num_envs",
                reason: format!("must be at least 1, got {num_envs}"),
            });
        }
        let n = num_envs as usize;
        Ok(Self {
            num_envs,
            device,
            rng: StdRng::from_os_rng(),
            states: vec![[0.0; 4]; n],
            elapsed: vec![0; n],
            ended: vec![false; n],
            started: false,
        })
    }

    /// Number of parallel episodes `B`.
    pub fn num_envs(&self) -> i64 {
        self.num_envs
    }

    /// Steps taken by each episode since it started (gymnasium's `TimeLimit._elapsed_steps`).
    pub fn elapsed_steps(&self) -> &[i64] {
        &self.elapsed
    }

    /// Starts every episode afresh from a state drawn uniformly from
    /// `[-RESET_BOUND, RESET_BOUND)^4`, and returns the observations `[B, 4]`.
    /// A seed re-seeds the generator first (the same seed gives the same
    /// states); without one the generator continues its stream.
    pub fn reset(&mut self, seed: Option<u64>) -> Tensor {
        if let Some(seed) = seed {
            self.rng = StdRng::seed_from_u64(seed);
        }
        for i in 0..self.states.len() {
            self.restart(i);
        }
        self.started = true;
        self.observations()
    }

    /// Restarts the episodes whose entry of the `[B]` bool mask `done` is
    /// true, drawing their states from the same generator as
    /// [`CartPole::reset`] (in episode order); their step counts go to 0.
    /// Returns the observations of all episodes, `[B, 4]`.
    pub fn reset_where(&mut self, done: &Tensor) -> Result<Tensor, EnvError> {
        if done.kind() != Kind::Bool {
            return Err(EnvError::Invalid {
                field: "done",
                reason: format!("must be a bool mask, got {:?}", done.kind()),
            });
        }
        check_shape("done", done, &[self.num_envs])?;
        for (i, restart) in Vec::<bool>::try_from(done)?.into_iter().enumerate() {
            if restart {
                self.restart(i);
            }
        }
        self.started = true;
        Ok(self.observations())
    }

    /// Starts every episode afresh from the given `[B, 4]` states (position,
    /// velocity, angle, angular velocity; float32 or float64), as
    /// `env.unwrapped.state = ...` right after a gymnasium reset does.
    pub fn set_state(&mut self, state: &Tensor) -> Result<(), EnvError> {
        if !matches!(state.kind(), Kind::Float | Kind::Double) {
            return Err(EnvError::Invalid {
                field: "state",
                reason: format!("must be float32 or float64, got {:?}", state.kind()),
            });
        }
        check_shape("state", state, &[self.num_envs, 4])?;
        let values = Vec::<f64>::try_from(&state.reshape([-1]))?;
        for (i, row) in values.chunks_exact(4).enumerate() {
            self.states[i] = [row[0], row[1], row[2], row[3]];
            self.elapsed[i] = 0;
            self.ended[i] = false;
        }
        self.started = true;
        Ok(())
    }

    /// The current states, `[B, 4]` float64 on the environment's device.
    pub fn state(&self) -> Tensor {
        let flat: Vec<f64> = self.states.iter().flatten().copied().collect();
        Tensor::from_slice(&flat)
            .view([self.num_envs, 4])
            .to_device(self.device)
    }

    /// Applies one action per episode: `actions` is a `[B]` int64 tensor of
    /// [`PUSH_LEFT`] (0) or [`PUSH_RIGHT`] (1). Fails, changing nothing,
    /// before the first reset, on a wrong shape, kind or value, and when an
    /// episode ended on an earlier step and was not restarted.
    pub fn step(&mut self, actions: &Tensor) -> Result<CartPoleStep, EnvError> {
        if !self.started {
            return Err(EnvError::NeedsReset(
                "CartPole::step before any reset".into(),
            ));
        }
        if actions.kind() != Kind::Int64 {
            return Err(EnvError::Invalid {
                field: "actions",
                reason: format!("must be int64, got {:?}", actions.kind()),
            });
        }
        check_shape("actions", actions, &[self.num_envs])?;
        let actions = Vec::<i64>::try_from(actions)?;
        let bad: Vec<String> = actions
            .iter()
            .enumerate()
            .filter(|(_, &a)| a != PUSH_LEFT && a != PUSH_RIGHT)
            .map(|(i, a)| format!("episode {i}: {a}"))
            .collect();
        if !bad.is_empty() {
            return Err(EnvError::Invalid {
                field: "actions",
                reason: format!("must be 0 (left) or 1 (right), got {}", bad.join(", ")),
            });
        }
        let ended: Vec<usize> = (0..self.ended.len()).filter(|&i| self.ended[i]).collect();
        if !ended.is_empty() {
            return Err(EnvError::NeedsReset(format!(
                "episodes {ended:?} already terminated or were truncated: \
                 restart them with reset_where before stepping"
            )));
        }
        let n = self.states.len();
        let mut terminated = vec![false; n];
        let mut truncated = vec![false; n];
        for i in 0..n {
            let next = euler_step(self.states[i], actions[i]);
            self.states[i] = next;
            self.elapsed[i] += 1;
            terminated[i] = is_terminal(&next);
            truncated[i] = self.elapsed[i] >= MAX_EPISODE_STEPS;
            self.ended[i] = terminated[i] || truncated[i];
        }
        Ok(CartPoleStep {
            obs: self.observations(),
            reward: Tensor::full([self.num_envs], REWARD, (Kind::Float, self.device)),
            terminated: Tensor::from_slice(&terminated).to_device(self.device),
            truncated: Tensor::from_slice(&truncated).to_device(self.device),
        })
    }

    /// Draws a fresh state for episode `i` and zeroes its step count.
    fn restart(&mut self, i: usize) {
        // NumPy's `uniform(low, high)`: `low + (high - low) * u`, u in [0, 1).
        let (low, high) = (-RESET_BOUND, RESET_BOUND);
        self.states[i] = std::array::from_fn(|_| low + (high - low) * self.rng.random::<f64>());
        self.elapsed[i] = 0;
        self.ended[i] = false;
    }

    /// The states rounded to float32, `[B, 4]` on the environment's device.
    fn observations(&self) -> Tensor {
        let flat: Vec<f32> = self.states.iter().flatten().map(|&v| v as f32).collect();
        Tensor::from_slice(&flat)
            .view([self.num_envs, 4])
            .to_device(self.device)
    }
}

/// CartPole through the generic [`Env`] trait: observations `[B, 4]` float32,
/// actions `[B]` int64 in `{0, 1}`, reward 1 per step; `reset_ended`
/// restarts the episodes that ended ([`CartPole::reset_where`]).
impl Env for CartPole {
    type Obs = Tensor;
    type Action = Tensor;

    fn observation_space(&self) -> Space {
        // Gymnasium's bounds are per coordinate (2 x the thresholds for
        // position and angle, unbounded velocities); a `Box` here has one
        // bound for all, so the observation space is the unbounded box.
        Space::real(&[4])
    }

    fn action_space(&self) -> Space {
        Space::Discrete(2)
    }

    fn num_envs(&self) -> i64 {
        self.num_envs
    }

    fn reset(&mut self, seed: Option<u64>) -> Result<(Tensor, Info), EnvError> {
        Ok((CartPole::reset(self, seed), Info::new()))
    }

    fn step(&mut self, action: &Tensor) -> Result<Step<Tensor>, EnvError> {
        let step = CartPole::step(self, action)?;
        Ok(Step {
            obs: step.obs,
            reward: step.reward,
            terminated: step.terminated,
            truncated: step.truncated,
            info: Info::new(),
        })
    }

    fn reset_ended(&mut self, ended: &Tensor) -> Result<Tensor, EnvError> {
        self.reset_where(ended)
    }
}

/// An [`EnvError::Shape`] unless `t` has the shape `expected`.
fn check_shape(what: &'static str, t: &Tensor, expected: &[i64]) -> Result<(), EnvError> {
    if t.size() != expected {
        return Err(EnvError::Shape {
            what,
            expected: expected.to_vec(),
            got: t.size(),
        });
    }
    Ok(())
}

/// One step of gymnasium's `CartPoleEnv.step` with the `"euler"` integrator,
/// in its order of operations (so that the results are bitwise its own).
fn euler_step([x, x_dot, theta, theta_dot]: State, action: i64) -> State {
    let force = if action == PUSH_RIGHT {
        FORCE_MAG
    } else {
        -FORCE_MAG
    };
    let costheta = theta.cos();
    let sintheta = theta.sin();
    let temp = (force + POLE_MASS_LENGTH * (theta_dot * theta_dot) * sintheta) / TOTAL_MASS;
    let thetaacc = (GRAVITY * sintheta - costheta * temp)
        / (LENGTH * (4.0 / 3.0 - MASS_POLE * (costheta * costheta) / TOTAL_MASS));
    let xacc = temp - POLE_MASS_LENGTH * thetaacc * costheta / TOTAL_MASS;
    [
        x + TAU * x_dot,
        x_dot + TAU * xacc,
        theta + TAU * theta_dot,
        theta_dot + TAU * thetaacc,
    ]
}

/// Whether the cart left the track or the pole fell (strict inequalities, as gymnasium's).
fn is_terminal(&[x, _, theta, _]: &State) -> bool {
    x.abs() > X_THRESHOLD || theta.abs() > THETA_THRESHOLD_RADIANS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(states: &[State]) -> CartPole {
        let mut env = CartPole::new(states.len() as i64, Device::Cpu).unwrap();
        let flat: Vec<f64> = states.iter().flatten().copied().collect();
        env.set_state(&Tensor::from_slice(&flat).view([-1, 4]))
            .unwrap();
        env
    }

    fn bools(t: &Tensor) -> Vec<bool> {
        Vec::<bool>::try_from(t).unwrap()
    }

    fn rows(t: &Tensor) -> Vec<Vec<f64>> {
        Vec::<Vec<f64>>::try_from(t).unwrap()
    }

    /// The balancing controller `tests/python/cartpole_gymnasium.py` also uses.
    fn balance([x, x_dot, theta, theta_dot]: State) -> i64 {
        if 0.3 * x + 0.8 * x_dot + 10.0 * theta + 2.0 * theta_dot > 0.0 {
            PUSH_RIGHT
        } else {
            PUSH_LEFT
        }
    }

    fn states_of(env: &CartPole) -> Vec<State> {
        rows(&env.state())
            .into_iter()
            .map(|r| [r[0], r[1], r[2], r[3]])
            .collect()
    }

    #[test]
    fn the_constants_are_gymnasiums() {
        assert_eq!(TOTAL_MASS, 1.1);
        assert_eq!(POLE_MASS_LENGTH, 0.05);
        assert!((THETA_THRESHOLD_RADIANS - 0.20943951023931953).abs() < 1e-17);
    }

    #[test]
    fn termination_is_strictly_beyond_the_thresholds() {
        // Zero velocities keep x and theta for one step (the Euler step
        // moves them by their old velocities).
        let t = THETA_THRESHOLD_RADIANS;
        let eps = 1e-9;
        let cases: [(State, bool); 10] = [
            ([X_THRESHOLD, 0.0, 0.0, 0.0], false),
            ([-X_THRESHOLD, 0.0, 0.0, 0.0], false),
            ([X_THRESHOLD - 0.01, 0.5 + eps / TAU, 0.0, 0.0], true),
            ([-X_THRESHOLD + 0.01, -0.5 - eps / TAU, 0.0, 0.0], true),
            ([X_THRESHOLD - 0.01, 0.5 - eps / TAU, 0.0, 0.0], false),
            ([0.0, 0.0, t, 0.0], false),
            ([0.0, 0.0, -t, 0.0], false),
            ([0.0, 0.0, t - 1e-6, (1e-6 + eps) / TAU], true),
            ([0.0, 0.0, -t + 1e-6, -(1e-6 + eps) / TAU], true),
            ([0.0, 0.0, t - 1e-6, (1e-6 - eps) / TAU], false),
        ];
        let states: Vec<State> = cases.iter().map(|c| c.0).collect();
        let mut env = env(&states);
        let out = env
            .step(&Tensor::zeros([10], (Kind::Int64, Device::Cpu)))
            .unwrap();
        let want: Vec<bool> = cases.iter().map(|c| c.1).collect();
        assert_eq!(bools(&out.terminated), want);
        assert_eq!(bools(&out.truncated), vec![false; 10]);
        assert_eq!(Vec::<f32>::try_from(&out.reward).unwrap(), vec![1.0; 10]);
        // A terminated episode must be restarted; the others go on.
        let err = env
            .step(&Tensor::zeros([10], (Kind::Int64, Device::Cpu)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("[2, 3, 7, 8]"), "{err}");
        let _ = env.reset_where(&out.terminated).unwrap();
        env.step(&Tensor::zeros([10], (Kind::Int64, Device::Cpu)))
            .unwrap();
        assert_eq!(env.elapsed_steps(), &[2, 2, 1, 1, 2, 2, 2, 1, 1, 2]);
    }

    #[test]
    fn episodes_are_truncated_after_500_steps_even_when_they_terminate() {
        // Row k balances for 470 + k steps, then pushes right, right, left,
        // ... until it falls: the first 17 rows terminate before step 500,
        // the one switching at 489 terminates on step 500 itself (found by
        // a search with gymnasium's dynamics), others are truncated standing.
        let n = 30;
        let mut env = env(&vec![[0.01, 0.0, -0.02, 0.03]; n]);
        let mut ended_at = vec![None; n];
        for step in 1..=MAX_EPISODE_STEPS {
            let states = states_of(&env);
            let actions: Vec<i64> = (0..n)
                .map(|k| {
                    let switch = 470 + k as i64;
                    if step <= switch {
                        balance(states[k])
                    } else {
                        [PUSH_RIGHT, PUSH_RIGHT, PUSH_LEFT][((step - switch - 1) % 3) as usize]
                    }
                })
                .collect();
            let out = env.step(&Tensor::from_slice(&actions)).unwrap();
            let (term, trunc) = (bools(&out.terminated), bools(&out.truncated));
            // The first episode of each row (rows restarted after it ended
            // run on from random states).
            for k in 0..n {
                if ended_at[k].is_some() {
                    continue;
                }
                assert_eq!(trunc[k], step == MAX_EPISODE_STEPS, "row {k} step {step}");
                if term[k] || trunc[k] {
                    ended_at[k] = Some((step, term[k], trunc[k]));
                }
            }
            if step < MAX_EPISODE_STEPS {
                let done = out.terminated.logical_or(&out.truncated);
                let _ = env.reset_where(&done).unwrap();
            }
        }
        let ended: Vec<(i64, bool, bool)> = ended_at.into_iter().map(Option::unwrap).collect();
        assert_eq!(ended[19], (MAX_EPISODE_STEPS, true, true), "{ended:?}");
        assert!(
            ended[..17]
                .iter()
                .all(|e| e.0 < MAX_EPISODE_STEPS && e.1 && !e.2),
            "{ended:?}"
        );
        assert_eq!(ended[18], (MAX_EPISODE_STEPS, false, true), "{ended:?}");
        // A balanced episode ran the whole 500 steps.
        assert!(env.elapsed_steps().contains(&MAX_EPISODE_STEPS));
        // Truncated episodes need a restart too.
        let err = env.step(&Tensor::zeros([n as i64], (Kind::Int64, Device::Cpu)));
        assert!(err.is_err());
        let _ = env.reset(None);
        assert_eq!(env.elapsed_steps(), &vec![0; n][..]);
    }

    #[test]
    fn resets_are_uniform_in_the_bounds_and_repeat_with_the_seed() {
        let mut env = CartPole::new(1000, Device::Cpu).unwrap();
        let a = env.reset(Some(7));
        assert_eq!(a.size(), [1000, 4]);
        assert_eq!(a.kind(), Kind::Float);
        let state = env.state();
        assert_eq!(state.kind(), Kind::Double);
        assert!(a.equal(&state.to_kind(Kind::Float)));
        let (min, max) = (state.min().double_value(&[]), state.max().double_value(&[]));
        assert!(
            (-RESET_BOUND..RESET_BOUND).contains(&min) && min < -0.049,
            "{min}"
        );
        assert!(
            (-RESET_BOUND..RESET_BOUND).contains(&max) && max > 0.049,
            "{max}"
        );
        let mean = state.mean(Kind::Double).double_value(&[]);
        assert!(mean.abs() < 0.003, "{mean}");
        // The same seed, the same states; the stream goes on without one.
        let b = env.reset(None);
        assert!(!a.equal(&b));
        assert!(a.equal(&env.reset(Some(7))));
        assert!(b.equal(&env.reset(None)));
        assert!(!a.equal(&env.reset(Some(8))));
        // Unseeded environments differ.
        let mut other = CartPole::new(1000, Device::Cpu).unwrap();
        assert!(!other
            .reset(None)
            .equal(&CartPole::new(1000, Device::Cpu).unwrap().reset(None)));
    }

    #[test]
    fn reset_where_redraws_only_the_masked_episodes() {
        let mut env = CartPole::new(4, Device::Cpu).unwrap();
        let before = env.reset(Some(3));
        env.step(&Tensor::from_slice(&[0i64, 1, 0, 1])).unwrap();
        let stepped = env.state();
        let mask = Tensor::from_slice(&[false, true, false, true]);
        let after = env.reset_where(&mask).unwrap();
        assert_eq!(env.elapsed_steps(), &[1, 0, 1, 0]);
        let now = env.state();
        for i in [0, 2] {
            assert!(now.get(i).equal(&stepped.get(i)));
        }
        for i in [1, 3] {
            assert!(!now.get(i).equal(&stepped.get(i)));
            assert!(!after.get(i).equal(&before.get(i)));
            assert!(now.get(i).abs().max().double_value(&[]) < RESET_BOUND);
        }
        assert!(after.equal(&now.to_kind(Kind::Float)));
        // The redrawn rows come from the seeded stream: the same again.
        let mut again = CartPole::new(4, Device::Cpu).unwrap();
        let _ = again.reset(Some(3));
        again.step(&Tensor::from_slice(&[0i64, 1, 0, 1])).unwrap();
        let _ = again.reset_where(&mask).unwrap();
        assert!(again.state().equal(&now));
    }

    #[test]
    fn wrong_inputs_are_errors_that_change_nothing() {
        let mut env = CartPole::new(3, Device::Cpu).unwrap();
        let err = env.step(&Tensor::from_slice(&[0i64, 1, 0])).unwrap_err();
        assert!(matches!(err, EnvError::NeedsReset(_)), "{err}");
        let _ = env.reset(Some(1));
        let state = env.state();
        let message = |r: Result<CartPoleStep, EnvError>| r.unwrap_err().to_string();
        assert!(message(env.step(&Tensor::from_slice(&[0i64, 1]))).contains("[3]"));
        assert!(
            message(env.step(&Tensor::zeros([3, 1], (Kind::Int64, Device::Cpu))))
                .contains("[3, 1]")
        );
        assert!(message(env.step(&Tensor::from_slice(&[0i32, 1, 0]))).contains("int64"));
        assert!(message(env.step(&Tensor::from_slice(&[0.0f32, 1.0, 0.0]))).contains("int64"));
        let bad = message(env.step(&Tensor::from_slice(&[0i64, 2, -1])));
        assert!(
            bad.contains("episode 1: 2") && bad.contains("episode 2: -1"),
            "{bad}"
        );
        assert!(env.state().equal(&state));
        assert_eq!(env.elapsed_steps(), &[0, 0, 0]);
        assert!(env.reset_where(&Tensor::from_slice(&[1i64, 0, 0])).is_err());
        assert!(env
            .reset_where(&Tensor::from_slice(&[true, false]))
            .is_err());
        assert!(env
            .set_state(&Tensor::zeros([3, 3], (Kind::Double, Device::Cpu)))
            .is_err());
        assert!(env
            .set_state(&Tensor::zeros([3, 4], (Kind::Int64, Device::Cpu)))
            .is_err());
        assert!(env.state().equal(&state));
        assert!(CartPole::new(0, Device::Cpu).is_err());
        // float32 states are taken exactly.
        env.set_state(&Tensor::full(
            [3, 4],
            0.1f32 as f64,
            (Kind::Float, Device::Cpu),
        ))
        .unwrap();
        assert_eq!(rows(&env.state())[2][3], 0.1f32 as f64);
    }

    #[test]
    fn the_integrator_moves_positions_by_the_old_velocities() {
        // Explicit Euler: x and theta advance by the velocities before the step.
        let mut env = env(&[[0.0, 1.0, 0.0, 2.0]]);
        env.step(&Tensor::from_slice(&[PUSH_RIGHT])).unwrap();
        let s = rows(&env.state())[0].clone();
        assert_eq!(s[0], TAU * 1.0);
        assert_eq!(s[2], TAU * 2.0);
        // Pushing right accelerates the cart right and tips the pole left.
        assert!(s[1] > 1.0 && s[3] < 2.0, "{s:?}");
    }

    #[test]
    fn the_env_trait_runs_episodes_of_different_lengths_and_restarts_the_ended_ones() {
        // Always pushing right, 8 episodes from different states end at
        // different steps; through the trait, an ended episode must be
        // restarted (NeedsReset names it) and reset_ended restarts only it.
        let mut env = CartPole::new(8, Device::Cpu).unwrap();
        assert_eq!(Env::action_space(&env), Space::Discrete(2));
        assert_eq!(Env::observation_space(&env), Space::real(&[4]));
        let (mut obs, _) = Env::reset(&mut env, Some(5)).unwrap();
        let right = Tensor::full([8], PUSH_RIGHT, (Kind::Int64, Device::Cpu));
        let mut lengths = [0i64; 8];
        let mut finished: Vec<Option<i64>> = vec![None; 8];
        while finished.iter().any(Option::is_none) {
            let step = Env::step(&mut env, &right).unwrap();
            let ended = Vec::<bool>::try_from(&step.ended()).unwrap();
            for i in 0..8 {
                lengths[i] += 1;
                if ended[i] && finished[i].is_none() {
                    finished[i] = Some(lengths[i]);
                }
            }
            if step.any_ended() {
                let err = Env::step(&mut env, &right).unwrap_err();
                assert!(matches!(err, EnvError::NeedsReset(_)), "{err}");
                let first = ended.iter().position(|&e| e).unwrap();
                assert!(err.to_string().contains(&first.to_string()), "{err}");
                let kept = step.obs.shallow_clone();
                obs = Env::reset_ended(&mut env, &step.ended()).unwrap();
                for i in 0..8 {
                    if ended[i] {
                        lengths[i] = 0;
                        assert_eq!(env.elapsed_steps()[i], 0);
                    } else {
                        assert!(obs.get(i as i64).equal(&kept.get(i as i64)));
                    }
                }
            } else {
                obs = step.obs;
            }
        }
        let finished: Vec<i64> = finished.into_iter().flatten().collect();
        assert!(finished.iter().all(|&n| n > 1 && n < MAX_EPISODE_STEPS));
        assert!(
            finished.iter().min() != finished.iter().max(),
            "lengths {finished:?}"
        );
        assert_eq!(obs.size(), [8, 4]);
    }
}
