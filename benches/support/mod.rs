//! What the benchmarks share: argument parsing of child processes, the peak
//! resident set size, and running a child that prints one JSON line (on a
//! GPU, watching the memory it holds).

use std::process::Command;

/// The value after `--name` in `args`, parsed, or `default`.
pub fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The process's peak resident set size so far (VmHWM), in MiB.
pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    kib / 1024.0
}

/// Runs a benchmark process and parses the JSON object on its last line.
pub fn run_child(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.output().expect("benchmark process starts");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("")).expect("one JSON line")
}

/// [`run_child`] for a process that uses the GPU, and the most GPU memory
/// held while it ran: the sum of every compute process's `used_memory`
/// that `nvidia-smi` reports, read every 100 ms (MiB; the CUDA context and
/// the caching allocator's reserve included, as for any process). Children
/// run one at a time, so the sum is the child's. `None` when `nvidia-smi`
/// cannot be read.
#[allow(dead_code)]
pub fn run_child_watching_gpu(cmd: &mut Command) -> (serde_json::Value, Option<f64>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut peak: Option<f64> = None;
            while !done.load(Ordering::Relaxed) {
                let read = Command::new("nvidia-smi")
                    .args([
                        "--query-compute-apps=used_memory",
                        "--format=csv,noheader,nounits",
                    ])
                    .output();
                if let Ok(out) = read {
                    let used: f64 = String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .filter_map(|l| l.trim().parse::<f64>().ok())
                        .sum();
                    if out.status.success() {
                        peak = Some(peak.map_or(used, |p: f64| p.max(used)));
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            peak
        })
    };
    let json = run_child(cmd);
    done.store(true, Ordering::Relaxed);
    (json, watcher.join().unwrap_or(None))
}
