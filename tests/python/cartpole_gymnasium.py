"""Episodes of gymnasium's CartPole-v1 from fixed start states under fixed
action rules, for the parity test of envs::cartpole (tests/cartpole_gymnasium.rs).

usage: cartpole_gymnasium.py OUT.json

Every episode is gymnasium.make("CartPole-v1") (so with its TimeLimit of
500 steps), reset(seed=0), then env.unwrapped.state set to the start state,
then stepped with one action rule until it terminates or is truncated.
OUT.json holds {"gymnasium": version, "episodes": [...]}, each episode
{"name", "start", "actions", "states", "obs", "rewards", "terminated",
"truncated"}, one entry per step in the last five. Floats that must be
compared exactly are written as their bits: start and states as the uint64
bits of the float64 state after each step, obs as the uint32 bits of the
float32 observation.
"""

import json
import math
import sys

import gymnasium
import numpy as np

ENV = gymnasium.make("CartPole-v1")
THETA = ENV.unwrapped.theta_threshold_radians
X = ENV.unwrapped.x_threshold
TAU = ENV.unwrapped.tau
assert ENV.spec.max_episode_steps == 500
assert ENV.unwrapped.kinematics_integrator == "euler"

# Generic starts, and starts whose first step lands just beyond (1e-9) or
# just short of a termination threshold, on it (strict inequalities) or
# one ulp beyond it.
STARTS = {
    "small": [0.01, -0.02, 0.03, 0.04],
    "upright": [0.01, 0.0, -0.02, 0.03],
    "zero": [0.0, 0.0, 0.0, 0.0],
    "reset_corner": [0.049, -0.049, 0.049, -0.049],
    "moving": [-0.03, 0.4, -0.05, 0.3],
    "tilted": [0.5, -0.2, 0.1, -0.1],
    "x_just_out": [X - 1e-6, (1e-6 + 1e-9) / TAU, 0.0, 0.0],
    "x_just_in": [-X + 1e-6, -(1e-6 - 1e-9) / TAU, 0.0, 0.0],
    "x_on_edge": [X, 0.0, 0.0, 0.0],
    "theta_just_out": [0.0, 0.0, -THETA + 1e-6, -(1e-6 + 1e-9) / TAU],
    "theta_just_in": [0.0, 0.0, THETA - 1e-6, (1e-6 - 1e-9) / TAU],
    "theta_on_edge": [0.0, 0.0, THETA, 0.0],
    # One ulp beyond: the thresholds are gymnasium's to the last bit.
    "x_ulp_out": [-math.nextafter(X, math.inf), 0.0, 0.0, 0.0],
    "theta_ulp_out": [0.0, 0.0, math.nextafter(THETA, math.inf), 0.0],
}


def balance(state, step):
    """A bang-bang balancing controller (balances CartPole-v1 for 500 steps)."""
    x, x_dot, theta, theta_dot = state
    return 1 if 0.3 * x + 0.8 * x_dot + 10.0 * theta + 2.0 * theta_dot > 0 else 0


def alternating(state, step):
    return (step + 1) % 2


def all_left(state, step):
    return 0


def all_right(state, step):
    return 1


class Lcg:
    """Pseudo-random actions: the top bit of a 64-bit LCG (Knuth's MMIX constants)."""

    def __init__(self, seed):
        self.s = seed

    def __call__(self, state, step):
        self.s = (self.s * 6364136223846793005 + 1442695040888963407) % 2**64
        return self.s >> 63


def balance_then_fall(state, step):
    """Balances 489 steps, then pushes right, right, left, ...: terminates on
    step 500 itself, where the TimeLimit also truncates."""
    if step < 489:
        return balance(state, step)
    return [1, 1, 0][(step - 489) % 3]


RULES = {
    "alternating": lambda: alternating,
    "all_left": lambda: all_left,
    "all_right": lambda: all_right,
    "lcg": lambda: Lcg(12345),
    "balance": lambda: balance,
}


def bits64(values):
    return [int(b) for b in np.asarray(values, dtype=np.float64).view(np.uint64)]


def bits32(values):
    assert values.dtype == np.float32
    return [int(b) for b in values.view(np.uint32)]


def episode(name, start, rule):
    ENV.reset(seed=0)
    ENV.unwrapped.state = np.array(start, dtype=np.float64)
    out = {
        "name": name,
        "start": bits64(start),
        "actions": [],
        "states": [],
        "obs": [],
        "rewards": [],
        "terminated": [],
        "truncated": [],
    }
    for step in range(1000):
        action = int(rule(ENV.unwrapped.state, step))
        obs, reward, terminated, truncated, _ = ENV.step(action)
        out["actions"].append(action)
        out["states"].append(bits64(ENV.unwrapped.state))
        out["obs"].append(bits32(obs))
        out["rewards"].append(float(reward))
        out["terminated"].append(bool(terminated))
        out["truncated"].append(bool(truncated))
        if terminated or truncated:
            return out
    raise AssertionError(f"{name} ran past the time limit")


def main():
    episodes = []
    for start_name, start in STARTS.items():
        for rule_name, make_rule in RULES.items():
            episodes.append(episode(f"{start_name}/{rule_name}", start, make_rule()))
    episodes.append(episode("upright/balance_then_fall", STARTS["upright"], balance_then_fall))
    # What the episodes are meant to cover.
    last = {e["name"]: (len(e["actions"]), e["terminated"][-1], e["truncated"][-1]) for e in episodes}
    assert last["small/balance"] == (500, False, True), last["small/balance"]
    assert last["upright/balance_then_fall"] == (500, True, True), last["upright/balance_then_fall"]
    for edge in ("x_just_out", "theta_just_out", "x_ulp_out", "theta_ulp_out"):
        assert last[f"{edge}/alternating"] == (1, True, False), edge
    for edge in ("x_just_in", "x_on_edge", "theta_just_in", "theta_on_edge"):
        assert last[f"{edge}/all_right"][0] > 1, edge
    with open(sys.argv[1], "w") as f:
        json.dump({"gymnasium": gymnasium.__version__, "episodes": episodes}, f)


if __name__ == "__main__":
    main()
