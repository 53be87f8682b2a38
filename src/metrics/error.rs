//! Errors reported by the distribution metrics.

/// Why a metric could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum MetricError {
    /// The flat point buffers do not describe `N x dim` and `M x dim` matrices.
    #[error(
        "shape mismatch: a has shape {a_shape} and b has shape {b_shape}; \
         both must be row-major point clouds with {dim} columns"
    )]
    ShapeMismatch {
        /// Shape of `a`, as `rows x dim` (with any leftover values named).
        a_shape: String,
        /// Shape of `b`, as `rows x dim` (with any leftover values named).
        b_shape: String,
        /// The number of columns the caller asked for.
        dim: usize,
    },
    /// A point cloud has no points (or `dim` is zero).
    #[error("empty input: {what}")]
    Empty {
        /// Which input is empty.
        what: &'static str,
    },
    /// A parameter is out of range (for example zero projections).
    #[error("invalid parameter {name}: {reason}")]
    InvalidParameter {
        /// The parameter's name.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A coordinate is NaN or infinite.
    #[error("non-finite value {value} in {which} at row {row}, column {col}")]
    NonFinite {
        /// `"a"` or `"b"`.
        which: &'static str,
        /// Row (point index) of the offending value.
        row: usize,
        /// Column (coordinate index) of the offending value.
        col: usize,
        /// The offending value.
        value: f32,
    },
    /// A statistics file (pytorch-fid's `.npz` of `mu` and `sigma`) could
    /// not be read or written, or does not hold what it should.
    #[error("{path}: {message}")]
    StatsFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong, naming the array and what was expected.
        message: String,
    },
    /// A feature network (FID's Inception or another TorchScript file)
    /// could not be loaded or run, or does not map images to features.
    #[error("{path}: {message}")]
    FeatureNetwork {
        /// The network's file.
        path: std::path::PathBuf,
        /// What went wrong, and what was expected.
        message: String,
    },
    /// Images to measure (a `.npy` array or a folder of image files) could
    /// not be read or are not images.
    #[error("{path}: {message}")]
    Images {
        /// The file or folder.
        path: std::path::PathBuf,
        /// What is wrong, and what was expected.
        message: String,
    },
    /// A JPEG could not be written or read (libjpeg-turbo's message), or
    /// the pixels handed to the encoder do not describe an image.
    #[error("JPEG {action} of {what}: {message}")]
    Jpeg {
        /// `"encoding"` or `"decoding"`.
        action: &'static str,
        /// The image or file: its size, or its index in a batch.
        what: String,
        /// What went wrong, and what was expected.
        message: String,
    },
    /// The optimal transport solver did not return an optimal plan.
    #[error("optimal transport solver failed: {0}")]
    Solver(String),
}

/// Describes a flat buffer of `len` values as a `rows x dim` shape.
fn describe_shape(len: usize, dim: usize) -> String {
    let rows = len / dim;
    let rest = len % dim;
    if rest == 0 {
        format!("{rows} x {dim}")
    } else {
        format!("{rows} x {dim} + {rest} leftover values ({len} values)")
    }
}

/// Checks two row-major point clouds with `dim` columns and returns their
/// row counts `(n, m)`.
///
/// Rejects `dim == 0`, buffers that are not whole rows, empty clouds and
/// non-finite coordinates.
pub(crate) fn check_point_clouds(
    a: &[f32],
    b: &[f32],
    dim: usize,
) -> Result<(usize, usize), MetricError> {
    if dim == 0 {
        return Err(MetricError::Empty {
            what: "dim is 0 (points have no coordinates)",
        });
    }
    if !a.len().is_multiple_of(dim) || !b.len().is_multiple_of(dim) {
        return Err(MetricError::ShapeMismatch {
            a_shape: describe_shape(a.len(), dim),
            b_shape: describe_shape(b.len(), dim),
            dim,
        });
    }
    if a.is_empty() {
        return Err(MetricError::Empty {
            what: "a has no points",
        });
    }
    if b.is_empty() {
        return Err(MetricError::Empty {
            what: "b has no points",
        });
    }
    for (which, data) in [("a", a), ("b", b)] {
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(MetricError::NonFinite {
                which,
                row: i / dim,
                col: i % dim,
                value: data[i],
            });
        }
    }
    Ok((a.len() / dim, b.len() / dim))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_mismatch_names_both_shapes() {
        let err = check_point_clouds(&[0.0; 6], &[0.0; 7], 3).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("2 x 3"), "{msg}");
        assert!(msg.contains("2 x 3 + 1 leftover"), "{msg}");
    }

    #[test]
    fn rejects_empty_and_zero_dim() {
        assert!(matches!(
            check_point_clouds(&[], &[1.0], 1),
            Err(MetricError::Empty { .. })
        ));
        assert!(matches!(
            check_point_clouds(&[1.0], &[], 1),
            Err(MetricError::Empty { .. })
        ));
        assert!(matches!(
            check_point_clouds(&[1.0], &[1.0], 0),
            Err(MetricError::Empty { .. })
        ));
    }

    #[test]
    fn reports_position_of_non_finite_value() {
        let b = [0.0, 1.0, 2.0, f32::NAN];
        match check_point_clouds(&[0.0; 4], &b, 2) {
            Err(MetricError::NonFinite {
                which, row, col, ..
            }) => {
                assert_eq!((which, row, col), ("b", 1, 1));
            }
            other => panic!("expected NonFinite, got {other:?}"),
        }
    }

    #[test]
    fn accepts_unequal_sizes() {
        assert_eq!(check_point_clouds(&[0.0; 6], &[0.0; 9], 3).unwrap(), (2, 3));
    }
}
