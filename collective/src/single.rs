//! The engine of a run in one process: every collective is the identity.

use tch::Tensor;

use crate::{Collective, CollectiveError};

/// A world of one rank.
#[derive(Debug, Default, Clone, Copy)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn engine(&self) -> &'static str {
        "single process"
    }
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn local_rank(&self) -> usize {
        0
    }
    fn all_reduce_sum(&self, _tensors: &mut [Tensor]) -> Result<(), CollectiveError> {
        Ok(())
    }
    fn broadcast(&self, _tensors: &mut [Tensor], root: usize) -> Result<(), CollectiveError> {
        crate::check_root("broadcast", root, 1)
    }
    fn all_gather_u64(&self, value: u64) -> Result<Vec<u64>, CollectiveError> {
        Ok(vec![value])
    }
    fn barrier(&self) -> Result<(), CollectiveError> {
        Ok(())
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}
