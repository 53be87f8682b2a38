//! Sliced Wasserstein-2 distance between point clouds.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use super::error::{check_point_clouds, MetricError};

/// Sliced Wasserstein-2 between two equal-size point clouds (row-major, `dim` columns), as POT's sliced_wasserstein_distance(p=2): directions drawn from a standard normal and normalised, per direction the 1-D W2^2 of the sorted projections (uniform weights), averaged over directions, then square-rooted.
///
/// Clouds of unequal sizes are supported too: the 1-D distance is then the
/// integral of the squared difference of the two empirical quantile
/// functions, as POT's `wasserstein_1d` computes it. All arithmetic is in
/// `f64`. The directions come from `StdRng::seed_from_u64(seed)`, so the
/// result is deterministic for a given seed (but does not reproduce POT's
/// numpy-drawn directions).
///
/// # Errors
/// [`MetricError::ShapeMismatch`] if a buffer is not whole rows of `dim`
/// values, [`MetricError::Empty`] for an empty cloud or `dim == 0`,
/// [`MetricError::NonFinite`] for NaN or infinite coordinates and
/// [`MetricError::InvalidParameter`] for `n_projections == 0`.
pub fn sliced_wasserstein2(
    a: &[f32],
    b: &[f32],
    dim: usize,
    n_projections: usize,
    seed: u64,
) -> Result<f64, MetricError> {
    let (n, m) = check_point_clouds(a, b, dim)?;
    if n_projections == 0 {
        return Err(MetricError::InvalidParameter {
            name: "n_projections",
            reason: "must be at least 1".to_owned(),
        });
    }

    let mut rng = StdRng::seed_from_u64(seed);
    let mut direction = vec![0.0f64; dim];
    let mut proj_a = vec![0.0f64; n];
    let mut proj_b = vec![0.0f64; m];
    let mut total = 0.0f64;
    for _ in 0..n_projections {
        random_unit_vector(&mut rng, &mut direction);
        project(a, &direction, &mut proj_a);
        project(b, &direction, &mut proj_b);
        proj_a.sort_unstable_by(f64::total_cmp);
        proj_b.sort_unstable_by(f64::total_cmp);
        total += wasserstein2_squared_1d_sorted(&proj_a, &proj_b);
    }
    Ok((total / n_projections as f64).sqrt())
}

/// Fills `out` with a direction drawn uniformly on the unit sphere (a
/// standard normal vector, normalised).
fn random_unit_vector(rng: &mut StdRng, out: &mut [f64]) {
    loop {
        for x in out.iter_mut() {
            *x = rng.sample(StandardNormal);
        }
        let norm = out.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm > 0.0 && norm.is_finite() {
            for x in out.iter_mut() {
                *x /= norm;
            }
            return;
        }
    }
}

/// Projects every row of `points` (row-major, `direction.len()` columns)
/// onto `direction`, writing one value per row into `out`.
fn project(points: &[f32], direction: &[f64], out: &mut [f64]) {
    for (row, o) in points.chunks_exact(direction.len()).zip(out.iter_mut()) {
        *o = row
            .iter()
            .zip(direction)
            .map(|(&x, &d)| f64::from(x) * d)
            .sum();
    }
}

/// Squared 1-D Wasserstein-2 distance between two uniformly weighted
/// empirical measures given by their sorted samples: the integral over
/// `t` in `[0, 1]` of `(F_u^-1(t) - F_v^-1(t))^2`.
///
/// The quantile breakpoints `i / n` and `j / m` are compared in exact
/// integer arithmetic (units of `1 / (n m)`), so equal sizes reduce to the
/// plain mean of squared differences of matched order statistics.
fn wasserstein2_squared_1d_sorted(u: &[f64], v: &[f64]) -> f64 {
    let n = u.len() as u128;
    let m = v.len() as u128;
    let (mut i, mut j) = (0usize, 0usize);
    let mut position = 0u128;
    let mut acc = 0.0f64;
    while i < u.len() && j < v.len() {
        let end_u = (i as u128 + 1) * m;
        let end_v = (j as u128 + 1) * n;
        let end = end_u.min(end_v);
        let diff = u[i] - v[j];
        acc += (end - position) as f64 * diff * diff;
        position = end;
        if end_u == end {
            i += 1;
        }
        if end_v == end {
            j += 1;
        }
    }
    acc / (n * m) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_clouds_give_zero() {
        let a: Vec<f32> = (0..60).map(|i| (i as f32 * 0.37).sin()).collect();
        let d = sliced_wasserstein2(&a, &a, 3, 50, 7).unwrap();
        assert_eq!(d, 0.0);
    }

    #[test]
    fn one_dimensional_case_is_exact_w2() {
        // In 1-D every direction is +1 or -1, so SW2 is the 1-D W2.
        let a = [2.0f32, 0.0, 1.0];
        let b = [5.0f32, 3.0, 4.0];
        let d = sliced_wasserstein2(&a, &b, 1, 5, 0).unwrap();
        assert!((d - 3.0).abs() < 1e-12, "{d}");
    }

    #[test]
    fn unequal_sizes_use_quantile_functions() {
        // Quantiles: [0,1/3): 0 vs 0; [1/3,1/2): 0 vs 0.5; [1/2,2/3): 1 vs 0.5;
        // [2/3,1]: 1 vs 1, so W2^2 = 2 * (1/6) * 0.25 = 1/12.
        let a = [0.0f32, 1.0];
        let b = [1.0f32, 0.0, 0.5];
        let d = sliced_wasserstein2(&a, &b, 1, 3, 1).unwrap();
        assert!((d * d - 1.0 / 12.0).abs() < 1e-12, "{d}");
    }

    #[test]
    fn translation_gives_norm_over_sqrt_dim() {
        // Translating by t shifts every projection by <theta, t>, so the 1-D
        // W2^2 is <theta, t>^2, whose mean over the unit sphere is |t|^2 / dim.
        let dim = 2;
        let a: Vec<f32> = (0..200).map(|i| ((i * 7919) % 101) as f32 / 10.0).collect();
        let shift = [3.0f32, -4.0];
        let b: Vec<f32> = a
            .chunks_exact(dim)
            .flat_map(|p| [p[0] + shift[0], p[1] + shift[1]])
            .collect();
        let d = sliced_wasserstein2(&a, &b, dim, 20_000, 3).unwrap();
        let expected = 5.0 / (dim as f64).sqrt();
        // Relative standard error of the mean of cos^2 over 20k draws is ~0.5%.
        assert!((d - expected).abs() / expected < 0.02, "{d} vs {expected}");
    }

    #[test]
    fn same_seed_same_value() {
        let a: Vec<f32> = (0..30).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..30).map(|i| (i * i) as f32 / 10.0).collect();
        let x = sliced_wasserstein2(&a, &b, 3, 10, 42).unwrap();
        let y = sliced_wasserstein2(&a, &b, 3, 10, 42).unwrap();
        assert_eq!(x, y);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(
            sliced_wasserstein2(&[0.0; 6], &[0.0; 5], 3, 10, 0),
            Err(MetricError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            sliced_wasserstein2(&[0.0; 6], &[0.0; 6], 3, 0, 0),
            Err(MetricError::InvalidParameter { .. })
        ));
        assert!(matches!(
            sliced_wasserstein2(&[0.0, f32::INFINITY], &[0.0; 2], 2, 3, 0),
            Err(MetricError::NonFinite { .. })
        ));
    }
}
