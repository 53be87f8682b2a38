"""A random-weight UNet2DModel sampled from a given x_T by diffusers' ODE
solvers (10 network evaluations each, no thresholding), for the solvers'
whole-sampling parity test.

usage: solver_pipeline.py OUT_DIR

Writes OUT_DIR/model/ (config.json, diffusion_pytorch_model.safetensors),
x_T.npy, <case>.npy (each scheduler loop's final sample) and pipeline.npy
(DDPMPipeline with DPMSolverMultistepScheduler, DPM-Solver++(2M): the output
image in [0, 1], N x H x W x C).
"""

import os
import sys

import numpy as np
import torch
from diffusers import (DDPMPipeline, DPMSolverMultistepScheduler, DPMSolverSinglestepScheduler,
                       IPNDMScheduler, UNet2DModel, UniPCMultistepScheduler)

COMMON = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
STEPS = 10


def schedulers():
    yield "dpm_solver_fast", DPMSolverSinglestepScheduler(
        **COMMON, algorithm_type="dpmsolver", solver_order=3, final_sigmas_type="sigma_min")
    yield "dpmpp_2m", DPMSolverMultistepScheduler(**COMMON)
    yield "unipc_bh2", UniPCMultistepScheduler(**COMMON)


def ipndm_loop(unet, x_t):
    """IPNDMScheduler on the model's noise levels at the DPM-Solver grid's
    times (then 0), fed the v-like output whose ets is the model's eps."""
    grid = DPMSolverMultistepScheduler(**COMMON)
    grid.set_timesteps(STEPS)
    times = grid.timesteps
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    abar = np.cumprod(1.0 - betas)[times.numpy()]
    sched = IPNDMScheduler(num_train_timesteps=1000)
    sched.set_timesteps(STEPS)
    sched.alphas = torch.tensor(np.concatenate([np.sqrt(abar), [1.0]]), dtype=torch.float32)
    sched.betas = torch.tensor(np.concatenate([np.sqrt(1 - abar), [0.0]]), dtype=torch.float32)
    sched.timesteps = times
    x = x_t.clone()
    for i, t in enumerate(times):
        eps = unet(x, t).sample
        x = sched.step((eps - x * sched.betas[i]) / sched.alphas[i], t, x).prev_sample
    return x


def main():
    out = sys.argv[1]
    torch.set_num_threads(1)
    torch.manual_seed(3)
    unet = UNet2DModel(
        sample_size=16, in_channels=1, out_channels=1, block_out_channels=(32, 64),
        layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8,
        attention_head_dim=None, downsample_padding=0, flip_sin_to_cos=False,
        freq_shift=1, norm_eps=1e-6,
    ).eval()
    with torch.no_grad():  # a small eps keeps the samples image-sized
        unet.conv_out.weight.mul_(0.05)
        unet.conv_out.bias.mul_(0.05)
    unet.save_pretrained(os.path.join(out, "model"), safe_serialization=True)
    seed = 11
    x_t = torch.randn((4, 1, 16, 16), generator=torch.Generator().manual_seed(seed))
    np.save(os.path.join(out, "x_T.npy"), x_t.numpy())
    with torch.no_grad():
        for case, sched in schedulers():
            sched.set_timesteps(STEPS)
            x = x_t.clone()
            for t in sched.timesteps:
                x = sched.step(unet(x, t).sample, t, x).prev_sample
            np.save(os.path.join(out, f"{case}.npy"), x.numpy())
        np.save(os.path.join(out, "ipndm.npy"), ipndm_loop(unet, x_t).numpy())
    pipe = DDPMPipeline(unet=unet, scheduler=DPMSolverMultistepScheduler(**COMMON))
    pipe.set_progress_bar_config(disable=True)
    image = pipe(batch_size=4, generator=torch.Generator().manual_seed(seed),
                 num_inference_steps=STEPS, output_type="np").images
    np.save(os.path.join(out, "pipeline.npy"), image.astype(np.float32))


if __name__ == "__main__":
    main()
