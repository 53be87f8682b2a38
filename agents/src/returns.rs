//! From observed steps to stored transitions: [`Collector`] records what a
//! buffered agent observes into its [`TransitionStore`] with each
//! transition's outcome ([`Outcome`]), and [`cost_to_go`] computes the
//! discounted costs of a batch of episodes that end apart.

use envs::rows::Rows;
use envs::{RewardModel, Step};
use tch::{Kind, Tensor};

use crate::learner::{Outcome, PolicyLearner};
use crate::store::TransitionStore;

/// The reward model of [`Outcome::CostToGo`]: a transition's stored outcome
/// is its realised cost-to-go (`[B, 1]`), and its value is that cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealizedCost;

impl RewardModel for RealizedCost {
    fn value(&self, x: &Tensor) -> Tensor {
        x.reshape([-1])
    }
}

/// The discounted cost-to-go of every step of a batch of `B` episodes that
/// started together and may end apart: `rewards[k]` and `ended[k]` are the
/// `[B]` rewards and end flags of step k, and row b's episode is its steps
/// up to the first with `ended` set (later steps belong to later episodes
/// and are not counted). Returns, per step, the `[B]` costs
/// -sum_{j >= k} gamma^{j-k} r_j within the episode and the `[B]` bool mask
/// of rows whose episode was still running at step k. A truncated episode
/// ends like a terminated one (no bootstrap from a value): the return of a
/// finite-horizon task such as CartPole-v1's 500 steps.
pub fn cost_to_go(rewards: &[Tensor], ended: &[Tensor], discount: f64) -> Vec<(Tensor, Tensor)> {
    let mut alive = Vec::with_capacity(rewards.len());
    let mut running: Option<Tensor> = None;
    for e in ended {
        let now = running.unwrap_or_else(|| e.ones_like());
        running = Some(now.logical_and(&e.logical_not()));
        alive.push(now);
    }
    let mut costs = Vec::with_capacity(rewards.len());
    let mut next: Option<Tensor> = None;
    for k in (0..rewards.len()).rev() {
        let reward = rewards[k].to_kind(Kind::Double);
        let continues = ended[k].logical_not().to_kind(Kind::Double);
        let g = match &next {
            Some(n) => &reward + n * &continues * discount,
            None => reward,
        };
        costs.push((-&g).to_kind(Kind::Float));
        next = Some(g);
    }
    costs.reverse();
    costs.into_iter().zip(alive).collect()
}

/// One observed step waiting for its episode's costs.
#[derive(Debug)]
struct Pending {
    state: Tensor,
    action: Tensor,
    log_prob: Option<Tensor>,
    reward: Tensor,
    ended: Tensor,
}

/// Records the steps an agent observes into a store, by the learner's
/// [`Outcome`]: each step at once and the final observation when all
/// episodes end (`FinalObservation`), or each batch of episodes once every
/// episode of it ended, with its cost-to-go (`CostToGo`; steps of episodes
/// restarted in the meantime are not recorded).
#[derive(Debug, Default)]
pub struct Collector {
    pending: Vec<Pending>,
    /// Rows whose episode ended since the batch began (`CostToGo`).
    done: Option<Tensor>,
}

impl Collector {
    /// Records `action` taken in `obs` (with its behaviour log-density, if
    /// kept) and what `step` returned.
    pub fn observe<L: PolicyLearner>(
        &mut self,
        learner: &L,
        store: &mut dyn TransitionStore,
        obs: &L::Obs,
        action: &Tensor,
        log_prob: Option<Tensor>,
        step: &Step<L::Obs>,
    ) {
        match learner.outcome() {
            Outcome::FinalObservation => {
                if !learner.excludes(obs) {
                    // Learners scored by their final observation index their steps.
                    let t = learner.step_index(obs).unwrap_or(0);
                    store.record(&learner.state(obs), action, t, log_prob, learner.rows(obs));
                }
                if step.all_ended() {
                    store.finish(&learner.state(&step.obs));
                }
            }
            Outcome::CostToGo { discount } => {
                let ended = step.ended();
                let done = match self.done.take() {
                    Some(done) => done.logical_or(&ended),
                    None => ended.shallow_clone(),
                };
                self.pending.push(Pending {
                    state: learner.state(obs),
                    action: action.shallow_clone(),
                    log_prob,
                    reward: step.reward.shallow_clone(),
                    ended,
                });
                if done.all().int64_value(&[]) != 0 {
                    self.flush(store, discount);
                } else {
                    self.done = Some(done);
                }
            }
        }
    }

    /// Moves the finished batch of episodes into `store`, one record per
    /// step holding the rows whose episode was still running.
    fn flush(&mut self, store: &mut dyn TransitionStore, discount: f64) {
        let pending = std::mem::take(&mut self.pending);
        let rewards: Vec<Tensor> = pending.iter().map(|p| p.reward.shallow_clone()).collect();
        let ended: Vec<Tensor> = pending.iter().map(|p| p.ended.shallow_clone()).collect();
        for (k, (p, (cost, alive))) in pending
            .iter()
            .zip(cost_to_go(&rewards, &ended, discount))
            .enumerate()
        {
            let rows = alive.nonzero().reshape([-1]).to_device(p.state.device());
            if rows.numel() == 0 {
                continue;
            }
            let pick = |t: &Tensor| t.index_select(0, &rows.to_device(t.device()));
            store.record(
                &pick(&p.state),
                &pick(&p.action),
                k + 1,
                p.log_prob.as_ref().map(pick),
                Rows::all(rows.size()[0]),
            );
            store.finish(&pick(&cost).unsqueeze(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_to_go_stop_at_each_episode_end_and_discount() {
        // Two episodes: row 0 ends at step 1 (of 0..3), row 1 at step 2.
        let rewards: Vec<Tensor> = (0..3).map(|_| Tensor::from_slice(&[1.0f32, 2.0])).collect();
        let ended = [
            Tensor::from_slice(&[false, false]),
            Tensor::from_slice(&[true, false]),
            Tensor::from_slice(&[false, true]),
        ];
        let out = cost_to_go(&rewards, &ended, 0.5);
        let cost = |k: usize| Vec::<f32>::try_from(&out[k].0).unwrap();
        let alive = |k: usize| Vec::<bool>::try_from(&out[k].1).unwrap();
        assert_eq!(alive(0), [true, true]);
        assert_eq!(alive(1), [true, true]);
        assert_eq!(alive(2), [false, true]);
        // Row 0: r = 1 at steps 0, 1; cost-to-go -(1 + 0.5), -1.
        assert_eq!(cost(0)[0], -1.5);
        assert_eq!(cost(1)[0], -1.0);
        // Row 1: r = 2 at steps 0..=2: -(2 + 1 + 0.5), -(2 + 1), -2.
        assert_eq!((cost(0)[1], cost(1)[1], cost(2)[1]), (-3.5, -3.0, -2.0));
    }
}
