//! diffusers `UNet2DModel` folders: the model's `config.json`, its weights
//! (`diffusion_pytorch_model.safetensors`) and, when present, the training
//! schedule in `scheduler_config.json`.
//!
//! A setting missing from `config.json` takes diffusers' default for
//! `UNet2DModel`, as diffusers itself does; a setting this U-Net does not
//! implement (class conditioning, Fourier time features, resnet up/down
//! blocks, ...) is refused by name.

use std::path::{Path, PathBuf};

use agents::unet::UNetConfig;
use envs::schedule::BetaSchedule;
use serde_json::Value;

use super::WeightsError;

/// The model description file of a diffusers folder.
pub const CONFIG_FILE: &str = "config.json";
/// The weights file of a diffusers folder.
pub const WEIGHTS_FILE: &str = "diffusion_pytorch_model.safetensors";
/// The pickled weights diffusers wrote before safetensors (converted by
/// `scripts/convert_weights.py`).
pub const PICKLE_FILE: &str = "diffusion_pytorch_model.bin";
/// The scheduler's description, in the folder or in `scheduler/` beside `unet/`.
pub const SCHEDULER_FILE: &str = "scheduler_config.json";

/// A diffusers model folder (the folder holding `config.json`; a pipeline
/// folder with `unet/` inside works too).
#[derive(Debug, Clone)]
pub struct DiffusersFolder {
    /// The folder holding `config.json` and the weights.
    pub dir: PathBuf,
    /// The U-Net it describes.
    pub config: UNetConfig,
}

/// The schedule a model was trained with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainingSchedule {
    /// Number of diffusion steps T.
    pub steps: usize,
    /// Its betas.
    pub betas: BetaSchedule,
}

impl DiffusersFolder {
    /// Reads the model description of `dir` (or of `dir/unet`).
    pub fn open(dir: &Path) -> Result<Self, WeightsError> {
        let dir =
            if !dir.join(CONFIG_FILE).is_file() && dir.join("unet").join(CONFIG_FILE).is_file() {
                dir.join("unet")
            } else {
                dir.to_path_buf()
            };
        let path = dir.join(CONFIG_FILE);
        let json = read_json(&path)?;
        let config = unet_config(&json, &path)?;
        Ok(Self { dir, config })
    }

    /// The safetensors weights. A folder with only the pickled `.bin` is
    /// an error that says how to convert it.
    pub fn weights(&self) -> Result<PathBuf, WeightsError> {
        let file = self.dir.join(WEIGHTS_FILE);
        if file.is_file() {
            return Ok(file);
        }
        let message = if self.dir.join(PICKLE_FILE).is_file() {
            format!(
                "only {PICKLE_FILE} is here (a PyTorch pickle); convert it once with \
                 `.venv/bin/python scripts/convert_weights.py diffusers {}`",
                self.dir.display()
            )
        } else {
            "no weights file here".to_string()
        };
        Err(WeightsError::Format {
            path: file,
            message,
        })
    }

    /// The training schedule from `scheduler_config.json` beside the model
    /// (or in `../scheduler/`), if there is one.
    pub fn training_schedule(&self) -> Result<Option<TrainingSchedule>, WeightsError> {
        let candidates = [
            self.dir.join(SCHEDULER_FILE),
            self.dir.join("..").join("scheduler").join(SCHEDULER_FILE),
        ];
        match candidates.iter().find(|p| p.is_file()) {
            Some(path) => Ok(Some(scheduler_schedule(&read_json(path)?, path)?)),
            None => Ok(None),
        }
    }
}

fn read_json(path: &Path) -> Result<Value, WeightsError> {
    let text = std::fs::read_to_string(path).map_err(|source| WeightsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| WeightsError::Format {
        path: path.to_path_buf(),
        message: format!("not valid JSON: {e}"),
    })
}

/// Reads typed settings of one JSON object, with diffusers' defaults.
struct Settings<'a> {
    json: &'a Value,
    path: &'a Path,
}

impl Settings<'_> {
    fn error(&self, key: &str, message: String) -> WeightsError {
        WeightsError::Config {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            message,
        }
    }

    /// The value of `key`, `None` when missing or null.
    fn get(&self, key: &str) -> Option<&Value> {
        self.json.get(key).filter(|v| !v.is_null())
    }

    fn int(&self, key: &str, default: Option<i64>) -> Result<i64, WeightsError> {
        match self.get(key) {
            Some(v) => v
                .as_i64()
                .ok_or_else(|| self.error(key, format!("expected an integer, got {v}"))),
            None => default.ok_or_else(|| self.error(key, "missing".into())),
        }
    }

    fn float(&self, key: &str, default: f64) -> Result<f64, WeightsError> {
        match self.get(key) {
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.error(key, format!("expected a number, got {v}"))),
            None => Ok(default),
        }
    }

    fn boolean(&self, key: &str, default: bool) -> Result<bool, WeightsError> {
        match self.get(key) {
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.error(key, format!("expected true or false, got {v}"))),
            None => Ok(default),
        }
    }

    fn string(&self, key: &str, default: &str) -> Result<String, WeightsError> {
        match self.get(key) {
            Some(v) => v
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| self.error(key, format!("expected a string, got {v}"))),
            None => Ok(default.to_string()),
        }
    }

    fn list<T>(
        &self,
        key: &str,
        item: impl Fn(&Value) -> Option<T>,
        default: Option<Vec<T>>,
    ) -> Result<Vec<T>, WeightsError> {
        match self.get(key) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| item(v).ok_or_else(|| self.error(key, format!("unexpected entry {v}"))))
                .collect(),
            Some(v) => Err(self.error(key, format!("expected a list, got {v}"))),
            None => default.ok_or_else(|| self.error(key, "missing".into())),
        }
    }

    /// Refuses a setting whose value this implementation does not have.
    fn only(&self, key: &str, supported: &[&str], default: &str) -> Result<(), WeightsError> {
        let value = self.string(key, default)?;
        if supported.contains(&value.as_str()) {
            Ok(())
        } else {
            Err(self.error(
                key,
                format!("{value:?} is not supported (supported: {supported:?})"),
            ))
        }
    }

    /// Refuses a setting that must be absent or null.
    fn absent(&self, key: &str) -> Result<(), WeightsError> {
        match self.get(key) {
            Some(v) => Err(self.error(key, format!("{v} is not supported (must be null)"))),
            None => Ok(()),
        }
    }
}

/// The U-Net described by a diffusers `UNet2DModel` `config.json`.
pub fn unet_config(json: &Value, path: &Path) -> Result<UNetConfig, WeightsError> {
    let s = Settings { json, path };
    s.only("_class_name", &["UNet2DModel"], "UNet2DModel")?;
    s.only("act_fn", &["silu", "swish"], "silu")?;
    s.only("time_embedding_type", &["positional"], "positional")?;
    s.only("resnet_time_scale_shift", &["default"], "default")?;
    s.only("downsample_type", &["conv"], "conv")?;
    s.only("upsample_type", &["conv"], "conv")?;
    s.only("mid_block_type", &["UNetMidBlock2D"], "UNetMidBlock2D")?;
    s.absent("class_embed_type")?;
    s.absent("num_class_embeds")?;
    if s.boolean("center_input_sample", false)? {
        return Err(s.error("center_input_sample", "true is not supported".into()));
    }
    if s.float("mid_block_scale_factor", 1.0)? != 1.0 {
        return Err(s.error("mid_block_scale_factor", "only 1 is supported".into()));
    }
    let in_channels = s.int("in_channels", Some(3))?;
    let out_channels = s.int("out_channels", Some(3))?;
    if out_channels != in_channels {
        return Err(s.error(
            "out_channels",
            format!("an eps-predictor has as many output channels as input ({in_channels}), got {out_channels}"),
        ));
    }
    let resolution = match s.get("sample_size") {
        Some(Value::Array(hw)) => {
            let dims: Vec<i64> = hw.iter().filter_map(Value::as_i64).collect();
            match dims.as_slice() {
                [h, w] if h == w => *h,
                _ => {
                    return Err(s.error(
                        "sample_size",
                        format!("only square images are supported, got {hw:?}"),
                    ))
                }
            }
        }
        _ => s.int("sample_size", None)?,
    };
    let blocks = s.list(
        "block_out_channels",
        Value::as_i64,
        Some(vec![224, 448, 672, 896]),
    )?;
    let channels = *blocks
        .first()
        .ok_or_else(|| s.error("block_out_channels", "must not be empty".into()))?;
    if blocks.iter().any(|b| *b < 1 || b % channels != 0) {
        return Err(s.error(
            "block_out_channels",
            format!(
                "every level's width must be a multiple of the first ({channels}), got {blocks:?}"
            ),
        ));
    }
    let text = |v: &Value| v.as_str().map(str::to_string);
    let down = s.list(
        "down_block_types",
        text,
        Some(
            [
                "DownBlock2D",
                "AttnDownBlock2D",
                "AttnDownBlock2D",
                "AttnDownBlock2D",
            ]
            .map(String::from)
            .to_vec(),
        ),
    )?;
    let up = s.list(
        "up_block_types",
        text,
        Some(
            [
                "AttnUpBlock2D",
                "AttnUpBlock2D",
                "AttnUpBlock2D",
                "UpBlock2D",
            ]
            .map(String::from)
            .to_vec(),
        ),
    )?;
    if down.len() != blocks.len() || up.len() != blocks.len() {
        return Err(s.error(
            "down_block_types",
            format!(
                "{} down and {} up block types for {} levels",
                down.len(),
                up.len(),
                blocks.len()
            ),
        ));
    }
    let mut attention_resolutions = Vec::new();
    for (i, kind) in down.iter().enumerate() {
        let attention = match kind.as_str() {
            "DownBlock2D" => false,
            "AttnDownBlock2D" => true,
            other => {
                return Err(s.error(
                    "down_block_types",
                    format!("{other:?} is not supported (DownBlock2D, AttnDownBlock2D)"),
                ))
            }
        };
        let expected_up = if attention {
            "AttnUpBlock2D"
        } else {
            "UpBlock2D"
        };
        if up[blocks.len() - 1 - i] != expected_up {
            return Err(s.error(
                "up_block_types",
                format!(
                    "must mirror down_block_types: level {i} is {kind}, so up block {} must be {expected_up}, got {}",
                    blocks.len() - 1 - i,
                    up[blocks.len() - 1 - i]
                ),
            ));
        }
        if attention {
            attention_resolutions.push(resolution >> i as u32);
        }
    }
    let groups = s.int("norm_num_groups", Some(32))?;
    if let Some(g) = s.get("attn_norm_num_groups") {
        if g.as_i64() != Some(groups) {
            return Err(s.error(
                "attn_norm_num_groups",
                format!("only the resnets' norm_num_groups ({groups}) is supported, got {g}"),
            ));
        }
    }
    if let Some(d) = s.get("time_embedding_dim") {
        if d.as_i64() != Some(4 * channels) {
            return Err(s.error(
                "time_embedding_dim",
                format!(
                    "only 4 x block_out_channels[0] ({}) is supported, got {d}",
                    4 * channels
                ),
            ));
        }
    }
    // diffusers' default head width is 8 channels; null means one head.
    let attention_head_dim = match s.json.get("attention_head_dim") {
        None => Some(8),
        Some(Value::Null) => None,
        Some(_) => Some(s.int("attention_head_dim", None)?),
    };
    let config = UNetConfig {
        in_channels,
        resolution,
        channels,
        channel_mult: blocks.iter().map(|b| b / channels).collect(),
        res_blocks: s.int("layers_per_block", Some(2))?,
        attention_resolutions,
        mid_attention: s.boolean("add_attention", true)?,
        attention_head_dim,
        dropout: s.float("dropout", 0.0)?,
        conv_resample: true,
        downsample_padding: s.int("downsample_padding", Some(1))?,
        norm_groups: groups,
        norm_eps: s.float("norm_eps", 1e-5)?,
        flip_sin_to_cos: s.boolean("flip_sin_to_cos", true)?,
        freq_shift: s.float("freq_shift", 0.0)?,
    };
    config
        .validate()
        .map_err(|(field, message)| s.error(field, message))?;
    Ok(config)
}

/// The training schedule of a diffusers `DDPMScheduler`/`DDIMScheduler`
/// `scheduler_config.json` (linear or `squaredcos_cap_v2` betas; eps prediction).
pub fn scheduler_schedule(json: &Value, path: &Path) -> Result<TrainingSchedule, WeightsError> {
    let s = Settings { json, path };
    s.only("beta_schedule", &["linear", "squaredcos_cap_v2"], "linear")?;
    s.only("prediction_type", &["epsilon"], "epsilon")?;
    if s.get("trained_betas").is_some() {
        return Err(s.error("trained_betas", "explicit betas are not supported".into()));
    }
    let steps = s.int("num_train_timesteps", Some(1000))?;
    if steps < 1 {
        return Err(s.error(
            "num_train_timesteps",
            format!("must be at least 1, got {steps}"),
        ));
    }
    let cosine = s.get("beta_schedule").and_then(Value::as_str) == Some("squaredcos_cap_v2");
    let betas = if cosine {
        // diffusers' betas_for_alpha_bar: s = 0.008, capped at 0.999.
        BetaSchedule::Cosine {
            s: 0.008,
            max_beta: 0.999,
        }
    } else {
        BetaSchedule::Linear {
            start: s.float("beta_start", 1e-4)?,
            end: s.float("beta_end", 0.02)?,
        }
    };
    Ok(TrainingSchedule {
        steps: steps as usize,
        betas,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<UNetConfig, WeightsError> {
        unet_config(
            &serde_json::from_str(text).unwrap(),
            Path::new("m/config.json"),
        )
    }

    /// google/ddpm-cifar10-32's config.json.
    const CIFAR10: &str = r#"{
        "_class_name": "UNet2DModel", "_diffusers_version": "0.0.4",
        "act_fn": "silu", "attention_head_dim": null,
        "block_out_channels": [128, 256, 256, 256], "center_input_sample": false,
        "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
        "downsample_padding": 0, "flip_sin_to_cos": false, "freq_shift": 1,
        "in_channels": 3, "layers_per_block": 2, "mid_block_scale_factor": 1,
        "norm_eps": 1e-06, "norm_num_groups": 32, "out_channels": 3, "sample_size": 32,
        "time_embedding_type": "positional",
        "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"]
    }"#;

    #[test]
    fn the_cifar10_checkpoint_is_the_paper_model() {
        let config = parse(CIFAR10).unwrap();
        assert_eq!(
            config,
            UNetConfig {
                dropout: 0.0,
                ..UNetConfig::cifar10()
            }
        );
    }

    #[test]
    fn missing_settings_take_diffusers_defaults_and_unsupported_ones_are_named() {
        let config = parse(r#"{"sample_size": 32, "block_out_channels": [32, 64], "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"]}"#).unwrap();
        assert_eq!(config.attention_head_dim, Some(8));
        assert!(config.flip_sin_to_cos);
        assert_eq!(
            (
                config.freq_shift,
                config.downsample_padding,
                config.norm_eps
            ),
            (0.0, 1, 1e-5)
        );
        assert_eq!(config.attention_resolutions, vec![16]);
        let err =
            parse(&CIFAR10.replace("\"act_fn\": \"silu\"", "\"act_fn\": \"gelu\"")).unwrap_err();
        assert!(
            err.to_string()
                .contains("act_fn: \"gelu\" is not supported"),
            "{err}"
        );
        let err = parse(&CIFAR10.replace(
            "[\"UpBlock2D\", \"UpBlock2D\", \"AttnUpBlock2D\"",
            "[\"UpBlock2D\", \"AttnUpBlock2D\", \"UpBlock2D\"",
        ))
        .unwrap_err();
        assert!(
            err.to_string().contains("up_block_types: must mirror"),
            "{err}"
        );
        let err = parse(&CIFAR10.replace("\"num_class_embeds\"", "x").replace(
            "\"in_channels\": 3",
            "\"in_channels\": 3, \"num_class_embeds\": 10",
        ))
        .unwrap_err();
        assert!(err.to_string().contains("num_class_embeds"), "{err}");
    }

    #[test]
    fn a_ddpm_scheduler_gives_the_linear_or_cosine_schedule() {
        let json = serde_json::json!({"_class_name": "DDPMScheduler", "beta_end": 0.02, "beta_schedule": "linear", "beta_start": 0.0001, "num_train_timesteps": 1000, "variance_type": "fixed_small", "clip_sample": true});
        let s = scheduler_schedule(&json, Path::new("scheduler_config.json")).unwrap();
        assert_eq!(s.steps, 1000);
        assert_eq!(
            s.betas,
            BetaSchedule::Linear {
                start: 1e-4,
                end: 0.02
            }
        );
        let cosine =
            serde_json::json!({"beta_schedule": "squaredcos_cap_v2", "num_train_timesteps": 10});
        let s = scheduler_schedule(&cosine, Path::new("s.json")).unwrap();
        assert_eq!(s.steps, 10);
        assert_eq!(
            s.betas,
            BetaSchedule::Cosine {
                s: 0.008,
                max_beta: 0.999
            }
        );
        let scaled = serde_json::json!({"beta_schedule": "scaled_linear"});
        let err = scheduler_schedule(&scaled, Path::new("s.json")).unwrap_err();
        assert!(err.to_string().contains("scaled_linear"), "{err}");
    }
}
