//! Sample-quality metrics of the toy experiments: sliced and exact
//! Wasserstein-2 distances between point clouds.

pub mod error;
pub mod exact;
pub mod sliced;
