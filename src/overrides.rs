//! `--set FIELD=VALUE` on the command line: any field of an experiment,
//! named by its dotted path as the file nests it (`data.set.dir`,
//! `task.epochs`, `task.critic.regularizer.lambda`, `env.sampler`), set to a
//! RON value, so that nobody edits a shipped file to point at their copy of
//! a data set or to shorten a run.
//!
//! The experiment is read as usual, written out in full (every field, the
//! defaults included, so every field has a place), the value is put in the
//! place of the named field, and the result is read and validated again.
//! Enum wrappers are looked through: `data.set.dir` reaches the `dir` of
//! `Mnist(dir: ...)`. A value for a text field may leave out the quotes.

use std::path::Path;

use crate::config::Experiment;
use crate::error::ConfigError;

/// One `FIELD=VALUE` of the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// The dotted path of the field.
    pub field: String,
    /// The new value, in RON.
    pub value: String,
}

impl std::str::FromStr for Override {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.split_once('=') {
            Some((field, value)) if !field.trim().is_empty() && !value.trim().is_empty() => {
                Ok(Self {
                    field: field.trim().to_string(),
                    value: value.trim().to_string(),
                })
            }
            _ => Err(format!(
                "expected FIELD=VALUE (e.g. data.set.dir=/data/mnist), got {text:?}"
            )),
        }
    }
}

impl Override {
    /// Whether the override only says where the data set lives
    /// (`data.set.dir`, `data.set.partition`): such overrides reach the runs
    /// an experiment depends on, when they read the same kind of data set.
    pub fn is_data_location(&self) -> bool {
        matches!(self.field.as_str(), "data.set.dir" | "data.set.partition")
    }

    /// The command-line form, `FIELD=VALUE`.
    pub fn to_arg(&self) -> String {
        format!("{}={}", self.field, self.value)
    }
}

/// The overrides given for `exp` that also apply to its dependency `dep`:
/// the data locations, when both read the same kind of data set (a
/// fine-tuning run and the pretraining run it starts from read the same
/// files, so pointing one at a copy points both).
pub fn carried_to_dependency(
    overrides: &[Override],
    exp: &Experiment,
    dep: &Experiment,
) -> Vec<Override> {
    if std::mem::discriminant(&exp.data.set) != std::mem::discriminant(&dep.data.set) {
        return Vec::new();
    }
    overrides
        .iter()
        .filter(|o| o.is_data_location())
        .cloned()
        .collect()
}

/// A file's settings that `--set` can change: written out in full, read
/// back without validation, validated once all changes are in.
pub trait Overridable: Sized {
    /// Every field, the defaults included, in RON.
    fn to_ron(&self) -> String;
    /// Reads `text` (from `path`) without validating it.
    fn parse_unvalidated(text: &str, path: &Path) -> Result<Self, ConfigError>;
    /// Checks every value; returns the dotted field and what is wrong.
    fn check(&self) -> Result<(), (String, String)>;
}

impl Overridable for Experiment {
    fn to_ron(&self) -> String {
        Experiment::to_ron(self)
    }
    fn parse_unvalidated(text: &str, path: &Path) -> Result<Self, ConfigError> {
        Experiment::parse_unvalidated(text, path)
    }
    fn check(&self) -> Result<(), (String, String)> {
        self.validate()
    }
}

/// `exp` (read from `path`) with `overrides` applied in order, validated.
pub fn apply<T: Overridable>(
    exp: T,
    overrides: &[Override],
    path: &Path,
) -> Result<T, ConfigError> {
    let Some(last) = overrides.last() else {
        return Ok(exp);
    };
    let edited = overrides
        .iter()
        .try_fold(exp, |exp, o| apply_one(exp, o, path))?;
    // Validated once all are in place, so that overrides may depend on each
    // other (a smaller data.n with a smaller eval.n) in any order.
    edited.check().map_err(|(field, message)| {
        let named = overrides
            .iter()
            .rev()
            .find(|o| field.starts_with(&o.field) || o.field.starts_with(&field))
            .unwrap_or(last);
        ConfigError::Override {
            file: path.to_path_buf(),
            field: named.field.clone(),
            message: format!("does not fit: {field}: {message}"),
        }
    })?;
    Ok(edited)
}

fn apply_one<T: Overridable>(exp: T, o: &Override, path: &Path) -> Result<T, ConfigError> {
    let error = |message: String| ConfigError::Override {
        file: path.to_path_buf(),
        field: o.field.clone(),
        message,
    };
    let text = exp.to_ron();
    let mut span = (0, text.len());
    let mut reached = String::new();
    for segment in o.field.split('.') {
        let start = child_value(&text, span, segment).ok_or_else(|| {
            let fields = child_fields(&text, span);
            let place = if reached.is_empty() {
                "the experiment".to_string()
            } else {
                reached.clone()
            };
            error(format!(
                "{place} has no field `{segment}` (it has: {})",
                fields.join(", ")
            ))
        })?;
        span = (start, value_end(&text, start));
        if !reached.is_empty() {
            reached.push('.');
        }
        reached.push_str(segment);
    }
    let current = &text[span.0..span.1];
    let value = if current.starts_with('"') && !o.value.starts_with('"') {
        format!("{:?}", o.value)
    } else {
        o.value.clone()
    };
    let edited = format!("{}{value}{}", &text[..span.0], &text[span.1..]);
    T::parse_unvalidated(&edited, path).map_err(|e| {
        let message = match e {
            ConfigError::Parse { message, .. } => message,
            ConfigError::Invalid { field, message, .. } => format!("{field}: {message}"),
            other => other.to_string(),
        };
        error(format!("`{value}` does not fit: {message}"))
    })
}

/// Walks `text[span]` outside string literals, calling `visit(offset, char,
/// depth)` for each character, `depth` being the number of brackets of any
/// kind open before it (counted from the span's start); stops when `visit`
/// returns false.
fn scan(text: &str, span: (usize, usize), mut visit: impl FnMut(usize, char, usize) -> bool) {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in text[span.0..span.1].char_indices() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        if c == '"' {
            in_string = true;
            continue;
        }
        if !visit(span.0 + i, c, depth) {
            return;
        }
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
}

/// The names of the fields directly inside the value at `span` (those at
/// the smallest nesting depth), with where their values start.
fn fields_at_top(text: &str, span: (usize, usize)) -> Vec<(String, usize)> {
    let mut found: Vec<(String, usize, usize)> = Vec::new();
    let bytes = text.as_bytes();
    scan(text, span, |at, _, depth| {
        let starts_word = bytes[at].is_ascii_alphabetic() || bytes[at] == b'_';
        let after_word_break =
            at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
        if depth >= 1 && starts_word && after_word_break {
            let end = at
                + text[at..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(text.len() - at);
            let rest = text[end..].trim_start();
            if rest.starts_with(':') && !rest.starts_with("::") {
                let colon = text.len() - rest.len();
                let value =
                    colon + 1 + (text[colon + 1..].len() - text[colon + 1..].trim_start().len());
                found.push((text[at..end].to_string(), value, depth));
            }
        }
        true
    });
    let Some(top) = found.iter().map(|f| f.2).min() else {
        return Vec::new();
    };
    found
        .into_iter()
        .filter(|f| f.2 == top)
        .map(|(name, value, _)| (name, value))
        .collect()
}

fn child_fields(text: &str, span: (usize, usize)) -> Vec<String> {
    fields_at_top(text, span).into_iter().map(|f| f.0).collect()
}

fn child_value(text: &str, span: (usize, usize), name: &str) -> Option<usize> {
    fields_at_top(text, span)
        .into_iter()
        .find(|f| f.0 == name)
        .map(|f| f.1)
}

/// Where the value starting at `start` ends: at the first `,` or closing
/// bracket outside its own brackets and strings, trailing space trimmed.
fn value_end(text: &str, start: usize) -> usize {
    let mut end = text.len();
    scan(text, (start, text.len()), |at, c, depth| {
        let closes = matches!(c, ')' | ']' | '}' | ',') && depth == 0;
        if closes {
            end = at;
        }
        !closes
    });
    start + text[start..end].trim_end().len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Task;
    use envs::datasets::DataSet;

    fn swissroll() -> (Experiment, std::path::PathBuf) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/sft_pg_swissroll.ron");
        (Experiment::load(&path).unwrap(), path)
    }

    fn set(text: &str) -> Override {
        text.parse().unwrap()
    }

    #[test]
    fn nested_fields_enum_fields_and_defaults_take_values() {
        let (exp, path) = swissroll();
        let changed = apply(
            exp.clone(),
            &[
                set("task.epochs=3"),
                set("task.critic.regularizer.lambda=0.5"),
                set("eval.chunk=77"),
                set("env.sampler=Ddim(steps: 5, eta: 0.0)"),
                set("name=short"),
            ],
            &path,
        )
        .unwrap();
        let Task::FineTune(task) = &changed.task else {
            panic!("fine-tuning")
        };
        assert_eq!(task.epochs, 3);
        assert_eq!(
            task.critic.regularizer,
            agents::critic::CriticRegularizer::Baseline { lambda: 0.5 }
        );
        assert_eq!(changed.eval.chunk, 77);
        assert_eq!(changed.env.sampler.steps(changed.env.steps), 5);
        assert_eq!(changed.name, "short");
        // Nothing else moved.
        let mut back = changed.clone();
        back.name = exp.name.clone();
        back.eval.chunk = exp.eval.chunk;
        back.env.sampler = exp.env.sampler;
        let Task::FineTune(t) = &mut back.task else {
            unreachable!()
        };
        t.epochs = 300;
        t.critic.regularizer = agents::critic::CriticRegularizer::Baseline { lambda: 0.1 };
        assert_eq!(back, exp);
    }

    #[test]
    fn a_data_folder_is_set_without_quotes() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/sft_pg_digits.ron");
        let exp = Experiment::load(&path).unwrap();
        let changed = apply(exp, &[set("data.set.dir=/srv/data/my digits")], &path).unwrap();
        let DataSet::Digits { dir } = &changed.data.set else {
            panic!("digits")
        };
        assert_eq!(dir, Path::new("/srv/data/my digits"));
    }

    #[test]
    fn unknown_fields_and_bad_values_are_named() {
        let (exp, path) = swissroll();
        let err = apply(exp.clone(), &[set("task.critc.width=3")], &path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--set task.critc.width")
                && err.contains("task has no field `critc`")
                && err.contains("critic"),
            "{err}"
        );
        let err = apply(exp.clone(), &[set("task.epochs=-1")], &path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--set task.epochs") && err.contains("does not fit"),
            "{err}"
        );
        let err = apply(exp, &[set("env.steps=0")], &path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("env.steps: must be at least 1"), "{err}");
        assert!("no-equals".parse::<Override>().is_err());
    }

    #[test]
    fn overrides_are_validated_together_in_any_order() {
        // eval.exact_n must not exceed data.n: lowering data.n first is fine
        // when eval follows.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/sft_pg_digits.ron");
        let exp = Experiment::load(&path).unwrap();
        let sets = [
            set("data.n=Some(32)"),
            set("eval=(every: 1, n: 16, exact_n: 16, projections: 10, repeats: 1, chunk: 16)"),
        ];
        let changed = apply(exp.clone(), &sets, &path).unwrap();
        assert_eq!((changed.data.n, changed.eval.exact_n), (Some(32), 16));
        // A field the file leaves out has its place too.
        let chunked = apply(changed, &[set("task.rollout_chunk=Some(32)")], &path).unwrap();
        let Task::FineTune(task) = &chunked.task else {
            panic!("fine-tuning")
        };
        assert_eq!(task.rollout_chunk, Some(32));
        // Alone, the smaller data.n does not fit the file's evaluation, and
        // the error names the override and the field it clashes with.
        let err = apply(exp, &sets[..1], &path).unwrap_err().to_string();
        assert!(
            err.contains("--set data.n") && err.contains("eval.exact_n"),
            "{err}"
        );
    }

    #[test]
    fn data_locations_reach_dependencies_of_the_same_data_set() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
        let fine = Experiment::load(&dir.join("sft_pg_mnist.ron")).unwrap();
        let pre = Experiment::load(&dir.join("ddpm_mnist_t10.ron")).unwrap();
        let swiss = Experiment::load(&dir.join("ddpm_swissroll_t10.ron")).unwrap();
        let sets = [
            set("data.set.dir=/data/mnist"),
            set("task.epochs=3"),
            set("data.set.size=28"),
        ];
        let carried = carried_to_dependency(&sets, &fine, &pre);
        assert_eq!(carried, vec![set("data.set.dir=/data/mnist")]);
        assert!(carried_to_dependency(&sets, &fine, &swiss).is_empty());
    }

    #[test]
    fn strings_with_brackets_and_commas_do_not_confuse_the_walk() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/sft_pg_digits.ron");
        let exp = Experiment::load(&path).unwrap();
        let odd = r#"odd, (dir] \" name: x"#;
        let changed = apply(
            exp.clone(),
            &[set(&format!("data.set.dir={odd}")), set("task.epochs=7")],
            &path,
        )
        .unwrap();
        let DataSet::Digits { dir } = &changed.data.set else {
            panic!("digits")
        };
        assert_eq!(dir, Path::new(odd));
        assert_eq!(changed.name, exp.name);
        let Task::FineTune(task) = &changed.task else {
            panic!("fine-tuning")
        };
        assert_eq!(task.epochs, 7);
    }
}
