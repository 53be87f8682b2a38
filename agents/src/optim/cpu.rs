//! Fused CPU kernels for the optimisers: one pass over each parameter's
//! memory instead of a libtorch operation (and its dispatch and temporary
//! tensor) per term of the update rule.
//!
//! For the toy networks the update rules' dozen elementwise operations per
//! parameter tensor cost more in dispatch and allocation than in arithmetic;
//! with T = 1000 the per-step embeddings make the tensors large enough that
//! each extra pass over them shows too. The maths is exactly the tensor
//! version's (`super::Optimizer::step`), in f32, in the same order of terms.

pub(super) use crate::cpu::f32_slice;

/// Scalars of one Adam update (bias corrections folded in).
#[derive(Debug, Clone, Copy)]
pub(super) struct AdamStep {
    /// 1 - beta1.
    pub one_minus_beta1: f32,
    /// 1 - beta2.
    pub one_minus_beta2: f32,
    /// lr / (1 - beta1^t).
    pub step_size: f32,
    /// sqrt(1 - beta2^t).
    pub bias_correction2_sqrt: f32,
    /// eps.
    pub eps: f32,
}

/// `m <- lerp(m, g, 1 - b1)`, `v <- lerp(v, g^2, 1 - b2)`,
/// `p <- p - step_size * m / (sqrt(v) / sqrt(1 - b2^t) + eps)`.
pub(super) fn adam(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: AdamStep) {
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        *m += s.one_minus_beta1 * (g - *m);
        *v += s.one_minus_beta2 * (g * g - *v);
        let denom = v.sqrt() / s.bias_correction2_sqrt + s.eps;
        *p += (*m * -s.step_size) / denom;
    }
}

/// `v <- lerp(v, g^2, 1 - alpha)`, `p <- p - lr * g / (sqrt(v) + eps)`.
pub(super) fn rmsprop(
    p: &mut [f32],
    g: &[f32],
    v: &mut [f32],
    one_minus_alpha: f32,
    lr: f32,
    eps: f32,
) {
    for ((p, &g), v) in p.iter_mut().zip(g).zip(v.iter_mut()) {
        *v += one_minus_alpha * (g * g - *v);
        *p += (g * -lr) / (v.sqrt() + eps);
    }
}

/// Sum of squares, accumulated in f64.
pub(super) fn sum_of_squares(g: &[f32]) -> f64 {
    // Eight independent f32 lanes per block keep the loop vectorised; each
    // block's partial sum is then added in f64.
    g.chunks(1024)
        .map(|block| {
            let mut lanes = [0f32; 8];
            let mut chunks = block.chunks_exact(8);
            for c in &mut chunks {
                for (l, &x) in lanes.iter_mut().zip(c) {
                    *l += x * x;
                }
            }
            let tail: f32 = chunks.remainder().iter().map(|x| x * x).sum();
            lanes.iter().map(|&l| l as f64).sum::<f64>() + tail as f64
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn sum_of_squares_matches_libtorch() {
        let _rng = envs::testing::seeded(3);
        let t = Tensor::randn([5000], (Kind::Float, Device::Cpu));
        let ours = sum_of_squares(f32_slice(&t).unwrap());
        let theirs = t
            .to_kind(Kind::Double)
            .square()
            .sum(Kind::Double)
            .double_value(&[]);
        assert!((ours - theirs).abs() < 1e-6 * theirs, "{ours} vs {theirs}");
    }
}
