//! The kernel inception distance (KID, Bińkowski et al. 2018): the unbiased
//! estimate of the squared maximum mean discrepancy between two feature
//! sets under the cubic polynomial kernel k(x, y) = (x . y / d + 1)^3,
//! averaged over random subsets, with its spread over them.
//!
//! For sets X (m rows) and Y (n rows):
//!
//! MMD^2_u = sum_{i != j} k(x_i, x_j) / (m (m - 1))
//!         + sum_{i != j} k(y_i, y_j) / (n (n - 1))
//!         - 2 sum_{i, j} k(x_i, y_j) / (m n).
//!
//! It is unbiased, so unlike FID its mean does not depend on the number of
//! samples, and it can be negative when the sets are alike. As in the
//! reference implementations (the KID paper's code, torch-fidelity,
//! clean-fid), each subset draws `subset_size` rows of each set without
//! replacement, independently of the other subsets; the spread reported is
//! the standard deviation over subsets (divided by their number, as
//! `numpy.std`).

use rand::rngs::StdRng;
use rand::SeedableRng;
use tch::{Device, Kind, Tensor};

use super::error::MetricError;

/// How KID is estimated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KidSettings {
    /// Number of random subsets averaged (100 in torch-fidelity and clean-fid).
    pub subsets: usize,
    /// Rows drawn from each set per subset (1000 in torch-fidelity and
    /// clean-fid); a set with fewer rows lends all of them.
    pub subset_size: usize,
    /// Seed of the subsets' draws.
    pub seed: u64,
}

impl Default for KidSettings {
    fn default() -> Self {
        Self {
            subsets: 100,
            subset_size: 1000,
            seed: 0,
        }
    }
}

/// A KID estimate: the mean of MMD^2_u over subsets and its spread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KidEstimate {
    /// Mean over subsets.
    pub mean: f64,
    /// Standard deviation over subsets (0 for one subset).
    pub std: f64,
    /// Subsets averaged.
    pub subsets: usize,
    /// Rows per set in each subset.
    pub subset_size: usize,
}

fn check_features(x: &Tensor, which: &'static str) -> Result<(i64, i64), MetricError> {
    match x.size()[..] {
        [rows, dim] if rows >= 2 && dim >= 1 => Ok((rows, dim)),
        _ => Err(MetricError::InvalidParameter {
            name: which,
            reason: format!(
                "KID needs a [rows, dim] feature matrix with at least 2 rows, got {:?}",
                x.size()
            ),
        }),
    }
}

/// The unbiased MMD^2 of two whole feature sets `[m, d]` and `[n, d]` under
/// the cubic polynomial kernel, computed in float64.
///
/// # Errors
/// [`MetricError::InvalidParameter`] when a set is not a matrix of at least
/// two rows, [`MetricError::ShapeMismatch`] when their widths differ.
pub fn polynomial_mmd2(x: &Tensor, y: &Tensor) -> Result<f64, MetricError> {
    let (m, dim) = check_features(x, "x")?;
    let (n, dim_y) = check_features(y, "y")?;
    if dim != dim_y {
        return Err(MetricError::ShapeMismatch {
            a_shape: format!("{:?}", x.size()),
            b_shape: format!("{:?}", y.size()),
            dim: dim as usize,
        });
    }
    let x = x.to_device(Device::Cpu).to_kind(Kind::Double);
    let y = y.to_device(Device::Cpu).to_kind(Kind::Double);
    let kernel =
        |a: &Tensor, b: &Tensor| (a.matmul(&b.tr()) / dim as f64 + 1.0).pow_tensor_scalar(3);
    let off_diagonal_mean = |k: Tensor, rows: i64| {
        (k.sum(Kind::Double) - k.trace()).double_value(&[]) / (rows * (rows - 1)) as f64
    };
    let xx = off_diagonal_mean(kernel(&x, &x), m);
    let yy = off_diagonal_mean(kernel(&y, &y), n);
    let xy = kernel(&x, &y).mean(Kind::Double).double_value(&[]);
    Ok(xx + yy - 2.0 * xy)
}

/// KID between two feature sets: [`polynomial_mmd2`] of `settings.subsets`
/// random subsets, each `min(subset_size, m, n)` rows of each set drawn
/// without replacement.
///
/// # Errors
/// Those of [`polynomial_mmd2`], and [`MetricError::InvalidParameter`] for
/// zero subsets or a subset size below 2.
pub fn kid(x: &Tensor, y: &Tensor, settings: &KidSettings) -> Result<KidEstimate, MetricError> {
    let (m, _) = check_features(x, "x")?;
    let (n, _) = check_features(y, "y")?;
    if settings.subsets == 0 {
        return Err(MetricError::InvalidParameter {
            name: "subsets",
            reason: "KID needs at least one subset".into(),
        });
    }
    if settings.subset_size < 2 {
        return Err(MetricError::InvalidParameter {
            name: "subset_size",
            reason: format!("must be at least 2, got {}", settings.subset_size),
        });
    }
    let size = settings.subset_size.min(m as usize).min(n as usize);
    let mut rng = StdRng::seed_from_u64(settings.seed);
    let mut draw = |rows: i64| {
        let picked: Vec<i64> = rand::seq::index::sample(&mut rng, rows as usize, size)
            .into_iter()
            .map(|i| i as i64)
            .collect();
        Tensor::from_slice(&picked)
    };
    let mut values = Vec::with_capacity(settings.subsets);
    for _ in 0..settings.subsets {
        let xs = x.index_select(0, &draw(m).to_device(x.device()));
        let ys = y.index_select(0, &draw(n).to_device(y.device()));
        values.push(polynomial_mmd2(&xs, &ys)?);
    }
    let count = values.len() as f64;
    let mean = values.iter().sum::<f64>() / count;
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / count;
    Ok(KidEstimate {
        mean,
        std: variance.sqrt(),
        subsets: settings.subsets,
        subset_size: size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(rows: i64, dim: i64, shift: f64, seed: i64) -> Tensor {
        // libtorch's generator is shared: draw while holding it.
        let _rng = envs::testing::seeded(seed);
        Tensor::randn([rows, dim], (Kind::Double, Device::Cpu)) + shift
    }

    /// MMD^2_u by explicit loops over the pairs, for small sets.
    fn by_loops(x: &Tensor, y: &Tensor) -> f64 {
        let rows = |t: &Tensor| -> Vec<Vec<f64>> {
            let (r, d) = (t.size()[0], t.size()[1]);
            let flat = Vec::<f64>::try_from(t.flatten(0, -1)).unwrap();
            (0..r as usize)
                .map(|i| flat[i * d as usize..(i + 1) * d as usize].to_vec())
                .collect()
        };
        let (xs, ys) = (rows(x), rows(y));
        let d = xs[0].len() as f64;
        let k = |a: &[f64], b: &[f64]| {
            (a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>() / d + 1.0).powi(3)
        };
        let within = |s: &[Vec<f64>]| {
            let mut total = 0.0;
            for (i, a) in s.iter().enumerate() {
                for (j, b) in s.iter().enumerate() {
                    if i != j {
                        total += k(a, b);
                    }
                }
            }
            total / (s.len() * (s.len() - 1)) as f64
        };
        let mut cross = 0.0;
        for a in &xs {
            for b in &ys {
                cross += k(a, b);
            }
        }
        within(&xs) + within(&ys) - 2.0 * cross / (xs.len() * ys.len()) as f64
    }

    #[test]
    fn matrix_form_equals_the_pairwise_sums() {
        let x = features(7, 5, 0.0, 1);
        let y = features(9, 5, 0.3, 2);
        let got = polynomial_mmd2(&x, &y).unwrap();
        let want = by_loops(&x, &y);
        assert!(
            (got - want).abs() < 1e-12 * want.abs().max(1.0),
            "{got} vs {want}"
        );
    }

    #[test]
    fn subsets_as_large_as_the_sets_give_the_whole_sets_value_without_spread() {
        let x = features(20, 4, 0.0, 3);
        let y = features(20, 4, 0.5, 4);
        let whole = polynomial_mmd2(&x, &y).unwrap();
        let settings = KidSettings {
            subsets: 5,
            subset_size: 1000,
            seed: 7,
        };
        let estimate = kid(&x, &y, &settings).unwrap();
        assert_eq!(estimate.subset_size, 20);
        assert!(
            (estimate.mean - whole).abs() < 1e-12,
            "{estimate:?} vs {whole}"
        );
        assert!(estimate.std < 1e-12, "{estimate:?}");
    }

    #[test]
    fn unbiased_near_zero_for_one_distribution_and_positive_for_two() {
        let x = features(400, 8, 0.0, 5);
        let y = features(400, 8, 0.0, 6);
        let z = features(400, 8, 1.0, 7);
        let settings = KidSettings {
            subsets: 50,
            subset_size: 100,
            seed: 0,
        };
        let same = kid(&x, &y, &settings).unwrap();
        let apart = kid(&x, &z, &settings).unwrap();
        // Unbiased: the same law gives a mean within its standard error of 0.
        let standard_error = same.std / (settings.subsets as f64).sqrt();
        assert!(same.mean.abs() < 4.0 * standard_error + 1e-3, "{same:?}");
        assert!(apart.mean > 4.0 * apart.std, "{apart:?}");
        assert!(
            apart.mean > 50.0 * (same.mean.abs() + standard_error),
            "{same:?} {apart:?}"
        );
        // Seeded: the same settings draw the same subsets.
        assert_eq!(kid(&x, &z, &settings).unwrap(), apart);
    }

    #[test]
    fn refuses_bad_input() {
        let x = features(5, 3, 0.0, 8);
        let y = features(5, 4, 0.0, 9);
        assert!(matches!(
            polynomial_mmd2(&x, &y),
            Err(MetricError::ShapeMismatch { .. })
        ));
        let one_row = features(1, 3, 0.0, 10);
        assert!(polynomial_mmd2(&one_row, &x)
            .unwrap_err()
            .to_string()
            .contains("at least 2 rows"));
        let none = KidSettings {
            subsets: 0,
            ..KidSettings::default()
        };
        assert!(kid(&x, &x, &none).is_err());
    }
}
