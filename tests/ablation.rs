//! Ablations end to end: one command trains every (variant, seed) run as its
//! own TensorBoard run, then writes the table of final metrics and the PNG
//! of the training curves; each agent works when swapped in by one line.

mod common;

use std::path::Path;

use common::{python, rl_run, run_ok, temp_dir, tiny_finetune, tiny_pretrain};

const VARIANTS: [(&str, &str); 4] = [
    (
        "sft_gp",
        "agent: Pathwise, regularizer: GradientPenalty(eta: 0.001)",
    ),
    ("ppo", "agent: Ppo(clip: 0.2, epochs: 2)"),
    (
        "plain",
        "agent: Reinforce(use_baseline: false), regularizer: None",
    ),
    (
        "b_learned",
        "variance: Learned(floor: 1e-3, lr: 1e-2), kl_weight: 0.1, n_generator: 2, grad_clip: 1.0",
    ),
];

fn write_ablation(dir: &Path) -> std::path::PathBuf {
    let runs = dir.join("runs");
    std::fs::write(dir.join("pre.ron"), tiny_pretrain(&runs, "pre", 4, 2)).unwrap();
    std::fs::write(
        dir.join("base.ron"),
        tiny_finetune(&runs, "base", "pre.ron", 3),
    )
    .unwrap();
    let variants: String = VARIANTS
        .iter()
        .map(|(name, settings)| {
            format!("        (name: \"{name}\", label: \"{name} label\", {settings}),\n")
        })
        .collect();
    let file = dir.join("ablation.ron");
    std::fs::write(
        &file,
        format!(
            "// tiny\nAblation(\n    name: \"abl\",\n    base: \"base.ron\",\n    seeds: [1, 2],\n    variants: [\n{variants}    ],\n)\n"
        ),
    )
    .unwrap();
    file
}

#[test]
fn one_command_runs_every_variant_and_seed_and_writes_table_and_curves() {
    let dir = temp_dir("ablation_end_to_end");
    let file = write_ablation(&dir);
    let out = run_ok(rl_run().arg(&file).args(["--quiet", "--jobs", "2"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let abl = dir.join("runs/abl");

    // The table: the starting DDPM and every variant, with numbers, over 2 seeds.
    let table = std::fs::read_to_string(abl.join("table.md")).unwrap();
    assert_eq!(stdout.trim(), table.trim(), "the printed table is the file");
    assert!(table.contains("over 2 seeds"), "{table}");
    assert!(table.contains("start: DDPM (pre)"), "{table}");
    for (name, _) in VARIANTS {
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("| {name} label |")))
            .unwrap_or_else(|| panic!("no row for {name}: {table}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        for cell in &cells[3..5] {
            let (mean, spread) = cell.split_once(" ± ").expect("mean ± spread");
            assert!(mean.parse::<f64>().unwrap() > 0.0, "{row}");
            assert!(spread.parse::<f64>().unwrap() >= 0.0, "{row}");
        }
    }

    // The curves: a real PNG of the configured size.
    let png = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(abl.join("curves.png")).unwrap(),
    ));
    let info = png.read_info().unwrap().info().clone();
    assert_eq!((info.width, info.height), (960, 600));

    // One TensorBoard run per (variant, seed), each with its W2 curve, read by
    // the real tensorboard package; and the settings each run was given.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/read_events.py");
    for (name, _) in VARIANTS {
        for seed in [1, 2] {
            let run = abl.join(format!("{name}-seed{seed}"));
            let out = run_ok(python().arg(&script).arg(&run));
            let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let w2 = json["scalars"]["eval/sliced_w2"].as_array().unwrap();
            assert!(!w2.is_empty(), "{name}-seed{seed} logged no W2");
            let config =
                std::fs::read_to_string(abl.join(format!("configs/{name}-seed{seed}.ron")))
                    .unwrap();
            assert!(config.contains(&format!("seed: {seed}")), "{config}");
        }
    }
    let pathwise = std::fs::read_to_string(abl.join("configs/sft_gp-seed1.ron")).unwrap();
    assert!(pathwise.contains("agent: Pathwise") && pathwise.contains("GradientPenalty"));
    let ppo = run_ok(python().arg(&script).arg(abl.join("ppo-seed1")));
    let ppo: serde_json::Value = serde_json::from_slice(&ppo.stdout).unwrap();
    assert!(ppo["scalars"]["generator/clip_fraction"].is_array());
    assert!(ppo["scalars"]["generator/approx_kl"].is_array());
    let learned = run_ok(python().arg(&script).arg(abl.join("b_learned-seed1")));
    let learned: serde_json::Value = serde_json::from_slice(&learned.stdout).unwrap();
    assert!(learned["scalars"]["generator/std_mean"].is_array());
    assert!(learned["scalars"]["generator/kl_to_pretrained"].is_array());

    // A second call reuses every finished run and rewrites the same table.
    let again = run_ok(rl_run().arg(&file).args(["--quiet", "--jobs", "2"]));
    assert_eq!(String::from_utf8_lossy(&again.stdout), stdout);
}

#[test]
fn a_bad_variant_is_refused_with_its_line() {
    let dir = temp_dir("ablation_bad_variant");
    let file = write_ablation(&dir);
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("n_generator: 2", "n_generator: 0");
    std::fs::write(&file, &text).unwrap();
    let out = rl_run().arg(&file).arg("--quiet").output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = text.lines().position(|l| l.contains("b_learned")).unwrap() + 1;
    assert!(
        stderr.contains(&format!("ablation.ron:{line}: variants[3]"))
            && stderr.contains("task.generator.n_generator"),
        "{stderr}"
    );
    assert!(!dir.join("runs").exists(), "nothing may run for a bad file");
}

#[test]
fn every_listed_agent_regularizer_data_set_and_sampler_is_valid_ron() {
    let out = run_ok(rl_run().arg("agents"));
    let listing = String::from_utf8_lossy(&out.stdout);
    for item in agents::registry::agents() {
        assert!(listing.contains(item.ron));
        let text = tiny_finetune(Path::new("/tmp/x"), "f", "t.ron", 2)
            .replace("Reinforce(use_baseline: true)", item.ron);
        shortcut::config::Experiment::parse(&text, Path::new("x.ron"))
            .unwrap_or_else(|e| panic!("{}: {e}", item.ron));
    }
    for item in agents::registry::CRITIC_REGULARIZERS {
        let text = tiny_finetune(Path::new("/tmp/x"), "f", "t.ron", 2)
            .replace("Baseline(lambda: 0.25)", item.ron);
        shortcut::config::Experiment::parse(&text, Path::new("x.ron"))
            .unwrap_or_else(|e| panic!("{}: {e}", item.ron));
    }
    for item in agents::registry::CRITIC_NETWORKS {
        assert!(listing.contains(item.ron));
        let text = tiny_finetune(Path::new("/tmp/x"), "f", "t.ron", 2)
            .replace("width: 32,", &format!("width: 32, {},", item.ron))
            .replace("SwissRoll", "Digits(dir: \"data/digits\")")
            .replace("model: Toy(width: 32)", "model: UNet(in_channels: 1, resolution: 8, channels: 16, channel_mult: [1, 2], res_blocks: 1, attention_resolutions: [], norm_groups: 8)");
        let text = text.replace("[128, 256, 512]", "[16]");
        shortcut::config::Experiment::parse(&text, Path::new("x.ron"))
            .unwrap_or_else(|e| panic!("{}: {e}\n{text}", item.ron));
    }
    let envs = run_ok(rl_run().arg("envs"));
    let listing = String::from_utf8_lossy(&envs.stdout);
    for item in envs::registry::DATASETS {
        assert!(listing.contains(item.ron));
        ron::from_str::<envs::datasets::DataSet>(item.ron)
            .unwrap_or_else(|e| panic!("{}: {e}", item.ron));
    }
    for item in envs::registry::samplers() {
        assert!(listing.contains(item.ron));
        shortcut::runner::sampling::parse_sampler(item.ron)
            .unwrap_or_else(|e| panic!("{}: {e}", item.ron));
    }
}

/// A pretraining ablation: the last weights against their moving average,
/// over two seeds; the table has no starting row, the curves start at the
/// first evaluation, and every average run keeps both sets of weights.
#[test]
fn a_pretraining_ablation_compares_the_weight_average() {
    let dir = temp_dir("ablation_pretraining");
    let runs = dir.join("runs");
    std::fs::write(dir.join("pre.ron"), tiny_pretrain(&runs, "pre", 4, 4)).unwrap();
    let file = dir.join("ema.ron");
    let ablation = "Ablation(\n    name: \"ema\",\n    base: \"pre.ron\",\n    seeds: [1, 2],\n    variants: [\n        (name: \"last\", label: \"last weights\"),\n        (name: \"avg\", label: \"average 0.9\", ema: 0.9),\n    ],\n)\n";
    std::fs::write(&file, ablation).unwrap();
    let out = run_ok(rl_run().arg(&file).args(["--quiet", "--jobs", "2"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("| ")).collect();
    assert_eq!(rows.len(), 3, "header and two variants:\n{stdout}");
    assert!(rows[1].starts_with("| last weights | 4 |"), "{stdout}");
    assert!(rows[2].starts_with("| average 0.9 | 4 |"), "{stdout}");
    assert!(!stdout.contains("start:"), "{stdout}");
    let abl = runs.join("ema");
    assert!(abl.join("curves.png").is_file());
    for seed in [1, 2] {
        let avg = abl.join(format!("avg-seed{seed}/final"));
        let published = std::fs::read(avg.join("generator.safetensors")).unwrap();
        let trained = std::fs::read(avg.join("generator-trained.safetensors")).unwrap();
        assert_ne!(published, trained, "the average is not the last weights");
        // The average's run trains exactly what the plain run trains.
        let last = abl.join(format!("last-seed{seed}/final"));
        assert!(!last.join("generator-trained.safetensors").exists());
        assert_eq!(
            std::fs::read(last.join("generator.safetensors")).unwrap(),
            trained,
            "seed {seed}: the trained weights differ from the plain run's"
        );
    }
    // A fine-tuning setting on a pretraining base is refused, naming the variant.
    std::fs::write(&file, ablation.replace("ema: 0.9", "n_generator: 2")).unwrap();
    let out = rl_run().arg(&file).arg("--quiet").output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("variants[1]") && stderr.contains("sets n_generator, fine-tuning settings"),
        "{stderr}"
    );
}
