"""PyTorch + diffusers baseline for the U-Net benchmark.

`--make DIR`: writes a random-weight diffusers UNet2DModel with
google/ddpm-cifar10-32's configuration (35,746,307 parameters) to DIR as a
safetensors folder, which both sides then load.

Otherwise times one training step of that model loaded from `--model DIR`:
forward on a batch of `--batch` 3 x 32 x 32 images at random integer times,
the mean squared error against random targets, backward, gradients zeroed
in place (as tch does), no optimiser step. Prints one JSON line: seconds per
step and the process's peak resident set size (MiB).
"""
import argparse
import json
import resource
import time

import torch
from diffusers import UNet2DModel

CIFAR10 = dict(
    sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256),
    layers_per_block=2,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=32, act_fn="silu", attention_head_dim=None, downsample_padding=0,
    flip_sin_to_cos=False, freq_shift=1, norm_eps=1e-6, time_embedding_type="positional",
)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--make")
    p.add_argument("--model")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.make:
        UNet2DModel(**CIFAR10).save_pretrained(a.make, safe_serialization=True)
        return
    model = UNet2DModel.from_pretrained(a.model).train()
    size = model.config.sample_size

    def step():
        x = torch.randn(a.batch, 3, size, size)
        t = torch.randint(0, 1000, (a.batch,))
        target = torch.randn_like(x)
        loss = torch.nn.functional.mse_loss(model(x, t).sample, target)
        loss.backward()
        model.zero_grad(set_to_none=False)

    for _ in range(a.warmup):
        step()
    start = time.perf_counter()
    for _ in range(a.iters):
        step()
    sec = (time.perf_counter() - start) / a.iters
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"sec_per_iter": sec, "peak_rss_mib": peak}))


if __name__ == "__main__":
    main()
