"""A transcription of the generator side of the authors' fine-tuning code
(UW-Madison-Lee-Lab/SFT-PG, finetune.py: calc_diffusion_hyperparams,
get_VAR_noise, bisearch, _log_cont_noise, _precompute_VAR_steps,
VAR_sampling, VAR_get_params, VAR_log_prob and the generator loss of
train_one_epoch), run on a small random-weight diffusers UNet2DModel.

usage: authors_finetune.py OUT_DIR

The one change from the original: every tensor is float64 (the original
casts the FastDPM noise levels to float32 and samples in float32), so that a
comparison can resolve the last step, whose std is 1e-3: in float32 the
rounding of x_0 - mean alone is about 1e-4 of the step's noise. The noise is
drawn as the original draws it, x_T first and then one standard normal per
step, from torch's CPU generator seeded with SEED (libtorch's, which the
Rust side shares).

Writes to OUT_DIR:
  model/                the network (config.json, diffusion_pytorch_model.safetensors)
  coefficients.npz      x_prev_multiplier, theta_multiplier, std, diffusion_steps_list
                        (index 0: the first sampling step, from x_T)
  x_seq.npy             [S + 1, B, C, H, W]: x_T, ..., x_0 of the rollout
  critic.npz            wf, bf (f(x) = sum(wf * x) + bf) and wv, cv
                        (v(x, k) = sum(wv * x) + cv[k], k the authors' step index)
  grads_step<k>.npz     per parameter, the gradient of the generator loss on
                        the B transitions of step index k (k = S - 1: the last)
  grads_mixed.npz       the same on a minibatch of M transitions of all steps,
                        rows `mixed_rows` of the buffer (in the authors' order)
  mixed_rows.npy        those rows
"""

import json
import os
import sys

import numpy as np
import torch
from diffusers import UNet2DModel
from torch.distributions import Normal

SEED = 20230131
S = 10
B = 6
M = 16
DIFFUSION = {"beta_0": 0.0001, "beta_T": 0.02, "T": 1000}
KAPPA = 1.0
DTYPE = torch.float64


def unsqueeze3x(x):
    return x[..., None, None, None]


def calc_diffusion_hyperparams(T, beta_0, beta_T):
    beta = torch.linspace(beta_0, beta_T, T, dtype=DTYPE)
    alpha = 1 - beta
    alpha_bar = alpha + 0
    for t in range(1, T):
        alpha_bar[t] *= alpha_bar[t - 1]
    return {"T": T, "Beta": beta, "Alpha": alpha, "Alpha_bar": alpha_bar}


def bisearch(f, domain, target, eps=1e-8):
    sign = -1 if target < 0 else 1
    left, right = domain
    for _ in range(1000):
        x = (left + right) / 2
        if f(x) < target:
            right = x
        elif f(x) > (1 + sign * eps) * target:
            left = x
        else:
            break
    return x


def get_var_noise(steps, schedule):
    target = np.prod(1 - np.linspace(DIFFUSION["beta_0"], DIFFUSION["beta_T"], DIFFUSION["T"]))
    if schedule == "linear":
        g = lambda x: np.linspace(DIFFUSION["beta_0"], x, steps)
        domain = (DIFFUSION["beta_0"], 0.99)
    else:
        g = lambda x: np.array([DIFFUSION["beta_0"] * (1 + i * x) ** 2 for i in range(steps)])
        domain = (0.0, 0.95 / np.sqrt(DIFFUSION["beta_0"]) / steps)
    f = lambda x: np.prod(1 - g(x))
    return g(bisearch(f, domain, target, eps=1e-4))


def log_gamma(x):
    y = x - 1
    return np.log(2 * np.pi * y) / 2 + y * (np.log(y) - 1) + np.log(1 + 1 / (12 * y))


def log_cont_noise(t, beta_0, beta_T, T):
    delta_beta = (beta_T - beta_0) / (T - 1)
    c = (1.0 - beta_0) / delta_beta
    t_1 = t + 1
    return t_1 * np.log(delta_beta) + log_gamma(c + 1) - log_gamma(c - t_1 + 1)


def gamma_bar_of(eta):
    gamma_bar = 1 - torch.from_numpy(eta).to(DTYPE)
    for t in range(1, len(eta)):
        gamma_bar[t] *= gamma_bar[t - 1]
    return gamma_bar


def precompute_var_steps(dh, eta):
    T, alpha_bar, beta = dh["T"], dh["Alpha_bar"], dh["Beta"]
    gamma_bar = gamma_bar_of(eta)
    steps = []
    for t in range(len(eta) - 1, -1, -1):
        adapted = None
        for i in range(T - 1):
            if alpha_bar[i] >= gamma_bar[t] > alpha_bar[i + 1]:
                adapted = bisearch(
                    f=lambda _t: log_cont_noise(_t, beta[0].numpy(), beta[-1].numpy(), T),
                    domain=(i - 0.01, i + 1.01),
                    target=np.log(gamma_bar[t].numpy()),
                )
                break
        steps.append(T - 1 if adapted is None else adapted)
    return steps


def var_get_params(eta, kappa, continuous_steps):
    n = len(eta)
    gamma_bar = gamma_bar_of(eta)
    x_prev_multiplier = torch.zeros(n, dtype=DTYPE)
    theta_multiplier = torch.zeros(n, dtype=DTYPE)
    std = torch.zeros(n, dtype=DTYPE)
    diffusion_steps_list = torch.zeros(n, dtype=DTYPE)
    for i, tau in enumerate(continuous_steps):
        diffusion_steps_list[i] = tau
        now = gamma_bar[n - 1 - i]
        if i == n - 1:
            alpha_next = torch.tensor(1.0, dtype=DTYPE)
            sigma = torch.tensor(0.0, dtype=DTYPE)
        else:
            alpha_next = gamma_bar[n - 2 - i]
            sigma = kappa * torch.sqrt((1 - alpha_next) / (1 - now) * (1 - now / alpha_next))
        x_prev_multiplier[i] = torch.sqrt(alpha_next / now)
        theta_multiplier[i] = torch.sqrt(1 - alpha_next - sigma**2) - torch.sqrt(1 - now) * torch.sqrt(
            alpha_next / now
        )
        std[i] = 0.001 if i == n - 1 else sigma
    return x_prev_multiplier, theta_multiplier, std, diffusion_steps_list


def var_sampling(net, size, eta, kappa, continuous_steps):
    """The fine-tuning rollout of finetune.py's VAR_sampling, the last step
    drawn with std 0.001 (`x += c * epsilon_theta + 0.001 * std_normal(size)`)."""
    n = len(eta)
    gamma_bar = gamma_bar_of(eta)
    x = torch.randn(size, dtype=DTYPE)
    x_seq = [x.clone()]
    with torch.no_grad():
        for i, tau in enumerate(continuous_steps):
            eps = net(x, tau * torch.ones(size[0], dtype=DTYPE)).sample
            now = gamma_bar[n - 1 - i]
            if i == n - 1:
                alpha_next = torch.tensor(1.0, dtype=DTYPE)
                sigma = torch.tensor(0.0, dtype=DTYPE)
            else:
                alpha_next = gamma_bar[n - 2 - i]
                sigma = kappa * torch.sqrt((1 - alpha_next) / (1 - now) * (1 - now / alpha_next))
            x = x * torch.sqrt(alpha_next / now)
            c = torch.sqrt(1 - alpha_next - sigma**2) - torch.sqrt(1 - now) * torch.sqrt(alpha_next / now)
            if i == n - 1:
                x = x + c * eps + 0.001 * torch.randn(size, dtype=DTYPE)
            else:
                x = x + c * eps + sigma * torch.randn(size, dtype=DTYPE)
            x_seq.append(x.clone())
    return x_seq


def var_log_prob(net, x_prev, x_next, t, params):
    x_prev_multiplier, theta_multiplier, std, steps = params
    eps = net(x_prev, steps[t]).sample
    pred_mean = x_prev * unsqueeze3x(x_prev_multiplier[t]) + unsqueeze3x(theta_multiplier[t]) * eps
    dist = Normal(pred_mean, unsqueeze3x(std[t]))
    return dist.log_prob(x_next.detach()).mean(dim=-1).mean(dim=-1).mean(dim=-1)


def generator_grads(net, buffer, indices, f, v, params):
    """The generator step of train_one_epoch on the buffer rows `indices`,
    up to the gradient (before clipping and the optimiser)."""
    with torch.no_grad():
        adv = (f(buffer["final"][indices]) - v(buffer["state"][indices], buffer["timestep"][indices])).squeeze()
    log_prob_t = var_log_prob(
        net, buffer["state"][indices], buffer["next_state"][indices], buffer["timestep"][indices], params
    )
    loss = (adv * log_prob_t).mean()
    names = [name for name, _ in net.named_parameters()]
    grads = torch.autograd.grad(loss, [p for _, p in net.named_parameters()])
    return {name: g.numpy() for name, g in zip(names, grads)}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(1)
    net = UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(16, 32),
        layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8, act_fn="silu",
        attention_head_dim=None, center_input_sample=False, downsample_padding=0,
        flip_sin_to_cos=False, freq_shift=1, mid_block_scale_factor=1, norm_eps=1e-6,
        time_embedding_type="positional",
    )
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    net.save_pretrained(os.path.join(out, "model"), safe_serialization=True)
    # The float32 weights as saved, in float64, evaluation mode (finetune.py: net.eval()).
    net = net.double().eval()

    dh = calc_diffusion_hyperparams(**DIFFUSION)
    eta = get_var_noise(S, "quadratic")
    continuous_steps = precompute_var_steps(dh, eta)
    params = var_get_params(eta, KAPPA, continuous_steps)
    np.savez(
        os.path.join(out, "coefficients.npz"),
        **{k: p.numpy() for k, p in zip(["x_prev_multiplier", "theta_multiplier", "std", "diffusion_steps_list"], params)},
    )

    size = (B, 1, 8, 8)
    torch.manual_seed(SEED)
    x_seq = var_sampling(net, size, eta, KAPPA, continuous_steps)
    np.save(os.path.join(out, "x_seq.npy"), torch.stack(x_seq).numpy())

    # The buffer of train_one_epoch, filled as the original fills it.
    buffer = {
        "state": torch.cat([x_seq[t] for t in range(S)]),
        "next_state": torch.cat([x_seq[t + 1] for t in range(S)]),
        "timestep": torch.cat([torch.tensor([t] * B) for t in range(S)]),
        "final": torch.cat([x_seq[-1] for _ in range(S)]),
    }
    gen = torch.Generator().manual_seed(7)
    wf = torch.randn(size[1:], dtype=DTYPE, generator=gen)
    wv = torch.randn(size[1:], dtype=DTYPE, generator=gen) * 0.5
    cv = torch.randn(S, dtype=DTYPE, generator=gen)
    bf = 0.3
    np.savez(os.path.join(out, "critic.npz"), wf=wf.numpy(), wv=wv.numpy(), cv=cv.numpy(), bf=np.array(bf))
    f = lambda x: (x * wf).sum(dim=(1, 2, 3)).unsqueeze(1) + bf
    v = lambda x, k: (x * wv).sum(dim=(1, 2, 3)).unsqueeze(1) + cv[k].unsqueeze(1)

    for k in range(S):
        rows = torch.arange(k * B, (k + 1) * B)
        np.savez(os.path.join(out, f"grads_step{k}.npz"), **generator_grads(net, buffer, rows, f, v, params))
    mixed = torch.randperm(S * B, generator=gen)[:M]
    np.save(os.path.join(out, "mixed_rows.npy"), mixed.numpy())
    np.savez(os.path.join(out, "grads_mixed.npz"), **generator_grads(net, buffer, mixed, f, v, params))
    with open(os.path.join(out, "shape.json"), "w") as fh:
        json.dump({"S": S, "B": B, "M": M, "seed": SEED}, fh)


if __name__ == "__main__":
    main()
