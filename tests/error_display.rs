//! Every error a user can see says each cause once and ends its line: one
//! example of every variant of every error type, printed the way `rl-run`
//! prints errors (`shortcut::error::report`).

use std::error::Error;
use std::path::PathBuf;

use agents::AgentError;
use envs::EnvError;
use shortcut::error::report;
use shortcut::fetch::FetchError;
use shortcut::metrics::error::MetricError;
use shortcut::recording::curves::PlotError;
use shortcut::recording::tensorboard::RecordingError;
use shortcut::{ConfigError, RunError};

fn io() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::NotFound, "no such thing (os error 2)")
}

fn torch() -> tch::TchError {
    tch::TchError::Torch("shape mismatch in libtorch".into())
}

fn file() -> PathBuf {
    PathBuf::from("experiments/x.ron")
}

fn env_errors() -> Vec<EnvError> {
    vec![
        EnvError::NeedsReset("after the last step".into()),
        EnvError::Shape {
            what: "action",
            expected: vec![4, 2],
            got: vec![4, 3],
        },
        EnvError::Invalid {
            field: "n",
            reason: "must be positive".into(),
        },
        EnvError::Torch(torch()),
    ]
}

fn agent_errors() -> Vec<AgentError> {
    let mut all: Vec<AgentError> = env_errors().into_iter().map(AgentError::Env).collect();
    all.extend([
        AgentError::Torch(torch()),
        AgentError::NonFinite {
            what: "critic loss",
            value: f64::NAN,
        },
        AgentError::Empty("an empty buffer"),
        AgentError::Unsupported("learned variance with this policy"),
        AgentError::State("3 tensors for 4 parameters".into()),
        AgentError::Invalid {
            field: "task.critic.network",
            reason: "8 x 8 images halved 2 times must stay at least 4 x 4".into(),
        },
    ]);
    all
}

fn config_errors() -> Vec<ConfigError> {
    vec![
        ConfigError::Read {
            file: file(),
            source: io(),
        },
        ConfigError::NotUtf8 {
            file: file(),
            line: 2,
            column: 7,
            byte: 0xe9,
        },
        ConfigError::Parse {
            file: file(),
            line: 3,
            column: 4,
            message: "Expected float".into(),
        },
        ConfigError::Invalid {
            file: file(),
            line: 5,
            field: "env.steps".into(),
            message: "must be at least 1, got 0".into(),
        },
        ConfigError::Override {
            file: file(),
            field: "task.critc".into(),
            message: "task has no field `critc` (it has: init, epochs)".into(),
        },
    ]
}

fn recording_errors() -> Vec<RecordingError> {
    vec![
        RecordingError::Io {
            path: PathBuf::from("runs/x/events"),
            source: io(),
        },
        RecordingError::Png("bad header".into()),
        RecordingError::InvalidArgument("zero width".into()),
    ]
}

fn metric_errors() -> Vec<MetricError> {
    vec![
        MetricError::ShapeMismatch {
            a_shape: "2 x 3".into(),
            b_shape: "2 x 3 + 1 leftover values (7 values)".into(),
            dim: 3,
        },
        MetricError::Empty {
            what: "a has no points",
        },
        MetricError::InvalidParameter {
            name: "projections",
            reason: "must be positive".into(),
        },
        MetricError::NonFinite {
            which: "a",
            row: 1,
            col: 0,
            value: f32::NAN,
        },
        MetricError::Solver("not optimal".into()),
        MetricError::Jpeg {
            action: "encoding",
            what: "a 28x28 grey image".into(),
            message: "expected 784 bytes (height x width x channels), got 783".into(),
        },
    ]
}

fn fetch_errors() -> Vec<FetchError> {
    let url = || "https://example.org/cifar-10-binary.tar.gz".to_string();
    vec![
        FetchError::Unknown {
            name: "cifar100".into(),
            known: "cifar10, mnist".into(),
        },
        FetchError::Catalog {
            file: PathBuf::from("catalog.ron"),
            message: "not a list of resources".into(),
        },
        FetchError::Connection {
            url: url(),
            message: "failed to lookup address information".into(),
        },
        FetchError::Status {
            url: url(),
            status: 404,
        },
        FetchError::Truncated {
            url: url(),
            expected: 100,
            received: 40,
            part: PathBuf::from("data/cifar-10-batches-bin.part/cifar-10-binary.tar.gz.part"),
        },
        FetchError::Checksum {
            file: PathBuf::from("data/cifar-10-batches-bin.part/cifar-10-binary.tar.gz.part"),
            url: url(),
            algorithm: "MD5",
            expected: "c32a1d4ab5d03f1284b67883e8d87530".into(),
            found: "0123456789abcdef0123456789abcdef".into(),
        },
        FetchError::Sources {
            file: "train-images-idx3-ubyte.gz".into(),
            tried: "GET a: HTTP 404; GET b: HTTP 503".into(),
        },
        FetchError::Hub {
            url: url(),
            message: "no config.json among the repository's files".into(),
        },
        FetchError::Archive {
            path: PathBuf::from("cifar-10-binary.tar.gz"),
            message: "it lacks test_batch.bin".into(),
        },
        FetchError::Incomplete {
            dir: PathBuf::from("data/mnist"),
            missing: "t10k-images-idx3-ubyte.gz".into(),
        },
        FetchError::Python {
            resource: "ddim-ema-cifar10".into(),
            python: PathBuf::from(".venv/bin/python"),
            origin: "the project's .venv, relative to the current folder".into(),
            by_hand: "download the checkpoint, then run scripts/convert_weights.py ddim".into(),
        },
        FetchError::Convert {
            checkpoint: PathBuf::from("models/ddpm-ema-cifar10-32.part/ckpt.pth"),
            command: ".venv/bin/python scripts/convert_weights.py ddim ...".into(),
            message: "KeyError: 'temb.dense.0.weight'".into(),
        },
        FetchError::Busy {
            dir: PathBuf::from("data/mnist.part"),
        },
        FetchError::Io {
            path: PathBuf::from("data/mnist.part"),
            source: io(),
        },
    ]
}

fn run_errors() -> Vec<RunError> {
    let mut all: Vec<RunError> = Vec::new();
    all.extend(config_errors().into_iter().map(RunError::Config));
    all.extend(agent_errors().into_iter().map(RunError::Agent));
    all.extend(env_errors().into_iter().map(RunError::Env));
    all.push(RunError::Torch(torch()));
    all.extend(recording_errors().into_iter().map(RunError::Recording));
    all.push(RunError::Plot(PlotError {
        path: PathBuf::from("curves.png"),
        message: "font missing".into(),
    }));
    all.extend(metric_errors().into_iter().map(RunError::Metric));
    all.extend(fetch_errors().into_iter().map(RunError::Fetch));
    all.extend([
        RunError::Checkpoint {
            path: PathBuf::from("runs/x/checkpoint"),
            message: "no checkpoint here".into(),
        },
        RunError::Io {
            path: PathBuf::from("runs/x"),
            source: io(),
        },
        RunError::Diverged("the generator produced a non-finite sample (NaN)".into()),
        RunError::OutOfMemory {
            what: "a sampling chunk".into(),
            setting: "eval.chunk",
            value: 10_000,
            detail: "CUDA out of memory. Tried to allocate 2.00 GiB".into(),
        },
    ]);
    all
}

/// The texts of `error` and each of its causes.
fn chain(error: &(dyn Error + 'static)) -> Vec<String> {
    std::iter::successors(Some(error), |e| (*e).source())
        .map(|e| e.to_string())
        .collect()
}

#[test]
fn every_error_says_each_cause_once_and_ends_its_line() {
    let errors = run_errors();
    // Every variant of RunError, with each inner type's variants behind it.
    assert_eq!(errors.len(), 5 + 10 + 4 + 1 + 3 + 1 + 6 + 14 + 4);
    for error in &errors {
        let line = report(error);
        assert!(line.ends_with('\n'), "{line:?}");
        assert_eq!(line.matches('\n').count(), 1, "{line:?}");
        assert!(!line.trim_end().ends_with(':'), "{line:?}");
        let texts = chain(error);
        // No level repeats its cause in its own message.
        for pair in texts.windows(2) {
            assert!(
                !pair[0].contains(pair[1].as_str()),
                "{:?} repeats its cause {:?}",
                pair[0],
                pair[1]
            );
        }
        // The deepest cause is in the report exactly once.
        let root = texts.last().unwrap();
        assert_eq!(line.matches(root.as_str()).count(), 1, "{line:?}");
    }
}

#[test]
fn a_cause_appears_after_its_context() {
    let error = RunError::Config(ConfigError::Read {
        file: file(),
        source: io(),
    });
    assert_eq!(
        report(&error),
        "experiments/x.ron: cannot read: no such thing (os error 2)\n"
    );
    let error = RunError::Io {
        path: PathBuf::from("runs/x/table.md"),
        source: io(),
    };
    assert_eq!(
        report(&error),
        "runs/x/table.md: no such thing (os error 2)\n"
    );
}

/// An error from outside our crates that prints its source itself is not
/// repeated by the report either.
#[derive(Debug)]
struct Verbose(std::io::Error);

impl std::fmt::Display for Verbose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "loading weights: {}", self.0)
    }
}

impl Error for Verbose {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.0)
    }
}

#[test]
fn a_foreign_error_that_prints_its_source_is_not_repeated() {
    assert_eq!(
        report(&Verbose(io())),
        "loading weights: no such thing (os error 2)\n"
    );
}
