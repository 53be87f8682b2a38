"""JPEG files as the paper's code writes and reads them, for tests/jpeg_pil.rs.

  images DIR
      For every DIR/NAME.npy (uint8 [H, W] grey or [H, W, 3] RGB) writes
      - NAME.tv.jpg: torchvision's save_image of the image as a float
        tensor in [0, 1] ([1, H, W] for grey, which save_image repeats to
        RGB), the way Fan and Lee's generate.py saves samples;
      - NAME.pil.jpg: Image.fromarray(rgb).save(path), PIL's defaults;
      - NAME.q95_444.jpg, NAME.q30_422_progressive.jpg, NAME.q60_optimized.jpg
        and, for grey images, NAME.grey.jpg (a 1-component JPEG): other
        files for the decoder;
      and for every NAME.*.jpg above, NAME.*.decoded.npy: PIL's pixels of it,
      Image.open(path).convert('RGB') as pytorch-fid reads images.

  sets DIR
      The end-to-end protocol check: DIR/a.npy (24 RGB 32x32 images, uint8
      [N, H, W, 3]) and DIR/a_tv/ (the same images saved one by one by
      save_image as JPEG files); DIR/g.npy (24 grey 28x28 images, [N, H, W])
      and DIR/g_tv/; DIR/b/ (24 RGB 32x32 PNGs of another law, the
      reference); DIR/tiny.pt, a small random convolutional feature network
      (TorchScript, [N, 3, 299, 299] -> [N, 16]).
"""

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import save_image


def as_rgb(a):
    return np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a


def to_unit_tensor(a):
    """[C, H, W] float in [0, 1] whose save_image pixels are exactly `a`."""
    t = torch.from_numpy(a.astype(np.float32) / 255.0)
    return t[None] if a.ndim == 2 else t.permute(2, 0, 1).contiguous()


def decoded(path):
    np.save(str(path)[: -len(".jpg")] + ".decoded.npy", np.asarray(Image.open(path).convert("RGB")))


def images(out):
    for source in sorted(out.glob("*.npy")):
        if ".decoded" in source.name:
            continue
        a = np.load(source)
        assert a.dtype == np.uint8, source
        stem = out / source.stem
        files = {
            "tv": lambda p: save_image(to_unit_tensor(a), p),
            "pil": lambda p: Image.fromarray(as_rgb(a)).save(p),
            "q95_444": lambda p: Image.fromarray(as_rgb(a)).save(p, quality=95, subsampling=0),
            "q30_422_progressive": lambda p: Image.fromarray(as_rgb(a)).save(
                p, quality=30, subsampling=1, progressive=True
            ),
            "q60_optimized": lambda p: Image.fromarray(as_rgb(a)).save(p, quality=60, optimize=True),
        }
        if a.ndim == 2:
            files["grey"] = lambda p: Image.fromarray(a, "L").save(p)
        for kind, write in files.items():
            path = Path(f"{stem}.{kind}.jpg")
            write(path)
            decoded(path)


def smooth_rgb(rng, n, side):
    yy, xx = np.mgrid[0:side, 0:side] / side
    out = []
    for _ in range(n):
        channels = [
            0.5 + 0.4 * np.sin(2 * np.pi * (rng.uniform(1, 3) * xx + rng.uniform() + 0.3 * c * yy))
            for c in range(3)
        ]
        v = np.stack(channels, -1) + 0.05 * rng.standard_normal((side, side, 3))
        out.append((np.clip(v, 0, 1) * 255).round().astype(np.uint8))
    return np.stack(out)


def blobs(rng, n, side, channels):
    yy, xx = np.mgrid[0:side, 0:side] / side
    out = []
    for _ in range(n):
        planes = []
        for _ in range(channels):
            cx, cy = rng.uniform(0.2, 0.8, size=2)
            v = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / rng.uniform(0.01, 0.05))
            planes.append(v + 0.05 * rng.standard_normal((side, side)))
        v = np.stack(planes, -1) if channels == 3 else planes[0]
        out.append((np.clip(v, 0, 1) * 255).round().astype(np.uint8))
    return np.stack(out)


def save_folder(batch, folder):
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(batch):
        save_image(to_unit_tensor(a), folder / f"{i:04d}.jpg")


def sets(out):
    rng = np.random.default_rng(0)
    a = smooth_rgb(rng, 24, 32)
    g = blobs(rng, 24, 28, 1)
    np.save(out / "a.npy", a)
    np.save(out / "g.npy", g)
    save_folder(a, out / "a_tv")
    save_folder(g, out / "g_tv")
    b = out / "b"
    b.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(blobs(rng, 24, 32, 3)):
        Image.fromarray(image).save(b / f"{i:04d}.png")
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 5, stride=4),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 5, stride=4),
        torch.nn.Tanh(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    ).eval()
    torch.jit.script(net).save(str(out / "tiny.pt"))


if __name__ == "__main__":
    command, folder = sys.argv[1], Path(sys.argv[2])
    if command == "images":
        images(folder)
    elif command == "sets":
        sets(folder)
    else:
        sys.exit(f"unknown command {command}")
