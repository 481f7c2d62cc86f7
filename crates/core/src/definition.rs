//! Saga definitions: ordered steps with kinds, commands, compensations and policies,
//! built in Rust or read from JSON, and validated before they are registered.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::guard::{Guard, GuardOtherwise};
use crate::retry::RetryPolicy;

/// A command sent to a participant: the subject is `service.command`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Command {
    /// The participant service that handles it (`billing`).
    pub service: String,
    /// The command's name within that service (`charge`).
    pub name: String,
}

impl Command {
    /// Parses `service.command`; both parts must be non-empty.
    pub fn parse(subject: &str) -> Result<Self, String> {
        match subject.split_once('.') {
            Some((service, name))
                if valid_part(service) && !name.is_empty() && name.split('.').all(valid_part) =>
            {
                Ok(Command {
                    service: service.to_string(),
                    name: name.to_string(),
                })
            }
            _ => Err(format!(
                "command subject {subject:?} must look like service.command (letters, digits, '_' and '-')"
            )),
        }
    }

    /// The subject, `service.command`.
    pub fn subject(&self) -> String {
        format!("{}.{}", self.service, self.name)
    }
}

fn valid_part(part: &str) -> bool {
    !part.is_empty()
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl TryFrom<String> for Command {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Command::parse(&value)
    }
}

impl From<Command> for String {
    fn from(value: Command) -> String {
        value.subject()
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.service, self.name)
    }
}

/// The classic saga step taxonomy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Has a compensation; undone if the saga compensates.
    Compensatable,
    /// The point of no return: once it succeeds the saga only moves forward.
    Pivot,
    /// After the pivot: retried until it succeeds, never compensated.
    Retriable,
}

/// One step of a saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Unique within the definition; appears in idempotency keys.
    pub name: String,
    /// Compensatable, pivot or retriable.
    pub kind: StepKind,
    /// The command that performs the step.
    pub action: Command,
    /// The command that undoes it (required for compensatable steps, refused otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensation: Option<Command>,
    /// Retry policy for the action and the compensation.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// How long one attempt may take before it counts as timed out (and maybe done).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Run the step only when this holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<Guard>,
}

impl Step {
    fn new(name: &str, kind: StepKind, action: &str, compensation: Option<&str>) -> Self {
        Step {
            name: name.to_string(),
            kind,
            action: Command::parse(action).unwrap_or(Command {
                service: String::new(),
                name: action.to_string(),
            }),
            compensation: compensation.map(|c| {
                Command::parse(c).unwrap_or(Command {
                    service: String::new(),
                    name: c.to_string(),
                })
            }),
            retry: RetryPolicy::default(),
            timeout_ms: None,
            guard: None,
        }
    }

    /// A compensatable step: `action` and `compensation` are `service.command` subjects.
    ///
    /// A malformed subject is kept and reported by [`Definition::validate`].
    pub fn compensatable(name: &str, action: &str, compensation: &str) -> Self {
        Step::new(name, StepKind::Compensatable, action, Some(compensation))
    }

    /// The pivot step: the point of no return.
    pub fn pivot(name: &str, action: &str) -> Self {
        Step::new(name, StepKind::Pivot, action, None)
    }

    /// A retriable step after the pivot.
    pub fn retriable(name: &str, action: &str) -> Self {
        Step::new(name, StepKind::Retriable, action, None)
    }

    /// Sets the retry policy.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Sets the attempt timeout.
    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = Some(ms);
        self
    }

    /// Sets the guard.
    pub fn guard(mut self, guard: Guard) -> Self {
        self.guard = Some(guard);
        self
    }
}

/// A saga definition: a name, a version, and ordered steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    /// The definition's name (`order`).
    pub name: String,
    /// Its version; several versions can be registered side by side.
    pub version: u32,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// The saga must end within this many milliseconds of starting, or it compensates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// A context path whose value correlates external signals with sagas (`user_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_key: Option<String>,
}

/// Why a definition was refused; each names the step and the reason.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DefinitionError {
    /// The name is empty or has characters outside `[A-Za-z0-9_-]`.
    #[error("definition name {0:?} must be non-empty and use only letters, digits, '_' and '-'")]
    BadName(String),
    /// Version 0 is reserved.
    #[error("definition {name}: version must be at least 1")]
    BadVersion {
        /// The definition.
        name: String,
    },
    /// No steps.
    #[error("definition {name} v{version}: has no steps")]
    NoSteps {
        /// The definition.
        name: String,
        /// Its version.
        version: u32,
    },
    /// Something about one step.
    #[error("definition {name} v{version}, step {step:?}: {reason}")]
    Step {
        /// The definition.
        name: String,
        /// Its version.
        version: u32,
        /// The step.
        step: String,
        /// What is wrong.
        reason: String,
    },
    /// Something about the definition as a whole.
    #[error("definition {name} v{version}: {reason}")]
    Other {
        /// The definition.
        name: String,
        /// Its version.
        version: u32,
        /// What is wrong.
        reason: String,
    },
}

impl Definition {
    /// Starts a definition with this name and version.
    pub fn builder(name: &str, version: u32) -> DefinitionBuilder {
        DefinitionBuilder {
            definition: Definition {
                name: name.to_string(),
                version,
                steps: Vec::new(),
                deadline_ms: None,
                correlation_key: None,
            },
        }
    }

    /// Reads a JSON definition and validates it.
    pub fn from_json(json: &str) -> Result<Self, DefinitionError> {
        let definition: Definition =
            serde_json::from_str(json).map_err(|e| DefinitionError::Other {
                name: "?".into(),
                version: 0,
                reason: format!("not a valid definition document: {e}"),
            })?;
        definition.validate()?;
        Ok(definition)
    }

    /// The index of the pivot step, if there is one.
    pub fn pivot(&self) -> Option<usize> {
        self.steps.iter().position(|s| s.kind == StepKind::Pivot)
    }

    /// Checks the rules: unique names, a compensation on every compensatable step and only
    /// there, at most one pivot (never skipped by its guard), nothing compensatable after it,
    /// retriable steps only after it, sane policies and commands.
    pub fn validate(&self) -> Result<(), DefinitionError> {
        if !valid_part(&self.name) {
            return Err(DefinitionError::BadName(self.name.clone()));
        }
        if self.version == 0 {
            return Err(DefinitionError::BadVersion {
                name: self.name.clone(),
            });
        }
        if self.steps.is_empty() {
            return Err(DefinitionError::NoSteps {
                name: self.name.clone(),
                version: self.version,
            });
        }
        let step_error = |step: &Step, reason: String| DefinitionError::Step {
            name: self.name.clone(),
            version: self.version,
            step: step.name.clone(),
            reason,
        };
        let mut seen = HashSet::new();
        let mut pivot: Option<&Step> = None;
        for step in &self.steps {
            if !valid_part(&step.name) {
                return Err(step_error(
                    step,
                    "step name must be non-empty and use only letters, digits, '_' and '-'".into(),
                ));
            }
            if !seen.insert(step.name.as_str()) {
                return Err(step_error(step, "another step has the same name".into()));
            }
            if let Err(reason) = Command::parse(&step.action.subject()) {
                return Err(step_error(step, format!("action: {reason}")));
            }
            if let Some(c) = &step.compensation {
                if let Err(reason) = Command::parse(&c.subject()) {
                    return Err(step_error(step, format!("compensation: {reason}")));
                }
            }
            match step.kind {
                StepKind::Compensatable => {
                    if step.compensation.is_none() {
                        return Err(step_error(
                            step,
                            "a compensatable step needs a compensation".into(),
                        ));
                    }
                    if let Some(p) = pivot {
                        return Err(step_error(
                            step,
                            format!(
                                "a compensatable step cannot follow the pivot step {:?}: nothing after the pivot is ever compensated",
                                p.name
                            ),
                        ));
                    }
                }
                StepKind::Pivot => {
                    if let Some(p) = pivot {
                        return Err(step_error(
                            step,
                            format!(
                                "a definition has at most one pivot, and {:?} is already one",
                                p.name
                            ),
                        ));
                    }
                    if step.compensation.is_some() {
                        return Err(step_error(
                            step,
                            "a pivot step has no compensation: it is the point of no return".into(),
                        ));
                    }
                    // Skipped, the retriable steps after it would run with the saga still
                    // able to go back, and nothing undoes them.
                    if step
                        .guard
                        .as_ref()
                        .is_some_and(|g| g.otherwise == GuardOtherwise::Skip)
                    {
                        return Err(step_error(
                            step,
                            "a pivot step cannot be skipped: the retriable steps after it would run without the point of no return (use otherwise: fail)".into(),
                        ));
                    }
                    pivot = Some(step);
                }
                StepKind::Retriable => {
                    if pivot.is_none() {
                        return Err(step_error(
                            step,
                            "a retriable step must come after the pivot step (declare one, or make this step compensatable)".into(),
                        ));
                    }
                    if step.compensation.is_some() {
                        return Err(step_error(
                            step,
                            "a retriable step is never compensated, so it takes no compensation"
                                .into(),
                        ));
                    }
                }
            }
            if let Some(problem) = step.retry.problem() {
                return Err(step_error(step, format!("retry policy: {problem}")));
            }
            if step.timeout_ms == Some(0) {
                return Err(step_error(step, "timeout_ms must be at least 1".into()));
            }
            if step
                .timeout_ms
                .is_some_and(|ms| ms > crate::clock::MAX_SPAN_MS)
            {
                return Err(step_error(
                    step,
                    format!(
                        "timeout_ms must be at most {} (ten years)",
                        crate::clock::MAX_SPAN_MS
                    ),
                ));
            }
        }
        if self.deadline_ms == Some(0) {
            return Err(DefinitionError::Other {
                name: self.name.clone(),
                version: self.version,
                reason: "deadline_ms must be at least 1".into(),
            });
        }
        if self
            .deadline_ms
            .is_some_and(|ms| ms > crate::clock::MAX_SPAN_MS)
        {
            return Err(DefinitionError::Other {
                name: self.name.clone(),
                version: self.version,
                reason: format!(
                    "deadline_ms must be at most {} (ten years)",
                    crate::clock::MAX_SPAN_MS
                ),
            });
        }
        if let Some(key) = &self.correlation_key {
            if key.split('.').any(str::is_empty) {
                return Err(DefinitionError::Other {
                    name: self.name.clone(),
                    version: self.version,
                    reason: format!("correlation_key {key:?} must be a dot-separated path"),
                });
            }
        }
        Ok(())
    }
}

/// Builds a [`Definition`] step by step; `build` validates it.
#[derive(Debug, Clone)]
pub struct DefinitionBuilder {
    definition: Definition,
}

impl DefinitionBuilder {
    /// Appends a step.
    pub fn step(mut self, step: Step) -> Self {
        self.definition.steps.push(step);
        self
    }

    /// Sets the saga deadline.
    pub fn deadline_ms(mut self, ms: u64) -> Self {
        self.definition.deadline_ms = Some(ms);
        self
    }

    /// Declares the context path that correlates signals with sagas.
    pub fn correlation_key(mut self, path: &str) -> Self {
        self.definition.correlation_key = Some(path.to_string());
        self
    }

    /// Validates and returns the definition.
    pub fn build(self) -> Result<Definition, DefinitionError> {
        self.definition.validate()?;
        Ok(self.definition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> DefinitionBuilder {
        Definition::builder("order", 1)
            .step(Step::compensatable(
                "reserve",
                "stock.reserve",
                "stock.release",
            ))
            .step(Step::pivot("charge", "billing.charge"))
            .step(Step::retriable("ship", "delivery.ship"))
    }

    #[test]
    fn a_good_definition_builds() {
        let d = order().build().unwrap();
        assert_eq!(d.pivot(), Some(1));
    }

    #[test]
    fn each_refusal_names_the_step_and_reason() {
        let dup = order()
            .step(Step::retriable("ship", "delivery.ship"))
            .build();
        assert_eq!(
            dup.unwrap_err().to_string(),
            "definition order v1, step \"ship\": another step has the same name"
        );
        let after_pivot = order()
            .step(Step::compensatable("late", "x.do", "x.undo"))
            .build()
            .unwrap_err()
            .to_string();
        assert!(
            after_pivot.contains("\"late\"") && after_pivot.contains("cannot follow the pivot")
        );
        let mut no_comp = Step::compensatable("a", "x.do", "x.undo");
        no_comp.compensation = None;
        let e = Definition::builder("d", 1)
            .step(no_comp)
            .build()
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs a compensation"), "{e}");
        let e = Definition::builder("d", 1)
            .step(Step::retriable("r", "x.do"))
            .build()
            .unwrap_err()
            .to_string();
        assert!(e.contains("after the pivot"), "{e}");
        let e = Definition::builder("d", 1)
            .step(Step::compensatable("a", "nodot", "x.undo"))
            .build()
            .unwrap_err()
            .to_string();
        assert!(e.contains("action") && e.contains("service.command"), "{e}");
    }

    #[test]
    fn json_and_builder_give_the_same_definition() {
        let built = order().build().unwrap();
        let json = serde_json::to_string(&built).unwrap();
        assert_eq!(Definition::from_json(&json).unwrap(), built);
        let e = Definition::from_json(r#"{"name":"x","version":1,"steps":[],"bogus":1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field"), "{e}");
    }
}
