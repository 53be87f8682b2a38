"""A random-weight UNet2DModel sampled by diffusers' DDIMPipeline (eta 0,
10 steps, clipping off) from a given x_T, for the whole-sampling parity test.

usage: ddim_pipeline.py OUT_DIR

Writes OUT_DIR/model/ (config.json, diffusion_pytorch_model.safetensors),
x_T.npy, loop.npy (the scheduler loop's final sample, unclipped) and
pipeline.npy (DDIMPipeline's output image in [0, 1], N x H x W x C).
"""

import os
import sys

import numpy as np
import torch
from diffusers import DDIMPipeline, DDIMScheduler, UNet2DModel


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
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                              beta_schedule="linear", clip_sample=False, set_alpha_to_one=True,
                              steps_offset=0, timestep_spacing="leading")
    seed = 11
    x_t = torch.randn((4, 1, 16, 16), generator=torch.Generator().manual_seed(seed))
    np.save(os.path.join(out, "x_T.npy"), x_t.numpy())
    scheduler.set_timesteps(10)
    x = x_t.clone()
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t).sample, t, x, eta=0.0).prev_sample
    np.save(os.path.join(out, "loop.npy"), x.numpy())
    pipe = DDIMPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    image = pipe(batch_size=4, generator=torch.Generator().manual_seed(seed), eta=0.0,
                 num_inference_steps=10, output_type="np").images
    np.save(os.path.join(out, "pipeline.npy"), image.astype(np.float32))


if __name__ == "__main__":
    main()
