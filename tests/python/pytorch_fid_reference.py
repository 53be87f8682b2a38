"""pytorch-fid's own code as the reference for `rl-run fid` (tests/fid_inception.rs).

  make-images DIR N
      DIR/a/ and DIR/b/: N 32x32 RGB PNGs each, of two different laws;
      DIR/a_u8.npy (uint8 [N, H, W, 3]) and DIR/a_unit.npy (float32
      [N, 3, H, W] in [-1, 1]): the same images as a/.

  pth TORCHSCRIPT OUT
      Writes OUT, a state dict in the layout of pytorch-fid's
      pt_inception-2015-12-05-*.pth (the module pytorch-fid's
      fid_inception_v3() builds), holding the TorchScript network's weights:
      its 94 convolutions in order, batch-norm beta, mean and variance, and
      gamma = 1 (the TensorFlow graph has none).

  measure PTH A B OUT_DIR
      Builds pytorch-fid's InceptionV3 (pool3, resize_input and
      normalize_input as its defaults) with the weights of PTH, handed to
      pytorch-fid's loader in place of its download, and runs pytorch-fid's
      get_activations on the PNG folders A and B. Writes OUT_DIR/a_features.npy,
      OUT_DIR/b_features.npy and OUT_DIR/b_stats.npz (mu and sigma, as
      pytorch-fid's --save-stats writes them); prints JSON with pytorch-fid's
      FID and the unbiased polynomial MMD^2 of the whole sets (the KID
      estimator of Binkowski et al.'s code, transcribed).
"""

import json
import os
import sys

import numpy as np


def make_images(out, n):
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32] / 32.0
    a_images = []
    for law in ("a", "b"):
        os.makedirs(os.path.join(out, law), exist_ok=True)
        for i in range(n):
            channels = []
            for c in range(3):
                if law == "a":
                    f = rng.uniform(1, 3)
                    v = 0.5 + 0.4 * np.sin(2 * np.pi * (f * xx + rng.uniform() + 0.3 * c * yy))
                else:
                    cx, cy = rng.uniform(0.2, 0.8, size=2)
                    v = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / rng.uniform(0.01, 0.05))
                channels.append(v + 0.05 * rng.standard_normal((32, 32)))
            img = (np.clip(np.stack(channels, -1), 0, 1) * 255).round().astype(np.uint8)
            Image.fromarray(img, "RGB").save(os.path.join(out, law, f"{i:04d}.png"))
            if law == "a":
                a_images.append(img)
    a = np.stack(a_images)
    np.save(os.path.join(out, "a_u8.npy"), a)
    unit = (a.astype(np.float32) / np.float32(127.5) - np.float32(1.0)).transpose(0, 3, 1, 2)
    np.save(os.path.join(out, "a_unit.npy"), np.ascontiguousarray(unit))


def fid_module():
    """pytorch-fid's FID Inception with no weights loaded."""
    import pytorch_fid.inception as pi

    net = pi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = pi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pi.FIDInceptionE_1(1280)
    net.Mixed_7c = pi.FIDInceptionE_2(2048)
    return net


def to_pth(torchscript, out):
    import torch

    torch.save(state_dict_from_torchscript(torchscript), out)


def state_dict_from_torchscript(torchscript):
    """The TorchScript network's weights in pytorch-fid's module layout."""
    import torch

    ts = torch.jit.load(torchscript, map_location="cpu")
    ts_state = ts.state_dict()
    ts_convs = [k[: -len(".weight")] for k in ts_state if k.endswith(".weight")]
    state = fid_module().state_dict()
    convs = [k[: -len(".conv.weight")] for k in state if k.endswith(".conv.weight")]
    assert len(convs) == len(ts_convs) == 94, (len(convs), len(ts_convs))
    for ours, theirs in zip(convs, ts_convs):
        w = ts_state[theirs + ".weight"]
        assert w.shape == state[ours + ".conv.weight"].shape, (ours, theirs)
        state[ours + ".conv.weight"] = w.clone()
        state[ours + ".bn.weight"] = torch.ones_like(ts_state[theirs + ".beta"])
        state[ours + ".bn.bias"] = ts_state[theirs + ".beta"].clone()
        state[ours + ".bn.running_mean"] = ts_state[theirs + ".mean"].clone()
        state[ours + ".bn.running_var"] = ts_state[theirs + ".var"].clone()
    return state


def polynomial_mmd2(x, y):
    """Unbiased MMD^2, kernel (x.y/d + 1)^3, equal set sizes (Binkowski et al.)."""
    d = x.shape[1]
    k_xx = (x @ x.T / d + 1) ** 3
    k_yy = (y @ y.T / d + 1) ** 3
    k_xy = (x @ y.T / d + 1) ** 3
    m = x.shape[0]
    kt_xx_sum = k_xx.sum() - np.diagonal(k_xx).sum()
    kt_yy_sum = k_yy.sum() - np.diagonal(k_yy).sum()
    return (kt_xx_sum + kt_yy_sum) / (m * (m - 1)) - 2 * k_xy.sum() / (m * m)


def measure(pth, a, b, out):
    import pathlib

    import torch
    import pytorch_fid.inception as pi
    from pytorch_fid import fid_score

    torch.set_num_threads(1)
    pi.load_state_dict_from_url = lambda *args, **kwargs: torch.load(pth, map_location="cpu")
    model = pi.InceptionV3([pi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    features = []
    for folder in (a, b):
        files = sorted(pathlib.Path(folder).glob("*.png"))
        features.append(fid_score.get_activations(files, model, batch_size=8, dims=2048, device="cpu", num_workers=0))
    np.save(os.path.join(out, "a_features.npy"), features[0].astype(np.float32))
    np.save(os.path.join(out, "b_features.npy"), features[1].astype(np.float32))
    stats = [(np.mean(f, axis=0), np.cov(f, rowvar=False)) for f in features]
    np.savez_compressed(os.path.join(out, "b_stats.npz"), mu=stats[1][0], sigma=stats[1][1])
    fid = fid_score.calculate_frechet_distance(stats[0][0], stats[0][1], stats[1][0], stats[1][1])
    kid = polynomial_mmd2(features[0].astype(np.float64), features[1].astype(np.float64))
    print(json.dumps({"fid": float(fid), "kid": float(kid)}))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "make-images":
        make_images(args[0], int(args[1]))
    elif command == "pth":
        to_pth(args[0], args[1])
    elif command == "measure":
        measure(*args)
    else:
        sys.exit(f"unknown command {command}")
