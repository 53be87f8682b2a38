//! Where an agent keeps the transitions of a round until its update: the
//! [`TransitionStore`] trait, its two implementations (every transition, or a
//! uniform reservoir of those the update reads) and the setting that picks
//! one. Every buffered agent (REINFORCE, PPO) takes either.

use envs::rows::Rows;
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::buffer::{EpisodeCollector, TransitionBatch};
use crate::reservoir::Reservoir;

/// Transitions (x_{t+1}, x_t, x_0, t+1) gathered while chains are sampled and
/// drawn as minibatches by a generator update.
pub trait TransitionStore {
    /// Records that `action` (x_t) was taken in `state` (x_{t+1}) at 1-based
    /// step `t`, row i being chain i of the episode batch in progress, with
    /// the behaviour log-density of each row when the agent keeps one;
    /// the rows are the chains `rows` of the global batch (all of them on
    /// one process; see [`crate::buffer`] for several ranks).
    fn record(
        &mut self,
        state: &Tensor,
        action: &Tensor,
        t: usize,
        behaviour_log_prob: Option<Tensor>,
        rows: Rows,
    );
    /// Ends the episode batch in progress: row i of `final_sample` is the
    /// outcome of the transitions recorded for chain i since the last
    /// finish (x_0 for the diffusion chain; a `[rows, 1]` cost-to-go for
    /// [`crate::learner::Outcome::CostToGo`]).
    fn finish(&mut self, final_sample: &Tensor);
    /// Number of transitions held, counted over every rank.
    fn len(&self) -> i64;
    /// Whether no transition is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// `count` minibatches of `size` transitions, disjoint within one random
    /// permutation of those held (further permutations are appended when
    /// fewer than `size * count` are held), on `device`: the draws are over
    /// every rank's transitions and each minibatch holds this rank's rows
    /// of it, with their [`TransitionBatch::share`].
    fn minibatches(&self, size: i64, count: usize, device: Device) -> Vec<TransitionBatch>;
    /// Forgets every transition.
    fn clear(&mut self);
    /// Bytes of tensor memory held.
    fn bytes(&self) -> usize;
}

/// How the transitions of a round wait for the generator update. Both give
/// minibatches of the same distribution (disjoint, uniform over the round's
/// transitions); they differ in memory and in the random numbers drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum BufferKind {
    /// Every transition (Algorithm 1 as written; the toy runs' numbers):
    /// (T' + 1) states per chain, growing with T', n_critic and the batch.
    #[default]
    Full,
    /// A uniform reservoir of n_generator x minibatch transitions, filled
    /// while the chains are sampled: three such batches of images, whatever
    /// T' and n_critic (the image runs).
    Reservoir,
}

impl BufferKind {
    /// An empty store of this kind; a reservoir keeps `capacity` transitions
    /// (at least one).
    pub fn build(self, capacity: i64) -> Box<dyn TransitionStore> {
        match self {
            BufferKind::Full => Box::new(EpisodeCollector::default()),
            BufferKind::Reservoir => Box::new(Reservoir::new(capacity.max(1))),
        }
    }
}

impl TransitionStore for EpisodeCollector {
    fn record(
        &mut self,
        state: &Tensor,
        action: &Tensor,
        t: usize,
        behaviour_log_prob: Option<Tensor>,
        rows: Rows,
    ) {
        self.step(state, action, t, behaviour_log_prob, rows);
    }

    fn finish(&mut self, final_sample: &Tensor) {
        EpisodeCollector::finish(self, final_sample);
    }

    fn len(&self) -> i64 {
        self.buffer.len()
    }

    fn minibatches(&self, size: i64, count: usize, device: Device) -> Vec<TransitionBatch> {
        self.buffer.minibatches(size, count, device)
    }

    fn clear(&mut self) {
        self.buffer.clear();
    }

    fn bytes(&self) -> usize {
        self.buffer.bytes()
    }
}

impl TransitionStore for Reservoir {
    fn record(
        &mut self,
        state: &Tensor,
        action: &Tensor,
        t: usize,
        behaviour_log_prob: Option<Tensor>,
        rows: Rows,
    ) {
        self.step(state, action, t, behaviour_log_prob.as_ref(), rows);
    }

    fn finish(&mut self, final_sample: &Tensor) {
        Reservoir::finish(self, final_sample);
    }

    fn len(&self) -> i64 {
        Reservoir::len(self)
    }

    fn minibatches(&self, size: i64, count: usize, device: Device) -> Vec<TransitionBatch> {
        Reservoir::minibatches(self, size, count, device)
    }

    fn clear(&mut self) {
        Reservoir::clear(self);
    }

    fn bytes(&self) -> usize {
        Reservoir::bytes(self)
    }
}
