"""Steps of diffusers' DDPMScheduler and DDIMScheduler on fixed tensors, for
the samplers' parity test.

usage: scheduler_steps.py OUT_DIR

For each case, OUT_DIR/<case>/ gets timesteps.npy (the network times, first
step first), x.npy (the starting sample), eps.npy and noise.npy (one per
step: the eps fed to the step and the noise it draws) and out.npy (the sample
after each step). Clipping of the predicted x_0 to [-1, 1] is on in the
`*_clipped` cases only. T = 1000, linear betas 1e-4 .. 0.02.
"""

import os
import sys

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler

# diffusers steps from t to t - T // S whatever the spacing, so its chains
# are consistent (each step ends where the next begins) for "leading" and
# for "trailing" when S divides T: those are the cases compared.
CASES = {
    "ddpm_leading": ("ddpm", dict(timestep_spacing="leading"), 10, None),
    "ddpm_trailing": ("ddpm", dict(timestep_spacing="trailing"), 8, None),
    "ddpm_leading_clipped": ("ddpm", dict(timestep_spacing="leading"), 10, None),
    "ddim_leading_eta0": ("ddim", dict(timestep_spacing="leading"), 10, 0.0),
    "ddim_trailing_eta05": ("ddim", dict(timestep_spacing="trailing"), 10, 0.5),
    "ddim_leading_eta1": ("ddim", dict(timestep_spacing="leading"), 7, 1.0),
}

def run(case, out):
    kind, spacing, steps, eta = CASES[case]
    common = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                  beta_schedule="linear", clip_sample=case.endswith("_clipped"),
                  clip_sample_range=1.0, **spacing)
    if kind == "ddpm":
        sched = DDPMScheduler(variance_type="fixed_small", **common)
    else:
        sched = DDIMScheduler(set_alpha_to_one=True, steps_offset=0, **common)
    sched.set_timesteps(steps)
    g = torch.Generator().manual_seed(len(case))
    x = torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64).float()
    eps_all, noise_all, out_all = [], [], []
    sample = x.clone()
    for i, t in enumerate(sched.timesteps):
        eps = torch.randn(x.shape, generator=g)
        seed = 1000 + i
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
        if kind == "ddpm":
            sample = sched.step(eps, t, sample, generator=torch.Generator().manual_seed(seed)).prev_sample
        else:
            sample = sched.step(eps, t, sample, eta=eta, variance_noise=noise).prev_sample
        eps_all.append(eps)
        noise_all.append(noise)
        out_all.append(sample.clone())
    folder = os.path.join(out, case)
    os.makedirs(folder, exist_ok=True)
    np.save(os.path.join(folder, "timesteps.npy"), sched.timesteps.numpy().astype(np.float32))
    np.save(os.path.join(folder, "x.npy"), x.numpy())
    for name, values in (("eps", eps_all), ("noise", noise_all), ("out", out_all)):
        np.save(os.path.join(folder, f"{name}.npy"), torch.stack(values).numpy().astype(np.float32))


def main():
    torch.set_num_threads(1)
    for case in CASES:
        run(case, sys.argv[1])


if __name__ == "__main__":
    main()
