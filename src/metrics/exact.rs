//! Exact Wasserstein-2 distance by exact optimal transport (network simplex).

use ndarray::{Array1, Array2};
use rust_optimal_transport::exact::EarthMovers;
use rust_optimal_transport::OTSolver;

use super::error::{check_point_clouds, MetricError};

/// Pivot limit passed to the network simplex. POT's default (100,000) stops
/// early on clouds of a few thousand points; this cap is only a guard
/// against cycling, and reaching it is reported as a solver failure.
const MAX_ITERATIONS: i32 = i32::MAX;

/// Exact W2 (square root of the optimal transport cost with squared Euclidean ground cost, uniform weights).
///
/// `a` and `b` are row-major point clouds with `dim` columns; they may have
/// different numbers of points (weights `1/n` and `1/m`). The cost matrix
/// is built in `f64` and the transport problem is solved exactly by the
/// network simplex of `rust-optimal-transport` (the same FastTransport code
/// that POT's `ot.emd2` wraps). Time and memory grow as `n * m`: the dense
/// cost matrix and transport plan take 16 bytes per pair.
///
/// # Errors
/// [`MetricError::ShapeMismatch`] if a buffer is not whole rows of `dim`
/// values, [`MetricError::Empty`] for an empty cloud or `dim == 0`,
/// [`MetricError::NonFinite`] for NaN or infinite coordinates and
/// [`MetricError::Solver`] if the solver reports an infeasible, unbounded
/// or unfinished problem.
pub fn exact_wasserstein2(a: &[f32], b: &[f32], dim: usize) -> Result<f64, MetricError> {
    let (n, m) = check_point_clouds(a, b, dim)?;

    let mut cost = Array2::<f64>::zeros((n, m));
    for (row, p) in cost.rows_mut().into_iter().zip(a.chunks_exact(dim)) {
        for (c, q) in row.into_iter().zip(b.chunks_exact(dim)) {
            *c = p
                .iter()
                .zip(q)
                .map(|(&x, &y)| {
                    let d = f64::from(x) - f64::from(y);
                    d * d
                })
                .sum();
        }
    }

    let mut weights_a = Array1::from_elem(n, 1.0 / n as f64);
    let mut weights_b = Array1::from_elem(m, 1.0 / m as f64);
    let plan = EarthMovers::new(&mut weights_a, &mut weights_b, &mut cost)
        .iterations(MAX_ITERATIONS)
        .solve()
        .map_err(|e| MetricError::Solver(format!("{e} ({e:?})")))?;

    let total: f64 = plan
        .iter()
        .zip(cost.iter())
        .filter(|(&g, _)| g != 0.0)
        .map(|(&g, &c)| g * c)
        .sum();
    Ok(total.max(0.0).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_clouds_give_zero() {
        let a: Vec<f32> = (0..60).map(|i| (i as f32 * 0.37).sin()).collect();
        let d = exact_wasserstein2(&a, &a, 3).unwrap();
        assert!(d.abs() < 1e-12, "{d}");
    }

    #[test]
    fn translation_gives_norm_of_shift() {
        // For b = a + t every plan pi costs sum pi |x - x'|^2 + |t|^2 (the
        // cross term is 2 <t, mean(a) - mean(a)> = 0), so W2 = |t| exactly.
        let dim = 3;
        let a: Vec<f32> = (0..90).map(|i| ((i * 37) % 23) as f32 / 4.0).collect();
        let shift = [1.0f32, -2.0, 2.0];
        let b: Vec<f32> = a
            .chunks_exact(dim)
            .flat_map(|p| [p[0] + shift[0], p[1] + shift[1], p[2] + shift[2]])
            .collect();
        let d = exact_wasserstein2(&a, &b, dim).unwrap();
        assert!((d - 3.0).abs() < 1e-9, "{d}");
    }

    #[test]
    fn one_dimensional_matches_sorted_matching() {
        let a = [0.0f32, 4.0, 1.0, 9.0];
        let b = [2.0f32, 8.0, 3.0, 5.0];
        // sorted: 0,1,4,9 vs 2,3,5,8 -> diffs 2,2,1,1 -> W2^2 = 10 / 4.
        let d = exact_wasserstein2(&a, &b, 1).unwrap();
        assert!((d * d - 2.5).abs() < 1e-12, "{d}");
    }

    #[test]
    fn unequal_sizes() {
        // Two points at 0 and 1 against three at 0, 0.5, 1 in 1-D: W2^2 = 1/12.
        let d = exact_wasserstein2(&[0.0, 1.0], &[0.0, 0.5, 1.0], 1).unwrap();
        assert!((d * d - 1.0 / 12.0).abs() < 1e-12, "{d}");
    }

    #[test]
    fn single_points() {
        let d = exact_wasserstein2(&[0.0, 0.0], &[3.0, 4.0], 2).unwrap();
        assert!((d - 5.0).abs() < 1e-12, "{d}");
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(
            exact_wasserstein2(&[0.0; 4], &[0.0; 3], 2),
            Err(MetricError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            exact_wasserstein2(&[], &[0.0; 2], 2),
            Err(MetricError::Empty { .. })
        ));
        assert!(matches!(
            exact_wasserstein2(&[f32::NAN, 0.0], &[0.0; 2], 2),
            Err(MetricError::NonFinite { .. })
        ));
    }
}
