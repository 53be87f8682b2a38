"""PyTorch baseline for the SFT-PG iteration benchmark (2-D swiss-roll toy).

Times one SFT-PG (B) training iteration (Algorithm 1 of the paper, toy settings
of the authors' code): every iteration samples m = 128 chains of T steps without
gradients, stores all transitions, and takes one critic+baseline step ascending
L = g - lambda * R_B; every n_critic = 5th iteration also takes one generator
step on 128 transitions drawn from the buffer, then clears it.

`--mode pathwise` replaces the generator step by the pathwise (SFT) estimator:
backpropagate mean f(x_0) through a fresh reparameterised chain of T steps.

Prints one JSON line: seconds per iteration, iterations per second and the
process's peak resident set size.
"""
import argparse
import json
import math
import resource
import time

import torch
from torch import nn
from torch.distributions import Normal

BATCH = 128
N_CRITIC = 5
LAMBDA = 1.0
N_DATA = 10_000


class CondLinear(nn.Module):
    """gamma_t * (W x + b), gamma_t a learned per-step embedding."""

    def __init__(self, d_in, d_out, n_steps, xavier=False):
        super().__init__()
        self.lin = nn.Linear(d_in, d_out)
        if xavier:
            nn.init.xavier_normal_(self.lin.weight)
        self.embed = nn.Embedding(n_steps, d_out)
        nn.init.uniform_(self.embed.weight, 0.0, 1.0)

    def forward(self, x, t):
        return self.embed(t) * self.lin(x)


class EpsNet(nn.Module):
    """eps_theta(x, t): three conditional layers 2->128->128->128 with softplus, then linear."""

    def __init__(self, n_steps, hidden=128):
        super().__init__()
        dims = [2, hidden, hidden, hidden]
        self.layers = nn.ModuleList(CondLinear(a, b, n_steps, xavier=True) for a, b in zip(dims, dims[1:]))
        self.out = nn.Linear(hidden, 2)

    def forward(self, x, t):
        for layer in self.layers:
            x = nn.functional.softplus(layer(x, t))
        return self.out(x)


class Baseline(nn.Module):
    """V_omega(x, t): conditional-linear 2->256->256->1 with ReLU on the hidden layers."""

    def __init__(self, n_steps, hidden=256):
        super().__init__()
        self.l1 = CondLinear(2, hidden, n_steps)
        self.l2 = CondLinear(hidden, hidden, n_steps)
        self.l3 = CondLinear(hidden, 1, n_steps)

    def forward(self, x, t):
        return self.l3(torch.relu(self.l2(torch.relu(self.l1(x, t)), t)), t)


def make_critic(hidden=256):
    return nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))


def make_schedule(n_steps, device):
    betas = torch.sigmoid(torch.linspace(-6, 6, n_steps)) * (1e-2 - 1e-5) + 1e-5
    alphas = 1 - betas
    abar = torch.cumprod(alphas, 0)
    return {"beta": betas.to(device), "alpha": alphas.to(device), "abar": abar.to(device)}


def swiss_roll(n, gen):
    """make_swiss_roll(noise=0.05)[:, [0, 2]] / 20, without scikit-learn."""
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=gen))
    noise = 0.05 * torch.randn(n, 2, generator=gen)
    return torch.stack([t * torch.cos(t), t * torch.sin(t)], 1).add(noise) / 20


def policy_mean(eps_net, sched, x, t):
    """mu_theta(x, t) = (x - beta_t / sqrt(1 - abar_t) * eps) / sqrt(alpha_t), t a [B] step index."""
    beta, alpha, abar = (sched[k][t].unsqueeze(-1) for k in ("beta", "alpha", "abar"))
    return (x - beta / torch.sqrt(1 - abar) * eps_net(x, t)) / torch.sqrt(alpha)


def sample_chain(eps_net, sched, n, device):
    """Run the sampler from x_T ~ N(0, I); returns [T+1, n, 2] states and the [T] step indices used."""
    n_steps = sched["beta"].shape[0]
    x = torch.randn(n, 2, device=device)
    states = [x]
    steps = torch.arange(n_steps - 1, -1, -1, device=device)
    for i in steps:
        t = i.expand(n)
        x = policy_mean(eps_net, sched, x, t) + torch.sqrt(sched["beta"][i]) * torch.randn_like(x)
        states.append(x)
    return torch.stack(states), steps


def critic_step(critic, baseline, opt_c, opt_b, states, steps, real):
    """Ascend L = g - lambda * R_B; the R_B gradient reaches both f and V."""
    n_steps, n = states.shape[0] - 1, states.shape[1]
    f_fake = critic(states[-1])
    gap = f_fake.mean() - critic(real).mean()
    v = baseline(states[:-1].reshape(-1, 2), steps.repeat_interleave(n))
    r_b = nn.functional.mse_loss(v, f_fake.repeat(n_steps, 1))
    loss = -(gap - LAMBDA * r_b)
    opt_c.zero_grad(set_to_none=True)
    opt_b.zero_grad(set_to_none=True)
    loss.backward()
    opt_c.step()
    opt_b.step()
    return gap.item()


def pg_generator_step(eps_net, critic, baseline, opt_g, sched, buffer):
    """Descend mean[(f(x_0) - V(x_{t+1}, t)).detach() * log p_theta(x_t | x_{t+1})] on buffered transitions."""
    prev, nxt, x0, t = (torch.cat(parts) for parts in zip(*buffer))
    idx = torch.randint(prev.shape[0], (BATCH,), device=prev.device)
    prev, nxt, x0, t = prev[idx], nxt[idx], x0[idx], t[idx]
    with torch.no_grad():
        adv = (critic(x0) - baseline(prev, t)).squeeze(-1)
    std = torch.sqrt(sched["beta"][t]).unsqueeze(-1)
    log_prob = Normal(policy_mean(eps_net, sched, prev, t), std).log_prob(nxt).sum(-1)
    loss = (adv * log_prob).mean()
    opt_g.zero_grad(set_to_none=True)
    loss.backward()
    opt_g.step()


def pathwise_generator_step(eps_net, critic, opt_g, sched, device):
    """Descend mean f(x_0), backpropagating through the whole reparameterised chain."""
    states, _ = sample_chain(eps_net, sched, BATCH, device)
    loss = critic(states[-1]).mean()
    opt_g.zero_grad(set_to_none=True)
    loss.backward()
    opt_g.step()


class Trainer:
    """Models, optimisers, data and the transition buffer of one SFT-PG (B) run."""

    def __init__(self, n_steps, mode, device, seed):
        torch.manual_seed(seed)
        self.mode, self.device = mode, device
        self.sched = make_schedule(n_steps, device)
        self.eps_net = EpsNet(n_steps).to(device)
        self.critic = make_critic().to(device)
        self.baseline = Baseline(n_steps).to(device)
        self.opt_g = torch.optim.Adam(self.eps_net.parameters(), lr=5e-5)
        self.opt_c = torch.optim.Adam(self.critic.parameters(), lr=1e-3)
        self.opt_b = torch.optim.Adam(self.baseline.parameters(), lr=1e-3)
        self.data = swiss_roll(N_DATA, torch.Generator().manual_seed(seed)).to(device)
        self.buffer = []
        self.count = 0

    def iteration(self):
        """One critic+baseline step; every N_CRITIC-th call also one generator step. Returns the gap g."""
        with torch.no_grad():
            states, steps = sample_chain(self.eps_net, self.sched, BATCH, self.device)
        if self.mode == "pg":
            n_steps = steps.shape[0]
            self.buffer.append((states[:-1].reshape(-1, 2), states[1:].reshape(-1, 2),
                                states[-1].repeat(n_steps, 1), steps.repeat_interleave(BATCH)))
        real = self.data[torch.randint(N_DATA, (BATCH,), device=self.device)]
        gap = critic_step(self.critic, self.baseline, self.opt_c, self.opt_b, states, steps, real)
        self.count += 1
        if self.count % N_CRITIC == 0:
            if self.mode == "pg":
                pg_generator_step(self.eps_net, self.critic, self.baseline, self.opt_g, self.sched, self.buffer)
                self.buffer.clear()
            else:
                pathwise_generator_step(self.eps_net, self.critic, self.opt_g, self.sched, self.device)
        return gap


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="sampling steps T")
    parser.add_argument("--iters", type=int, default=500, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=50, help="untimed iterations before timing")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--mode", choices=["pg", "pathwise"], default="pg", help="generator gradient estimator")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    device = torch.device(args.device)
    trainer = Trainer(args.steps, args.mode, device, args.seed)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    for _ in range(args.warmup):
        trainer.iteration()
    sync()
    start = time.perf_counter()
    for _ in range(args.iters):
        trainer.iteration()
    sync()
    elapsed = time.perf_counter() - start

    print(json.dumps({
        "impl": "pytorch", "steps": args.steps, "batch": BATCH, "threads": args.threads, "iters": args.iters,
        "sec_per_iter": elapsed / args.iters, "iters_per_sec": args.iters / elapsed,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "mode": args.mode,
    }))


if __name__ == "__main__":
    main()
