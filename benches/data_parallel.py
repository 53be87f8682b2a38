"""Data-parallel training on this machine: 1 rank x 2 threads against 2 ranks
x 1 thread over MPI, with the time spent in communication, for the digits
fine-tuning round (SFT-PG (B), experiments/sft_pg_digits.ron) and the digits
DDPM's pretraining epochs (experiments/ddpm_digits.ron); then, on paper, the
CIFAR-10 round on 8 GPUs (docs/performance.md, "Data-parallel ranks").

usage: benches/data_parallel.py [FINE_TUNING_EPOCHS [PRETRAINING_EPOCHS]]
       (defaults 4 and 10; needs an rl-run built with --features mpi or
       nccl in target/release, and mpirun)

Every run trains in a temporary folder with a tiny final evaluation. The
fine-tuning starts from the digits DDPM of runs/ddpm_digits (copied into the
folder; trained there first when runs/ has none, which takes about 20
minutes). Speeds are the median over the epochs of the run's own
`speed/steps_per_sec` (evaluations are outside them); a fine-tuning step is
a critic step, 5 to a round. Communication is rank 0's
`cost/seconds_communicating` over the training seconds. The bytes
all-reduced per round are read from the final checkpoint: the generator's
parameters once per generator step, the critic's and the baseline's once
per critic step, all float32.
"""

import glob
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from safetensors.numpy import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RL_RUN = os.path.join(ROOT, "target", "release", "rl-run")
TINY_EVAL = ["eval.n=16", "eval.exact_n=16", "eval.chunk=16", "eval.fid=None", "compare_samplers=[]"]

# The CIFAR-10 round of experiments/sft_pg_cifar.ron: 128 chains per critic
# step, n_critic 5, T' = 10, n_generator 10 minibatches of 128 transitions.
CIFAR_UNET_PARAMETERS = 35_746_307  # diffusers' google/ddpm-cifar10-32
CIFAR_CRITIC_PARAMETERS = 3 * 128 * 16 + 128 + 128 * 256 * 16 + 256 + 256 * 512 * 16 + 512 + 512 * 16 + 1
# Conditional-linear layers (weight, bias, a gain per step and unit for the
# T' = 10 steps) 3072 -> 1024 -> 1024 -> 256, then a linear head.
CIFAR_BASELINE_PARAMETERS = sum(i * o + o + 10 * o for i, o in [(3072, 1024), (1024, 1024), (1024, 256)]) + 257
UNET_GFLOP_PER_IMAGE = 12.2  # 2 x 6.1 G multiply-adds per 32 x 32 forward pass
FORWARDS_PER_ROUND = 5 * 128 * 10 + 10 * 128 * 3  # rollouts; minibatches (backward ~ 2 forwards)


def scalars(run_dir):
    files = sorted(glob.glob(os.path.join(run_dir, "events.out*")))
    assert len(files) == 1, files
    ea = EventAccumulator(files[0], size_guidance={"scalars": 0})
    ea.Reload()
    return {t: [e.value for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}


def run(experiment, ranks, threads, sets, folder):
    args = [RL_RUN, os.path.join(ROOT, "experiments", experiment + ".ron"), "--quiet", "--no-table"]
    for s in sets + [f"threads={threads}", f'record.dir="{folder}"'] + TINY_EVAL:
        args += ["--set", s]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if ranks > 1:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        args = ["mpirun", "-n", str(ranks), "--bind-to", "none", "--mca", "btl", "self,vader",
                "--mca", "btl_vader_single_copy_mechanism", "none"] + args
    subprocess.run(args, check=True, env=env, stdout=subprocess.DEVNULL)
    s = scalars(os.path.join(folder, experiment))
    speed = statistics.median(s["speed/steps_per_sec"])
    train_seconds = s["cost/seconds"][-1]
    communicating = s.get("cost/seconds_communicating", [0.0])[-1]
    return speed, train_seconds, communicating


def parameters(final_dir, part):
    return sum(w.size for w in load_file(os.path.join(final_dir, part + ".safetensors")).values())


def table(title, unit, rows):
    print(f"\n{title}")
    print(f"| ranks x threads | {unit}/s | vs 1 x 2 | training s | communicating s | share |")
    print("|---|---|---|---|---|---|")
    base = rows[0][2]
    for ranks, threads, speed, seconds, comm in rows:
        print(f"| {ranks} x {threads} | {speed:.3f} | {speed / base:.2f}x | {seconds:.1f} | "
              f"{comm:.2f} | {100 * comm / seconds:.1f}% |")


def fine_tuning(epochs, tmp):
    rows = []
    for ranks, threads in [(1, 2), (2, 1)]:
        folder = os.path.join(tmp, f"ft{ranks}")
        pretrained = os.path.join(ROOT, "runs", "ddpm_digits")
        if os.path.isdir(os.path.join(pretrained, "final")):
            shutil.copytree(pretrained, os.path.join(folder, "ddpm_digits"))
        speed, seconds, comm = run("sft_pg_digits", ranks, threads, [f"task.epochs={epochs}"], folder)
        rows.append((ranks, threads, speed / 5, seconds, comm))
    final = os.path.join(tmp, "ft2", "sft_pg_digits", "final")
    generator = parameters(final, "generator")
    critic = parameters(final, "critic") + parameters(final, "baseline")
    per_round = (10 * generator + 5 * critic) * 4 / 1e6
    ranks, _, speed, seconds, comm = rows[1]
    rounds = speed * seconds
    table("Digits fine-tuning (SFT-PG (B), 128 chains, rounds of 5 critic and 10 generator steps)",
          "rounds", rows)
    print(f"all-reduced per round: generator {generator:,} x 10 + critic and baseline "
          f"{critic:,} x 5 parameters, float32 = {per_round:.1f} MB; "
          f"{comm / rounds * 1e3:.1f} ms per round in collectives on 2 ranks (with waiting)")
    return rows


def pretraining(epochs, tmp):
    rows = []
    for ranks, threads in [(1, 2), (2, 1)]:
        folder = os.path.join(tmp, f"pre{ranks}")
        rows.append((ranks, threads) + run("ddpm_digits", ranks, threads, [f"task.epochs={epochs}"], folder))
    generator = parameters(os.path.join(tmp, "pre2", "ddpm_digits", "final"), "generator")
    ranks, _, speed, seconds, comm = rows[1]
    steps = speed * seconds
    megabytes = generator * 4 / 1e6
    table("Digits DDPM pretraining (global batch 128)", "steps", rows)
    print(f"all-reduced per step: {generator:,} float32 = {megabytes:.2f} MB; "
          f"{comm / steps * 1e3:.2f} ms per step in collectives on 2 ranks (with waiting)")


def cifar_on_paper():
    """The CIFAR-10 round on 8 GPUs, from the bytes all-reduced per round."""
    megabytes = (10 * CIFAR_UNET_PARAMETERS + 5 * (CIFAR_CRITIC_PARAMETERS + CIFAR_BASELINE_PARAMETERS)) * 4 / 1e6
    tflop = FORWARDS_PER_ROUND * UNET_GFLOP_PER_IMAGE / 1e3
    print(f"\nCIFAR-10 round on paper: {megabytes:,.0f} MB all-reduced per round "
          f"(U-Net {CIFAR_UNET_PARAMETERS:,} x 10, critic and baseline "
          f"{CIFAR_CRITIC_PARAMETERS + CIFAR_BASELINE_PARAMETERS:,} x 5); "
          f"{tflop:.0f} TFLOP per round ({FORWARDS_PER_ROUND:,} U-Net forward passes or equivalents)")
    print("| link | NCCL bus bandwidth | all-reduce s / round | compute s / round per GPU | efficiency |")
    print("|---|---|---|---|---|")
    for sustained in [100.0, 300.0]:
        compute = tflop / 8 / sustained
        for link, busbw in [("NVLink (H100 SXM, one node)", 360.0), ("100 Gbit network (one GPU a node)", 11.0)]:
            comm = megabytes / 1e3 * 2 * 7 / 8 / busbw
            print(f"| {link}, {sustained:.0f} TFLOP/s sustained | {busbw:.0f} GB/s | {comm:.3f} | "
                  f"{compute:.3f} | {compute / (compute + comm):.0%} |")


def main():
    ft_epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    pre_epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"CPU: {cpu}, {os.cpu_count()} cores; fine-tuning {ft_epochs} epochs, pretraining {pre_epochs} epochs")
    with tempfile.TemporaryDirectory() as tmp:
        fine_tuning(ft_epochs, tmp)
        pretraining(pre_epochs, tmp)
    cifar_on_paper()


if __name__ == "__main__":
    main()
