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
//! - NCCL (feature `nccl`, with MPI) for CUDA tensors of ranks on GPUs, from
//!   the libnccl.so.2 of PyTorch's CUDA wheel;
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
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod pack;
mod single;
pub mod watchdog;

use std::cell::RefCell;
use std::ops::Range;
use std::rc::Rc;
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
    /// `value` summed over the ranks (a logged loss, a count).
    fn sum_f64(&self, value: f64) -> Result<f64, CollectiveError> {
        if self.world_size() == 1 {
            return Ok(value);
        }
        let mut tensors = [Tensor::from_slice(&[value])];
        self.all_reduce_sum(&mut tensors)?;
        Ok(tensors[0].double_value(&[0]))
    }
    /// Replaces each tensor (any kind) by `root`'s, bit for bit.
    fn broadcast(&self, tensors: &mut [Tensor], root: usize) -> Result<(), CollectiveError>;
    /// Every rank's `value`, by rank.
    fn all_gather_u64(&self, value: u64) -> Result<Vec<u64>, CollectiveError>;
    /// Waits until every rank got here.
    fn barrier(&self) -> Result<(), CollectiveError>;
    /// [`Collective::barrier`] under the longer deadline of an evaluation
    /// ([`Options::evaluation_timeout`]): where the other ranks wait while
    /// rank 0 alone evaluates, or waits for a dependency that another
    /// process is training.
    fn evaluation_barrier(&self) -> Result<(), CollectiveError> {
        self.barrier()
    }
    /// Seconds this rank has spent in collectives so far (sending, and
    /// waiting for the other ranks), for the logs' communication share.
    fn seconds_communicating(&self) -> f64 {
        0.0
    }
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
    /// The longest the ranks wait for rank 0's evaluation
    /// ([`Collective::evaluation_barrier`]): evaluations (FID of many
    /// samples) may run far longer than a training step.
    pub evaluation_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: Duration::from_secs(900),
            evaluation_timeout: Duration::from_secs(86_400),
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
    #[cfg(feature = "nccl")]
    {
        let mpi = mpi_engine::MpiEngine::init(launch, options)?;
        Ok(Box::new(nccl::NcclEngine::new(mpi)))
    }
    #[cfg(all(feature = "mpi", not(feature = "nccl")))]
    {
        Ok(Box::new(mpi_engine::MpiEngine::init(launch, options)?))
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

thread_local! {
    static CURRENT: RefCell<Option<Rc<dyn Collective>>> = const { RefCell::new(None) };
}

/// Makes `engine` this thread's collectives: the optimisers, data splits
/// and the trainer of this thread then use it (as torch.distributed's
/// default process group). Returns it.
pub fn install(engine: Box<dyn Collective>) -> Rc<dyn Collective> {
    let engine: Rc<dyn Collective> = Rc::from(engine);
    CURRENT.with(|current| *current.borrow_mut() = Some(Rc::clone(&engine)));
    engine
}

/// This thread's collectives: the installed engine, or a single process.
pub fn current() -> Rc<dyn Collective> {
    CURRENT.with(|current| {
        current
            .borrow()
            .as_ref()
            .map_or_else(|| Rc::new(SingleProcess) as Rc<dyn Collective>, Rc::clone)
    })
}

/// The rows `[start, end)` of a global batch of `n` that `rank` of `world`
/// takes: contiguous, in rank order, the first `n % world` ranks one more.
pub fn shard_of(n: usize, rank: usize, world: usize) -> Range<usize> {
    let (base, extra) = (n / world, n % world);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

/// This thread's rows of a global batch of `n` ([`shard_of`] of the
/// current engine's rank).
pub fn shard(n: usize) -> Range<usize> {
    let engine = current();
    shard_of(n, engine.rank(), engine.world_size())
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

    #[test]
    fn shards_cover_the_batch_in_rank_order() {
        for (n, world) in [(10, 1), (10, 3), (128, 2), (5, 8)] {
            let shards: Vec<_> = (0..world).map(|r| shard_of(n, r, world)).collect();
            assert_eq!(shards[0].start, 0);
            assert_eq!(shards[world - 1].end, n);
            for pair in shards.windows(2) {
                assert_eq!(pair[0].end, pair[1].start);
                assert!(pair[0].len() >= pair[1].len() && pair[0].len() - pair[1].len() <= 1);
            }
        }
        assert_eq!(shard_of(10, 1, 3), 4..7);
        assert_eq!(shard(7), 0..7, "no engine installed: one rank takes all");
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
