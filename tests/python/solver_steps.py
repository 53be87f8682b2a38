"""Steps of diffusers' ODE-solver schedulers on fixed tensors, for the
solvers' parity test: DPMSolverSinglestepScheduler, DPMSolverMultistepScheduler,
UniPCMultistepScheduler and IPNDMScheduler.

usage: solver_steps.py OUT_DIR

For each case, OUT_DIR/<case>/ gets timesteps.npy (the network times, first
step first), x.npy (the starting sample), eps.npy (the noise prediction fed
to each step) and out.npy (the sample after each step). T = 1000, linear
betas 1e-4 .. 0.02, no thresholding.

IPNDMScheduler keeps its own cosine noise levels and takes a v-prediction
(its ets = sample * sigma + output * alpha); the iPNDM case replaces its
levels by the model's at the DPM-Solver grid's times (then 0; with Karras
sigmas, the training steps diffusers rounds them to) and feeds
output = (eps - sample * sigma) / alpha, so that ets is the model's eps.
"""

import os
import sys

import numpy as np
import torch
from diffusers import (DPMSolverMultistepScheduler, DPMSolverSinglestepScheduler,
                       IPNDMScheduler, UniPCMultistepScheduler)

COMMON = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")

CASES = {
    "dpm_solver_single3": (DPMSolverSinglestepScheduler, dict(
        algorithm_type="dpmsolver", solver_order=3, final_sigmas_type="sigma_min"), 10),
    "dpm_solver_single3_9": (DPMSolverSinglestepScheduler, dict(
        algorithm_type="dpmsolver", solver_order=3, final_sigmas_type="sigma_min"), 9),
    "dpm_solver_multi3_trailing": (DPMSolverMultistepScheduler, dict(
        algorithm_type="dpmsolver", solver_order=3, final_sigmas_type="sigma_min",
        timestep_spacing="trailing"), 10),
    "dpmpp_2m": (DPMSolverMultistepScheduler, dict(), 10),
    "dpmpp_3m_leading_20": (DPMSolverMultistepScheduler, dict(
        solver_order=3, timestep_spacing="leading"), 20),
    "dpmpp_2s": (DPMSolverSinglestepScheduler, dict(algorithm_type="dpmsolver++", solver_order=2), 10),
    "unipc_bh2": (UniPCMultistepScheduler, dict(), 10),
    "unipc_bh1_3_trailing": (UniPCMultistepScheduler, dict(
        solver_order=3, solver_type="bh1", timestep_spacing="trailing"), 12),
    "ipndm": (IPNDMScheduler, dict(), 10),
    "ipndm_karras": (IPNDMScheduler, dict(use_karras_sigmas=True), 10),
}


def model_levels(times):
    """sqrt(abar) and sqrt(1 - abar) of the model at `times`, then 1 and 0."""
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    abar = np.cumprod(1.0 - betas)
    alphas = np.concatenate([np.sqrt(abar[times]), [1.0]])
    sigmas = np.concatenate([np.sqrt(1.0 - abar[times]), [0.0]])
    return torch.tensor(alphas, dtype=torch.float32), torch.tensor(sigmas, dtype=torch.float32)


def run(case, out):
    cls, config, steps = CASES[case]
    ipndm = cls is IPNDMScheduler
    if ipndm:
        sched = IPNDMScheduler(num_train_timesteps=1000)
        sched.set_timesteps(steps)
        grid = DPMSolverMultistepScheduler(**COMMON, **config)
        grid.set_timesteps(steps)
        times = grid.timesteps.numpy()
        sched.alphas, sched.betas = model_levels(times)
        sched.timesteps = torch.tensor(times)
    else:
        sched = cls(**COMMON, **config)
        sched.set_timesteps(steps)
        times = sched.timesteps.numpy()
    g = torch.Generator().manual_seed(len(case))
    x = torch.randn(4, 3, 8, 8, generator=g)
    eps_all, out_all = [], []
    sample = x.clone()
    for i, t in enumerate(sched.timesteps):
        eps = torch.randn(x.shape, generator=g)
        output = eps
        if ipndm:
            output = (eps - sample * sched.betas[i]) / sched.alphas[i]
        sample = sched.step(output, t, sample).prev_sample
        eps_all.append(eps)
        out_all.append(sample.clone())
    folder = os.path.join(out, case)
    os.makedirs(folder, exist_ok=True)
    np.save(os.path.join(folder, "timesteps.npy"), np.asarray(times, dtype=np.int64))
    np.save(os.path.join(folder, "x.npy"), x.numpy())
    np.save(os.path.join(folder, "eps.npy"), torch.stack(eps_all).numpy())
    np.save(os.path.join(folder, "out.npy"), torch.stack(out_all).numpy())


def main():
    torch.set_num_threads(1)
    for case in CASES:
        run(case, sys.argv[1])


if __name__ == "__main__":
    main()
