"""A random U-Net in the state-dict layout of the original DDPM/DDIM PyTorch
code, with its own forward pass, for the conversion script's round trip.

usage: ddim_layout.py OUT_DIR

Writes OUT_DIR/model.ckpt (saved as [model, optimizer, epoch, step, ema],
the EMA weights differing from the model's), x.npy, t.npy and eps.npy (this
reference's output with the EMA weights). After the conversion script has
written OUT_DIR/converted/, `ddim_layout.py OUT_DIR --check` loads that
folder with diffusers' UNet2DModel.from_pretrained and prints the largest
difference of its eps from the reference's.
"""

import math
import os
import sys

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

CH, CH_MULT, BLOCKS, ATTN, RES, IN = 32, (1, 2, 2), 2, (8,), 16, 3


def norm(c):
    return nn.GroupNorm(32, c, eps=1e-6)


class Block(nn.Module):
    def __init__(self, c_in, c_out, temb):
        super().__init__()
        self.norm1, self.conv1 = norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.temb_proj = nn.Linear(temb, c_out)
        self.norm2, self.conv2 = norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class Attn(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm = norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        b, c, hh, ww = x.shape
        h = self.norm(x)
        q = self.q(h).flatten(2).transpose(1, 2)
        k = self.k(h).flatten(2)
        v = self.v(h).flatten(2)
        w = torch.softmax(torch.bmm(q, k) / math.sqrt(c), dim=-1)
        out = torch.bmm(v, w.transpose(1, 2)).view(b, c, hh, ww)
        return x + self.proj_out(out)


class Resample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=1, padding=1)


class Level(nn.Module):
    pass


class DdimUNet(nn.Module):
    """Names as in the DDPM/DDIM code; up levels stored in resolution order."""

    def __init__(self):
        super().__init__()
        temb = 4 * CH
        self.temb = nn.Module()
        self.temb.dense = nn.ModuleList([nn.Linear(CH, temb), nn.Linear(temb, temb)])
        self.conv_in = nn.Conv2d(IN, CH, 3, padding=1)
        widths = [CH * m for m in CH_MULT]
        self.down, c, res = nn.ModuleList(), CH, RES
        for i, w in enumerate(widths):
            level = Level()
            level.block = nn.ModuleList([Block(c if j == 0 else w, w, temb) for j in range(BLOCKS)])
            level.attn = nn.ModuleList([Attn(w) for _ in range(BLOCKS)] if res in ATTN else [])
            c = w
            if i < len(widths) - 1:
                level.downsample = Resample(w)
                level.downsample.conv = nn.Conv2d(w, w, 3, stride=2, padding=0)
                res //= 2
            self.down.append(level)
        self.mid = nn.Module()
        self.mid.block_1, self.mid.attn_1, self.mid.block_2 = Block(c, c, temb), Attn(c), Block(c, c, temb)
        ups = []
        for i in reversed(range(len(widths))):
            level = Level()
            skips = [widths[i]] * BLOCKS + [widths[i - 1] if i > 0 else CH]
            blocks = []
            for j in range(BLOCKS + 1):
                blocks.append(Block(c + skips[j], widths[i], temb))
                c = widths[i]
            level.block = nn.ModuleList(blocks)
            level.attn = nn.ModuleList([Attn(c) for _ in range(BLOCKS + 1)] if res in ATTN else [])
            if i > 0:
                level.upsample = Resample(c)
                res *= 2
            ups.insert(0, level)
        self.up = nn.ModuleList(ups)
        self.norm_out, self.conv_out = norm(c), nn.Conv2d(c, IN, 3, padding=1)

    def forward(self, x, t):
        half = CH // 2
        freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000) / (half - 1)))
        angles = t.float()[:, None] * freqs[None]
        temb = torch.cat([angles.sin(), angles.cos()], dim=1)
        temb = self.temb.dense[1](F.silu(self.temb.dense[0](temb)))
        hs = [self.conv_in(x)]
        for i, level in enumerate(self.down):
            for j, block in enumerate(level.block):
                h = block(hs[-1], temb)
                hs.append(level.attn[j](h) if len(level.attn) else h)
            if hasattr(level, "downsample"):
                hs.append(level.downsample.conv(F.pad(hs[-1], (0, 1, 0, 1))))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(hs[-1], temb)), temb)
        for level in reversed(self.up):
            for j, block in enumerate(level.block):
                h = block(torch.cat([h, hs.pop()], dim=1), temb)
                if len(level.attn):
                    h = level.attn[j](h)
            if hasattr(level, "upsample"):
                h = level.upsample.conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


def randomised(seed):
    torch.manual_seed(seed)
    model = DdimUNet().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)
    x = torch.randn(3, IN, RES, RES, generator=torch.Generator().manual_seed(7))
    t = torch.tensor([3.0, 250.5, 998.0])
    if "--check" in sys.argv:
        from diffusers import UNet2DModel

        model = UNet2DModel.from_pretrained(os.path.join(out, "converted")).eval()
        with torch.no_grad():
            eps = model(x, t).sample.numpy()
        print(float(np.abs(eps - np.load(os.path.join(out, "eps.npy"))).max()))
        return
    model, ema = randomised(1), randomised(2)
    torch.save([model.state_dict(), {}, 10, 1000, ema.state_dict()], os.path.join(out, "model.ckpt"))
    with torch.no_grad():
        eps = ema(x, t).numpy()
    np.save(os.path.join(out, "x.npy"), x.numpy())
    np.save(os.path.join(out, "t.npy"), t.numpy())
    np.save(os.path.join(out, "eps.npy"), eps)


if __name__ == "__main__":
    main()
