//! The trajectory buffer of Algorithm 1: transitions (x_{t+1}, x_t, x_0, t+1)
//! of the chains sampled since the last generator update.

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
}

/// Transitions stored without gradients, drawn in random disjoint minibatches.
#[derive(Debug, Default)]
pub struct TrajectoryBuffer {
    chunks: Vec<TransitionBatch>,
    len: i64,
}

impl TrajectoryBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of stored transitions.
    pub fn len(&self) -> i64 {
        self.len
    }

    /// Whether no transition is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stores a batch of transitions (detached).
    pub fn push(&mut self, batch: TransitionBatch) {
        self.len += batch.state.size()[0];
        self.chunks.push(TransitionBatch {
            state: batch.state.detach(),
            action: batch.action.detach(),
            final_sample: batch.final_sample.detach(),
            step: batch.step.detach(),
            behaviour_log_prob: batch.behaviour_log_prob.map(|t| t.detach()),
        });
    }

    /// Forgets every transition.
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.len = 0;
    }

    /// `count` minibatches of `size` transitions drawn without replacement
    /// (disjoint) from one random permutation; when the buffer is too small,
    /// further permutations are appended, so minibatches never repeat a row
    /// within one permutation.
    pub fn minibatches(&self, size: i64, count: usize, device: Device) -> Vec<TransitionBatch> {
        if self.is_empty() || size < 1 {
            return Vec::new();
        }
        let cat = |f: &dyn Fn(&TransitionBatch) -> &Tensor| {
            Tensor::cat(&self.chunks.iter().map(f).collect::<Vec<_>>(), 0)
        };
        let all = TransitionBatch {
            state: cat(&|b| &b.state),
            action: cat(&|b| &b.action),
            final_sample: cat(&|b| &b.final_sample),
            step: cat(&|b| &b.step),
            behaviour_log_prob: self
                .chunks
                .iter()
                .map(|b| b.behaviour_log_prob.as_ref().map(Tensor::shallow_clone))
                .collect::<Option<Vec<_>>>()
                .map(|parts| Tensor::cat(&parts, 0)),
        };
        let needed = size * count as i64;
        let mut perms = Vec::new();
        let mut have = 0;
        while have < needed {
            perms.push(Tensor::randperm(self.len, (Kind::Int64, device)));
            have += self.len;
        }
        let order = Tensor::cat(&perms, 0);
        (0..count as i64)
            .map(|i| {
                let idx = order.narrow(0, i * size, size.min(self.len));
                TransitionBatch {
                    state: all.state.index_select(0, &idx),
                    action: all.action.index_select(0, &idx),
                    final_sample: all.final_sample.index_select(0, &idx),
                    step: all.step.index_select(0, &idx),
                    behaviour_log_prob: all
                        .behaviour_log_prob
                        .as_ref()
                        .map(|l| l.index_select(0, &idx)),
                }
            })
            .collect()
    }
}

/// Gathers the transitions of whole episodes step by step and moves them to
/// a [`TrajectoryBuffer`] once their final sample x_0 is known.
#[derive(Debug, Default)]
pub struct EpisodeCollector {
    pending: Vec<(Tensor, Tensor, usize, Option<Tensor>)>,
    /// The finished transitions.
    pub buffer: TrajectoryBuffer,
}

impl EpisodeCollector {
    /// Records that `action` was taken in `state` at 1-based step `t`, with
    /// its behaviour log-density if the agent keeps one.
    pub fn step(&mut self, state: &Tensor, action: &Tensor, t: usize, log_prob: Option<Tensor>) {
        self.pending
            .push((state.shallow_clone(), action.shallow_clone(), t, log_prob));
    }

    /// Ends the episodes in progress with final samples `final_sample`.
    pub fn finish(&mut self, final_sample: &Tensor) {
        for (state, action, t, behaviour_log_prob) in self.pending.drain(..) {
            let n = state.size()[0];
            self.buffer.push(TransitionBatch {
                step: Tensor::full([n], t as i64, (Kind::Int64, state.device())),
                state,
                action,
                final_sample: final_sample.shallow_clone(),
                behaviour_log_prob,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minibatches_are_disjoint_rows_of_the_buffer() {
        let _rng = envs::testing::seeded(0);
        let mut b = TrajectoryBuffer::new();
        for c in 0..3 {
            let ids =
                Tensor::arange_start(c * 10, c * 10 + 10, (Kind::Float, Device::Cpu)).view([10, 1]);
            b.push(TransitionBatch {
                state: ids.shallow_clone(),
                action: &ids + 0.5,
                final_sample: &ids * 2.0,
                step: Tensor::full([10], c + 1, (Kind::Int64, Device::Cpu)),
                behaviour_log_prob: Some(&ids * 3.0),
            });
        }
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
                assert_eq!(a[i], s[i] + 0.5);
                assert_eq!(f[i], s[i] * 2.0);
                assert_eq!(l[i], s[i] * 3.0);
                assert_eq!(t[i], (s[i] as i64) / 10 + 1);
                assert!(seen.insert(s[i] as i64), "row drawn twice");
            }
        }
        b.clear();
        assert!(b.is_empty() && b.minibatches(8, 1, Device::Cpu).is_empty());
    }
}
