//! Reading experiments that earlier versions of rl-run stored in their
//! checkpoints: text rewrites of old layouts ([`migrate_toy_model`],
//! [`migrate_v1`]) and the settings whose meaning changed between schemas
//! ([`from_schema`]; docs/conventions.md says what each schema meant).

use agents::critic::CriticRegularizer;
use agents::generator::DeterministicStep;
use agents::networks::BaselineHead;

use super::{Experiment, Task, CURRENT_SCHEMA};

/// Brings an experiment stored under `stored_schema` to today's terms, so
/// that it trains as it did then, and marks it [`CURRENT_SCHEMA`].
pub fn from_schema(exp: &mut Experiment, stored_schema: u32) {
    if stored_schema < 2 {
        lambda_from_schema_1(exp);
    }
    if stored_schema < 3 {
        rollouts_from_schema_2(exp);
    }
    exp.schema = CURRENT_SCHEMA;
}

/// A stored experiment of schema 1 in today's terms: its `Baseline`
/// lambda weighted R_B averaged over the T' sampler steps, today's
/// weights R_B summed over them (the paper's Eq. 23), so the same
/// training has lambda / T'.
fn lambda_from_schema_1(exp: &mut Experiment) {
    let steps = exp.env.sampler.steps(exp.env.steps) as f64;
    if let Task::FineTune(task) = &mut exp.task {
        if let CriticRegularizer::Baseline { lambda } = &mut task.critic.regularizer {
            *lambda /= steps;
        }
    }
}

/// A stored experiment of schema 1 or 2 in today's terms: its rollouts
/// drew deterministic steps without noise, its baseline had a
/// conditional last layer and its DDPM samplers did not clip x_0 (none
/// was a setting then).
fn rollouts_from_schema_2(exp: &mut Experiment) {
    exp.env.clip_x0 = Some(false);
    if let Task::FineTune(task) = &mut exp.task {
        task.generator.deterministic_step = DeterministicStep::Noiseless;
        task.critic.baseline_head = Some(BaselineHead::Conditional);
    }
}

/// Rewrites `model: (width: ...)` of files written before the U-Net existed
/// into the toy variant, in the two forms RON may need: `Toy(width: ...)`
/// (with the newtype extension, which our files enable) and
/// `Toy((width: ...))` (without it). `None` if there is no such field.
pub fn migrate_toy_model(text: &str) -> Option<[String; 2]> {
    let start = text.find("model:")?;
    let after = &text[start + "model:".len()..];
    let open = after.find(|c: char| !c.is_whitespace())?;
    if !after[open..].starts_with('(') {
        return None;
    }
    let mut depth = 0usize;
    let close = after[open..].char_indices().find_map(|(i, c)| {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(open + i);
                }
            }
            _ => {}
        }
        None
    })?;
    let (head, tail) = (&text[..start], &after[close + 1..]);
    Some([
        format!("{head}model: Toy{}{tail}", &after[open..=close]),
        format!("{head}model: Toy({}){tail}", &after[open..=close]),
    ])
}

/// Rewrites a stored experiment of the first schema, where the generator's
/// settings (optimizer, log_prob, n_generator, grad_clip) sat inside
/// `agent: Reinforce((...))`, into the current one with a `generator: (...)`
/// block. Works on the pretty-printed form checkpoints store; `None` if the
/// text has no such block.
pub fn migrate_v1(text: &str) -> Option<String> {
    let start = text.find("agent: Reinforce((\n")?;
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let indent = &text[line_start..start];
    let body_start = start + "agent: Reinforce((\n".len();
    let close = format!("\n{indent})),\n");
    let body_end = body_start + text[body_start..].find(&close)?;
    let field_indent = format!("{indent}    ");
    let mut entries: Vec<(String, String)> = Vec::new();
    for line in text[body_start..=body_end].lines() {
        let is_field =
            line.starts_with(&field_indent) && !line[field_indent.len()..].starts_with([' ', ')']);
        match (is_field, entries.last_mut()) {
            (true, _) => {
                let name = line[field_indent.len()..].split(':').next()?.to_string();
                entries.push((name, format!("{line}\n")));
            }
            (false, Some((_, body))) => body.push_str(&format!("{line}\n")),
            (false, None) => return None,
        }
    }
    let (agent, generator): (Vec<_>, Vec<_>) = entries
        .into_iter()
        .partition(|(name, _)| name == "use_baseline" || name == "normalize_advantage");
    let join = |v: Vec<(String, String)>| v.into_iter().map(|(_, b)| b).collect::<String>();
    Some(format!(
        "{}generator: (\n{}{indent}),\n{indent}agent: Reinforce((\n{}{indent})),\n{}",
        &text[..start],
        join(generator),
        join(agent),
        &text[body_end + close.len()..]
    ))
}
