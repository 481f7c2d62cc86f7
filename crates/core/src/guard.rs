//! Guards: a condition on the saga context that decides whether a step runs.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A condition on the saga context. Paths are dot-separated object keys (`order.total`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// The path exists and is not null.
    Exists {
        /// Dot-separated path into the context.
        path: String,
    },
    /// The value at the path equals `value`.
    Equals {
        /// Dot-separated path into the context.
        path: String,
        /// The value to compare with.
        value: Value,
    },
    /// The value at the path is true, a non-zero number, a non-empty string, array or object.
    Truthy {
        /// Dot-separated path into the context.
        path: String,
    },
    /// The inner condition does not hold.
    Not {
        /// The condition to negate.
        condition: Box<Condition>,
    },
    /// Every inner condition holds.
    All {
        /// The conditions.
        conditions: Vec<Condition>,
    },
    /// At least one inner condition holds.
    Any {
        /// The conditions.
        conditions: Vec<Condition>,
    },
}

/// What happens when a guard's condition does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardOtherwise {
    /// The step is skipped and the saga goes on (a conditional step).
    #[default]
    Skip,
    /// The saga stops as `Failed` for an operator to look at (a precondition).
    Fail,
}

/// A guard on a step: run it only when `when` holds; otherwise skip it or fail the saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guard {
    /// The condition on the saga context.
    pub when: Condition,
    /// What to do when it does not hold.
    #[serde(default)]
    pub otherwise: GuardOtherwise,
}

/// The value at a dot-separated path, if any.
pub fn lookup<'a>(context: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .filter(|part| !part.is_empty())
        .try_fold(context, |value, part| match value {
            Value::Object(map) => map.get(part),
            Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
}

impl Condition {
    /// Whether the condition holds for this context.
    pub fn holds(&self, context: &Value) -> bool {
        match self {
            Condition::Exists { path } => lookup(context, path).is_some_and(|v| !v.is_null()),
            Condition::Equals { path, value } => lookup(context, path) == Some(value),
            Condition::Truthy { path } => lookup(context, path).is_some_and(truthy),
            Condition::Not { condition } => !condition.holds(context),
            Condition::All { conditions } => conditions.iter().all(|c| c.holds(context)),
            Condition::Any { conditions } => conditions.iter().any(|c| c.holds(context)),
        }
    }

    /// A short human description, used in journal reasons.
    pub fn describe(&self) -> String {
        match self {
            Condition::Exists { path } => format!("{path} exists"),
            Condition::Equals { path, value } => format!("{path} == {value}"),
            Condition::Truthy { path } => format!("{path} is truthy"),
            Condition::Not { condition } => format!("not ({})", condition.describe()),
            Condition::All { conditions } => join(conditions, " and "),
            Condition::Any { conditions } => join(conditions, " or "),
        }
    }
}

fn join(conditions: &[Condition], sep: &str) -> String {
    let parts: Vec<_> = conditions.iter().map(|c| c.describe()).collect();
    format!("({})", parts.join(sep))
}

fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conditions_read_nested_paths() {
        let ctx = json!({"order": {"total": 10, "items": [{"sku": "a"}]}, "vip": false});
        assert!(Condition::Exists {
            path: "order.total".into()
        }
        .holds(&ctx));
        assert!(Condition::Equals {
            path: "order.items.0.sku".into(),
            value: json!("a")
        }
        .holds(&ctx));
        assert!(!Condition::Truthy { path: "vip".into() }.holds(&ctx));
        assert!(!Condition::Exists {
            path: "order.missing".into()
        }
        .holds(&ctx));
        let both = Condition::All {
            conditions: vec![
                Condition::Truthy {
                    path: "order.total".into(),
                },
                Condition::Not {
                    condition: Box::new(Condition::Truthy { path: "vip".into() }),
                },
            ],
        };
        assert!(both.holds(&ctx));
    }
}
