"""A random U-Net saved as the DDIM code distributes Ho et al.'s weights
(ema_diffusion_cifar10_model/model-790000.ckpt): one plain state dict in the
original DDPM/DDIM layout, for `rl-run fetch`'s download-and-convert test.

usage: ddim_checkpoint.py OUT_DIR

The network is ddim_layout.py's, sized for the 8 x 8 digits so that a
fine-tuning run can start from it: 1 input channel, 8 x 8 images, 32
channels times (1, 2), 2 blocks per level, attention at 4 x 4 and in the
middle. Writes OUT_DIR/model-790000.ckpt, x.npy, t.npy and eps.npy
(ddim_layout.py's reference forward pass of that network on x and t).
"""

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ddim_layout  # noqa: E402  (beside this file)

ddim_layout.IN, ddim_layout.RES, ddim_layout.CH_MULT, ddim_layout.ATTN = 1, 8, (1, 2), (4,)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)
    x = torch.randn(3, ddim_layout.IN, ddim_layout.RES, ddim_layout.RES,
                    generator=torch.Generator().manual_seed(7))
    t = torch.tensor([3.0, 250.5, 998.0])
    model = ddim_layout.randomised(2)
    torch.save(model.state_dict(), os.path.join(out, "model-790000.ckpt"))
    with torch.no_grad():
        eps = model(x, t).numpy()
    np.save(os.path.join(out, "x.npy"), x.numpy())
    np.save(os.path.join(out, "t.npy"), t.numpy())
    np.save(os.path.join(out, "eps.npy"), eps)


if __name__ == "__main__":
    main()
