//! Evaluation: samples of a generator against the training set, and the
//! comparison table the runs end with.

use std::fmt;

use agents::policy::DiffusionPolicy;
use tch::{Kind, Tensor};

use super::memory;
use crate::config::EvalConfig;
use crate::error::RunError;
use crate::metrics::exact::exact_wasserstein2;
use crate::metrics::sliced::sliced_wasserstein2;

/// Seed (xor the run's seed) of the sampling noise of evaluations, so that
/// every evaluation of a run draws the same x_T and step noise.
pub const EVAL_SEED: i64 = 0xE7A1;

/// Sample quality against the training set, over one or more independent
/// sample sets: mean and spread (sample standard deviation) of each metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quality {
    /// Sliced W2, mean over the sets.
    pub sliced_w2: f64,
    /// Standard deviation of the sliced W2 over the sets (0 for one set).
    pub sliced_w2_std: f64,
    /// Exact W2 on `exact_n` points per side, mean over the sets, if computed.
    pub exact_w2: Option<f64>,
    /// Standard deviation of the exact W2 over the sets.
    pub exact_w2_std: Option<f64>,
    /// Number of independent sample sets measured.
    pub sets: usize,
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

/// `n` final samples of `policy` of shape `shape`, drawn from torch seed
/// `seed`, `chunk` chains at a time (on the CPU, so that the samples of a
/// large evaluation never sit on the device at once). A chunk that does not
/// fit in memory is [`RunError::OutOfMemory`] naming `chunk_setting`.
///
/// On several data-parallel ranks every rank calls it: each samples its
/// rows of every chunk (drawing the whole chunk's noise,
/// [`DiffusionPolicy::sample_rows`]) and every rank gets all the samples,
/// the same as one process's; when the sampler's steps draw noise of their
/// own (SN-DDPM), every rank samples everything instead.
pub fn sample(
    policy: &DiffusionPolicy,
    n: usize,
    shape: &[i64],
    seed: i64,
    chunk: usize,
    chunk_setting: &'static str,
) -> Result<Tensor, RunError> {
    sample_chunks(policy, n, shape, seed, chunk, chunk_setting, Keep::All)
}

/// [`sample`], each rank keeping only its rows of every chunk
/// ([`agents::shares::own_rows`]): the ranks together hold each of the `n`
/// samples once, with no exchange of images (one process gets all of them,
/// as from [`sample`]). For measures that add up over samples, such as the
/// FID's feature statistics.
pub fn sample_own_rows(
    policy: &DiffusionPolicy,
    n: usize,
    shape: &[i64],
    seed: i64,
    chunk: usize,
    chunk_setting: &'static str,
) -> Result<Tensor, RunError> {
    sample_chunks(policy, n, shape, seed, chunk, chunk_setting, Keep::OwnRows)
}

/// Which samples of an evaluation a rank gets back.
#[derive(Clone, Copy)]
enum Keep {
    /// Every sample, on every rank.
    All,
    /// The rank's rows of every chunk.
    OwnRows,
}

fn sample_chunks(
    policy: &DiffusionPolicy,
    n: usize,
    shape: &[i64],
    seed: i64,
    chunk: usize,
    chunk_setting: &'static str,
    keep: Keep,
) -> Result<Tensor, RunError> {
    tch::manual_seed(seed);
    let chunk = chunk.max(1);
    let engine = collective::current();
    let split = engine.world_size() > 1 && policy.samples_split_exactly();
    let cpu = (tch::Kind::Float, tch::Device::Cpu);
    let parts = (0..n)
        .step_by(chunk)
        .map(|start| {
            let len = chunk.min(n - start) as i64;
            let rows = agents::shares::own_rows(len);
            memory::guard("a sampling chunk", chunk_setting, chunk, || {
                if !split {
                    let all = policy.sample(len, shape).to_device(tch::Device::Cpu);
                    return Ok(match keep {
                        Keep::All => all,
                        Keep::OwnRows => all.narrow(0, rows.start, rows.len),
                    });
                }
                // A rank with no rows of this chunk skips its noise: the
                // chunks after it are no longer, so it has none of theirs.
                let mine = if rows.len > 0 {
                    policy.sample_rows(rows, shape).to_device(tch::Device::Cpu)
                } else {
                    Tensor::zeros([&[0], shape].concat().as_slice(), cpu)
                };
                if let Keep::OwnRows = keep {
                    return Ok(mine);
                }
                // The rows meet in a sum over the ranks of zero-filled
                // chunks (exact: each element is one rank's value plus zeros).
                let mut whole = [Tensor::zeros([&[len], shape].concat().as_slice(), cpu)];
                if rows.len > 0 {
                    whole[0].narrow(0, rows.start, rows.len).copy_(&mine);
                }
                engine.all_reduce_sum(&mut whole)?;
                let [whole] = whole;
                Ok(whole)
            })
        })
        .collect::<Result<Vec<Tensor>, RunError>>()?;
    Ok(if parts.len() == 1 {
        parts.into_iter().next().expect("one chunk")
    } else {
        Tensor::cat(&parts, 0)
    })
}

/// Measures `sets` independent sample sets, `draw(i)` giving the i-th, each
/// against the first `eval.n` points of `data` (the i-th set with the i-th set
/// of sliced directions). Sampling noise and projection noise both show in the spread.
pub fn quality(
    sets: usize,
    draw: impl FnMut(usize) -> Result<Tensor, RunError>,
    data: &Tensor,
    eval: &EvalConfig,
    exact: bool,
) -> Result<Quality, RunError> {
    let [q] = quality_against(sets, draw, [data], eval, exact)?;
    Ok(q)
}

/// [`quality`] against several reference sets at once (the training set and
/// a held-out set, say): every sample set is drawn once and measured against
/// each reference with the same sliced directions.
pub fn quality_against<const R: usize>(
    sets: usize,
    mut draw: impl FnMut(usize) -> Result<Tensor, RunError>,
    references: [&Tensor; R],
    eval: &EvalConfig,
    exact: bool,
) -> Result<[Quality; R], RunError> {
    let mut sliced = vec![Vec::new(); R];
    let mut exacts = vec![Vec::new(); R];
    for set in 0..sets.max(1) {
        // Samples of any shape are compared as flat vectors.
        let samples = draw(set)?.flatten(1, -1);
        let dim = samples.size()[1] as usize;
        for (r, data) in references.iter().enumerate() {
            let n = eval
                .n
                .min(samples.size()[0] as usize)
                .min(data.size()[0] as usize) as i64;
            let a = to_vec(&samples.narrow(0, 0, n));
            let b = to_vec(&data.narrow(0, 0, n).flatten(1, -1));
            if let Some(bad) = a.iter().find(|v| !v.is_finite()) {
                return Err(RunError::Diverged(format!(
                    "the generator produced a non-finite sample ({bad})"
                )));
            }
            sliced[r].push(sliced_wasserstein2(
                &a,
                &b,
                dim,
                eval.projections,
                PROJECTION_SEED + set as u64,
            )?);
            if exact {
                let k = eval.exact_n.min(n as usize) * dim;
                exacts[r].push(exact_wasserstein2(&a[..k], &b[..k], dim)?);
            }
        }
    }
    Ok(std::array::from_fn(|r| {
        Quality::over(&sliced[r], exact.then_some(exacts[r].as_slice()))
    }))
}

/// [`quality_against`] the training data and, where the data set has one,
/// the held-out data: the training-set quality and the held-out one.
pub fn quality_against_both(
    sets: usize,
    draw: impl FnMut(usize) -> Result<Tensor, RunError>,
    data: &Tensor,
    held_out: Option<&Tensor>,
    eval: &EvalConfig,
    exact: bool,
) -> Result<(Quality, Option<Quality>), RunError> {
    Ok(match held_out {
        Some(held_out) => {
            let [train, held] = quality_against(sets, draw, [data, held_out], eval, exact)?;
            (train, Some(held))
        }
        None => {
            let [train] = quality_against(sets, draw, [data], eval, exact)?;
            (train, None)
        }
    })
}

/// The quality of `policy` by `exp`'s evaluation settings: `eval.repeats`
/// sample sets of `eval.n` samples (seeds `seed`, `seed + 1`, ...), each
/// against the training data and, where there is one, the held-out data.
pub fn policy_quality(
    exp: &crate::config::Experiment,
    policy: &DiffusionPolicy,
    seed: i64,
    data: &Tensor,
    held_out: Option<&Tensor>,
) -> Result<(Quality, Option<Quality>), RunError> {
    let shape = exp.data.set.element_shape();
    let draw = |set: usize| {
        sample(
            policy,
            exp.eval.n,
            &shape,
            seed + set as i64,
            exp.eval.chunk,
            "eval.chunk",
        )
    };
    quality_against_both(exp.eval.repeats, draw, data, held_out, &exp.eval, true)
}

impl Quality {
    /// Mean and spread of independent measurements (sliced, and exact if any).
    pub fn over(sliced: &[f64], exact: Option<&[f64]>) -> Self {
        let (sliced_w2, sliced_w2_std) = mean_std(sliced);
        let (exact_w2, exact_w2_std) = match exact {
            Some(e) => {
                let (m, s) = mean_std(e);
                (Some(m), Some(s))
            }
            None => (None, None),
        };
        Quality {
            sliced_w2,
            sliced_w2_std,
            exact_w2,
            exact_w2_std,
            sets: sliced.len(),
        }
    }
}

const PROJECTION_SEED: u64 = 0x5EED;

/// Mean and sample standard deviation (0 for fewer than two values).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (values.len() - 1) as f64;
    (mean, var.sqrt())
}

/// One line of the comparison table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// What was measured.
    pub label: String,
    /// Sampling steps, if a sampler.
    pub steps: Option<usize>,
    /// Its quality against the training set.
    pub quality: Quality,
    /// Its quality against a held-out sample of the data distribution, if measured.
    pub held_out: Option<Quality>,
}

/// The comparison table a run ends with (the paper's Table 1 shape).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    /// Title line.
    pub title: String,
    /// What the spread is taken over (printed under the title).
    pub note: String,
    /// The rows, in order.
    pub rows: Vec<Row>,
}

impl Table {
    /// The table as markdown (values x 1e-2, as in the paper). A held-out
    /// pair of columns appears when any row was measured against held-out data.
    pub fn to_markdown(&self) -> String {
        let held_out = self.rows.iter().any(|r| r.held_out.is_some());
        let mut out = format!("{}\n\n{}\n\n", self.title, self.note);
        if held_out {
            out.push_str(
                "| method | T | sliced W2, training set (x1e-2) | exact W2, training set (x1e-2) \
                 | sliced W2, held-out set (x1e-2) | exact W2, held-out set (x1e-2) |\n\
                 |---|---|---|---|---|---|\n",
            );
        } else {
            out.push_str(
                "| method | T | sliced W2 (x1e-2) | exact W2 (x1e-2) |\n|---|---|---|---|\n",
            );
        }
        for row in &self.rows {
            let steps = row.steps.map_or("-".to_string(), |t| t.to_string());
            out.push_str(&format!("| {} | {} | ", row.label, steps));
            out.push_str(&metric_cells(Some(&row.quality)));
            if held_out {
                out.push_str(" | ");
                out.push_str(&metric_cells(row.held_out.as_ref()));
            }
            out.push_str(" |\n");
        }
        out
    }
}

/// "sliced | exact" cells (x 1e-2, mean ± spread), "-" where not measured.
fn metric_cells(q: Option<&Quality>) -> String {
    let cell = |m: Option<f64>, s: Option<f64>| match (m, s) {
        (Some(m), Some(s)) => format!("{:.2} ± {:.2}", m * 100.0, s * 100.0),
        _ => "-".to_string(),
    };
    match q {
        Some(q) => format!(
            "{} | {}",
            cell(Some(q.sliced_w2), Some(q.sliced_w2_std)),
            cell(q.exact_w2, q.exact_w2_std)
        ),
        None => "- | -".to_string(),
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_markdown())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envs::datasets::ToyDataset;

    fn eval() -> EvalConfig {
        EvalConfig {
            n: 2000,
            exact_n: 300,
            projections: 50,
            repeats: 2,
            ..EvalConfig::default()
        }
    }

    #[test]
    fn each_reference_gets_its_own_measurement() {
        let train = ToyDataset::SwissRoll.generate(2000, 0).unwrap();
        let held_out = ToyDataset::SwissRoll.generate(2000, 7).unwrap();
        // A sampler that returns the training points themselves: it fits the
        // training set perfectly and the held-out set only as well as any
        // fresh sample does.
        let draw = |_| Ok(train.shallow_clone());
        let [t, h] = quality_against(2, draw, [&train, &held_out], &eval(), true).unwrap();
        assert_eq!((t.sliced_w2, t.exact_w2), (0.0, Some(0.0)));
        assert!(h.sliced_w2 > 1e-3 && h.exact_w2.unwrap() > 1e-2, "{h:?}");
        assert_eq!((t.sets, h.sets), (2, 2));
        // One reference alone measures the same as in a pair.
        let [alone] =
            quality_against(2, |_| Ok(train.shallow_clone()), [&held_out], &eval(), true).unwrap();
        assert_eq!(alone, h);
    }

    #[test]
    fn the_held_out_columns_appear_only_when_measured() {
        let q = Quality::over(&[0.01, 0.03], Some(&[0.02, 0.04]));
        let mut table = Table {
            title: "t".into(),
            note: "n".into(),
            rows: vec![Row {
                label: "a".into(),
                steps: Some(10),
                quality: q,
                held_out: None,
            }],
        };
        let md = table.to_markdown();
        assert!(
            md.contains("| a | 10 | 2.00 ± 1.41 | 3.00 ± 1.41 |\n"),
            "{md}"
        );
        assert!(!md.contains("held-out"), "{md}");
        table.rows[0].held_out = Some(Quality::over(&[0.05], Some(&[0.06])));
        let md = table.to_markdown();
        assert!(
            md.contains("| a | 10 | 2.00 ± 1.41 | 3.00 ± 1.41 | 5.00 ± 0.00 | 6.00 ± 0.00 |\n"),
            "{md}"
        );
        assert!(md.contains("held-out set"), "{md}");
    }
}
