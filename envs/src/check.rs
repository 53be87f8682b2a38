//! Validation of configuration values: each configuration type checks its
//! own fields with a [`Checker`] (`validate(&self, check)`), and the
//! experiment composes them under dotted prefixes (burn's config-then-init).
//! The first failed check is kept, as the dotted field at fault and a
//! message saying what was expected.

/// Collects the first failed check of a validation: (dotted field, message).
#[derive(Debug, Default)]
pub struct Checker {
    prefix: String,
    first: Option<(String, String)>,
}

impl Checker {
    /// A checker whose fields are named from the root of the configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// The full dotted name of `field` under the current prefix.
    fn name(&self, field: &str) -> String {
        if self.prefix.is_empty() {
            field.to_string()
        } else if field.is_empty() {
            self.prefix.clone()
        } else {
            format!("{}.{field}", self.prefix)
        }
    }

    /// Runs `checks` with field names taken relative to `prefix` (so a type
    /// validates its own fields by their own names, whatever nests it).
    pub fn within(&mut self, prefix: &str, checks: impl FnOnce(&mut Self)) {
        let outer = std::mem::take(&mut self.prefix);
        self.prefix = if outer.is_empty() {
            prefix.to_string()
        } else {
            format!("{outer}.{prefix}")
        };
        checks(self);
        self.prefix = outer;
    }

    /// Records `message` against `field` unless `ok`.
    pub fn that(&mut self, ok: bool, field: &str, message: String) {
        if !ok && self.first.is_none() {
            self.first = Some((self.name(field), message));
        }
    }

    /// `value` must be at least `min`.
    pub fn at_least(&mut self, field: &str, value: usize, min: usize) {
        self.that(
            value >= min,
            field,
            format!("must be at least {min}, got {value}"),
        );
    }

    /// `value` must lie in the open interval (0, 1).
    pub fn in_unit(&mut self, field: &str, value: f64) {
        self.that(
            value > 0.0 && value < 1.0,
            field,
            format!("must lie in (0, 1), got {value}"),
        );
    }

    /// `value` must be finite and at least 0.
    pub fn non_negative(&mut self, field: &str, value: f64) {
        self.that(
            value.is_finite() && value >= 0.0,
            field,
            format!("must be a finite number >= 0, got {value}"),
        );
    }

    /// `value`, when set, must be finite and above 0.
    pub fn positive_opt(&mut self, field: &str, value: Option<f64>) {
        if let Some(v) = value {
            self.that(
                v.is_finite() && v > 0.0,
                field,
                format!("must be a finite number > 0, got {v}"),
            );
        }
    }

    /// A learning rate (`field.lr`) must be finite and above 0.
    pub fn learning_rate(&mut self, field: &str, lr: f64) {
        self.that(
            lr.is_finite() && lr > 0.0,
            &format!("{field}.lr"),
            format!("learning rate must be > 0, got {lr}"),
        );
    }

    /// The first failed check, if any: (dotted field, message).
    pub fn result(self) -> Result<(), (String, String)> {
        self.first.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_checks_name_the_full_path_and_the_first_failure_wins() {
        let mut check = Checker::new();
        check.at_least("epochs", 3, 1);
        check.within("task", |c| {
            c.within("agent", |c| c.in_unit("clip", 1.5));
            c.at_least("batch", 0, 1);
        });
        assert_eq!(
            check.result(),
            Err((
                "task.agent.clip".to_string(),
                "must lie in (0, 1), got 1.5".to_string()
            ))
        );
        let mut check = Checker::new();
        check.within("task", |c| c.that(false, "", "whole task".into()));
        assert_eq!(check.result().unwrap_err().0, "task");
        let mut fine = Checker::new();
        fine.within("a", |c| c.positive_opt("b", None));
        assert!(fine.result().is_ok());
    }
}
