//! Sample-quality metrics: sliced and exact Wasserstein-2 distances between
//! point clouds, and the Fréchet distance between feature statistics (FID).

pub mod classifier;
pub mod error;
pub mod exact;
pub mod features;
pub mod fid_stats;
pub mod frechet;
pub mod image_source;
pub mod kid;
pub mod sliced;
