//! Errors of the collectives.

use thiserror::Error;

/// A collective could not be set up or carried out.
#[derive(Debug, Error)]
pub enum CollectiveError {
    /// A launcher variable holds something that is not what it should be.
    #[error("the launcher's environment variable {variable}={value:?}: expected {expected}")]
    Environment {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
        /// What it should hold.
        expected: String,
    },
    /// The launcher started several ranks, but this build has no engine to
    /// connect them: running N independent copies would be silently wrong.
    #[error(
        "{launcher} started {world} ranks, but this rl-run was built without MPI: \
         rebuild with `cargo build --release --features mpi` (docs/distributed.md), \
         or run a single process"
    )]
    EngineMissing {
        /// The launcher that set the environment.
        launcher: &'static str,
        /// The world size it announced.
        world: usize,
    },
    /// MPI was initialised already (only one engine per process).
    #[error("MPI was initialised already in this process")]
    AlreadyInitialised,
    /// MPI's view of the world differs from the launcher's environment.
    #[error("MPI says rank {mpi_rank} of {mpi_world}, the launcher's environment says rank {rank} of {world}")]
    WorldMismatch {
        /// Rank by MPI.
        mpi_rank: usize,
        /// World size by MPI.
        mpi_world: usize,
        /// Rank by the environment.
        rank: usize,
        /// World size by the environment.
        world: usize,
    },
    /// A tensor of a kind the operation does not reduce.
    #[error("{operation}: tensor {index} is {kind:?}; all-reduce takes floating-point tensors")]
    Kind {
        /// The operation.
        operation: &'static str,
        /// Position of the tensor in the list.
        index: usize,
        /// Its kind.
        kind: tch::Kind,
    },
    /// A rank was named that is not in the world.
    #[error("{operation}: root rank {root} is not in a world of {world}")]
    Root {
        /// The operation.
        operation: &'static str,
        /// The root given.
        root: usize,
        /// The world size.
        world: usize,
    },
    /// A library opened at run time is missing or lacks a function.
    #[error("{name}: {message}")]
    Library {
        /// The library.
        name: &'static str,
        /// What went wrong.
        message: String,
    },
    /// NCCL or the CUDA runtime reported an error.
    #[error("{operation}: {message}")]
    Nccl {
        /// The call.
        operation: &'static str,
        /// NCCL's or CUDA's message.
        message: String,
    },
    /// libtorch refused an operation on the tensors.
    #[error("{operation}: {source}")]
    Torch {
        /// The operation.
        operation: &'static str,
        /// libtorch's error.
        source: tch::TchError,
    },
}
