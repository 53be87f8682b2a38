//! The Fréchet distance between Gaussians fitted to two feature sets (the
//! distance behind FID), with the statistics streamed in float64.
//!
//! d^2 = |mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^(1/2)).
//!
//! pytorch-fid takes scipy's `sqrtm` of the product S_1 S_2, which is not
//! symmetric: on near-singular covariances it can return complex parts or
//! non-finite values, which pytorch-fid then retries with 1e-6 added to the
//! diagonals. We use that S_1 S_2 is similar to the symmetric positive
//! semi-definite A = S_1^(1/2) S_2 S_1^(1/2), so tr((S_1 S_2)^(1/2)) is the
//! sum of the square roots of A's eigenvalues. Two symmetric
//! eigen-decompositions (LAPACK's, through libtorch, in float64) stay real at
//! any rank; eigenvalues that rounding makes slightly negative are taken as
//! zero. Where scipy's square root exists the two agree (tested against a
//! transcription of pytorch-fid's formula, singular covariances included).

use tch::{Device, Kind, Tensor};

use super::error::MetricError;

/// Mean and covariance of a feature set: pytorch-fid's `mu` and `sigma`.
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianStats {
    /// Number of features per sample.
    pub dim: usize,
    /// The mean, `dim` values.
    pub mu: Vec<f64>,
    /// The covariance (divided by n - 1, as `numpy.cov`), row-major `dim x dim`.
    pub sigma: Vec<f64>,
}

/// Mean and covariance accumulated batch by batch, in float64, so that the
/// samples never sit in memory together. Sums are taken about the first
/// batch's mean, which keeps the covariance accurate when the mean is large
/// against the spread.
#[derive(Debug)]
pub struct RunningStats {
    dim: usize,
    count: i64,
    /// The first batch's mean, subtracted from every sample.
    shift: Option<Tensor>,
    /// Sum of the shifted samples, `[dim]`.
    sum: Tensor,
    /// Sum of the shifted samples' outer products, `[dim, dim]`.
    outer: Tensor,
}

impl RunningStats {
    /// Empty statistics of `dim`-dimensional features.
    pub fn new(dim: usize) -> Self {
        let options = (Kind::Double, Device::Cpu);
        Self {
            dim,
            count: 0,
            shift: None,
            sum: Tensor::zeros([dim as i64], options),
            outer: Tensor::zeros([dim as i64, dim as i64], options),
        }
    }

    /// Number of samples added.
    pub fn count(&self) -> i64 {
        self.count
    }

    /// Adds a batch of features `[B, dim]` (any float kind, any device).
    ///
    /// # Errors
    /// [`MetricError::ShapeMismatch`] when the batch is not `[B, dim]`,
    /// [`MetricError::NonFinite`] for a NaN or infinite feature.
    pub fn add(&mut self, features: &Tensor) -> Result<(), MetricError> {
        let size = features.size();
        if size.len() != 2 || size[1] != self.dim as i64 {
            return Err(MetricError::ShapeMismatch {
                a_shape: format!("{size:?}"),
                b_shape: format!("[batch, {}]", self.dim),
                dim: self.dim,
            });
        }
        let x = features.to_device(Device::Cpu).to_kind(Kind::Double);
        if !bool::try_from(x.isfinite().all()).unwrap_or(false) {
            let bad = x.isfinite().logical_not().nonzero();
            let at = Vec::<i64>::try_from(bad.get(0)).unwrap_or_default();
            let (row, col) = (
                at.first().copied().unwrap_or(0),
                at.get(1).copied().unwrap_or(0),
            );
            return Err(MetricError::NonFinite {
                which: "features",
                row: self.count as usize + row as usize,
                col: col as usize,
                value: x.double_value(&[row, col]) as f32,
            });
        }
        if size[0] == 0 {
            return Ok(());
        }
        let shift = self
            .shift
            .get_or_insert_with(|| x.mean_dim(0, false, Kind::Double));
        let centred = &x - &*shift;
        self.sum += centred.sum_dim_intlist(0, false, Kind::Double);
        self.outer += centred.transpose(0, 1).matmul(&centred);
        self.count += size[0];
        Ok(())
    }

    /// The number of features per sample.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The plain sum of the samples, `[dim]` float64 (zeros when empty):
    /// with [`Self::count`], what a mean over several streams adds up.
    pub fn plain_sum(&self) -> Tensor {
        match &self.shift {
            Some(shift) => &self.sum + shift * self.count as f64,
            None => self.sum.zeros_like(),
        }
    }

    /// The moments about `origin` (`[dim]` float64): the sum of `x - origin`
    /// and the sum of its outer products, re-centred from the stream's own
    /// shift s exactly (with d = s - origin, n d and S d^T + d S^T + n d d^T
    /// are added, S the sum about s), so that streams measured apart (the
    /// ranks of a data-parallel run) add up about one origin. Zeros when
    /// empty.
    pub fn moments_about(&self, origin: &Tensor) -> (Tensor, Tensor) {
        let Some(shift) = &self.shift else {
            return (self.sum.zeros_like(), self.outer.zeros_like());
        };
        let n = self.count as f64;
        let d = shift - origin;
        let sum = &self.sum + &d * n;
        let cross = self.sum.outer(&d);
        let outer = &self.outer + &cross + cross.transpose(0, 1) + d.outer(&d) * n;
        (sum, outer)
    }

    /// Statistics of `count` samples from their moments about `origin`
    /// ([`Self::moments_about`], summed over streams).
    pub fn from_moments(count: i64, origin: Tensor, sum: Tensor, outer: Tensor) -> Self {
        let options = (Kind::Double, Device::Cpu);
        Self {
            dim: origin.size()[0] as usize,
            count,
            shift: Some(origin.to_kind(Kind::Double).to_device(Device::Cpu)),
            sum: sum.to_kind(options.0).to_device(options.1),
            outer: outer.to_kind(options.0).to_device(options.1),
        }
    }

    /// The mean and the covariance (divided by n - 1).
    ///
    /// # Errors
    /// [`MetricError::Empty`] with fewer than two samples.
    pub fn finish(&self) -> Result<GaussianStats, MetricError> {
        if self.count < 2 {
            return Err(MetricError::Empty {
                what: "a covariance needs at least two samples",
            });
        }
        let n = self.count as f64;
        let shift = self.shift.as_ref().expect("set by the first batch");
        let centred_mean = &self.sum / n;
        let sigma = (&self.outer - centred_mean.outer(&centred_mean) * n) / (n - 1.0);
        let sigma = (&sigma + sigma.transpose(0, 1)) * 0.5;
        Ok(GaussianStats {
            dim: self.dim,
            mu: to_vec(&(centred_mean + shift)),
            sigma: to_vec(&sigma),
        })
    }
}

fn to_vec(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.flatten(0, -1)).expect("double tensors convert")
}

impl GaussianStats {
    fn check(&self, which: &'static str) -> Result<(), MetricError> {
        if self.dim == 0 || self.mu.len() != self.dim || self.sigma.len() != self.dim * self.dim {
            return Err(MetricError::InvalidParameter {
                name: which,
                reason: format!(
                    "statistics of dimension {} need {} mean values and {} covariance values, found {} and {}",
                    self.dim,
                    self.dim,
                    self.dim * self.dim,
                    self.mu.len(),
                    self.sigma.len()
                ),
            });
        }
        if let Some(i) = self
            .mu
            .iter()
            .chain(&self.sigma)
            .position(|v| !v.is_finite())
        {
            return Err(MetricError::InvalidParameter {
                name: which,
                reason: format!("value {i} of its mean and covariance is not finite"),
            });
        }
        Ok(())
    }

    fn sigma_tensor(&self) -> Tensor {
        let d = self.dim as i64;
        Tensor::from_slice(&self.sigma).view([d, d])
    }
}

/// The squared Fréchet distance between the Gaussians `a` and `b` (what
/// pytorch-fid's `calculate_frechet_distance` returns, the FID when they
/// are Inception statistics).
///
/// # Errors
/// [`MetricError::InvalidParameter`] when either is malformed or not
/// finite, [`MetricError::ShapeMismatch`] when their dimensions differ.
pub fn frechet_distance(a: &GaussianStats, b: &GaussianStats) -> Result<f64, MetricError> {
    a.check("a")?;
    b.check("b")?;
    if a.dim != b.dim {
        return Err(MetricError::ShapeMismatch {
            a_shape: format!("statistics of dimension {}", a.dim),
            b_shape: format!("statistics of dimension {}", b.dim),
            dim: a.dim,
        });
    }
    let mean_term: f64 = a.mu.iter().zip(&b.mu).map(|(x, y)| (x - y) * (x - y)).sum();
    let (s1, s2) = (a.sigma_tensor(), b.sigma_tensor());
    let trace = |t: &Tensor| t.trace().double_value(&[]);
    // S_1^(1/2) from S_1's eigen-decomposition.
    let (values, vectors) = s1.linalg_eigh("L");
    let root =
        (&vectors * values.clamp_min(0.0).sqrt().unsqueeze(0)).matmul(&vectors.transpose(0, 1));
    let product = root.matmul(&s2).matmul(&root);
    let product = (&product + product.transpose(0, 1)) * 0.5;
    let trace_root: f64 = product
        .linalg_eigvalsh("L")
        .clamp_min(0.0)
        .sqrt()
        .sum(Kind::Double)
        .double_value(&[]);
    Ok(mean_term + trace(&s1) + trace(&s2) - 2.0 * trace_root)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats_of(x: &Tensor) -> GaussianStats {
        let mut s = RunningStats::new(x.size()[1] as usize);
        s.add(x).unwrap();
        s.finish().unwrap()
    }

    #[test]
    fn gaussians_with_known_distance() {
        // Diagonal covariances: d^2 = |mu1 - mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2.
        let a = GaussianStats {
            dim: 2,
            mu: vec![0.0, 1.0],
            sigma: vec![4.0, 0.0, 0.0, 1.0],
        };
        let b = GaussianStats {
            dim: 2,
            mu: vec![3.0, 1.0],
            sigma: vec![1.0, 0.0, 0.0, 9.0],
        };
        let expected = 9.0 + (2.0f64 - 1.0).powi(2) + (1.0f64 - 3.0).powi(2);
        assert!((frechet_distance(&a, &b).unwrap() - expected).abs() < 1e-12);
    }

    #[test]
    fn streamed_statistics_equal_the_whole_set_and_a_set_is_at_distance_zero_from_itself() {
        let _rng = envs::testing::seeded(1);
        let x = Tensor::randn([300, 16], (Kind::Double, Device::Cpu)) * 0.1 + 1000.0;
        let whole = stats_of(&x);
        let mut streamed = RunningStats::new(16);
        for chunk in x.split(70, 0) {
            streamed.add(&chunk.to_kind(Kind::Double)).unwrap();
        }
        let streamed = streamed.finish().unwrap();
        let cov = Vec::<f64>::try_from(
            x.transpose(0, 1)
                .cov(1, None::<Tensor>, None::<Tensor>)
                .flatten(0, -1),
        )
        .unwrap();
        for (s, (w, c)) in streamed.sigma.iter().zip(whole.sigma.iter().zip(&cov)) {
            assert!((s - w).abs() < 1e-12 && (s - c).abs() < 1e-9, "{s} {w} {c}");
        }
        assert!(frechet_distance(&streamed, &streamed).unwrap().abs() < 1e-9);
    }

    #[test]
    fn streams_measured_apart_add_up_to_the_whole_set_about_one_origin() {
        let _rng = envs::testing::seeded(2);
        let x = Tensor::randn([301, 16], (Kind::Double, Device::Cpu)) * 0.1 + 1000.0;
        let whole = stats_of(&x);
        // Three streams (as three ranks), one of them empty, each with its
        // own shift, brought to the mean of all of them.
        let mut streams: Vec<RunningStats> = (0..3).map(|_| RunningStats::new(16)).collect();
        streams[0].add(&x.narrow(0, 0, 120)).unwrap();
        streams[0].add(&x.narrow(0, 120, 50)).unwrap();
        streams[2].add(&x.narrow(0, 170, 131)).unwrap();
        let count: i64 = streams.iter().map(RunningStats::count).sum();
        let origin = streams.iter().map(RunningStats::plain_sum).sum::<Tensor>() / count as f64;
        let (mut sum, mut outer) = (origin.zeros_like(), origin.zeros_like().outer(&origin));
        for stream in &streams {
            let (s, o) = stream.moments_about(&origin);
            sum += s;
            outer += o;
        }
        let merged = RunningStats::from_moments(count, origin.shallow_clone(), sum, outer)
            .finish()
            .unwrap();
        for (m, w) in merged.mu.iter().zip(&whole.mu) {
            assert!((m - w).abs() < 1e-10, "{m} {w}");
        }
        for (m, w) in merged.sigma.iter().zip(&whole.sigma) {
            assert!((m - w).abs() < 1e-12, "{m} {w}");
        }
        // Re-centring is what makes the sum right: the streams' own sums
        // about their own shifts do not add up.
        let raw = streams[0].sum.shallow_clone() + &streams[2].sum;
        let shifted = streams[0].moments_about(&origin).0 + streams[2].moments_about(&origin).0;
        assert!(f64::try_from((raw - shifted).abs().max()).unwrap() > 1e-3);
    }

    #[test]
    fn bad_input_is_refused() {
        let mut s = RunningStats::new(3);
        assert!(matches!(s.finish(), Err(MetricError::Empty { .. })));
        let wrong = Tensor::zeros([4, 2], (Kind::Float, Device::Cpu));
        assert!(matches!(
            s.add(&wrong),
            Err(MetricError::ShapeMismatch { .. })
        ));
        let nan = Tensor::from_slice(&[0.0f32, 1.0, f32::NAN, 2.0, 3.0, 4.0]).view([2, 3]);
        match s.add(&nan) {
            Err(MetricError::NonFinite { row, col, .. }) => assert_eq!((row, col), (0, 2)),
            other => panic!("{other:?}"),
        }
        let a = GaussianStats {
            dim: 2,
            mu: vec![0.0; 2],
            sigma: vec![1.0, 0.0, 0.0, 1.0],
        };
        let b = GaussianStats {
            dim: 1,
            mu: vec![0.0],
            sigma: vec![1.0],
        };
        assert!(matches!(
            frechet_distance(&a, &b),
            Err(MetricError::ShapeMismatch { .. })
        ));
        let short = GaussianStats {
            sigma: vec![1.0],
            ..a.clone()
        };
        assert!(matches!(
            frechet_distance(&a, &short),
            Err(MetricError::InvalidParameter { .. })
        ));
    }
}
