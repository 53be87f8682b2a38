//! A deadline on every collective, so that a rank whose peer died or
//! stalled stops instead of waiting for ever.
//!
//! MPI's collectives have no timeout, and `mpirun` ends the job only when a
//! rank exits abnormally: a peer that hangs, or one that returned and
//! finalised, would leave the others blocked. A watchdog thread holds the
//! deadline of the collective in progress; past it, the process prints which
//! operation of which rank timed out and leaves with `_exit(75)` (no
//! unwinding: dropping MPI's universe would call `MPI_Finalize`, which waits
//! on the lost peer too). The launcher then ends the other ranks.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Exit code of a rank stopped by the watchdog (EX_TEMPFAIL: try again,
/// `--resume` from the last checkpoint).
pub const TIMEOUT_EXIT_CODE: i32 = 75;

#[derive(Default)]
struct Armed {
    deadline: Option<(Instant, &'static str, Duration)>,
}

/// The watchdog of one rank.
pub struct Watchdog {
    state: Arc<(Mutex<Armed>, Condvar)>,
    timeout: Duration,
}

/// Disarms the watchdog when the collective is done.
pub struct Guard<'a> {
    watchdog: &'a Watchdog,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let (lock, signal) = &*self.watchdog.state;
        lock.lock().unwrap_or_else(|e| e.into_inner()).deadline = None;
        signal.notify_all();
    }
}

impl Watchdog {
    /// Starts the watchdog thread of rank `rank` of `world`, allowing each
    /// collective `timeout`.
    pub fn start(rank: usize, world: usize, timeout: Duration) -> Watchdog {
        let state = Arc::new((Mutex::new(Armed::default()), Condvar::new()));
        let watched = Arc::clone(&state);
        std::thread::Builder::new()
            .name("collective-watchdog".into())
            .spawn(move || watch(&watched, rank, world))
            .expect("starting the collectives' watchdog thread");
        Watchdog { state, timeout }
    }

    /// Arms the deadline for `operation` until the guard drops.
    pub fn arm(&self, operation: &'static str) -> Guard<'_> {
        self.arm_for(operation, self.timeout)
    }

    /// Arms a deadline of `timeout` (instead of the watchdog's) for
    /// `operation` until the guard drops.
    pub fn arm_for(&self, operation: &'static str, timeout: Duration) -> Guard<'_> {
        let (lock, signal) = &*self.state;
        lock.lock().unwrap_or_else(|e| e.into_inner()).deadline =
            Some((Instant::now() + timeout, operation, timeout));
        signal.notify_all();
        Guard { watchdog: self }
    }
}

fn watch(state: &(Mutex<Armed>, Condvar), rank: usize, world: usize) {
    let (lock, signal) = state;
    let mut armed = lock.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        match armed.deadline {
            None => armed = signal.wait(armed).unwrap_or_else(|e| e.into_inner()),
            Some((deadline, operation, timeout)) => {
                let now = Instant::now();
                if now >= deadline {
                    eprintln!(
                        "rank {rank} of {world}: {operation} did not finish within {} s: another rank \
                         died or stalled (see the launcher's message for which); stopping this rank. \
                         The last checkpoint is intact: run again with --resume",
                        timeout.as_secs_f64()
                    );
                    // SAFETY: _exit ends the process at once, without running
                    // destructors that would wait on the lost peer.
                    unsafe { libc::_exit(TIMEOUT_EXIT_CODE) };
                }
                armed = signal
                    .wait_timeout(armed, deadline - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
    }
}
