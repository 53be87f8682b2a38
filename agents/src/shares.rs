//! A data-parallel rank's share of a batch and of the quantities computed
//! on it (docs/conventions.md section 7, "Data-parallel training").
//!
//! Each rank computes a loss as the mean over the rows it holds and
//! back-propagates it weighted by its share of the batch
//! ([`backward_weighted`]); the optimisers sum the gradients over the
//! ranks before stepping ([`crate::optim::Optimizer::reduce_gradients`]),
//! which gives the gradient of the global mean. Logged statistics are
//! weighted the same way and summed over the ranks
//! ([`crate::UpdateStats::add_weighted`],
//! [`crate::UpdateStats::summed_over_ranks`]). Statistics that decide what
//! the update does (advantage normalisation, PPO's early stop on the KL)
//! are combined over the ranks where they are used, so that every rank
//! takes the same decision. On one process all of it reduces to the plain
//! computation.

use envs::rows::Rows;
use tch::{Kind, Tensor};

use crate::AgentError;

/// This rank's rows of a global batch of `global` (all of them on one
/// process; [`collective::shard`]).
pub fn own_rows(global: i64) -> Rows {
    let range = collective::shard(global as usize);
    Rows::share(range.start as i64, range.len() as i64, global)
}

/// This rank's rows of a global batch of `global` and the weight of a
/// mean over them (their fraction of the batch). A rank whose share is
/// empty (a short last batch) gets row 0 with weight 0: it still runs the
/// network so that its gradients exist (as zeros) like every other rank's.
pub fn own_rows_weighted(global: i64) -> (Rows, f64) {
    let rows = own_rows(global);
    if rows.len == 0 {
        (Rows::share(0, 1, global), 0.0)
    } else {
        (rows, rows.fraction())
    }
}

/// Back-propagates `loss` weighted by `share` (plainly when it is 1).
pub fn backward_weighted(loss: &Tensor, share: f64) {
    if share == 1.0 {
        loss.backward();
    } else {
        (loss * share).backward();
    }
}

/// The optimisation step's backward pass of a loss over rows that are
/// `share` of the batch: [`backward_weighted`], except that a share of 0
/// (a rank holding none of a minibatch, whose loss is of a stand-in row)
/// gives every parameter of `params` a zero gradient without reading the
/// loss, which may not be finite (a stand-in's stale behaviour density).
pub fn backward_share(loss: &Tensor, share: f64, params: &[Tensor]) {
    if share == 0.0 {
        let touched: Vec<Tensor> = params.iter().map(|p| p.sum(p.kind()) * 0.0).collect();
        if !touched.is_empty() {
            Tensor::stack(&touched, 0).sum(Kind::Float).backward();
        }
    } else {
        backward_weighted(loss, share);
    }
}

/// The mean over the ranks of `value`, each rank's weighted by its `share`
/// (the shares sum to 1): the global mean of a quantity each rank averaged
/// over its rows.
pub fn mean_over_ranks(value: f64, share: f64) -> Result<f64, AgentError> {
    let engine = collective::current();
    if engine.world_size() == 1 {
        return Ok(value);
    }
    Ok(engine.sum_f64(if share == 0.0 { 0.0 } else { value * share })?)
}

/// `values` (`[n]`, this rank's rows) standardised to zero mean and unit
/// variance (unbiased, plus 1e-8 on the deviation) over the rows of every
/// rank. A rank holding no rows of the batch (`share` 0) contributes none.
pub fn standardized_over_ranks(values: &Tensor, share: f64) -> Result<Tensor, AgentError> {
    if collective::current().world_size() == 1 {
        return Ok((values - values.mean(Kind::Float)) / (values.std(true) + 1e-8));
    }
    let (mean, std) = moments_over_ranks(values, share)?;
    Ok((values - mean) / (std + 1e-8))
}

/// The mean and unbiased standard deviation of `values` (`[n]`, this
/// rank's rows) over the rows of every rank (one all-reduce of three
/// float64 sums on several ranks); a rank with `share` 0 contributes none.
pub fn moments_over_ranks(values: &Tensor, share: f64) -> Result<(f64, f64), AgentError> {
    let engine = collective::current();
    if engine.world_size() == 1 {
        return Ok((
            values.mean(Kind::Float).double_value(&[]),
            values.std(true).double_value(&[]),
        ));
    }
    let held = if share == 0.0 {
        values.zeros_like()
    } else {
        values.shallow_clone()
    };
    let count = if share == 0.0 { 0 } else { values.size()[0] };
    let v = held.to_kind(Kind::Double);
    let mut moments = [Tensor::stack(
        &[
            Tensor::from(count as f64).to_device(v.device()),
            v.sum(Kind::Double),
            v.square().sum(Kind::Double),
        ],
        0,
    )];
    engine.all_reduce_sum(&mut moments)?;
    let m = Vec::<f64>::try_from(&moments[0].to_device(tch::Device::Cpu)).expect("f64 moments");
    let (n, sum, squares) = (m[0], m[1], m[2]);
    let mean = sum / n;
    let variance = ((squares - n * mean * mean) / (n - 1.0).max(1.0)).max(0.0);
    Ok((mean, variance.sqrt()))
}
