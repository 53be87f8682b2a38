"""pytorch-fid's side of benches/inception_features.rs: its InceptionV3
(pool3, its own resize to 299 and scaling) with the weights of the
TorchScript network rl-run uses, on N random 32x32 RGB images (uint8 pixels
as its ImagePathDataset gives them: floats in [0, 1]) in batches; prints one
JSON line with the images per second and the peak RSS.

  python benches/inception_features.py --network PT --n N --batch B --threads K
"""

import argparse
import json
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "python"))
import pytorch_fid_reference  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--network", required=True)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    import pytorch_fid.inception as pi

    state = pytorch_fid_reference.state_dict_from_torchscript(a.network)
    pi.load_state_dict_from_url = lambda *args, **kwargs: state
    model = pi.InceptionV3([pi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval().to(a.device)
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (a.n, 3, 32, 32), generator=g, dtype=torch.uint8)
    with torch.no_grad():
        model(pixels[: a.batch].to(a.device).float() / 255.0)  # warm-up
        start = time.perf_counter()
        for i in range(0, a.n, a.batch):
            out = model(pixels[i : i + a.batch].to(a.device).float() / 255.0)[0].cpu()  # as pytorch-fid's get_activations
            assert out.shape[1] == 2048
        seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"images_per_sec": a.n / seconds, "peak_rss_mib": rss}))


if __name__ == "__main__":
    main()
