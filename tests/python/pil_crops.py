"""Writes CelebA-shaped test images and what PIL makes of them.

Usage: pil_crops.py DIR

DIR/images/ gets five 178 x 218 RGB images (four PNG, one JPEG) with smooth
gradients, edges and noise; DIR/pil_celeba64.npy holds PIL's version of
each, uint8 [5, 3, 64, 64]: the DDIM code's CelebA crop (rows 57..185,
columns 25..153; torchvision's F.crop(img, 57, 25, 128, 128)) and then
`Image.resize((64, 64), Image.BILINEAR)`, which torchvision's Resize calls
on PIL images. DIR/pil_center32.npy: the centred 178 x 178 square resized to
32 the same way.
"""
import sys
from pathlib import Path

import numpy as np
from PIL import Image

out = Path(sys.argv[1])
(out / "images").mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
celeba, center = [], []
for k in range(5):
    y, x = np.mgrid[0:218, 0:178]
    base = np.stack(
        [
            128 + 100 * np.sin(x / (7 + 3 * k)),
            (x + 2 * y + 40 * k) % 256,
            np.where((x // 16 + y // 16) % 2 == 0, 40, 215),
        ],
        axis=-1,
    )
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    name = f"{k:06d}.jpg" if k == 4 else f"{k:06d}.png"
    image.save(out / "images" / name, quality=95)
    # What a user's pipeline reads back (JPEG is lossy).
    image = Image.open(out / "images" / name).convert("RGB")
    celeba.append(np.asarray(image.crop((25, 57, 153, 185)).resize((64, 64), Image.BILINEAR)))
    center.append(np.asarray(image.crop((0, 20, 178, 198)).resize((32, 32), Image.BILINEAR)))
np.save(out / "pil_celeba64.npy", np.stack(celeba).transpose(0, 3, 1, 2).copy())
np.save(out / "pil_center32.npy", np.stack(center).transpose(0, 3, 1, 2).copy())
