//! `envs::cartpole` against gymnasium's `CartPole-v1` itself
//! (`tests/python/cartpole_gymnasium.py`, with the project's `.venv`): 71
//! episodes from fixed start states (generic ones, and ones whose first step
//! lands on, just short of, 1e-9 beyond or one ulp beyond a termination
//! threshold) under fixed action rules (alternating, all left, all right, a
//! 64-bit LCG, a balancing controller that lasts the 500 steps, and one
//! that lets the pole fall on step 500 itself) are replayed in one batch,
//! one episode a row; rows whose episode ended are restarted and no longer
//! compared. At every step the float64 states and float32 observations are
//! gymnasium's (asserted: states within 1e-12 relative, observations within
//! 1 ulp; found: bit for bit; the pole amplifies any difference, so a wrong
//! constant, threshold or integrator order shows), and so are the rewards,
//! `terminated` and `truncated`.

mod common;

use std::path::Path;

use common::{python, run_ok, temp_dir};
use envs::cartpole::CartPole;
use serde::Deserialize;
use tch::{Device, Tensor};

/// One gymnasium episode, as the script writes it (floats as their bits).
#[derive(Deserialize)]
struct Episode {
    name: String,
    start: Vec<u64>,
    actions: Vec<i64>,
    states: Vec<Vec<u64>>,
    obs: Vec<Vec<u32>>,
    rewards: Vec<f64>,
    terminated: Vec<bool>,
    truncated: Vec<bool>,
}

#[derive(Deserialize)]
struct Record {
    gymnasium: String,
    episodes: Vec<Episode>,
}

/// Distance in units in the last place between two finite float32 values.
fn ulps(a: f32, b: f32) -> u64 {
    let ordered = |v: f32| {
        let bits = v.to_bits() as i64;
        if bits < 0x8000_0000 {
            bits
        } else {
            0x8000_0000 - bits
        }
    };
    ordered(a).abs_diff(ordered(b))
}

fn bools(t: &Tensor) -> Vec<bool> {
    Vec::<bool>::try_from(t).unwrap()
}

#[test]
fn cartpole_steps_are_gymnasiums() {
    let dir = temp_dir("cartpole_gymnasium");
    let json = dir.join("episodes.json");
    run_ok(
        python()
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/cartpole_gymnasium.py"))
            .arg(&json),
    );
    let record: Record = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let episodes = &record.episodes;
    let n = episodes.len();
    // What the episodes cover: a termination on the first step, 500
    // steps standing (truncated only), and both flags on step 500
    // (gymnasium's limit, not ours: a wrong MAX_EPISODE_STEPS must show below).
    let last = |e: &Episode| {
        let len = e.actions.len();
        (len as i64, e.terminated[len - 1], e.truncated[len - 1])
    };
    assert!(episodes.iter().any(|e| last(e) == (1, true, false)));
    assert!(episodes.iter().any(|e| last(e) == (500, false, true)));
    assert!(episodes.iter().any(|e| last(e) == (500, true, true)));

    let mut env = CartPole::new(n as i64, Device::Cpu).unwrap();
    let _ = env.reset(Some(0));
    let start: Vec<f64> = episodes
        .iter()
        .flat_map(|e| e.start.iter().map(|&b| f64::from_bits(b)))
        .collect();
    env.set_state(&Tensor::from_slice(&start).view([n as i64, 4]))
        .unwrap();

    let longest = episodes.iter().map(|e| e.actions.len()).max().unwrap();
    let (mut compared, mut max_rel, mut max_ulps) = (0usize, 0f64, 0u64);
    for t in 0..longest {
        // Rows past their episode's end were restarted: they step on with
        // action 0 and are not compared.
        let live: Vec<bool> = episodes.iter().map(|e| t < e.actions.len()).collect();
        let actions: Vec<i64> = episodes
            .iter()
            .map(|e| e.actions.get(t).copied().unwrap_or(0))
            .collect();
        let out = env.step(&Tensor::from_slice(&actions)).unwrap();
        let states = Vec::<Vec<f64>>::try_from(&env.state()).unwrap();
        let obs = Vec::<Vec<f32>>::try_from(&out.obs).unwrap();
        let rewards = Vec::<f32>::try_from(&out.reward).unwrap();
        let (terminated, truncated) = (bools(&out.terminated), bools(&out.truncated));
        for (i, e) in episodes.iter().enumerate().filter(|&(i, _)| live[i]) {
            let at = format!("{} step {}", e.name, t + 1);
            for k in 0..4 {
                let (ours, theirs) = (states[i][k], f64::from_bits(e.states[t][k]));
                let rel =
                    (ours - theirs).abs() / ours.abs().max(theirs.abs()).max(f64::MIN_POSITIVE);
                assert!(
                    rel <= 1e-12,
                    "{at}: state[{k}] {ours:e} vs gymnasium's {theirs:e}"
                );
                max_rel = max_rel.max(rel);
                let (ours, theirs) = (obs[i][k], f32::from_bits(e.obs[t][k]));
                let d = ulps(ours, theirs);
                assert!(d <= 1, "{at}: obs[{k}] {ours:e} vs gymnasium's {theirs:e}");
                max_ulps = max_ulps.max(d);
            }
            assert_eq!(f64::from(rewards[i]), e.rewards[t], "{at}: reward");
            assert_eq!(terminated[i], e.terminated[t], "{at}: terminated");
            assert_eq!(truncated[i], e.truncated[t], "{at}: truncated");
            compared += 1;
        }
        let done = out.terminated.logical_or(&out.truncated);
        let _ = env.reset_where(&done).unwrap();
    }
    assert_eq!(
        compared,
        episodes.iter().map(|e| e.actions.len()).sum::<usize>()
    );
    println!(
        "cartpole vs gymnasium {}: {n} episodes, {compared} steps; \
         max relative state difference {max_rel:e}, max observation difference {max_ulps} ulp",
        record.gymnasium
    );
}
