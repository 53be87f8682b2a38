//! Evaluation: samples of a generator against the training set, and the
//! comparison table the runs end with.

use std::fmt;

use agents::policy::DiffusionPolicy;
use tch::{Kind, Tensor};

use crate::config::EvalConfig;
use crate::error::RunError;
use crate::metrics::exact::exact_wasserstein2;
use crate::metrics::sliced::sliced_wasserstein2;

/// Seed (xor the run's seed) of the sampling noise of evaluations, so that
/// every evaluation of a run draws the same x_T and step noise.
pub const EVAL_SEED: i64 = 0xE7A1;

/// Sample quality of one point cloud against the training set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quality {
    /// Sliced W2, mean over the repeats.
    pub sliced_w2: f64,
    /// Standard deviation of the sliced W2 over the repeats (projection noise).
    pub sliced_w2_std: f64,
    /// Exact W2 on `exact_n` points per side, if computed.
    pub exact_w2: Option<f64>,
}

/// A tensor's values as a flat `Vec<f32>` (on the CPU).
pub fn to_vec(x: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(
        x.to_device(tch::Device::Cpu)
            .to_kind(Kind::Float)
            .flatten(0, -1),
    )
    .expect("float tensors convert")
}

/// `n` final samples of `policy`, drawn from torch seed `seed`.
pub fn sample(policy: &DiffusionPolicy, n: usize, dim: i64, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    policy.sample(n as i64, dim)
}

/// Measures `samples` against `data` (both `[n, dim]`).
pub fn quality(
    samples: &Tensor,
    data: &Tensor,
    eval: &EvalConfig,
    repeats: usize,
    exact: bool,
) -> Result<Quality, RunError> {
    let dim = data.size()[1] as usize;
    let n = eval
        .n
        .min(samples.size()[0] as usize)
        .min(data.size()[0] as usize) as i64;
    let a = to_vec(&samples.narrow(0, 0, n));
    let b = to_vec(&data.narrow(0, 0, n));
    if let Some(bad) = a.iter().find(|v| !v.is_finite()) {
        return Err(RunError::Diverged(format!(
            "the generator produced a non-finite sample ({bad})"
        )));
    }
    let values: Vec<f64> = (0..repeats.max(1))
        .map(|r| sliced_wasserstein2(&a, &b, dim, eval.projections, 0x5EED + r as u64))
        .collect::<Result<_, _>>()?;
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let var =
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (values.len().max(2) - 1) as f64;
    let exact_w2 = if exact {
        let k = eval.exact_n.min(n as usize) * dim;
        Some(exact_wasserstein2(&a[..k], &b[..k], dim)?)
    } else {
        None
    };
    Ok(Quality {
        sliced_w2: mean,
        sliced_w2_std: var.sqrt(),
        exact_w2,
    })
}

/// One line of the comparison table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// What was measured.
    pub label: String,
    /// Sampling steps, if a sampler.
    pub steps: Option<usize>,
    /// Its quality.
    pub quality: Quality,
}

/// The comparison table a run ends with (the paper's Table 1 shape).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    /// Title line.
    pub title: String,
    /// The rows, in order.
    pub rows: Vec<Row>,
}

impl Table {
    /// The table as markdown (values x 1e-2, as in the paper).
    pub fn to_markdown(&self) -> String {
        let mut out = format!("{}\n\n", self.title);
        out.push_str("| method | T | sliced W2 (x1e-2) | exact W2 (x1e-2) |\n|---|---|---|---|\n");
        for row in &self.rows {
            let steps = row.steps.map_or("-".to_string(), |t| t.to_string());
            let exact = row
                .quality
                .exact_w2
                .map_or("-".to_string(), |e| format!("{:.2}", e * 100.0));
            out.push_str(&format!(
                "| {} | {} | {:.2} ± {:.2} | {} |\n",
                row.label,
                steps,
                row.quality.sliced_w2 * 100.0,
                row.quality.sliced_w2_std * 100.0,
                exact
            ));
        }
        out
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_markdown())
    }
}
