//! The trajectory buffer of Algorithm 1: transitions (x_{t+1}, x_t, x_0, t+1)
//! of the chains sampled since the last generator update.
//!
//! Memory: the buffer holds each state once (the action of one step is the
//! state of the next, the same tensor) and one x_0 per chain, referred to by
//! index; a minibatch gathers only its own rows. Nothing is concatenated
//! over the whole buffer, so an update needs the buffer plus its minibatch.
//!
//! Data-parallel (docs/conventions.md section 7): a rank holds its share
//! ([`Rows`]) of every step's chains, but numbers the transitions as one
//! process holding every chain would. Minibatches are drawn over those
//! global numbers (the same draws on every rank) and each rank gathers the
//! transitions it holds, with their [`TransitionBatch::share`] of the
//! minibatch.

use envs::rows::Rows;
use tch::{Device, Kind, Tensor};

/// A batch of transitions, row-aligned.
#[derive(Debug)]
pub struct TransitionBatch {
    /// x_{t+1}, the state the action was taken in.
    pub state: Tensor,
    /// x_t, the action taken.
    pub action: Tensor,
    /// x_0, the end of the chain the transition belongs to.
    pub final_sample: Tensor,
    /// t + 1, the 1-based sampler step of the state (int64).
    pub step: Tensor,
    /// log pi(x_t | x_{t+1}) under the policy that sampled it (ratio-based
    /// agents store it; `[B]`).
    pub behaviour_log_prob: Option<Tensor>,
    /// The fraction of the drawn minibatch these rows are (1 on one
    /// process; a data-parallel rank's rows of it otherwise). A rank that
    /// holds none of the minibatch gets one row of its own with share 0,
    /// so that its loss reaches every parameter (with zero gradient) like
    /// the other ranks'. An agent weights the minibatch's mean loss by it.
    pub share: f64,
}

impl TransitionBatch {
    /// Number of rows.
    pub fn len(&self) -> i64 {
        self.step.size()[0]
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One sampler step of a batch of chains: row i is chain i of its episode batch.
#[derive(Debug)]
struct StepRows {
    state: Tensor,
    action: Tensor,
    step: i64,
    behaviour_log_prob: Option<Tensor>,
    /// Index of the episode batch in [`TrajectoryBuffer::finals`].
    episode: usize,
    /// Which of the global batch's chains the rows are.
    rows: Rows,
}

/// Transitions stored without gradients, drawn in random disjoint minibatches.
#[derive(Debug, Default)]
pub struct TrajectoryBuffer {
    rows: Vec<StepRows>,
    /// x_0 of each episode batch, one row per chain.
    finals: Vec<Tensor>,
    /// Global number of the first transition of each entry of `rows`.
    offsets: Vec<i64>,
    /// Transitions of every rank (the global count).
    len: i64,
}

/// One transition of an episode batch before its x_0 is known.
#[derive(Debug)]
pub struct PendingStep {
    /// x_{t+1}.
    pub state: Tensor,
    /// x_t.
    pub action: Tensor,
    /// t + 1.
    pub step: usize,
    /// The behaviour log-density, if the agent keeps it.
    pub behaviour_log_prob: Option<Tensor>,
    /// Which of the global batch's chains the rows are.
    pub rows: Rows,
}

impl TrajectoryBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of stored transitions, counted over every rank's chains.
    pub fn len(&self) -> i64 {
        self.len
    }

    /// Whether no transition is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stores the steps of one batch of chains that ended in `final_sample`
    /// (`[B, ...]`, chain i in row i of every step), detached and in order.
    pub fn push_episode(&mut self, steps: Vec<PendingStep>, final_sample: &Tensor) {
        let chains = final_sample.size()[0];
        let episode = self.finals.len();
        self.finals.push(final_sample.detach());
        for s in steps {
            assert_eq!(s.state.size()[0], chains, "one row per chain at every step");
            assert_eq!(s.rows.len, chains, "the rows held are the chains");
            self.offsets.push(self.len);
            self.len += s.rows.global;
            self.rows.push(StepRows {
                state: s.state.detach(),
                action: s.action.detach(),
                step: s.step as i64,
                behaviour_log_prob: s.behaviour_log_prob.map(|t| t.detach()),
                episode,
                rows: s.rows,
            });
        }
    }

    /// Forgets every transition.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Bytes of tensor memory the buffer refers to, counting a tensor shared
    /// by two steps (a state that is the previous action) once.
    pub fn bytes(&self) -> usize {
        let mut seen = std::collections::HashSet::new();
        let mut total = 0;
        let tensors = self
            .rows
            .iter()
            .flat_map(|r| {
                [
                    Some(&r.state),
                    Some(&r.action),
                    r.behaviour_log_prob.as_ref(),
                ]
            })
            .flatten()
            .chain(&self.finals);
        for t in tensors {
            if seen.insert(t.data_ptr() as usize) {
                total += t.numel() * t.kind().elt_size_in_bytes();
            }
        }
        total
    }

    /// `count` minibatches of `size` transitions drawn without replacement
    /// (disjoint) from one random permutation; when the buffer is too small,
    /// further permutations are appended, so minibatches never repeat a row
    /// within one permutation. The draws are over every rank's transitions;
    /// each minibatch holds this rank's rows of it (module documentation).
    pub fn minibatches(&self, size: i64, count: usize, device: Device) -> Vec<TransitionBatch> {
        if self.is_empty() || size < 1 {
            return Vec::new();
        }
        // A buffer smaller than a minibatch gives minibatches of the whole
        // buffer, each one permutation.
        let size = size.min(self.len);
        let order = minibatch_order(self.len, size, count, device);
        (0..count as i64)
            .map(|i| self.gather(&order.narrow(0, i * size, size)))
            .collect()
    }

    /// The transitions this rank holds among the global numbers `index`
    /// (in that order), read from the steps that hold them.
    fn gather(&self, index: &Tensor) -> TransitionBatch {
        let wanted = Vec::<i64>::try_from(&index.to_device(Device::Cpu)).expect("int64 index");
        // Rows grouped by the step entry that holds them, keeping their positions.
        let mut groups: std::collections::BTreeMap<usize, (Vec<i64>, Vec<i64>)> =
            Default::default();
        let mut held = 0;
        for &row in &wanted {
            let entry = self.offsets.partition_point(|&o| o <= row) - 1;
            let rows = &self.rows[entry].rows;
            let local = row - self.offsets[entry] - rows.start;
            if (0..rows.len).contains(&local) {
                let g = groups.entry(entry).or_default();
                g.0.push(local);
                g.1.push(held);
                held += 1;
            }
        }
        let share = held as f64 / wanted.len().max(1) as f64;
        if held == 0 {
            // None of the minibatch is here: one row of this rank's, weighted 0.
            groups.insert(0, (vec![0], vec![0]));
        }
        let mut parts: Vec<[Tensor; 4]> = Vec::new();
        let mut log_probs = Vec::new();
        let mut positions = Vec::new();
        for (entry, (local, pos)) in groups {
            let rows = &self.rows[entry];
            let device = rows.state.device();
            let local = Tensor::from_slice(&local).to_device(device);
            parts.push([
                rows.state.index_select(0, &local),
                rows.action.index_select(0, &local),
                self.finals[rows.episode].index_select(0, &local),
                Tensor::full([local.size()[0]], rows.step, (Kind::Int64, device)),
            ]);
            log_probs.push(
                rows.behaviour_log_prob
                    .as_ref()
                    .map(|l| l.index_select(0, &local)),
            );
            positions.extend(pos);
        }
        // Back to the order of `index`: grouped row k belongs at positions[k].
        let device = self.rows[0].state.device();
        let back = Tensor::from_slice(&positions)
            .argsort(0, false)
            .to_device(device);
        let column = |k: usize| {
            Tensor::cat(
                &parts
                    .iter()
                    .map(|p| p[k].shallow_clone())
                    .collect::<Vec<_>>(),
                0,
            )
            .index_select(0, &back)
        };
        TransitionBatch {
            state: column(0),
            action: column(1),
            final_sample: column(2),
            step: column(3),
            behaviour_log_prob: log_probs
                .into_iter()
                .collect::<Option<Vec<_>>>()
                .map(|l| Tensor::cat(&l, 0).index_select(0, &back)),
            share,
        }
    }
}

/// Positions of `count` minibatches of `size` among `len` transitions, end
/// to end: one random permutation of `0..len`, with further permutations
/// appended until there are `size * count` (so minibatches are disjoint
/// within each permutation). `len` must be positive and `size` at most
/// `len` (a minibatch never spans two permutations).
pub(crate) fn minibatch_order(len: i64, size: i64, count: usize, device: Device) -> Tensor {
    let needed = size * count as i64;
    let mut perms = Vec::new();
    let mut have = 0;
    while have < needed {
        perms.push(Tensor::randperm(len, (Kind::Int64, device)));
        have += len;
    }
    Tensor::cat(&perms, 0)
}

/// Gathers the transitions of whole episodes step by step and moves them to
/// a [`TrajectoryBuffer`] once their final sample x_0 is known.
#[derive(Debug, Default)]
pub struct EpisodeCollector {
    pending: Vec<PendingStep>,
    /// The finished transitions.
    pub buffer: TrajectoryBuffer,
}

impl EpisodeCollector {
    /// Records that `action` was taken in `state` at 1-based step `t`, with
    /// its behaviour log-density if the agent keeps one; `state` holds the
    /// chains `rows` of the global batch.
    pub fn step(
        &mut self,
        state: &Tensor,
        action: &Tensor,
        t: usize,
        log_prob: Option<Tensor>,
        rows: Rows,
    ) {
        self.pending.push(PendingStep {
            state: state.shallow_clone(),
            action: action.shallow_clone(),
            step: t,
            behaviour_log_prob: log_prob,
            rows,
        });
    }

    /// Ends the episodes in progress with final samples `final_sample`.
    pub fn finish(&mut self, final_sample: &Tensor) {
        let steps = std::mem::take(&mut self.pending);
        self.buffer.push_episode(steps, final_sample);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two episode batches of 5 chains and 3 steps; the state of (episode
    /// e, step k, chain b) is 100e + 10k + b, its x_0 is 1000e + b.
    fn filled(with_log_prob: bool) -> TrajectoryBuffer {
        filled_share(with_log_prob, Rows::all(5))
    }

    /// [`filled`] holding only the chains `rows` of the 5.
    fn filled_share(with_log_prob: bool, rows: Rows) -> TrajectoryBuffer {
        let mut collector = EpisodeCollector::default();
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

    #[test]
    fn minibatches_are_disjoint_rows_of_the_buffer() {
        let _rng = envs::testing::seeded(0);
        let b = filled(true);
        assert_eq!(b.len(), 30);
        let batches = b.minibatches(8, 3, Device::Cpu);
        let mut seen = std::collections::BTreeSet::new();
        for m in &batches {
            let s = Vec::<f32>::try_from(m.state.flatten(0, -1)).unwrap();
            let a = Vec::<f32>::try_from(m.action.flatten(0, -1)).unwrap();
            let f = Vec::<f32>::try_from(m.final_sample.flatten(0, -1)).unwrap();
            let t = Vec::<i64>::try_from(&m.step).unwrap();
            let l = Vec::<f32>::try_from(m.behaviour_log_prob.as_ref().unwrap().flatten(0, -1))
                .unwrap();
            for i in 0..8 {
                let id = s[i] as i64;
                let (episode, k, chain) = (id / 100, (id % 100) / 10, id % 10);
                assert_eq!(a[i], s[i] + 0.5);
                assert_eq!(f[i] as i64, 1000 * episode + chain, "x_0 of its own chain");
                assert_eq!(l[i], s[i] * 3.0);
                assert_eq!(t[i], 3 - k);
                assert!(seen.insert(id), "row drawn twice");
            }
        }
        let mut b = b;
        b.clear();
        assert!(b.is_empty() && b.minibatches(8, 1, Device::Cpu).is_empty());
    }

    #[test]
    fn minibatches_keep_the_order_of_the_permutation() {
        // Gathering row by row from the steps must give the rows of the
        // concatenated buffer in the permutation's order.
        let b = filled(false);
        let _rng = envs::testing::seeded(5);
        let got = b.minibatches(7, 2, Device::Cpu);
        tch::manual_seed(5);
        let order = Tensor::randperm(30, (Kind::Int64, Device::Cpu));
        let all: Vec<i64> = (0..2)
            .flat_map(|e| (0..3).flat_map(move |k| (0..5).map(move |c| 100 * e + 10 * k + c)))
            .collect();
        let order = Vec::<i64>::try_from(&order).unwrap();
        for (i, m) in got.iter().enumerate() {
            let s = Vec::<f32>::try_from(m.state.flatten(0, -1)).unwrap();
            let expected: Vec<f32> = order[i * 7..i * 7 + 7]
                .iter()
                .map(|&r| all[r as usize] as f32)
                .collect();
            assert_eq!(s, expected);
            assert!(m.behaviour_log_prob.is_none());
        }
    }

    #[test]
    fn the_buffer_holds_each_state_once_and_one_final_sample_per_chain() {
        // A chain's action is the next step's state (the same tensor), and
        // x_0 is stored once per chain, not once per step.
        let mut collector = EpisodeCollector::default();
        let (chains, dim, steps) = (4i64, 6i64, 10usize);
        let mut x = Tensor::randn([chains, dim], (Kind::Float, Device::Cpu));
        for t in (1..=steps).rev() {
            let next = &x * 0.9;
            collector.step(&x, &next, t, None, Rows::all(chains));
            x = next;
        }
        collector.finish(&x);
        let per_state = (chains * dim * 4) as usize;
        // x_T .. x_0: steps + 1 states; x_0 is also the final sample (same tensor).
        assert_eq!(collector.buffer.bytes(), (steps + 1) * per_state);
        assert_eq!(collector.buffer.len(), chains * steps as i64);
    }
}
