//! Loads a safetensors file into a model's variables, strictly: every
//! variable must be in the file with its shape, and every tensor of the file
//! must be a variable. The older attention names of 2022 diffusers
//! checkpoints (`query`, `key`, `value`, `proj_attn`, as in
//! google/ddpm-cifar10-32) are read as today's (`to_q`, `to_k`, `to_v`,
//! `to_out.0`).

use std::collections::BTreeMap;
use std::path::Path;

use tch::nn::VarStore;
use tch::{Kind, Tensor};

use super::WeightsError;

/// The attention names diffusers used before version 0.14, and today's.
const LEGACY_ATTENTION_NAMES: [(&str, &str); 4] = [
    (".query.", ".to_q."),
    (".key.", ".to_k."),
    (".value.", ".to_v."),
    (".proj_attn.", ".to_out.0."),
];

/// Today's name of a tensor stored under an older diffusers name (the name
/// itself where it is not an old attention name).
pub fn current_name(key: &str) -> String {
    if !key.contains(".attentions.") {
        return key.to_string();
    }
    LEGACY_ATTENTION_NAMES
        .iter()
        .find(|(old, _)| key.contains(old))
        .map_or_else(|| key.to_string(), |(old, new)| key.replacen(old, new, 1))
}

/// Reads the tensors of a safetensors file, under today's names.
pub fn read_tensors(path: &Path) -> Result<BTreeMap<String, Tensor>, WeightsError> {
    if !path.is_file() {
        return Err(WeightsError::Read {
            path: path.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    let tensors = Tensor::read_safetensors(path).map_err(|e| WeightsError::Format {
        path: path.to_path_buf(),
        // libtorch's message names the path, which the error already does.
        message: format!(
            "not a readable safetensors file ({})",
            e.to_string()
                .replace(&format!(" {}", path.display()), "")
                .trim_end_matches(':')
        ),
    })?;
    let mut named = BTreeMap::new();
    for (key, tensor) in tensors {
        let name = current_name(&key);
        if named.insert(name.clone(), tensor).is_some() {
            return Err(WeightsError::Tensor {
                path: path.to_path_buf(),
                key: name,
                message: "stored twice (under an old and a new name)".into(),
            });
        }
    }
    Ok(named)
}

/// Copies the tensors of the safetensors file `path` into `vs` (converted to
/// float32 on the variables' device), strictly both ways.
pub fn load_strict(path: &Path, vs: &VarStore) -> Result<(), WeightsError> {
    let mut file = read_tensors(path)?;
    let variables = vs.variables();
    let mut names: Vec<&String> = variables.keys().collect();
    names.sort();
    let error = |key: &str, message: String| WeightsError::Tensor {
        path: path.to_path_buf(),
        key: key.to_string(),
        message,
    };
    for key in names {
        let mut var = variables[key].shallow_clone();
        let Some(src) = file.remove(key.as_str()) else {
            return Err(error(key, "missing from the file".into()));
        };
        if src.size() != var.size() {
            return Err(error(
                key,
                format!(
                    "the model has shape {:?}, the file {:?}",
                    var.size(),
                    src.size()
                ),
            ));
        }
        tch::no_grad(|| var.copy_(&src.to_kind(Kind::Float).to_device(var.device())));
    }
    if let Some(extra) = file.keys().next() {
        return Err(error(extra, "in the file but not in the model".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_attention_names_map_to_todays() {
        assert_eq!(
            current_name("down_blocks.1.attentions.0.query.weight"),
            "down_blocks.1.attentions.0.to_q.weight"
        );
        assert_eq!(
            current_name("mid_block.attentions.0.proj_attn.bias"),
            "mid_block.attentions.0.to_out.0.bias"
        );
        // Outside attention blocks nothing is renamed.
        assert_eq!(
            current_name("down_blocks.0.resnets.0.conv1.weight"),
            "down_blocks.0.resnets.0.conv1.weight"
        );
    }
}
