//! Which rows of a global batch a process holds, and random draws laid out
//! over the global batch (docs/conventions.md, section 7, "Data-parallel
//! training").
//!
//! On N data-parallel ranks a batch of `global` rows is split into
//! contiguous shares; a rank holds rows `start..start + len`. A draw for
//! the batch (x_T, the noise of a sampler step, a gradient-penalty mixing
//! weight) is made for all `global` rows on every rank, and each keeps its
//! own: a row's noise then does not depend on the world size, and the
//! ranks' random generators stay in step. Drawing the whole batch's noise
//! costs little beside the network that uses it. On one process the share
//! is the whole batch and a draw is the plain draw.

use tch::{Device, Kind, Tensor};

/// Rows `start..start + len` of a batch of `global` rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rows {
    /// The first row held.
    pub start: i64,
    /// How many rows are held.
    pub len: i64,
    /// Rows of the global batch.
    pub global: i64,
}

impl Rows {
    /// The whole batch of `n` rows (one process).
    pub fn all(n: i64) -> Self {
        Self {
            start: 0,
            len: n,
            global: n,
        }
    }

    /// Rows `start..start + len` of `global`.
    ///
    /// # Panics
    /// When the range does not lie within `0..global`.
    pub fn share(start: i64, len: i64, global: i64) -> Self {
        assert!(
            start >= 0 && len >= 0 && start + len <= global,
            "rows {start}..{} outside a batch of {global}",
            start + len
        );
        Self { start, len, global }
    }

    /// Whether these are all the rows.
    pub fn is_all(&self) -> bool {
        self.len == self.global
    }

    /// The fraction of the global batch held, len / global (1 for the
    /// whole batch): the weight of a loss averaged over the held rows, so
    /// that the ranks' weighted losses sum to the global mean.
    pub fn fraction(&self) -> f64 {
        if self.global == 0 {
            1.0
        } else {
            self.len as f64 / self.global as f64
        }
    }

    /// The held rows of `t`, a tensor over the global batch (`[global, ...]`).
    pub fn of(&self, t: &Tensor) -> Tensor {
        if self.is_all() {
            t.shallow_clone()
        } else {
            t.narrow(0, self.start, self.len)
        }
    }

    /// Standard normal draws for the held rows of a batch of elements of
    /// `element_shape`: the global batch is drawn and the held rows kept.
    pub fn randn(&self, element_shape: &[i64], kind: Kind, device: Device) -> Tensor {
        self.of(&Tensor::randn(
            self.global_shape(element_shape),
            (kind, device),
        ))
    }

    /// Standard normal draws shaped like `held` (`[len, ...]`), drawn over
    /// the global batch.
    pub fn randn_like(&self, held: &Tensor) -> Tensor {
        if self.is_all() {
            return held.randn_like();
        }
        self.randn(&held.size()[1..], held.kind(), held.device())
    }

    /// Uniform draws on [0, 1) for the held rows of a batch of elements of
    /// `element_shape`, drawn over the global batch.
    pub fn rand(&self, element_shape: &[i64], kind: Kind, device: Device) -> Tensor {
        self.of(&Tensor::rand(
            self.global_shape(element_shape),
            (kind, device),
        ))
    }

    fn global_shape(&self, element_shape: &[i64]) -> Vec<i64> {
        let mut shape = vec![self.global];
        shape.extend_from_slice(element_shape);
        shape
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shares_of_a_draw_are_the_rows_of_the_whole_draw() {
        let draw = |rows: Rows| {
            let _rng = crate::testing::seeded(3);
            (
                rows.randn(&[2, 3], Kind::Float, Device::Cpu),
                rows.rand(&[1], Kind::Float, Device::Cpu),
            )
        };
        let (whole_n, whole_u) = draw(Rows::all(7));
        let mut parts_n = Vec::new();
        let mut parts_u = Vec::new();
        for (start, len) in [(0, 3), (3, 2), (5, 2)] {
            let (n, u) = draw(Rows::share(start, len, 7));
            assert_eq!(n.size(), [len, 2, 3]);
            parts_n.push(n);
            parts_u.push(u);
        }
        assert!(Tensor::cat(&parts_n, 0).equal(&whole_n));
        assert!(Tensor::cat(&parts_u, 0).equal(&whole_u));
        let held = Tensor::zeros([2, 4], (Kind::Float, Device::Cpu));
        let _rng = crate::testing::seeded(5);
        let like = Rows::share(1, 2, 5).randn_like(&held);
        tch::manual_seed(5);
        let whole = Tensor::randn([5, 4], (Kind::Float, Device::Cpu));
        assert!(like.equal(&whole.narrow(0, 1, 2)));
        assert_eq!(Rows::share(1, 2, 8).fraction(), 0.25);
    }
}
