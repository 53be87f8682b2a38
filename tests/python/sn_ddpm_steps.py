"""A PyTorch transcription of Bao et al.'s SN-DDPM / NPR-DDPM sampler step
and head losses (baofff/Extended-Analytic-DPM: core/diffusion/dtdpm.py,
core/diffusion/sample.py, core/criterions/ddpm.py), run on the tensors the
Rust test wrote, for the SN-DDPM parity test.

usage: sn_ddpm_steps.py DIR

DIR holds x.npy, output.npy, z.npy ([K, B, C, H, W], [K, B, 2C, H, W],
[K, B, C, H, W]: per step, the sample, the network's output (eps^, then the
head's) and the step's noise), and noise.npy ([B, C, H, W], the true noise
of the loss). Writes sn.npy and npr.npy (each step's next sample) and
losses.npy ([SN loss, NPR loss] of output[0] against noise).

Their schedule: linear betas 1e-4 .. 0.02 over N = 1000, abar[0] = 1,
the even ("linear") trajectory [1, 112, ..., 1000] for K = 10, x_0 clipped,
the second-to-last step's sigma clipped at 2 pixel levels (clip_sigma_idx 1,
clip_pixel 2), the last step noiseless.
"""

import math
import os
import sys

import numpy as np
import torch


def main():
    d = sys.argv[1]
    x = torch.from_numpy(np.load(os.path.join(d, "x.npy"))).double()
    output = torch.from_numpy(np.load(os.path.join(d, "output.npy"))).double()
    z = torch.from_numpy(np.load(os.path.join(d, "z.npy"))).double()
    noise = torch.from_numpy(np.load(os.path.join(d, "noise.npy"))).double()
    N, K = 1000, x.shape[0]
    betas = np.linspace(1e-4, 0.02, N, dtype=np.float64)
    abar = np.concatenate([[1.0], np.cumprod(1.0 - betas)])
    steps = np.round(np.linspace(1, N, K)).astype(np.int64)  # 1, 112, ..., 1000
    timesteps = [0] + steps.tolist()
    c = x.shape[2]
    clip_sigma = (2 * 2.0 / 255.0 * math.sqrt(math.pi / 2)) ** 2
    for kind in ("sn", "npr"):
        out = []
        for i in range(K):
            n, s = timesteps[K - i], timesteps[K - i - 1]
            xn = x[i]
            eps, head = output[i][:, :c], output[i][:, c:]
            skip_alpha = abar[n] / abar[s]
            skip_beta = 1 - skip_alpha
            x0 = ((xn - math.sqrt(1 - abar[n]) * eps) / math.sqrt(abar[n])).clamp(-1.0, 1.0)
            coef_x0 = math.sqrt(abar[s]) * skip_beta / (1 - abar[n])
            coef_xn = math.sqrt(skip_alpha) * (1 - abar[s]) / (1 - abar[n])
            mean = coef_x0 * x0 + coef_xn * xn
            if s == 0:
                out.append(mean)
                continue
            if kind == "sn":
                cov = (1 - abar[n]) / abar[n] * (head - eps.pow(2))
            else:
                cov = (1 - abar[n]) / abar[n] * head
            cov = cov.clamp(0.0, 1.0)
            tilde_beta = skip_beta * (1 - abar[s]) / (1 - abar[n])
            var = tilde_beta + coef_x0 ** 2 * cov
            if s <= timesteps[1]:
                var = var.clamp(0.0, clip_sigma)
            out.append(mean + var.sqrt() * z[i])
        np.save(os.path.join(d, f"{kind}.npy"), torch.stack(out).float().numpy())
    eps, head = output[0][:, :c], output[0][:, c:]
    sos = lambda t: t.pow(2).flatten(1).sum(1)
    sn = sos(noise.pow(2) - head).mean()
    npr = sos((noise - eps).pow(2) - head).mean()
    np.save(os.path.join(d, "losses.npy"), np.array([sn.item(), npr.item()], dtype=np.float64))


if __name__ == "__main__":
    main()
