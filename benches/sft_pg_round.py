"""PyTorch + diffusers baseline for the SFT-PG round benchmark (CIFAR-10 config).

Times one SFT-PG (B) round of experiments/sft_pg_cifar.ron (Algorithm 1 of
the paper, the authors' image settings):

- n_critic critic+baseline steps, each on a rollout of `--chains` fresh
  chains of T' steps of diffusers' UNet2DModel with google/ddpm-cifar10-32's
  configuration (random weights), sampled without gradients by the affine
  Gaussian policy x_{t-1} = (x_t - eps_scale eps) x_scale + sigma z whose
  per-step coefficients (FastDPM VAR, quadratic, kappa 1) the Rust side
  writes to `--coefficients`; each step ascends g - lambda R_B with the conv
  critic (3 -> 128 -> 256 -> 512, 4x4 stride 2, LeakyReLU 0.2, 4x4 to one
  channel, mean) and the conditional MLP baseline (3072 -> 1024 -> 1024 ->
  256 -> 1, per-step gains), R_B summed over the steps, Adam 1e-4;
- n_generator generator steps on disjoint minibatches of `--chains`
  transitions drawn from the buffer of all the round's transitions:
  mean[(f(x_0) - V(x_{t+1}, t+1)) log pi(x_t | x_{t+1})] with the advantage
  detached and the log-density averaged over the pixels, gradient norm
  clipped at 0.1, Adam 1e-6.

The buffer is one tensor of the round's chain states, [n_critic, T'+1,
chains, 3, 32, 32], allocated at the start and filled by the rollouts, each
state stored once; a minibatch gathers its rows.

Prints one JSON line: seconds of the rollouts, of the rest of the critic
steps and of the generator steps, the peak resident set size (VmHWM) and the
buffer's bytes.
"""
import argparse
import json
import math
import time

import torch
from diffusers import UNet2DModel
from torch import nn

CIFAR10 = dict(
    sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256),
    layers_per_block=2,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=32, act_fn="silu", attention_head_dim=None, downsample_padding=0,
    flip_sin_to_cos=False, freq_shift=1, norm_eps=1e-6, time_embedding_type="positional",
)
LAMBDA = 1.0
GRAD_CLIP = 0.1


class ConvCritic(nn.Module):
    """The authors' image critic f: halving 4x4 convolutions with LeakyReLU, a 4x4 conv to one channel, mean."""

    def __init__(self, channels=(128, 256, 512)):
        super().__init__()
        layers, c_in = [], 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 4, 2, 1), nn.LeakyReLU(0.2)]
            c_in = c
        layers.append(nn.Conv2d(c_in, 1, 4, 1, 0))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x).mean(dim=(1, 2, 3))


class CondLinear(nn.Module):
    """gamma_t * (W x + b), gamma_t a learned per-step gain (uniform(0, 1) at start)."""

    def __init__(self, d_in, d_out, n_steps):
        super().__init__()
        self.lin = nn.Linear(d_in, d_out)
        self.embed = nn.Embedding(n_steps, d_out)
        nn.init.uniform_(self.embed.weight, 0.0, 1.0)

    def forward(self, x, t):
        return self.embed(t) * self.lin(x)


class Baseline(nn.Module):
    """V(x_{t+1}, t+1): conditional-linear MLP over the flattened state, ReLU between layers."""

    def __init__(self, n_steps, dim=3 * 32 * 32, hidden=(1024, 1024, 256)):
        super().__init__()
        widths = [dim, *hidden, 1]
        self.layers = nn.ModuleList(CondLinear(a, b, n_steps) for a, b in zip(widths, widths[1:]))

    def forward(self, x, t):
        h = x.flatten(1)
        for layer in self.layers[:-1]:
            h = torch.relu(layer(h, t))
        return self.layers[-1](h, t).squeeze(-1)


class Round:
    """Models, optimisers and the sampler's coefficients of one SFT-PG (B) round."""

    def __init__(self, a, coefs, device):
        self.a = a
        self.device = device
        self.coefs = {k: torch.tensor(v, dtype=torch.float32, device=device) for k, v in coefs.items()}
        self.unet = UNet2DModel(**CIFAR10).train().to(device)
        self.critic = ConvCritic().to(device)
        self.baseline = Baseline(a.steps).to(device)
        self.opt_g = torch.optim.Adam(self.unet.parameters(), lr=1e-6)
        self.opt_c = torch.optim.Adam(self.critic.parameters(), lr=1e-4)
        self.opt_b = torch.optim.Adam(self.baseline.parameters(), lr=1e-4)

    def per_row(self, name, steps):
        """The coefficient `name` at 1-based sampler steps `steps` ([B]), shaped [B, 1, 1, 1]."""
        return self.coefs[name][steps - 1].view(-1, 1, 1, 1)

    def mean(self, x, steps):
        """mu_theta(x, t) = (x - eps_scale eps_theta(x, t)) x_scale at 1-based sampler steps `steps`."""
        eps = self.unet(x, self.coefs["network_times"][steps - 1]).sample
        return (x - self.per_row("eps_scale", steps) * eps) * self.per_row("x_scale", steps)

    @torch.no_grad()
    def rollout(self, states):
        """Chains from x_T' ~ N(0, I) to x_0, their states written to `states` [T'+1, chains, 3, 32, 32], x_T' first."""
        n = self.a.chains
        x = torch.randn(n, 3, 32, 32, device=self.device)
        states[0] = x
        for t in range(self.a.steps, 0, -1):
            steps = torch.full((n,), t, dtype=torch.long, device=self.device)
            # Every step drawn with the std of its log-density, the noiseless
            # last one with 1e-3, as finetune.py does (and shortcut by default).
            x = self.mean(x, steps) + self.per_row("log_prob_sigma", steps) * torch.randn_like(x)
            states[self.a.steps - t + 1] = x
        _reward = -self.critic(x)  # the terminal reward -f(x_0), as the environment gives it

    def critic_step(self, states, real):
        """Ascend g - lambda R_B; R_B = sum over steps of mean over chains of (f(x_0) - V(x_{t+1}, t+1))^2."""
        n_steps, n = states.shape[0] - 1, states.shape[1]
        f_fake = self.critic(states[-1])
        gap = f_fake.mean() - self.critic(real).mean()
        index = torch.arange(n_steps, 0, -1, device=self.device).repeat_interleave(n) - 1  # 0-based step of each state
        v = self.baseline(states[:-1].reshape(-1, 3, 32, 32), index)
        r_b = (v - f_fake.repeat(n_steps)).square().mean() * n_steps
        loss = -(gap - LAMBDA * r_b)
        self.opt_c.zero_grad(set_to_none=True)
        self.opt_b.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_c.step()
        self.opt_b.step()
        return gap.item()

    def generator_steps(self, buffer):
        """n_generator steps on disjoint minibatches of transitions of the buffer [K, T'+1, chains, ...]."""
        k, t1, n = buffer.shape[:3]
        n_steps, total, size = t1 - 1, k * (t1 - 1) * n, self.a.chains
        order = torch.cat([torch.randperm(total, device=self.device) for _ in range(math.ceil(size * self.a.n_generator / total))])
        for i in range(self.a.n_generator):
            idx = order[i * size:(i + 1) * size]
            episode, rest = idx // (n_steps * n), idx % (n_steps * n)
            pos, chain = rest // n, rest % n  # pos 0 is x_T', the state of sampler step T'
            state, action, x0 = buffer[episode, pos, chain], buffer[episode, pos + 1, chain], buffer[episode, -1, chain]
            steps = n_steps - pos
            with torch.no_grad():
                adv = self.critic(x0) - self.baseline(state, steps - 1)
            std = self.per_row("log_prob_sigma", steps)
            z = (action - self.mean(state, steps)) / std
            log_prob = (-0.5 * z.square() - std.log() - 0.5 * math.log(2 * math.pi)).mean(dim=(1, 2, 3))
            loss = (adv * log_prob).mean()
            self.opt_g.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.unet.parameters(), GRAD_CLIP)
            self.opt_g.step()


def peak_rss_mib():
    """VmHWM of this process, in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chains", type=int, default=128, help="chains per critic step and per generator minibatch")
    p.add_argument("--steps", type=int, default=10, help="sampler steps T'")
    p.add_argument("--n-critic", type=int, default=5)
    p.add_argument("--n-generator", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--coefficients", required=True, help="the sampler's per-step coefficients (JSON)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    a = p.parse_args()
    device = torch.device(a.device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    with open(a.coefficients) as f:
        coefs = json.load(f)
    assert len(coefs["sigma"]) == a.steps, "coefficients for another T'"
    r = Round(a, coefs, device)

    rollout_s = 0.0
    sync()
    start = time.perf_counter()
    buffer = torch.empty(a.n_critic, a.steps + 1, a.chains, 3, 32, 32, device=device)
    for i in range(a.n_critic):
        sync()
        t0 = time.perf_counter()
        r.rollout(buffer[i])
        sync()
        rollout_s += time.perf_counter() - t0
        real = torch.rand(a.chains, 3, 32, 32, device=device) * 2 - 1
        r.critic_step(buffer[i], real)
    sync()
    critic_steps_s = time.perf_counter() - start
    start = time.perf_counter()
    r.generator_steps(buffer)
    sync()
    generator_s = time.perf_counter() - start

    print(json.dumps({
        "impl": "pytorch", "chains": a.chains, "steps": a.steps, "n_critic": a.n_critic,
        "n_generator": a.n_generator, "threads": a.threads, "device": a.device,
        "torch_max_reserved_mib": torch.cuda.max_memory_reserved() / 2**20 if device.type == "cuda" else None,
        "unet_params": sum(p.numel() for p in r.unet.parameters()),
        "rollout_s": rollout_s, "critic_s": critic_steps_s - rollout_s, "generator_s": generator_s,
        "round_s": critic_steps_s + generator_s, "peak_rss_mib": peak_rss_mib(),
        "buffer_bytes": buffer.numel() * buffer.element_size(),
        "buffer_transitions": a.n_critic * a.steps * a.chains,
    }))


if __name__ == "__main__":
    main()
