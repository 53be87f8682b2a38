//! `rl-run COMPARISON.ron`, tiny, on the 8 x 8 digits: a small DDPM is
//! pretrained and fine-tuned first, then sampled by its full chain, a DDPM
//! sub-sequence and Analytic-DPM, and by the fine-tuned sampler; a
//! classifier is trained for the features; the table has FID and KID
//! against the training and test images with each sampler's NFE, and its
//! numbers are those `rl-run fid` gives for the samples and statistics it
//! wrote. A second run reuses the samples and prints the same table; under
//! the paper's JPEG protocol the same samples give the numbers of
//! `rl-run fid --jpeg-quality 75`.

mod common;

use std::path::Path;

use common::{rl_run, run_ok, temp_dir};

fn pretrain(runs: &Path, digits: &Path) -> String {
    format!(
        r#"Experiment(
    name: "tiny_ddpm",
    seed: 0,
    threads: 1,
    data: (set: Digits(dir: "{digits}"), n: 128),
    env: (steps: 50, schedule: Linear(start: 1e-3, end: 0.2), variance: PosteriorBetaTilde, sampler: Full),
    model: UNet(in_channels: 1, resolution: 8, channels: 16, channel_mult: [1, 2],
                res_blocks: 1, attention_resolutions: [], mid_attention: false,
                attention_head_dim: None, dropout: 0.0, norm_groups: 8),
    task: Pretrain(epochs: 4, batch: 32, optimizer: Adam(lr: 1e-3), grad_clip: 1.0, ema: 0.0),
    eval: (every: 4, n: 32, exact_n: 32, projections: 20, repeats: 1, chunk: 32),
    record: (dir: "{runs}", checkpoint_every: 4),
)
"#,
        digits = digits.display(),
        runs = runs.display()
    )
}

fn fine_tune(runs: &Path, digits: &Path) -> String {
    format!(
        r#"Experiment(
    name: "tiny_sft",
    seed: 0,
    threads: 1,
    data: (set: Digits(dir: "{digits}"), n: 128),
    env: (steps: 50, schedule: Linear(start: 1e-3, end: 0.2), variance: PosteriorBetaTilde,
          sampler: Ddpm(steps: 4, spacing: Uniform)),
    model: UNet(in_channels: 1, resolution: 8, channels: 16, channel_mult: [1, 2],
                res_blocks: 1, attention_resolutions: [], mid_attention: false,
                attention_head_dim: None, dropout: 0.0, norm_groups: 8),
    task: FineTune(
        init: "ddpm.ron",
        epochs: 1,
        batch: 16,
        n_critic: 1,
        generator: (optimizer: Adam(lr: 1e-5), log_prob: Mean),
        agent: Reinforce(use_baseline: true),
        critic: (optimizer: Adam(lr: 1e-4), baseline_optimizer: Adam(lr: 1e-4), width: 32),
    ),
    eval: (every: 1, n: 32, exact_n: 32, projections: 20, repeats: 1, chunk: 32),
    record: (dir: "{runs}", checkpoint_every: 1),
)
"#,
        digits = digits.display(),
        runs = runs.display()
    )
}

const COMPARISON: &str = r#"// a tiny Table 3
Comparison(
    name: "tiny_table3",
    model: "ddpm.ron",
    samplers: [Full, Ddpm(steps: 4, spacing: Uniform), AnalyticDpm(steps: 4, mc_samples: 64)],
    fine_tuned: ["sft.ron"],
    n: 48,
    features: Classifier(epochs: 2),
    kid_subsets: 5,
    kid_subset_size: 24,
    chunk: 48,
    batch: 20,
)
"#;

/// The `FID` a `rl-run fid` run prints (with `extra` arguments).
fn fid_of(a: &Path, b: &Path, features: &Path, extra: &[&str]) -> f64 {
    let out = run_ok(
        rl_run()
            .args(["fid", "--quiet", "--cpu", "--features"])
            .arg(features)
            .arg(a)
            .arg(b)
            .args(extra),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("FID: "))
        .unwrap_or_else(|| panic!("no FID in {text}"))
        .parse()
        .unwrap()
}

#[test]
fn a_comparison_tabulates_fid_and_kid_of_every_sampler() {
    let dir = temp_dir("comparison");
    let digits = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/digits");
    assert!(
        digits.join("train-images-idx3-ubyte").is_file(),
        "needs data/digits: run scripts/setup.sh (make test does)"
    );
    let runs = dir.join("runs");
    std::fs::write(dir.join("ddpm.ron"), pretrain(&runs, &digits)).unwrap();
    std::fs::write(dir.join("sft.ron"), fine_tune(&runs, &digits)).unwrap();
    std::fs::write(dir.join("table3.ron"), COMPARISON).unwrap();
    // Two jobs: the model first, then the fine-tuned row in a child process.
    let out = run_ok(
        rl_run()
            .arg(dir.join("table3.ron"))
            .args(["--quiet", "--jobs", "2"]),
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("training tiny_sft in the background") && log.contains("tiny_sft finished"),
        "{log}"
    );
    assert!(runs.join("tiny_sft/log.txt").is_file());
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    for expected in [
        "| sampler | NFE | training evaluations | training time | classifier FID, training set | KID, training set (x1e3) | classifier FID, test set | KID, test set (x1e3) |",
        "| full chain (tiny_ddpm) | 50 | - | - |",
        // 128 images, one evaluation each per epoch, 4 epochs.
        "The pretrained model's own training: 5.120e2 network evaluations",
        "| DDPM, Uniform steps (tiny_ddpm) | 4 |",
        "| Analytic-DPM, Uniform steps (tiny_ddpm) | 4 |",
        "| SFT-PG (B) (tiny_sft) | 4 |",
        "| test images (floor) | - |",
        "48 samples per sampler",
        "against 128 training set images and 300 test set images",
        "the Digits classifier's 128 features",
    ] {
        assert!(table.contains(expected), "missing {expected:?} in\n{table}");
    }
    let out_dir = runs.join("tiny_table3");
    assert_eq!(
        std::fs::read_to_string(out_dir.join("table.md")).unwrap(),
        table.trim_end_matches('\n').to_string() + "\n"
    );
    // The table's FID of the DDPM sub-sequence is what `rl-run fid` finds
    // for the samples and statistics the comparison wrote.
    // (Named after the sampler's settings: `tiny_ddpm_ddpm_steps_4_...npy`.)
    let samples = std::fs::read_dir(out_dir.join("samples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("tiny_ddpm_ddpm_steps_4_spacing_uniform") && name.ends_with(".npy")
        })
        .expect("the DDPM sub-sequence's samples");
    assert!(samples.is_file() && samples.with_extension("png").is_file());
    let classifier = runs.join("classifier_digits_1x8x8_digits_2ep");
    let fid = fid_of(
        &samples,
        &out_dir.join("stats_training_set.npz"),
        &classifier,
        &[],
    );
    let row = table
        .lines()
        .find(|l| l.starts_with("| DDPM, Uniform steps (tiny_ddpm) | 4 |"))
        .unwrap();
    let cell: f64 = row.split('|').nth(5).unwrap().trim().parse().unwrap();
    assert!((cell - fid).abs() <= 0.005 + 1e-9 * fid, "{cell} vs {fid}");
    // The fine-tuned row's own training cost: its rollouts and updates.
    let tuned = table
        .lines()
        .find(|l| l.starts_with("| SFT-PG (B) (tiny_sft) | 4 |"))
        .unwrap();
    let evaluations: f64 = tuned.split('|').nth(3).unwrap().trim().parse().unwrap();
    assert!(evaluations > 0.0, "{tuned}");
    assert!(
        tuned.split('|').nth(4).unwrap().trim().ends_with(" s"),
        "{tuned}"
    );
    // Samplers differ: not every row has the same FID.
    let fids: Vec<&str> = table
        .lines()
        .filter(|l| l.contains("(tiny_"))
        .map(|l| l.split('|').nth(5).unwrap().trim())
        .collect();
    assert_eq!(fids.len(), 4);
    assert!(fids.iter().any(|f| f != &fids[0]), "{fids:?}");
    // Again: the samples are reused (no chain is sampled again: the sample
    // files keep their times) and the table is the same, up to the last
    // printed digit (libtorch's CPU convolutions may round differently
    // between runs).
    let modified = std::fs::metadata(&samples).unwrap().modified().unwrap();
    // The references' statistics and features are kept per network.
    let cached: Vec<std::path::PathBuf> = std::fs::read_dir(runs.join("fid_stats"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let names: Vec<String> = cached
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(cached.len(), 4, "{names:?}");
    for prefix in ["digits_training_", "digits_test_"] {
        assert!(
            names
                .iter()
                .any(|n| n.starts_with(prefix) && n.ends_with(".npz"))
                && names
                    .iter()
                    .any(|n| n.starts_with(prefix) && n.ends_with(".features.npy")),
            "{names:?}"
        );
    }
    let cache_times: Vec<_> = cached
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .collect();
    let again = run_ok(
        rl_run()
            .arg(dir.join("table3.ron"))
            .args(["--quiet", "--jobs", "1"]),
    );
    assert_eq!(
        std::fs::metadata(&samples).unwrap().modified().unwrap(),
        modified
    );
    for (path, time) in cached.iter().zip(&cache_times) {
        assert_eq!(&std::fs::metadata(path).unwrap().modified().unwrap(), time);
    }
    let again = String::from_utf8_lossy(&again.stdout).into_owned();
    let (first, second) = (numbers(&table), numbers(&again));
    assert_eq!(first.len(), second.len(), "{table}\n{again}");
    for (a, b) in first.iter().zip(&second) {
        assert!(
            (a - b).abs() <= 0.011 + 1e-5 * a.abs(),
            "{a} vs {b}:\n{table}\n{again}"
        );
    }
    // `rl-run compare FILE` is the same command, and takes comparisons only.
    let compared = run_ok(
        rl_run()
            .arg("compare")
            .arg(dir.join("table3.ron"))
            .arg("--quiet"),
    );
    assert_eq!(
        numbers(&String::from_utf8_lossy(&compared.stdout)).len(),
        first.len()
    );
    let out = rl_run()
        .arg("compare")
        .arg(dir.join("ddpm.ron"))
        .output()
        .unwrap();
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && message.contains("not a comparison file"),
        "{message}"
    );

    // The paper's JPEG protocol: the same samples (reused), through JPEG
    // before their features, named in the caption and the columns.
    std::fs::write(
        dir.join("table3_jpeg.ron"),
        COMPARISON.replace("batch: 20,", "batch: 20,\n    protocol: Jpeg(quality: 75),"),
    )
    .unwrap();
    let jpeg = run_ok(
        rl_run()
            .arg(dir.join("table3_jpeg.ron"))
            .args(["--quiet", "--jobs", "1"]),
    );
    let jpeg = String::from_utf8_lossy(&jpeg.stdout).into_owned();
    assert_eq!(
        std::fs::metadata(&samples).unwrap().modified().unwrap(),
        modified,
        "the samples are reused"
    );
    for expected in [
        "| sampler | NFE | training evaluations | training time | classifier FID (JPEG q75), training set | KID, training set (x1e3) | classifier FID (JPEG q75), test set | KID, test set (x1e3) |",
        "Protocol: the paper's JPEG one",
        "quality 75",
        "| test images (floor) | - |",
    ] {
        assert!(jpeg.contains(expected), "missing {expected:?} in\n{jpeg}");
    }
    assert!(table.contains("Protocol: lossless"), "{table}");
    let cell_of = |table: &str, prefix: &str| -> f64 {
        let row = table.lines().find(|l| l.starts_with(prefix)).unwrap();
        row.split('|').nth(5).unwrap().trim().parse().unwrap()
    };
    let ddpm_row = "| DDPM, Uniform steps (tiny_ddpm) | 4 |";
    let jpeg_fid = fid_of(
        &samples,
        &out_dir.join("stats_training_set.npz"),
        &classifier,
        &["--jpeg-quality", "75"],
    );
    let jpeg_cell = cell_of(&jpeg, ddpm_row);
    assert!(
        (jpeg_cell - jpeg_fid).abs() <= 0.005 + 1e-9 * jpeg_fid,
        "{jpeg_cell} vs {jpeg_fid}"
    );
    assert!(
        (jpeg_fid - fid).abs() > 1e-6 * fid,
        "JPEG must change the FID: {jpeg_fid} vs {fid}"
    );
    // The floor's test images go through JPEG too, once, kept beside the
    // lossless references; the references themselves are unchanged.
    let floor = "| test images (floor) | - |";
    assert!(cell_of(&jpeg, floor) != cell_of(&table, floor), "{jpeg}");
    let names: Vec<String> = std::fs::read_dir(runs.join("fid_stats"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 6, "{names:?}");
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("digits_test_jpeg75_") && n.ends_with(".npz")),
        "{names:?}"
    );
    for (path, time) in cached.iter().zip(&cache_times) {
        assert_eq!(&std::fs::metadata(path).unwrap().modified().unwrap(), time);
    }

    // A further feature network (`also`): a second table on the same
    // (reused) samples, whose numbers are `rl-run fid`'s with that network;
    // the first table stays as it was.
    std::fs::write(
        dir.join("table3_also.ron"),
        COMPARISON.replace(
            "batch: 20,",
            "batch: 20,\n    also: [Classifier(epochs: 3)],",
        ),
    )
    .unwrap();
    let also = run_ok(
        rl_run()
            .arg(dir.join("table3_also.ron"))
            .args(["--quiet", "--jobs", "1"]),
    );
    let also = String::from_utf8_lossy(&also.stdout).into_owned();
    assert_eq!(
        std::fs::metadata(&samples).unwrap().modified().unwrap(),
        modified,
        "the samples are reused"
    );
    let second_caption = also
        .match_indices("tiny_table3 on ")
        .nth(1)
        .map(|(i, _)| i)
        .unwrap_or_else(|| panic!("a second table in\n{also}"));
    let (first_table, second_table) = also.split_at(second_caption);
    let (want, got) = (numbers(&table), numbers(first_table));
    assert_eq!(want.len(), got.len(), "{table}\n{first_table}");
    for (a, b) in want.iter().zip(&got) {
        assert!((a - b).abs() <= 0.011 + 1e-5 * a.abs(), "{a} vs {b}");
    }
    assert!(
        second_table.contains("the Digits classifier's 128 features")
            && second_table.contains("| test images (floor) | - |"),
        "{second_table}"
    );
    let also_fid = fid_of(
        &samples,
        &out_dir.join("stats_classifier_3ep_training_set.npz"),
        &runs.join("classifier_digits_1x8x8_digits_3ep"),
        &[],
    );
    let also_cell = cell_of(second_table, ddpm_row);
    assert!(
        (also_cell - also_fid).abs() <= 0.005 + 1e-9 * also_fid,
        "{also_cell} vs {also_fid}"
    );
    assert!(
        (also_fid - fid).abs() > 1e-6 * fid,
        "another network, another FID: {also_fid} vs {fid}"
    );

    // Another table of the same model with a row in common (Tables 3 and 4):
    // that row's samples come from the shared cache, the very same file.
    std::fs::write(
        dir.join("table4.ron"),
        COMPARISON
            .replace("tiny_table3", "tiny_table4")
            .replace("Full, ", "")
            .replace("fine_tuned: [\"sft.ron\"]", "fine_tuned: []"),
    )
    .unwrap();
    let other = run_ok(
        rl_run()
            .arg(dir.join("table4.ron"))
            .args(["--quiet", "--jobs", "1"]),
    );
    let other = String::from_utf8_lossy(&other.stdout).into_owned();
    let shared = runs
        .join("tiny_table4/samples")
        .join(samples.file_name().unwrap());
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(&shared).unwrap().ino(),
        std::fs::metadata(&samples).unwrap().ino(),
        "{} is a link to {}",
        shared.display(),
        samples.display()
    );
    assert_eq!(cell_of(&other, ddpm_row), cell_of(&table, ddpm_row));
    assert!(!other.contains("full chain"), "{other}");
}

/// Every number in a text.
fn numbers(text: &str) -> Vec<f64> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter_map(|w| w.parse::<f64>().ok())
        .collect()
}

#[test]
fn a_bad_comparison_names_the_field() {
    let dir = temp_dir("comparison_errors");
    std::fs::write(
        dir.join("bad.ron"),
        COMPARISON
            .replace("n: 48", "n: 1")
            .replace("ddpm.ron", "missing.ron"),
    )
    .unwrap();
    let out = rl_run().arg(dir.join("bad.ron")).output().unwrap();
    assert!(!out.status.success());
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(
        message.contains("bad.ron") && message.contains("n") && message.contains("at least 2"),
        "{message}"
    );
}
