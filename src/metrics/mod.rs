//! Sample-quality metrics: sliced and exact Wasserstein-2 distances between
//! point clouds; FID (the Fréchet distance between feature statistics,
//! pytorch-fid's `.npz` files) and KID; the feature networks they use (FID's
//! Inception through TorchScript, a classifier trained on labelled digits)
//! and the images they read (`.npy` arrays, image folders).

pub mod classifier;
pub mod error;
pub mod exact;
pub mod features;
pub mod fid_stats;
pub mod frechet;
pub mod image_source;
pub mod jpeg;
pub mod kid;
pub mod sliced;
