"""Data-parallel pretraining on this machine: the digits DDPM's epochs on
1 rank x 2 threads against 2 ranks x 1 thread over MPI, with the time spent
in communication (docs/performance.md, "Data-parallel ranks").

usage: benches/data_parallel.py [EPOCHS]     (default 20; needs an rl-run
       built with --features mpi or nccl in target/release, and mpirun)

Both runs train experiments/ddpm_digits.ron (the 1.5M-parameter digits
U-Net, global batch 128) for EPOCHS epochs in a temporary folder, with a tiny
final evaluation. Steps per second are the median over the epochs of the
run's own `speed/steps_per_sec` (the evaluation is outside them);
communication is rank 0's `cost/seconds_communicating` over the training
seconds. The gradient all-reduced per step is the U-Net's parameters in
float32.
"""

import glob
import os
import statistics
import subprocess
import sys
import tempfile

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RL_RUN = os.path.join(ROOT, "target", "release", "rl-run")


def scalars(run_dir):
    files = sorted(glob.glob(os.path.join(run_dir, "events.out*")))
    assert len(files) == 1, files
    ea = EventAccumulator(files[0], size_guidance={"scalars": 0})
    ea.Reload()
    return {t: [e.value for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}


def run(ranks, threads, epochs, folder):
    sets = [
        f"task.epochs={epochs}",
        f"threads={threads}",
        f'record.dir="{folder}"',
        "eval.n=16",
        "eval.exact_n=16",
        "eval.chunk=16",
        "compare_samplers=[]",
    ]
    args = [RL_RUN, os.path.join(ROOT, "experiments", "ddpm_digits.ron"), "--quiet", "--no-table"]
    for s in sets:
        args += ["--set", s]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if ranks > 1:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        args = ["mpirun", "-n", str(ranks), "--bind-to", "none", "--mca", "btl", "self,vader",
                "--mca", "btl_vader_single_copy_mechanism", "none"] + args
    subprocess.run(args, check=True, env=env, stdout=subprocess.DEVNULL)
    s = scalars(os.path.join(folder, "ddpm_digits"))
    speed = statistics.median(s["speed/steps_per_sec"])
    train_seconds = s["cost/seconds"][-1]
    communicating = s.get("cost/seconds_communicating", [0.0])[-1]
    return speed, train_seconds, communicating


def main():
    epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"CPU: {cpu}, {os.cpu_count()} cores; ddpm_digits, {epochs} epochs, global batch 128")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for ranks, threads in [(1, 2), (2, 1)]:
            speed, seconds, comm = run(ranks, threads, epochs, os.path.join(tmp, f"r{ranks}"))
            rows.append((ranks, threads, speed, seconds, comm))
        from safetensors.numpy import load_file

        weights = load_file(os.path.join(tmp, "r1", "ddpm_digits", "final", "generator.safetensors"))
        parameters = sum(w.size for w in weights.values())
    base = rows[0][2]
    ranks, _, speed, seconds, comm = rows[1]
    steps = speed * seconds
    megabytes = parameters * 4 / 1e6
    print(f"gradient all-reduced per step: {parameters:,} float32 = {megabytes:.2f} MB; "
          f"{comm / steps * 1e3:.2f} ms per step in collectives on 2 ranks "
          f"(with waiting), {megabytes / (comm / steps) / 1e3:.2f} GB/s or more")
    print("| ranks x threads | steps/s | vs 1 x 2 | training s | communicating s | share |")
    print("|---|---|---|---|---|---|")
    for ranks, threads, speed, seconds, comm in rows:
        print(f"| {ranks} x {threads} | {speed:.2f} | {speed / base:.2f}x | {seconds:.1f} | {comm:.2f} | {100 * comm / seconds:.1f}% |")


if __name__ == "__main__":
    main()
