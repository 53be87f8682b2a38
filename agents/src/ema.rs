//! An exponential moving average of a network's weights, the usual companion
//! of DDPM training (Ho et al. 2020 sample from an average with decay
//! 0.9999): after every optimisation step, shadow <- decay * shadow +
//! (1 - decay) * weights. It damps the step-to-step swing of a sampler whose
//! per-step parameters each see only a small share of the updates.

use std::collections::BTreeMap;

use tch::nn::VarStore;
use tch::Tensor;

use crate::AgentError;

/// The moving average of the variables of one [`VarStore`], kept in another
/// (the shadow) of the same layout.
pub struct WeightAverage {
    decay: f64,
    /// (shadow variable, trained variable), in name order.
    pairs: Vec<(Tensor, Tensor)>,
}

impl WeightAverage {
    /// Pairs the variables of `shadow` with those of `trained` by name (the
    /// two must have the same names and shapes). The shadow keeps its
    /// current values: copy the trained weights into it first to start the
    /// average at them, or load a saved average to resume.
    pub fn new(decay: f64, trained: &VarStore, shadow: &VarStore) -> Result<Self, AgentError> {
        if !(decay > 0.0 && decay < 1.0) {
            return Err(AgentError::State(format!(
                "weight-average decay must lie in (0, 1), got {decay}"
            )));
        }
        let trained: BTreeMap<String, Tensor> = trained.variables().into_iter().collect();
        let shadow: BTreeMap<String, Tensor> = shadow.variables().into_iter().collect();
        if trained.len() != shadow.len() {
            return Err(AgentError::State(format!(
                "weight average: {} shadow variables for {} trained ones",
                shadow.len(),
                trained.len()
            )));
        }
        let mut pairs = Vec::with_capacity(trained.len());
        for (name, t) in trained {
            let s = shadow.get(&name).ok_or_else(|| {
                AgentError::State(format!("weight average: no shadow variable {name}"))
            })?;
            if s.size() != t.size() {
                return Err(AgentError::State(format!(
                    "weight average: {name} has shape {:?}, its shadow {:?}",
                    t.size(),
                    s.size()
                )));
            }
            pairs.push((s.shallow_clone(), t));
        }
        Ok(Self { decay, pairs })
    }

    /// Sets the shadow to the trained weights (the start of an average).
    pub fn reset(&mut self) {
        tch::no_grad(|| {
            for (shadow, trained) in &mut self.pairs {
                shadow.copy_(trained);
            }
        });
    }

    /// One step of the average: shadow <- decay shadow + (1 - decay) weights.
    pub fn update(&mut self) {
        let weight = 1.0 - self.decay;
        tch::no_grad(|| {
            for (shadow, trained) in &mut self.pairs {
                let _ = shadow.lerp_(&*trained, weight);
            }
        });
    }

    /// The decay.
    pub fn decay(&self) -> f64 {
        self.decay
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device, Kind};

    fn store(value: f64) -> (VarStore, Tensor) {
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[3], nn::Init::Const(value));
        (vs, w)
    }

    #[test]
    fn the_average_follows_its_closed_form() {
        let (trained, mut w) = store(1.0);
        let (shadow, s) = store(0.0);
        let mut average = WeightAverage::new(0.9, &trained, &shadow).unwrap();
        average.reset();
        assert_eq!(f64::try_from(s.sum(Kind::Double)).unwrap(), 3.0);
        // Weights 1 then 2, 3, 4 for three updates: s_k = 0.9 s + 0.1 w_k.
        let mut expected = 1.0;
        for k in 2..=4 {
            tch::no_grad(|| {
                let _ = w.fill_(k as f64);
            });
            average.update();
            expected = 0.9 * expected + 0.1 * k as f64;
        }
        let got = Vec::<f32>::try_from(&s).unwrap();
        assert!(
            got.iter().all(|v| (f64::from(*v) - expected).abs() < 1e-6),
            "{got:?} vs {expected}"
        );
        // The trained weights are untouched.
        assert_eq!(Vec::<f32>::try_from(&w).unwrap(), vec![4.0; 3]);
    }

    #[test]
    fn mismatched_stores_and_decays_are_refused() {
        let (trained, _w) = store(1.0);
        let other = VarStore::new(Device::Cpu);
        let _v = other.root().var("w", &[4], nn::Init::Const(0.0));
        let err = WeightAverage::new(0.9, &trained, &other)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("w has shape [3], its shadow [4]"), "{err}");
        let (shadow, _s) = store(0.0);
        assert!(WeightAverage::new(1.0, &trained, &shadow).is_err());
        assert!(WeightAverage::new(0.0, &trained, &shadow).is_err());
    }
}
