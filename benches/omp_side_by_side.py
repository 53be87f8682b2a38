"""Two libtorch processes side by side on shared cores: how libgomp's waiting
policy changes their speed (docs/performance.md, "Runs side by side").

usage: omp_side_by_side.py            (runs every setting, prints a table)

Each process does the same small-network work as a digits run (3x3
convolutions on 8x8 maps, GroupNorm, a dense layer), 400 times. Settings:
one process alone on 2 and on 1 threads; two at once, each on 2 threads,
with libgomp's default (active) and passive waiting; two at once on 1
thread each. The numbers do not depend on the waiting policy.
"""

import os
import subprocess
import sys
import time

WORK = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
torch.manual_seed(0)
x = torch.randn(64, 64, 8, 8); w = torch.randn(64, 64, 3, 3)
lin = torch.nn.Linear(256, 256); y = torch.randn(128, 256)
start = time.time()
for _ in range(400):
    torch.nn.functional.conv2d(x, w, padding=1).relu().sum()
    torch.nn.functional.group_norm(x, 8)
    lin(y).tanh().sum()
print(time.time() - start)
"""


def side_by_side(count, threads, policy):
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    start = time.time()
    procs = [subprocess.Popen([sys.executable, "-c", WORK, str(threads)], env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(count)]
    each = [float(p.communicate()[0]) for p in procs]
    return time.time() - start, max(each)


def main():
    rows = [("alone", 1, 2, None), ("alone", 1, 1, None), ("alone, passive", 1, 2, "PASSIVE"),
            ("two at once, active (default)", 2, 2, None),
            ("two at once, passive", 2, 2, "PASSIVE"), ("two at once", 2, 1, None)]
    print("| setting | processes | threads each | slowest process (s) | wall for both jobs (s) |")
    print("|---|---|---|---|---|")
    for name, count, threads, policy in rows:
        wall, slowest = side_by_side(count, threads, policy)
        # Two jobs done one after the other when run alone.
        both = wall * 2 if count == 1 else wall
        print(f"| {name} | {count} | {threads} | {slowest:.2f} | {both:.2f} |")


if __name__ == "__main__":
    main()
