//! One file per sampler: its settings (what `env.sampler` takes) and their
//! [`SamplerKind`](crate::sampler::SamplerKind): steps, description,
//! checks, the schedule it builds and its listing. The registry line of
//! each is in [`crate::sampler`].

mod analytic_dpm;
mod ddim;
mod ddim_even;
mod ddpm;
mod fastdpm;
mod full;
mod sn_ddpm;
mod solvers;

pub use analytic_dpm::AnalyticDpmSampler;
pub use ddim::DdimSampler;
pub use ddim_even::{even_times, interpolated_alpha_bar, DdimEvenSampler};
pub use ddpm::DdpmSampler;
pub use fastdpm::FastDpmSampler;
pub use full::FullChain;
pub use sn_ddpm::{CovarianceDdpm, CovarianceTarget, NprDdpm, SnDdpm, SnDdpmSampler};
pub use solvers::{DpmSolverPpSampler, DpmSolverSampler, IpndmSampler, UniPcSampler};
