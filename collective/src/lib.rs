//! Collective communication for data-parallel training.
//!
//! One trait, [`Collective`], is all a trainer sees: rank, world size, local
//! rank, all-reduce of a list of tensors, broadcast, all-gather of a number,
//! barrier and abort. [`init`] reads the launcher's environment
//! ([`Launch`]: `mpirun`, `mpiexec`, `srun`) and picks the engine:
//!
//! - [`SingleProcess`] when no launcher started several ranks (every
//!   collective is the identity);
//! - MPI (feature `mpi`: rsmpi over the system's OpenMPI) for ranks on CPUs;
//! - a build without an engine refuses a launch of several ranks, rather
//!   than running N independent copies of one experiment.
//!
//! The semantics the trainer builds on them (the global batch split across
//! ranks, gradients summed after each rank scaled its loss by its share) are
//! in docs/conventions.md, "Data-parallel training".

mod error;
pub mod launch;
#[cfg(feature = "mpi")]
pub mod mpi_engine;
pub mod pack;
mod single;
pub mod watchdog;

use std::time::Duration;

use tch::Tensor;

pub use error::CollectiveError;
pub use launch::{Launch, Launcher};
pub use single::SingleProcess;

/// The collectives of one rank. Every rank calls the same collectives in the
/// same order with tensors of the same shapes and kinds; the engine is used
/// from the thread that created it.
pub trait Collective {
    /// The engine's name for messages and logs.
    fn engine(&self) -> &'static str;
    /// This rank, 0-based.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn world_size(&self) -> usize;
    /// The rank among those on this node (the GPU it takes).
    fn local_rank(&self) -> usize;
    /// Replaces each tensor (floating point, any device) by its sum over
    /// the ranks, in place.
    fn all_reduce_sum(&self, tensors: &mut [Tensor]) -> Result<(), CollectiveError>;
    /// Replaces each tensor by its mean over the ranks, in place.
    fn all_reduce_mean(&self, tensors: &mut [Tensor]) -> Result<(), CollectiveError> {
        self.all_reduce_sum(tensors)?;
        let world = self.world_size();
        if world > 1 {
            let _guard = tch::no_grad_guard();
            for tensor in tensors.iter_mut() {
                let _ = tensor.g_div_scalar_(world as f64);
            }
        }
        Ok(())
    }
    /// Replaces each tensor (any kind) by `root`'s, bit for bit.
    fn broadcast(&self, tensors: &mut [Tensor], root: usize) -> Result<(), CollectiveError>;
    /// Every rank's `value`, by rank.
    fn all_gather_u64(&self, value: u64) -> Result<Vec<u64>, CollectiveError>;
    /// Waits until every rank got here.
    fn barrier(&self) -> Result<(), CollectiveError>;
    /// Ends the whole job with `code` (on an error that one rank found and
    /// the others cannot know of).
    fn abort(&self, code: i32) -> !;
}

/// How [`init`] sets an engine up.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The longest any one collective may wait for the other ranks before
    /// this rank stops (see [`watchdog`]).
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: Duration::from_secs(600),
        }
    }
}

/// The engine for this process, from the launcher's environment.
pub fn init(options: &Options) -> Result<Box<dyn Collective>, CollectiveError> {
    init_for(&Launch::from_env()?, options)
}

/// The engine for `launch`.
pub fn init_for(
    launch: &Launch,
    options: &Options,
) -> Result<Box<dyn Collective>, CollectiveError> {
    if launch.world == 1 {
        return Ok(Box::new(SingleProcess));
    }
    #[cfg(feature = "mpi")]
    {
        Ok(Box::new(mpi_engine::MpiEngine::init(
            launch,
            options.timeout,
        )?))
    }
    #[cfg(not(feature = "mpi"))]
    {
        let _ = options;
        Err(CollectiveError::EngineMissing {
            launcher: launch.launcher.name(),
            world: launch.world,
        })
    }
}

pub(crate) fn check_root(
    operation: &'static str,
    root: usize,
    world: usize,
) -> Result<(), CollectiveError> {
    if root < world {
        Ok(())
    } else {
        Err(CollectiveError::Root {
            operation,
            root,
            world,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rank_is_the_identity() {
        let engine = init_for(&Launch::SINGLE, &Options::default()).unwrap();
        let mut tensors = vec![Tensor::from_slice(&[1.0f32, 2.0])];
        engine.all_reduce_mean(&mut tensors).unwrap();
        engine.broadcast(&mut tensors, 0).unwrap();
        assert_eq!(Vec::<f32>::try_from(&tensors[0]).unwrap(), vec![1.0, 2.0]);
        assert_eq!(engine.all_gather_u64(7).unwrap(), vec![7]);
        let err = engine.broadcast(&mut tensors, 1).unwrap_err().to_string();
        assert!(err.contains("root rank 1 is not in a world of 1"), "{err}");
    }

    #[cfg(not(feature = "mpi"))]
    #[test]
    fn several_ranks_without_an_engine_are_refused() {
        let launch = Launch {
            launcher: Launcher::OpenMpi,
            rank: 0,
            world: 2,
            local_rank: 0,
        };
        let err = init_for(&launch, &Options::default())
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("mpirun (OpenMPI) started 2 ranks") && err.contains("--features mpi"),
            "{err}"
        );
    }
}
