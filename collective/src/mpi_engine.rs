//! MPI ranks through rsmpi over the system's MPI (OpenMPI on Debian).
//!
//! Tensors are packed into one buffer per precision and summed with one
//! `MPI_Allreduce` (rsmpi has no `MPI_IN_PLACE`, so into a second buffer);
//! broadcasts copy raw bytes. Only the thread that created the engine calls
//! MPI (`MPI_THREAD_FUNNELED`: libtorch's own threads never do). Every
//! collective runs under the [`Watchdog`]; a panic on a rank of a world of
//! two or more leaves with `_exit` so that `mpirun` stops the job instead of
//! the other ranks waiting in their next collective.

use std::cell::Cell;
use std::time::{Duration, Instant};

use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use tch::Tensor;

use crate::launch::Launch;
use crate::pack::{pack_bytes, pack_floats, unpack_bytes, unpack_floats};
use crate::watchdog::Watchdog;
use crate::{Collective, CollectiveError, Options};

/// Exit code of a rank that panicked (Rust's own for a panic).
pub const PANIC_EXIT_CODE: i32 = 101;

/// An MPI world.
pub struct MpiEngine {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    local_rank: usize,
    watchdog: Watchdog,
    evaluation_timeout: Duration,
    communicating: Cell<f64>,
    // Dropped last: finalises MPI on the way out of a successful run.
    _universe: Universe,
}

impl MpiEngine {
    /// Initialises MPI and checks it against the launcher's `launch`; every
    /// collective then gets `options.timeout` (the evaluation barrier
    /// `options.evaluation_timeout`).
    pub fn init(launch: &Launch, options: &Options) -> Result<MpiEngine, CollectiveError> {
        let (universe, _threading) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .ok_or(CollectiveError::AlreadyInitialised)?;
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        if launch.world > 1 && (rank != launch.rank || size != launch.world) {
            return Err(CollectiveError::WorldMismatch {
                mpi_rank: rank,
                mpi_world: size,
                rank: launch.rank,
                world: launch.world,
            });
        }
        if size > 1 {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                previous(info);
                eprintln!("rank {rank} of {size} panicked: stopping the job");
                // SAFETY: ends the process without unwinding into MPI_Finalize,
                // which would wait for peers blocked in a collective.
                unsafe { libc::_exit(PANIC_EXIT_CODE) };
            }));
        }
        Ok(MpiEngine {
            world,
            rank,
            size,
            local_rank: launch.local_rank,
            watchdog: Watchdog::start(rank, size, options.timeout),
            evaluation_timeout: options.evaluation_timeout,
            communicating: Cell::new(0.0),
            _universe: universe,
        })
    }
}

impl MpiEngine {
    /// The watchdog the collectives run under (for engines built on this one).
    pub fn watchdog(&self) -> &Watchdog {
        &self.watchdog
    }

    /// Runs `call` under the watchdog's deadline for `operation`, adding its
    /// time to the seconds spent communicating.
    pub fn timed<T>(&self, operation: &'static str, call: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let result = {
            let _armed = self.watchdog.arm(operation);
            call()
        };
        self.add_seconds(started.elapsed().as_secs_f64());
        result
    }

    /// Counts `seconds` more spent communicating (engines built on this one).
    pub fn add_seconds(&self, seconds: f64) {
        self.communicating.set(self.communicating.get() + seconds);
    }
}

impl Collective for MpiEngine {
    fn engine(&self) -> &'static str {
        "MPI"
    }
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.size
    }
    fn local_rank(&self) -> usize {
        self.local_rank
    }

    fn all_reduce_sum(&self, tensors: &mut [Tensor]) -> Result<(), CollectiveError> {
        const OPERATION: &str = "all_reduce_sum";
        self.timed(OPERATION, || {
            let packed = pack_floats(OPERATION, tensors)?;
            let mut summed = crate::pack::Packed {
                single: vec![0.0; packed.single.len()],
                double: vec![0.0; packed.double.len()],
            };
            if !packed.single.is_empty() {
                self.world.all_reduce_into(
                    &packed.single[..],
                    &mut summed.single[..],
                    SystemOperation::sum(),
                );
            }
            if !packed.double.is_empty() {
                self.world.all_reduce_into(
                    &packed.double[..],
                    &mut summed.double[..],
                    SystemOperation::sum(),
                );
            }
            unpack_floats(OPERATION, &summed, tensors, 1.0)
        })
    }

    fn broadcast(&self, tensors: &mut [Tensor], root: usize) -> Result<(), CollectiveError> {
        const OPERATION: &str = "broadcast";
        crate::check_root(OPERATION, root, self.size)?;
        self.timed(OPERATION, || {
            let mut bytes = pack_bytes(OPERATION, tensors)?;
            self.world
                .process_at_rank(root as i32)
                .broadcast_into(&mut bytes[..]);
            unpack_bytes(OPERATION, &bytes, tensors)
        })
    }

    fn all_gather_u64(&self, value: u64) -> Result<Vec<u64>, CollectiveError> {
        let mut values = vec![0u64; self.size];
        self.timed("all_gather", || {
            self.world.all_gather_into(&value, &mut values[..])
        });
        Ok(values)
    }

    fn barrier(&self) -> Result<(), CollectiveError> {
        self.timed("barrier", || self.world.barrier());
        Ok(())
    }

    fn evaluation_barrier(&self) -> Result<(), CollectiveError> {
        let started = Instant::now();
        {
            let _armed = self
                .watchdog
                .arm_for("waiting for rank 0's evaluation", self.evaluation_timeout);
            self.world.barrier();
        }
        self.add_seconds(started.elapsed().as_secs_f64());
        Ok(())
    }

    fn seconds_communicating(&self) -> f64 {
        self.communicating.get()
    }

    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}
