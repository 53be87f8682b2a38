//! A reservoir of transitions: the REINFORCE update's minibatches kept while
//! the chains are sampled, in memory that does not grow with T'.
//!
//! The generator update reads n_generator disjoint minibatches of m
//! transitions, drawn uniformly without replacement from the round's
//! transitions. A [`crate::buffer::TrajectoryBuffer`] stores every
//! transition and draws afterwards, so it grows with T' x n_critic x chains.
//! A [`Reservoir`] of capacity n_generator x m keeps a uniform random subset
//! of that size as the transitions arrive (Vitter's Algorithm R: transition
//! i, counted from 0, takes the place of a uniformly chosen slot with
//! probability capacity / (i + 1)), and draws the minibatches from it by one
//! random permutation. An ordered uniform subset followed by a uniform
//! permutation has the law of the first n_generator x m entries of a
//! permutation of all transitions, so the update's minibatches have the same
//! distribution as the buffer's; only the random numbers differ.
//!
//! A slot remembers the episode and chain of its transition and receives
//! that chain's x_0 when the episode ends. Memory: three `[capacity, ...]`
//! tensors (x_{t+1}, x_t, x_0), and a `[capacity]` one of behaviour
//! log-densities when the agent keeps them (PPO).
//!
//! Data-parallel (docs/conventions.md section 7): every rank runs the
//! algorithm over the transitions of all ranks (the same draws, so the same
//! slots everywhere) and fills the slots whose transition it holds; a
//! minibatch gives each rank the held slots among those drawn.

use std::collections::BTreeMap;

use envs::rows::Rows;

use tch::{Device, Kind, Tensor};

use crate::buffer::{minibatch_order, TransitionBatch};

/// A uniform sample of fixed size from the transitions seen since the last
/// [`Reservoir::clear`].
#[derive(Debug)]
pub struct Reservoir {
    capacity: i64,
    /// Transitions offered so far.
    seen: i64,
    /// `[capacity, ...]` x_{t+1} and x_t of each slot, allocated at the
    /// first step (each in the shape and kind of what it holds).
    slots: Option<[Tensor; 2]>,
    /// `[capacity, ...]` x_0 of each slot, allocated at the first finish.
    finals: Option<Tensor>,
    /// `[capacity]` behaviour log-density of each slot, allocated at the
    /// first step that brings one.
    log_probs: Option<Tensor>,
    /// The 1-based sampler step of each filled slot.
    steps: Vec<i64>,
    /// Episode number and global chain of each filled slot's transition.
    origins: Vec<(usize, i64)>,
    /// Whether this rank holds each filled slot's transition.
    held: Vec<bool>,
    /// The chains this rank holds in the episode in progress.
    episode_rows: Option<Rows>,
    /// Number of the episode in progress.
    episode: usize,
}

impl Reservoir {
    /// An empty reservoir of `capacity` transitions (at least 1).
    pub fn new(capacity: i64) -> Self {
        assert!(capacity >= 1, "a reservoir holds at least one transition");
        Self {
            capacity,
            seen: 0,
            slots: None,
            finals: None,
            log_probs: None,
            steps: Vec::new(),
            origins: Vec::new(),
            held: Vec::new(),
            episode_rows: None,
            episode: 0,
        }
    }

    /// The number of transitions it keeps at most.
    pub fn capacity(&self) -> i64 {
        self.capacity
    }

    /// Number of transitions kept: those offered (by every rank), up to
    /// the capacity.
    pub fn len(&self) -> i64 {
        self.seen.min(self.capacity)
    }

    /// Whether no transition is held.
    pub fn is_empty(&self) -> bool {
        self.seen == 0
    }

    /// Number of transitions offered since the last clear.
    pub fn seen(&self) -> i64 {
        self.seen
    }

    /// Offers the transitions of one sampler step of a batch of chains:
    /// `action` (x_t) taken in `state` (x_{t+1}) at 1-based step `t`, row i
    /// being chain `rows.start + i` of the episode in progress, with the
    /// behaviour log-density of each row (`[rows]`) if the agent keeps them
    /// (then at every step). The replacement draws, for all `rows.global`
    /// chains, come from libtorch's CPU generator.
    pub fn step(
        &mut self,
        state: &Tensor,
        action: &Tensor,
        t: usize,
        log_prob: Option<&Tensor>,
        rows: Rows,
    ) {
        assert_eq!(state.size()[0], rows.len, "one row per chain held");
        assert!(
            self.seen == 0 || log_prob.is_some() == self.log_probs.is_some(),
            "a reservoir keeps behaviour log-densities at every step or at none"
        );
        self.episode_rows = Some(rows);
        let placed = self.placements(rows.global);
        self.seen += rows.global;
        let capacity = self.capacity;
        let slots = self
            .slots
            .get_or_insert_with(|| [slots_like(state, capacity), slots_like(action, capacity)]);
        if let (Some(lp), None) = (log_prob, &self.log_probs) {
            self.log_probs = Some(Tensor::zeros([capacity], (lp.kind(), lp.device())));
        }
        for (&slot, &row) in &placed {
            let slot = slot as usize;
            let held = (rows.start..rows.start + rows.len).contains(&row);
            if slot == self.steps.len() {
                self.steps.push(t as i64);
                self.origins.push((self.episode, row));
                self.held.push(held);
            } else {
                self.steps[slot] = t as i64;
                self.origins[slot] = (self.episode, row);
                self.held[slot] = held;
            }
        }
        let (slot_index, row_index): (Vec<i64>, Vec<i64>) = placed
            .iter()
            .filter(|(_, &row)| (rows.start..rows.start + rows.len).contains(&row))
            .map(|(&slot, &row)| (slot, row - rows.start))
            .unzip();
        if slot_index.is_empty() {
            return;
        }
        let device = state.device();
        let slot_tensor = Tensor::from_slice(&slot_index).to_device(device);
        let row_tensor = Tensor::from_slice(&row_index).to_device(device);
        tch::no_grad(|| {
            for (buffer, source) in slots.iter_mut().zip([state, action]) {
                let _ = buffer.index_copy_(0, &slot_tensor, &source.index_select(0, &row_tensor));
            }
            if let (Some(log_prob), Some(kept)) = (log_prob, self.log_probs.as_mut()) {
                let _ = kept.index_copy_(0, &slot_tensor, &log_prob.index_select(0, &row_tensor));
            }
        });
    }

    /// Where each of the next `rows` transitions goes, as slot -> row; a
    /// slot taken twice within the step keeps the later row, as the
    /// sequential algorithm would.
    fn placements(&self, rows: i64) -> BTreeMap<i64, i64> {
        let mut placed = BTreeMap::new();
        let filling = (self.capacity - self.seen).clamp(0, rows);
        for row in 0..filling {
            placed.insert(self.seen + row, row);
        }
        if filling < rows {
            let uniforms =
                Vec::<f64>::try_from(Tensor::rand([rows - filling], (Kind::Double, Device::Cpu)))
                    .expect("double tensor converts");
            for (row, u) in (filling..rows).zip(uniforms) {
                let position = self.seen + row;
                // Uniform on 0..=position; u < 1, the min guards rounding.
                let pick = ((u * (position + 1) as f64) as i64).min(position);
                if pick < self.capacity {
                    placed.insert(pick, row);
                }
            }
        }
        placed
    }

    /// Ends the episode in progress: every slot holding one of its
    /// transitions receives its chain's row of `final_sample` (x_0 of the
    /// chains held).
    pub fn finish(&mut self, final_sample: &Tensor) {
        if self.slots.is_some() {
            let capacity = self.capacity;
            let start = self.episode_rows.map_or(0, |r| r.start);
            let finals = self
                .finals
                .get_or_insert_with(|| slots_like(final_sample, capacity));
            let (slot_index, chains): (Vec<i64>, Vec<i64>) = self
                .origins
                .iter()
                .zip(&self.held)
                .enumerate()
                .filter(|(_, ((episode, _), &held))| held && *episode == self.episode)
                .map(|(slot, ((_, chain), _))| (slot as i64, *chain - start))
                .unzip();
            if !slot_index.is_empty() {
                let device = final_sample.device();
                let slot_tensor = Tensor::from_slice(&slot_index).to_device(device);
                let chain_tensor = Tensor::from_slice(&chains).to_device(device);
                tch::no_grad(|| {
                    let _ = finals.index_copy_(
                        0,
                        &slot_tensor,
                        &final_sample.index_select(0, &chain_tensor),
                    );
                });
            }
        }
        self.episode += 1;
    }

    /// `count` minibatches of `size` held transitions, disjoint within one
    /// random permutation of them (further permutations are appended when
    /// fewer than `size * count` are held), as
    /// [`crate::buffer::TrajectoryBuffer::minibatches`] draws them.
    pub fn minibatches(&self, size: i64, count: usize, device: Device) -> Vec<TransitionBatch> {
        let (Some(slots), Some(finals)) = (&self.slots, &self.finals) else {
            return Vec::new();
        };
        if self.is_empty() || size < 1 {
            return Vec::new();
        }
        let len = self.len();
        let size = size.min(len);
        let on = slots[0].device();
        let order = minibatch_order(len, size, count, on).to_device(Device::Cpu);
        let steps = Tensor::from_slice(&self.steps).to_device(on);
        (0..count as i64)
            .map(|i| {
                let drawn =
                    Vec::<i64>::try_from(&order.narrow(0, i * size, size)).expect("int64 order");
                let mut mine: Vec<i64> = drawn
                    .into_iter()
                    .filter(|&slot| self.held[slot as usize])
                    .collect();
                let share = mine.len() as f64 / size as f64;
                if mine.is_empty() {
                    // None of the minibatch is here: one slot, weighted 0
                    // (one this rank holds, if any).
                    mine.push(self.held.iter().position(|&h| h).unwrap_or(0) as i64);
                }
                let index = Tensor::from_slice(&mine).to_device(on);
                let pick = |t: &Tensor| t.index_select(0, &index).to_device(device);
                TransitionBatch {
                    state: pick(&slots[0]),
                    action: pick(&slots[1]),
                    final_sample: pick(finals),
                    step: pick(&steps),
                    behaviour_log_prob: self.log_probs.as_ref().map(pick),
                    share,
                }
            })
            .collect()
    }

    /// Forgets every transition, keeping the capacity and the memory of the
    /// state, action and x_0 slots (the log-densities are dropped, as the
    /// next round may not keep them).
    pub fn clear(&mut self) {
        self.seen = 0;
        self.log_probs = None;
        self.steps.clear();
        self.origins.clear();
        self.held.clear();
        self.episode_rows = None;
        self.episode = 0;
    }

    /// Bytes of tensor memory the reservoir holds: its three slot tensors
    /// (and the log-densities), whatever the number of transitions offered.
    pub fn bytes(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .chain(&self.finals)
            .chain(&self.log_probs)
            .map(|t| t.numel() * t.kind().elt_size_in_bytes())
            .sum()
    }
}

/// Zeros of `like`'s kind and element shape for `capacity` rows.
fn slots_like(like: &Tensor, capacity: i64) -> Tensor {
    let mut shape = like.size();
    shape[0] = capacity;
    Tensor::zeros(&shape, (like.kind(), like.device()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Offers `episodes` episodes of `chains` chains and `steps` steps; the
    /// state of (episode e, step k, chain b) is 1000e + 10k + b (a float
    /// row of `dim` equal entries), its action the state + 0.5 and its x_0
    /// 100000 + 1000e + b.
    fn offer(reservoir: &mut Reservoir, episodes: i64, steps: i64, chains: i64, dim: i64) {
        offer_share(reservoir, episodes, steps, Rows::all(chains), dim)
    }

    /// [`offer`] holding only the chains `rows`.
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

    /// The ids of a minibatch's states, checking each row against its action,
    /// step and x_0 on the way.
    fn checked_ids(batch: &TransitionBatch, steps: i64) -> Vec<i64> {
        let first = |t: &Tensor| Vec::<f32>::try_from(t.select(1, 0)).unwrap();
        let (s, a, f) = (
            first(&batch.state),
            first(&batch.action),
            first(&batch.final_sample),
        );
        let t = Vec::<i64>::try_from(&batch.step).unwrap();
        let rest_equal = batch
            .state
            .eq_tensor(&batch.state.select(1, 0).unsqueeze(1));
        assert!(
            bool::try_from(rest_equal.all()).unwrap(),
            "rows copied whole"
        );
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

    #[test]
    fn minibatches_are_distinct_transitions_with_their_own_step_and_final_sample() {
        let _rng = envs::testing::seeded(3);
        let mut r = Reservoir::new(12);
        offer(&mut r, 3, 4, 5, 3);
        assert_eq!((r.seen(), r.len()), (60, 12));
        let batches = r.minibatches(4, 3, Device::Cpu);
        assert_eq!(batches.len(), 3);
        let mut ids = std::collections::BTreeSet::new();
        for b in &batches {
            for id in checked_ids(b, 4) {
                assert!(ids.insert(id), "transition {id} drawn twice");
            }
        }
        assert_eq!(ids.len(), 12);
        r.clear();
        assert!(r.is_empty() && r.minibatches(4, 1, Device::Cpu).is_empty());
    }

    #[test]
    fn behaviour_log_densities_stay_with_their_transitions() {
        // Log-density of a transition = 3 x its state id; minibatches must
        // carry each row's own, through replacements and permutations.
        let _rng = envs::testing::seeded(8);
        let mut r = Reservoir::new(7);
        for k in 0..5i64 {
            let state =
                Tensor::arange(4, (Kind::Float, Device::Cpu)).view([4, 1]) + 10.0 * k as f64;
            let log_prob = state.view([4]) * 3.0;
            r.step(
                &state,
                &(&state + 0.5),
                (5 - k) as usize,
                Some(&log_prob),
                Rows::all(state.size()[0]),
            );
        }
        r.finish(&Tensor::zeros([4, 1], (Kind::Float, Device::Cpu)));
        assert_eq!(r.bytes(), 3 * 7 * 4 + 7 * 4);
        for batch in r.minibatches(7, 2, Device::Cpu) {
            let state = batch.state.view([-1]);
            let kept = batch.behaviour_log_prob.expect("log-densities kept");
            assert!(kept.equal(&(state * 3.0)));
        }
        r.clear();
        let state = Tensor::ones([2, 1], (Kind::Float, Device::Cpu));
        r.step(&state, &state, 1, None, Rows::all(state.size()[0]));
        let batch = &r.minibatches(2, 1, Device::Cpu)[0];
        assert!(batch.behaviour_log_prob.is_none(), "cleared with the rest");
    }

    #[test]
    fn memory_does_not_grow_with_the_number_of_steps() {
        let _rng = envs::testing::seeded(4);
        let mut short = Reservoir::new(8);
        offer(&mut short, 2, 3, 4, 16);
        let mut long = Reservoir::new(8);
        offer(&mut long, 2, 30, 4, 16);
        assert_eq!(short.bytes(), 3 * 8 * 16 * 4);
        assert_eq!(long.bytes(), short.bytes());
        assert_eq!(long.seen(), 10 * short.seen());
    }

    #[test]
    fn a_reservoir_larger_than_the_round_keeps_everything_and_repeats_by_permutations() {
        let _rng = envs::testing::seeded(5);
        let mut r = Reservoir::new(100);
        offer(&mut r, 1, 2, 3, 2);
        assert_eq!(r.len(), 6);
        // 4 minibatches of 3 from 6 transitions: two permutations, each complete.
        let ids: Vec<i64> = r
            .minibatches(3, 4, Device::Cpu)
            .iter()
            .flat_map(|b| checked_ids(b, 2))
            .collect();
        for half in ids.chunks(6) {
            let mut sorted = half.to_vec();
            sorted.sort_unstable();
            assert_eq!(sorted, vec![0, 1, 2, 10, 11, 12]);
        }
    }

    #[test]
    fn every_transition_is_kept_with_the_same_probability() {
        // 40 transitions (2 episodes x 4 steps x 5 chains) into 10 slots:
        // each is kept with probability 1/4. Over 2000 rounds a count is
        // Binomial(2000, 1/4): mean 500, sd 19.4; 5 sd is 97. A reservoir
        // that favoured early or late transitions (or one chain, episode or
        // step) would be far outside.
        let _rng = envs::testing::seeded(6);
        let mut counts = std::collections::BTreeMap::<i64, i64>::new();
        let mut r = Reservoir::new(10);
        for _ in 0..2000 {
            r.clear();
            offer(&mut r, 2, 4, 5, 1);
            for id in checked_ids(&r.minibatches(10, 1, Device::Cpu)[0], 4) {
                *counts.entry(id).or_default() += 1;
            }
        }
        assert_eq!(counts.len(), 40, "every transition is kept sometimes");
        for (id, n) in counts {
            assert!(
                (n - 500).abs() < 97,
                "transition {id} kept {n} times of 2000"
            );
        }
    }
}
