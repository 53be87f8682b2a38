//! SFT-PG from built parts through the library's trainer, no experiment
//! file: pretrain a 10-step toy sampler on the swiss roll, then fine-tune
//! it against the adversarial critic (Algorithm 1), each run by
//! `shortcut::trainer::Trainer` with its checkpoints in a temporary folder,
//! its curves in memory and your own evaluation (here a sliced W2).
//! `cargo run --release --example trainer_from_parts` (`make test` runs it).
use std::{cell::RefCell, rc::Rc};

use agents::{critic::AdversarialCritic, critic::CriticConfig, generator::Generator};
use agents::{policy::DiffusionPolicy, pretrain::DdpmPretrainer, registry::AgentConfig};
use envs::{datasets::ToyDataset, diffusion::DiffusionEnv, schedule::*};
use shortcut::runner::{data::Data, finetune::FineTuning, pretrain::Pretraining, sft_pg::SftPg};
use shortcut::trainer::{Evaluate, Trainer, TrainerConfig};
use shortcut::{checkpoint::RunFolderStore, recording::MemoryRecorder, recording::Record};
use tch::{Device, Tensor};

/// Your evaluation: sliced W2 between 2,000 samples and the data.
struct SlicedW2(Tensor);
impl Evaluate for SlicedW2 {
    fn evaluate(
        &mut self,
        policy: &DiffusionPolicy,
        _epoch: usize,
        step: u64,
        rec: &mut dyn Record,
    ) -> Result<String, shortcut::RunError> {
        let samples = policy.sample(2000, &[2]);
        let flat = |t: &Tensor| Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
        let w2 = shortcut::metrics::sliced::sliced_wasserstein2(
            &flat(&samples),
            &flat(&self.0),
            2,
            100,
            0,
        )?;
        rec.scalar("eval/sliced_w2", w2, step)?;
        Ok(format!("W2 {w2:.4}"))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tch::manual_seed(0);
    let dir = std::env::temp_dir().join(format!("trainer-from-parts-{}", std::process::id()));
    let points = ToyDataset::SwissRoll.generate(2000, 0)?;
    let schedule = Schedule::new(
        BetaSchedule::Sigmoid {
            start: 1e-5,
            end: 1e-2,
        }
        .betas(10)?,
        Variance::Beta,
    )?;
    let curves = Rc::new(RefCell::new(MemoryRecorder::default()));
    let trainer = |name: &str, epochs| {
        let store = Box::new(RunFolderStore::new(&dir.join(name)));
        Trainer::new(
            TrainerConfig::new(name, epochs, 0),
            Box::new(Rc::clone(&curves)),
            store,
        )
        .with_evaluator(Box::new(SlicedW2(points.shallow_clone())))
    };
    // 1. Pretraining: denoising score matching, 100 epochs in batches of 128.
    let policy = DiffusionPolicy::toy(&schedule, 2, 128, 10, Device::Cpu);
    let dsm = DdpmPretrainer::new(Default::default(), &policy, &schedule);
    let data = || Data::from_values(points.shallow_clone(), false, false);
    let mut pretraining = Pretraining::new(policy, dsm, None, data(), 128)?;
    trainer("pretrain", 100).run(&mut pretraining, None)?;
    // 2. SFT-PG: the pretrained sampler as a REINFORCE agent with the learned baseline.
    let critic = AdversarialCritic::new(CriticConfig::default(), &[2], 10, Device::Cpu)?;
    let generator = Generator::new(Default::default(), pretraining.into_sampler())?;
    let agent = AgentConfig::Reinforce(Default::default()).build(generator, 128, &[2]);
    let env = DiffusionEnv::new(schedule, &[2], 128, Device::Cpu)?;
    let mut fine_tuning = FineTuning::new(SftPg::new(env, agent, critic, 5), data());
    let published = trainer("finetune", 5).run(&mut fine_tuning, None)?;
    let (loss, w2, gap) = {
        let c = curves.borrow();
        (
            c.series("pretrain/loss"),
            c.series("eval/sliced_w2"),
            c.series("critic/gap"),
        )
    };
    println!("pretraining loss {:.3} -> {:.3}; sliced W2 after pretraining {:.4}, after fine-tuning {:.4}; {} critic-gap points; weights in {}",
        loss[0].1, loss[99].1, w2[0].1, w2[1].1, gap.len(), published.display());
    std::fs::remove_dir_all(&dir)?;
    if loss[99].1 < 0.8 * loss[0].1 && gap.len() == 5 && w2.iter().all(|p| p.1.is_finite()) {
        Ok(())
    } else {
        Err("training did not go as expected".into())
    }
}
