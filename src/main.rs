//! `rl-run`: run shortcut experiments, sample and evaluate checkpoints.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use shortcut::fetch::{self, Catalog};
use shortcut::preflight;
use shortcut::runner::data::{held_out_data, Data};
use shortcut::runner::evaluate::policy_quality;
use shortcut::runner::model::load_policy;
use shortcut::runner::sampling::{sample_checkpoint, write_samples, SampleRequest};
use shortcut::runner::{configure_threads, run_path, Report, RunOptions};
use shortcut::weights::diffusers::DiffusersFolder;

/// Reinforcement learning on the denoising chain of diffusion models.
#[derive(Parser)]
#[command(name = "rl-run", version, args_conflicts_with_subcommands = true)]
struct Cli {
    /// The experiment or ablation to run (a RON file under experiments/).
    experiment: Option<PathBuf>,
    /// Continue the experiment's unfinished run from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Train again even if a final result exists (the old run folder is kept, renamed).
    #[arg(long, conflicts_with = "resume")]
    retrain: bool,
    /// Do not draw progress bars.
    #[arg(long)]
    quiet: bool,
    /// Skip the comparison table at the end.
    #[arg(long)]
    no_table: bool,
    /// Runs trained at once (dependencies in child processes); default: the number of cores.
    #[arg(long)]
    jobs: Option<usize>,
    /// Train the experiment as another run's dependency: resume it if
    /// interrupted, wait if another process is training it.
    #[arg(long, hide = true)]
    as_dependency: bool,
    /// Change one field of the experiment for this run, by its dotted path
    /// and a RON value (repeatable): `--set data.set.dir=/data/mnist`,
    /// `--set task.epochs=5`, `--set "env.sampler=Ddim(steps: 10, eta: 0.0)"`.
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    set: Vec<shortcut::overrides::Override>,
    /// Before running, fetch what the experiment needs and lacks (a data
    /// set, a pretrained model) if `rl-run fetch` knows it.
    #[arg(long)]
    fetch: bool,
    /// A catalog file (RON) adding or replacing resources for --fetch.
    #[arg(long, value_name = "FILE", requires = "fetch")]
    catalog: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// List the agents, critic regularisers and shared generator settings.
    Agents,
    /// List the environments, data sets and schedules.
    Envs,
    /// Write N final samples of a checkpoint as an N x D float32 .npy file.
    Sample {
        /// A checkpoint folder (a run's `final/` or `checkpoint/`).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Number of samples.
        #[arg(long, default_value_t = 10_000)]
        n: usize,
        /// Output file (.npy, N x sample shape, float32; images also get a
        /// PNG grid of the first 64 beside it).
        #[arg(long)]
        out: PathBuf,
        /// Seed of the sampling noise.
        #[arg(long, default_value_t = 0)]
        seed: i64,
        /// The initial samples x_T (N x sample shape, float32 .npy) instead
        /// of drawn ones; with a deterministic sampler the output is then
        /// fully determined.
        #[arg(long)]
        noise: Option<PathBuf>,
        /// Another sampler than the checkpoint's, written as in RON, e.g.
        /// "Ddim(steps: 10, eta: 0.0)".
        #[arg(long)]
        sampler: Option<String>,
        /// Chains sampled at once.
        #[arg(long, default_value_t = 10_000)]
        chunk: usize,
    },
    /// Write the eps prediction of a network for given inputs: float32 .npy
    /// in and out, so that a model can be held against PyTorch's.
    Eps {
        /// A diffusers UNet2DModel folder (config.json and
        /// diffusion_pytorch_model.safetensors).
        #[arg(long)]
        model: PathBuf,
        /// The noisy inputs, N x C x H x W float32.
        #[arg(long)]
        x: PathBuf,
        /// The network times, N values (real values are fine) or one for all.
        #[arg(long)]
        t: PathBuf,
        /// Where to write eps, N x C x H x W float32.
        #[arg(long)]
        out: PathBuf,
    },
    /// Download data sets and pretrained models (with no NAME: list them):
    /// checked against the published checksums, resumable, and only ever
    /// complete under their final names.
    Fetch {
        /// `cifar10`, `mnist`, `ddim-ema-cifar10` (converted with the
        /// project's Python: `.venv/bin/python`, or $SHORTCUT_PYTHON), ...
        /// (`rl-run fetch` lists them), or a Hugging Face model as
        /// owner/name (`google/ddpm-cifar10-32`, `owner/name@revision`).
        names: Vec<String>,
        /// The folder to put them in (default: $SHORTCUT_DATA or data/ for
        /// data sets, $SHORTCUT_MODELS or models/ for models).
        #[arg(long, value_name = "DIR")]
        into: Option<PathBuf>,
        /// A catalog file (RON) adding or replacing resources.
        #[arg(long, value_name = "FILE")]
        catalog: Option<PathBuf>,
        /// Do not draw progress bars or print what is downloaded.
        #[arg(long)]
        quiet: bool,
    },
    /// FID between two sets, and KID when both are images: each set a
    /// statistics file (.npz of mu and sigma, as pytorch-fid writes them), a
    /// .npy of images (uint8 pixels, or float32 in [-1, 1] as `rl-run sample`
    /// writes them) or a folder of PNG/JPEG files. Images are measured with
    /// pytorch-fid's preprocessing (docs/images.md, "FID and KID").
    Fid {
        /// The two sets; with --save-stats, the images and the .npz to write.
        #[arg(num_args = 2, required = true, value_name = "SET")]
        sets: Vec<PathBuf>,
        /// Write the statistics of the first set to the second path (.npz)
        /// instead of comparing them.
        #[arg(long)]
        save_stats: bool,
        /// The feature network: `inception` (FID's, fetched on first use as
        /// `rl-run fetch fid-inception`) or a TorchScript file taking
        /// [N, 3, 299, 299] in [-1, 1] (`scripts/convert_weights.py
        /// fid-inception` makes one from pytorch-fid's .pth).
        #[arg(long, default_value = "inception", value_name = "inception|PATH")]
        features: shortcut::runner::fid::Features,
        /// Images per forward pass.
        #[arg(long, default_value_t = 50)]
        batch: usize,
        /// KID: random subsets averaged.
        #[arg(long, default_value_t = 100)]
        kid_subsets: usize,
        /// KID: images drawn from each set per subset (all when fewer).
        #[arg(long, default_value_t = 1000)]
        kid_subset_size: usize,
        /// KID: seed of the subsets.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Run the network on the CPU even when CUDA is present.
        #[arg(long)]
        cpu: bool,
        /// The paper's protocol: write the first set's images as JPEG files
        /// at this quality and read them back before their features, as
        /// the authors' torchvision `save_image(x, 'k.jpg')` and
        /// pytorch-fid do (PIL's encoder and decoder, 4:2:0; the paper: 75).
        /// The second set, the reference, is measured as it is.
        #[arg(long, value_name = "Q", value_parser = clap::value_parser!(u8).range(1..=100))]
        jpeg_quality: Option<u8>,
        /// libtorch's CPU threads (default: all cores).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        threads: Option<u16>,
        /// Do not draw progress bars.
        #[arg(long)]
        quiet: bool,
    },
    /// Run a comparison file (the samplers' FID/KID table, the paper's Table
    /// 3): the same as `rl-run FILE`, which tells comparisons apart by their
    /// top-level `Comparison(...)`.
    Compare {
        /// The comparison file (experiments/table3_*.ron).
        file: PathBuf,
        /// Do not draw progress bars.
        #[arg(long)]
        quiet: bool,
    },
    /// Print the sliced and exact W2 of a checkpoint's samples against its
    /// training set and against a held-out set of the same distribution.
    Eval {
        /// A checkpoint folder (a run's `final/` or `checkpoint/`).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Seed of the sampling noise.
        #[arg(long, default_value_t = 0)]
        seed: i64,
    },
}

/// The number of cores this process may use.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn main() -> std::process::ExitCode {
    shortcut::runner::retain_freed_memory();
    let cli = Cli::parse();
    let catalog = match &cli.command {
        Some(Command::Fetch { catalog, .. }) => catalog.clone(),
        _ => cli.catalog.clone(),
    };
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let engine = collective::current();
            let rank = if engine.world_size() > 1 {
                format!("rank {} of {}: ", engine.rank(), engine.world_size())
            } else {
                String::new()
            };
            eprint!("{rank}error: {}", shortcut::error::report(e.as_ref()));
            let catalog = Catalog::load(catalog.as_deref()).or_else(|_| Catalog::load(None));
            if let Some(hint) = catalog.ok().and_then(|c| preflight::hint(e.as_ref(), &c)) {
                eprintln!("hint: {hint}");
            }
            if engine.world_size() > 1 {
                // The other ranks may wait in a collective: end the job now
                // (returning would finalise MPI, which waits for them).
                engine.abort(1);
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// Seconds from the environment variable `name`, or `default` when unset.
fn seconds_from_env(name: &str, default: f64) -> Result<std::time::Duration> {
    let seconds = match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| *s > 0.0 && *s <= 1e9)
            .with_context(|| {
                format!("{name}={text:?}: expected seconds, a positive number up to 1e9")
            })?,
        Err(_) => default,
    };
    Ok(std::time::Duration::from_secs_f64(seconds))
}

/// The collectives of a run started by `mpirun` or `srun` (a single process
/// otherwise), installed for the trainer; `SHORTCUT_COLLECTIVE_TIMEOUT`
/// (seconds, default 900) bounds how long a rank waits for the others in a
/// collective, `SHORTCUT_EVALUATION_TIMEOUT` (default 86 400) how long they
/// wait for rank 0's evaluations.
fn install_collectives() -> Result<()> {
    let options = collective::Options {
        timeout: seconds_from_env("SHORTCUT_COLLECTIVE_TIMEOUT", 900.0)?,
        evaluation_timeout: seconds_from_env("SHORTCUT_EVALUATION_TIMEOUT", 86_400.0)?,
    };
    let engine = collective::install(collective::init(&options)?);
    if engine.world_size() > 1 && engine.rank() == 0 {
        eprintln!(
            "rl-run: {} ranks over {} (global batches split across them)",
            engine.world_size(),
            engine.engine()
        );
    }
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Agents) => {
            use agents::registry::{
                agents, CRITIC_NETWORKS, CRITIC_REGULARIZERS, GENERATOR_SETTINGS,
            };
            print_listing("agents (task.agent)", &agents());
            print_listing(
                "critic regularisers (task.critic.regularizer)",
                CRITIC_REGULARIZERS,
            );
            print_listing("critic networks (task.critic)", CRITIC_NETWORKS);
            print_listing(
                "generator settings every agent honours (task.generator)",
                GENERATOR_SETTINGS,
            );
        }
        Some(Command::Envs) => {
            use envs::registry::{samplers, DATASETS, ENVIRONMENTS, SCHEDULES};
            print_listing("environments (env)", ENVIRONMENTS);
            print_listing("data sets (data.set)", DATASETS);
            print_listing(
                "schedules and variances (env.schedule, env.variance)",
                SCHEDULES,
            );
            print_listing("samplers (env.sampler)", &samplers());
        }
        Some(Command::Sample {
            checkpoint,
            n,
            out,
            seed,
            noise,
            sampler,
            chunk,
        }) => {
            configure_threads(cores());
            let request = SampleRequest {
                checkpoint,
                n,
                seed,
                noise,
                sampler,
                chunk,
            };
            let (exp, samples) = sample_checkpoint(&request)?;
            let grid = write_samples(&exp, &samples, &out)?;
            eprintln!(
                "rl-run: wrote samples {:?} of {} to {}{}",
                samples.size(),
                exp.name,
                out.display(),
                grid.map_or(String::new(), |p| format!(" and {}", p.display()))
            );
        }
        Some(Command::Eps { model, x, t, out }) => {
            configure_threads(cores());
            let eps = shortcut::runner::eps::predict(&model, &x, &t)?;
            shortcut::runner::eps::write_npy(&eps, &out)?;
            eprintln!(
                "rl-run: wrote eps {:?} of {} to {}",
                eps.size(),
                model.display(),
                out.display()
            );
        }
        Some(Command::Fetch {
            names,
            into,
            catalog,
            quiet,
        }) => {
            let catalog = Catalog::load(catalog.as_deref())?;
            if names.is_empty() {
                print!("{}", catalog.listing());
            }
            for name in names {
                let resource = catalog.get(&name)?;
                let parent = into
                    .clone()
                    .unwrap_or_else(|| fetch::catalog::default_parent(resource.place()));
                fetch_one(&resource, &parent, quiet)?;
            }
        }
        Some(Command::Fid {
            sets,
            save_stats,
            features,
            batch,
            kid_subsets,
            kid_subset_size,
            seed,
            cpu,
            jpeg_quality,
            threads,
            quiet,
        }) => {
            use shortcut::runner::fid::{fid_between, save_stats as write_stats, FidOptions};
            configure_threads(threads.map_or_else(cores, usize::from));
            let options = FidOptions {
                features,
                batch,
                kid: shortcut::metrics::kid::KidSettings {
                    subsets: kid_subsets,
                    subset_size: kid_subset_size,
                    seed,
                },
                device: if cpu {
                    tch::Device::Cpu
                } else {
                    tch::Device::cuda_if_available()
                },
                show_progress: !quiet && std::io::stderr().is_terminal(),
                jpeg_quality,
            };
            let (a, b) = (&sets[0], &sets[1]);
            if save_stats {
                let n = write_stats(a, b, &options)?;
                eprintln!(
                    "rl-run: wrote the statistics of {n} images of {}{} to {}",
                    a.display(),
                    jpeg_quality.map_or(String::new(), |q| format!(" (through JPEG, quality {q})")),
                    b.display()
                );
                return Ok(());
            }
            let report = fid_between(a, b, &options)?;
            let described = |path: &std::path::Path, count: Option<usize>| match count {
                Some(n) => format!("{} ({n} images)", path.display()),
                None => format!("{} (statistics)", path.display()),
            };
            println!(
                "{} vs {}{}",
                described(a, report.counts[0]),
                described(b, report.counts[1]),
                report
                    .network
                    .map_or(String::new(), |p| format!(", features of {}", p.display()))
            );
            if let Some(quality) = jpeg_quality {
                println!(
                    "protocol: {} through JPEG (quality {quality}, 4:2:0, as PIL writes it), {} as it is",
                    a.display(),
                    b.display()
                );
            }
            println!("FID: {}", report.fid);
            if let Some(kid) = report.kid {
                println!(
                    "KID: {} ± {} ({} subsets of {} images)",
                    kid.mean, kid.std, kid.subsets, kid.subset_size
                );
            }
        }
        Some(Command::Compare { file, quiet }) => {
            let text = shortcut::error::read_text(&file)?;
            if shortcut::config::top_level_name(&text) != Some("Comparison") {
                anyhow::bail!(
                    "{}: not a comparison file (expected Comparison(...); run experiments with `rl-run FILE`)",
                    file.display()
                );
            }
            let options = RunOptions {
                resume: false,
                retrain: false,
                show_progress: !quiet && std::io::stderr().is_terminal(),
                no_table: false,
                as_dependency: false,
                overrides: Vec::new(),
                parallel: Some((std::env::current_exe().context("locating rl-run")?, cores())),
            };
            let report = shortcut::runner::compare::run_comparison(&file, &options)?;
            println!("{}", report.table);
            eprintln!(
                "rl-run: table, samples and statistics in {}",
                report.dir.display()
            );
        }
        Some(Command::Eval { checkpoint, seed }) => {
            configure_threads(cores());
            let (exp, policy) = load_policy(&checkpoint, tch::Device::Cpu)?;
            let data = Data::load(&exp.data, tch::Device::Cpu)?.first(exp.eval.n as i64);
            let held_out = held_out_data(&exp)?;
            let (train, held) = policy_quality(&exp, &policy, seed, &data, held_out.as_ref())?;
            println!(
                "experiment: {} (T = {}, {:?})",
                exp.name, exp.env.steps, exp.env.sampler
            );
            println!(
                "{} sample sets of {} points, {} sliced directions each; exact W2 on {} points per side",
                train.sets, exp.eval.n, exp.eval.projections, exp.eval.exact_n
            );
            let measured = [("training set", Some(train)), ("held-out set", held)];
            for (against, q) in measured
                .into_iter()
                .filter_map(|(against, q)| Some((against, q?)))
            {
                println!(
                    "against the {against}: sliced W2 {:.4}e-2 ± {:.4}e-2, exact W2 {:.4}e-2 ± {:.4}e-2",
                    q.sliced_w2 * 100.0,
                    q.sliced_w2_std * 100.0,
                    q.exact_w2.unwrap_or(f64::NAN) * 100.0,
                    q.exact_w2_std.unwrap_or(f64::NAN) * 100.0,
                );
            }
        }
        None => {
            let Some(path) = cli.experiment else {
                anyhow::bail!("name an experiment file, e.g. `rl-run experiments/sft_pg_swissroll.ron` (see --help)");
            };
            install_collectives()?;
            let world = collective::current().world_size();
            if cli.fetch && world > 1 {
                anyhow::bail!(
                    "--fetch on {world} ranks would download into the same folders at once: fetch in one process first, `rl-run fetch NAME` (`rl-run fetch` lists the names), then start the ranks without --fetch"
                );
            }
            let catalog = Catalog::load(cli.catalog.as_deref())?;
            if !cli.fetch {
                // Every missing input at once, each with its fetch command.
                let missing = preflight::missing_inputs(&path, &cli.set, &catalog)?;
                if !missing.is_empty() {
                    let lines: Vec<String> = missing.iter().map(|m| format!("  - {m}")).collect();
                    anyhow::bail!(
                        "{} cannot start: {} missing:\n{}\n(--fetch downloads those the catalog has)",
                        path.display(),
                        match missing.len() {
                            1 => "an input is".to_string(),
                            n => format!("{n} inputs are"),
                        },
                        lines.join("\n")
                    );
                }
            } else {
                for need in preflight::needs(&path, &cli.set, &catalog)? {
                    eprintln!(
                        "rl-run: {} is missing; fetching {}",
                        need.dir.display(),
                        need.resource.name
                    );
                    fetch_one(&need.resource, &need.parent, cli.quiet)?;
                }
            }
            let options = RunOptions {
                resume: cli.resume,
                retrain: cli.retrain,
                show_progress: !cli.quiet && std::io::stderr().is_terminal(),
                no_table: cli.no_table,
                as_dependency: cli.as_dependency,
                overrides: cli.set,
                parallel: Some((
                    std::env::current_exe().context("locating rl-run")?,
                    cli.jobs.unwrap_or_else(cores),
                )),
            };
            match run_path(&path, &options)? {
                Report::Run(report) => {
                    if let Some(table) = report.table {
                        println!("{table}");
                    }
                    eprintln!("rl-run: final sampler in {}", report.final_dir.display());
                }
                Report::Comparison(report) => {
                    println!("{}", report.table);
                    eprintln!(
                        "rl-run: table, samples and statistics in {}",
                        report.dir.display()
                    );
                }
                Report::Control(report) => {
                    match report.solved_at_batch {
                        Some(batch) => println!(
                            "solved at batch {batch}: mean return {:.1} over the last episodes, {} episodes, {:.1} s",
                            report.mean_return, report.episodes, report.seconds
                        ),
                        None => println!(
                            "not solved: mean return {:.1} over the last episodes after {} episodes, {:.1} s",
                            report.mean_return, report.episodes, report.seconds
                        ),
                    }
                    eprintln!(
                        "rl-run: curves (returns.png, returns.csv, TensorBoard) and weights in {}",
                        report.dir.display()
                    );
                }
                Report::Ablation(report) => {
                    println!("{}", report.table);
                    eprintln!(
                        "rl-run: table, curves (curves.png) and runs in {}",
                        report.dir.display()
                    );
                }
            }
        }
    }
    Ok(())
}

/// Fetches one resource into `parent`, saying what it did.
fn fetch_one(resource: &fetch::Resource, parent: &std::path::Path, quiet: bool) -> Result<()> {
    let settings = fetch::Settings::from_env(!quiet && std::io::stderr().is_terminal(), !quiet);
    match fetch::fetch(resource, parent, &settings)? {
        fetch::Outcome::Fetched(dir) => {
            eprintln!("rl-run: fetched {} into {}", resource.name, dir.display())
        }
        fetch::Outcome::Present(dir) => eprintln!(
            "rl-run: {} is already present in {}",
            resource.name,
            dir.display()
        ),
    }
    if let fetch::Source::Hub { .. } = resource.source {
        let dir = parent.join(&resource.folder);
        if let Err(e) = DiffusersFolder::open(&dir).and_then(|folder| folder.weights()) {
            eprint!("rl-run: note: {}", shortcut::error::report(&e));
        }
    }
    Ok(())
}

fn print_listing(title: &str, items: &[envs::registry::Registered]) {
    println!("{title}:");
    let width = items.iter().map(|i| i.ron.len()).max().unwrap_or(0);
    for item in items {
        println!("  {:<width$}  {}", item.ron, item.summary);
    }
    println!();
}
