//! Observation and action spaces, as in gymnasium.

/// The set an observation or action lives in.
#[derive(Debug, Clone, PartialEq)]
pub enum Space {
    /// Real-valued tensors of the given per-element shape (the batch dimension
    /// excluded), each coordinate in `[low, high]` (possibly infinite).
    Box {
        /// Shape of one element, without the batch dimension.
        shape: Vec<i64>,
        /// Lower bound of every coordinate.
        low: f64,
        /// Upper bound of every coordinate.
        high: f64,
    },
    /// The integers `0..n`.
    Discrete(i64),
    /// A pair of spaces, e.g. a sample and its step index.
    Tuple(Vec<Space>),
}

impl Space {
    /// An unbounded real box of the given element shape.
    pub fn real(shape: &[i64]) -> Self {
        Space::Box {
            shape: shape.to_vec(),
            low: f64::NEG_INFINITY,
            high: f64::INFINITY,
        }
    }

    /// Whether `x`, a batch `[B, shape...]`, has the shape of this space (for a `Box`).
    pub fn contains_batch_shape(&self, x: &tch::Tensor) -> bool {
        match self {
            Space::Box { shape, .. } => {
                let size = x.size();
                size.len() == shape.len() + 1 && size[1..] == shape[..]
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_spaces_check_the_element_shape_of_a_batch() {
        let space = Space::real(&[2]);
        let ok = tch::Tensor::zeros([5, 2], (tch::Kind::Float, tch::Device::Cpu));
        let wrong = tch::Tensor::zeros([5, 3], (tch::Kind::Float, tch::Device::Cpu));
        assert!(space.contains_batch_shape(&ok));
        assert!(!space.contains_batch_shape(&wrong));
        assert!(!Space::Discrete(3).contains_batch_shape(&ok));
    }
}
