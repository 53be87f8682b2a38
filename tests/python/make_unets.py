"""Builds random-weight diffusers UNet2DModels offline, saves them as users
have them, and writes diffusers' eps predictions on fixed inputs.

usage: make_unets.py OUT_DIR [CASE ...]

For each case, OUT_DIR/<case>/ gets the model folder (config.json and
diffusion_pytorch_model.safetensors, or the .bin pickle for `*_bin` cases),
x.npy (N x C x H x W), t.npy (N times, integer and not) and eps.npy
(diffusers' output). Weights are the default initialisation plus Gaussian
noise, so that every tensor (norm weights and biases too) matters.
"""

import json
import os
import sys

import numpy as np
import torch
from diffusers import UNet2DModel
from safetensors.torch import load_file, save_file

DDPM = dict(
    act_fn="silu",
    attention_head_dim=None,
    center_input_sample=False,
    downsample_padding=0,
    flip_sin_to_cos=False,
    freq_shift=1,
    mid_block_scale_factor=1,
    norm_eps=1e-6,
    time_embedding_type="positional",
)

CASES = {
    # Multi-head attention, diffusers' own defaults for the time features.
    "attention": dict(
        sample_size=16, in_channels=3, out_channels=3, block_out_channels=(32, 64),
        layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8,
        attention_head_dim=16, flip_sin_to_cos=True, freq_shift=0, downsample_padding=1,
    ),
    # No attention anywhere, one channel, DDPM's conventions.
    "no_attention": dict(
        DDPM, sample_size=8, in_channels=1, out_channels=1, block_out_channels=(16, 32),
        layers_per_block=2, down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8, add_attention=False,
    ),
    # The 2022 attention names (query/key/value/proj_attn), single head, dropout set.
    "legacy_names": dict(
        DDPM, sample_size=16, in_channels=3, out_channels=3, block_out_channels=(32, 32, 64),
        layers_per_block=2, down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8,
        dropout=0.1,
    ),
    # google/ddpm-cifar10-32's configuration, stored as that checkpoint is:
    # a pickle with the 2022 attention names.
    "cifar10_bin": dict(
        DDPM, sample_size=32, in_channels=3, out_channels=3,
        block_out_channels=(128, 256, 256, 256), layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=32,
    ),
    # A tiny model of CIFAR-10's shape (3 x 32 x 32, attention at 16 x 16)
    # for fine-tuning tests of experiments/sft_pg_cifar.ron on the CPU.
    "tiny_cifar": dict(
        DDPM, sample_size=32, in_channels=3, out_channels=3, block_out_channels=(16, 32),
        layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8,
    ),
}

LEGACY = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def legacy_name(key):
    if ".attentions." not in key:
        return key
    for new, old in LEGACY.items():
        if f".{new}." in key:
            return key.replace(f".{new}.", f".{old}.", 1)
    return key


def make(case, out_dir, seed):
    torch.manual_seed(seed)
    model = UNet2DModel(**CASES[case]).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    folder = os.path.join(out_dir, case)
    model.save_pretrained(folder, safe_serialization=True)
    weights = os.path.join(folder, "diffusion_pytorch_model.safetensors")
    if case in ("legacy_names", "cifar10_bin"):
        state = {legacy_name(k): v for k, v in load_file(weights).items()}
        if case.endswith("_bin"):
            os.remove(weights)
            torch.save(state, os.path.join(folder, "diffusion_pytorch_model.bin"))
        else:
            save_file(state, weights)
    cfg = CASES[case]
    n = 4
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(n, cfg["in_channels"], cfg["sample_size"], cfg["sample_size"], generator=g)
    t = torch.tensor([0.0, 1.5, 500.0, 999.25])
    with torch.no_grad():
        eps = model(x, t).sample
    np.save(os.path.join(folder, "x.npy"), x.numpy().astype(np.float32))
    np.save(os.path.join(folder, "t.npy"), t.numpy().astype(np.float32))
    np.save(os.path.join(folder, "eps.npy"), eps.numpy().astype(np.float32))
    with open(os.path.join(folder, "parameters.json"), "w") as f:
        json.dump({"parameters": sum(p.numel() for p in model.parameters())}, f)


def main():
    out_dir = sys.argv[1]
    cases = sys.argv[2:] or list(CASES)
    torch.set_num_threads(1)
    for i, case in enumerate(cases):
        make(case, out_dir, seed=100 + i)


if __name__ == "__main__":
    main()
