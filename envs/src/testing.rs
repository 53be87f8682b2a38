//! Helpers for tests of this workspace's crates.

use std::sync::{Mutex, MutexGuard};

/// Tests run in parallel threads but share libtorch's global random
/// generator: a test that seeds it and draws from it holds this guard, so no
/// other test draws in between. Also sets one intra-op thread, the fastest
/// for the small networks tests use.
pub fn seeded(seed: i64) -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    tch::manual_seed(seed);
    guard
}
