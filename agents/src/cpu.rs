//! Kernels that work directly on the memory of contiguous CPU float
//! tensors, where a chain of libtorch operations (each with its dispatch,
//! temporary tensor and pass over memory) costs more than the arithmetic.

use tch::{Device, Kind, Tensor};

/// A tensor's elements as a mutable `f32` slice, when it is a defined,
/// contiguous, CPU, float tensor; `None` otherwise (the caller then falls
/// back to libtorch operations).
///
/// The slice aliases the tensor's storage and bypasses autograd: callers use
/// it only on tensors no autograd graph will read again (optimiser updates
/// after `backward`; activations computed without gradients), and while no
/// other slice of that storage is alive.
#[allow(clippy::mut_from_ref)] // the slice aliases the tensor's storage, see above
pub(crate) fn f32_slice(t: &Tensor) -> Option<&mut [f32]> {
    if !t.defined() || t.device() != Device::Cpu || t.kind() != Kind::Float || !t.is_contiguous() {
        return None;
    }
    let len = t.numel();
    if len == 0 {
        return Some(&mut []);
    }
    // SAFETY: the tensor is a defined, contiguous CPU tensor of `len` f32
    // values, so its data pointer addresses `len` initialised floats that
    // live as long as the tensor; the caller guarantees no other slice of
    // that storage is alive while this one is used.
    Some(unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, len) })
}

/// softplus(x) = log(1 + e^x), in place on a tensor that no autograd graph
/// needs (sampling, evaluation); otherwise, or off the CPU, libtorch's
/// `softplus`. The results agree with libtorch's to a few units in the last
/// place (tested); the kernel is branch-free, so it vectorises, and does
/// about a third of the work of libtorch's `log1p(exp(x))`, which evaluates
/// both functions to 1 ulp with general-purpose routines.
pub(crate) fn softplus(x: Tensor) -> Tensor {
    if x.requires_grad() {
        return x.softplus();
    }
    match f32_slice(&x) {
        Some(values) => {
            softplus_in_place(values);
            x
        }
        None => x.softplus(),
    }
}

/// softplus of every element, as `max(x, 0) + log1p(exp(-|x|))`, with the
/// widest vectors the CPU has, split over libtorch's intra-op thread count
/// when there is enough work (a 10K-chain evaluation, not a 128-chain step).
pub(crate) fn softplus_in_place(values: &mut [f32]) {
    softplus_on_threads(values, tch::get_num_threads().max(1) as usize);
}

/// [`softplus_in_place`] on `threads` threads (if there is enough work).
fn softplus_on_threads(values: &mut [f32], threads: usize) {
    const PARALLEL_FROM: usize = 1 << 16;
    if threads <= 1 || values.len() < PARALLEL_FROM {
        return softplus_serial(values);
    }
    let mut parts = values.chunks_mut(values.len().div_ceil(threads));
    let first = parts.next();
    std::thread::scope(|scope| {
        for part in parts {
            scope.spawn(|| softplus_serial(part));
        }
        if let Some(part) = first {
            softplus_serial(part);
        }
    });
}

fn softplus_serial(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        unsafe { softplus_avx2(values) };
        return;
    }
    softplus_loop(values);
}

/// The same loop compiled for AVX2 (eight lanes instead of SSE2's four).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn softplus_avx2(values: &mut [f32]) {
    softplus_loop(values);
}

#[inline(always)]
fn softplus_loop(values: &mut [f32]) {
    // In blocks, one stage at a time: each stage's short loop keeps several
    // independent vectors in flight, where one long loop body would wait on
    // its own chain of dependent operations.
    const BLOCK: usize = 64;
    let mut e = [0f32; BLOCK];
    for block in values.chunks_mut(BLOCK) {
        let e = &mut e[..block.len()];
        for (e, &v) in e.iter_mut().zip(block.iter()) {
            *e = exp_non_positive(-v.abs());
        }
        for (v, &e) in block.iter_mut().zip(e.iter()) {
            *v = v.max(0.0) + log1p_unit(e);
        }
    }
}

/// e^a for a <= 0, subnormal results included (below -104 it is 0 or the
/// smallest subnormal, as rounding e^a would give).
#[inline(always)]
fn exp_non_positive(a: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in a part exact in few bits and the rest (Cody and Waite).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and removing 1.5 * 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let a = a.max(-104.0);
    let shifted = a * LOG2E + ROUND;
    let n = shifted - ROUND;
    // The integer n sits in the low bits of `shifted` (no float-to-int
    // conversion, which would not vectorise).
    let n_int = shifted.to_bits() as i32 - ROUND.to_bits() as i32;
    let r = (a - n * LN2_HI) - n * LN2_LO;
    // e^r on |r| <= ln(2)/2 by its Taylor polynomial of degree 7 (error < 6e-9).
    let p = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // 2^n in two normal factors, so that subnormal results come out right.
    let half = n_int >> 1;
    let scale = |e: i32| f32::from_bits(((e + 127) as u32) << 23);
    p * scale(half) * scale(n_int - half)
}

/// log(1 + u) for 0 <= u <= 1, as 2 atanh(s) with s = u / (2 + u) in
/// [0, 1/3]: one division and an odd series in s, no cancellation (u enters
/// exactly; 1 + u is never formed).
#[inline(always)]
fn log1p_unit(u: f32) -> f32 {
    let s = u / (2.0 + u);
    let z = s * s;
    // 2 (s + s^3/3 + ... + s^19/19): the first term left out, s^21/21 with
    // s <= 1/3, is below 3e-11 relative.
    let series = 1.0
        + z * (1.0 / 3.0
            + z * (1.0 / 5.0
                + z * (1.0 / 7.0
                    + z * (1.0 / 9.0
                        + z * (1.0 / 11.0
                            + z * (1.0 / 13.0
                                + z * (1.0 / 15.0 + z * (1.0 / 17.0 + z * (1.0 / 19.0)))))))));
    2.0 * s * series
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_only_of_contiguous_cpu_floats() {
        let t = Tensor::from_slice(&[1f32, 2., 3., 4.]).reshape([2, 2]);
        assert_eq!(f32_slice(&t).unwrap(), &[1., 2., 3., 4.]);
        assert!(f32_slice(&t.tr()).is_none());
        assert!(f32_slice(&t.to_kind(Kind::Double)).is_none());
        assert!(f32_slice(&Tensor::new()).is_none());
    }

    /// Our softplus against libtorch's, computed in f64 and rounded, over a
    /// fine grid of [-100, 100] and 1M normal draws of scale 5.
    #[test]
    fn softplus_agrees_with_libtorch_to_a_few_ulp() {
        let _rng = envs::testing::seeded(11);
        let grid = Tensor::linspace(-100.0, 100.0, 2_000_001, (Kind::Float, Device::Cpu));
        let draws = Tensor::randn([1_000_000], (Kind::Float, Device::Cpu)) * 5.0;
        for x in [grid, draws] {
            let exact = x.to_kind(Kind::Double).softplus().to_kind(Kind::Float);
            let ours = softplus(x.copy());
            let ulp = exact.abs().clamp_min(f32::MIN_POSITIVE as f64) * f32::EPSILON as f64;
            let worst = ((&ours - &exact).abs() / ulp).max().double_value(&[]);
            assert!(worst <= 4.0, "worst error {worst} ulp");
            let theirs = x.softplus();
            let diff = (&ours - &theirs).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "{diff}");
        }
    }

    #[test]
    fn softplus_split_over_threads_equals_the_serial_one() {
        let _rng = envs::testing::seeded(12);
        let x = Tensor::randn([300_001], (Kind::Float, Device::Cpu)) * 5.0;
        let (serial, split) = (x.copy(), x.copy());
        softplus_on_threads(f32_slice(&serial).unwrap(), 1);
        softplus_on_threads(f32_slice(&split).unwrap(), 3);
        assert!(serial.equal(&split));
        assert!(serial.allclose(&x.softplus(), 1e-6, 1e-6, false));
    }

    #[test]
    fn softplus_keeps_libtorch_where_gradients_are_tracked() {
        let x = Tensor::from_slice(&[-1f32, 0.5]).set_requires_grad(true);
        let y = softplus(&x * 1.0);
        y.sum(Kind::Float).backward();
        let grad = Vec::<f32>::try_from(x.grad()).unwrap();
        let sigmoid = |v: f32| 1.0 / (1.0 + (-v).exp());
        assert!((grad[0] - sigmoid(-1.0)).abs() < 1e-6 && (grad[1] - sigmoid(0.5)).abs() < 1e-6);
    }
}
