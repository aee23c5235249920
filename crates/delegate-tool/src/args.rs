//! Reading the model's arguments: the checks before anything is built, in their
//! documented order (see [`ToolError`]).

use std::borrow::Cow;

use process_registry::json_kind;
use serde_json::{Map, Value};

use crate::control::Action;
use crate::nesting::nests_deeper_than;
use crate::{ChildTask, DelegationConfig, ToolError, MAX_ARGUMENT_NESTING};

/// A child's role. Anything the model sends other than `leaf` / `orchestrator`
/// (trimmed, any case) — including nothing — is `leaf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Role {
    /// Does the work itself.
    #[default]
    Leaf,
    /// May delegate further (within `max_spawn_depth`).
    Orchestrator,
}

impl Role {
    /// Normalises a raw `role` argument.
    pub fn from_argument(value: Option<&Value>) -> Role {
        match value.and_then(Value::as_str).map(str::trim) {
            Some(s) if s.eq_ignore_ascii_case("orchestrator") => Role::Orchestrator,
            _ => Role::Leaf,
        }
    }

    /// `leaf` or `orchestrator`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leaf => "leaf",
            Role::Orchestrator => "orchestrator",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reads the `background` flag: `true`, the number 1, or the strings `1`, `true`,
/// `yes`, `on` (trimmed, any case). Everything else is `false`.
pub fn parse_background(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_u64() == Some(1),
        Some(Value::String(s)) => {
            let s = s.trim();
            ["1", "true", "yes", "on"]
                .iter()
                .any(|word| s.eq_ignore_ascii_case(word))
        }
        _ => false,
    }
}

/// A validated call: what `delegate_task` will run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegateCall {
    /// The call's top-level role (a task may carry its own).
    pub role: Role,
    /// Run in the background (then `tasks` has exactly one task).
    pub background: bool,
    /// The tasks, in order; `tasks[i].task_index == i`.
    pub tasks: Vec<ChildTask>,
}

/// Parses and validates arguments without a backend: every check of [`ToolError`]'s list
/// in order, except credentials, which need a backend and are resolved by
/// [`delegate_task`](crate::delegate_task) between the depth and the tasks checks.
///
/// # Errors
/// The first failing check's [`ToolError`].
///
/// ```
/// use delegate_tool::{validate_arguments, DelegationConfig, ToolError};
/// use serde_json::json;
///
/// let call = validate_arguments(&json!({"goal": "Fix the build", "background": "YES"}), 0, &DelegationConfig::default())?;
/// assert!(call.background);
/// assert_eq!(call.tasks[0].goal, "Fix the build");
///
/// let err = validate_arguments(&json!({"tasks": [{"goal": "a"}, 7]}), 0, &DelegationConfig::default()).unwrap_err();
/// assert_eq!(err, ToolError::TaskNotObject { index: 1, kind: "number" });
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn validate_arguments(
    arguments: &Value,
    parent_depth: u32,
    config: &DelegationConfig,
) -> Result<DelegateCall, ToolError> {
    let args = Arguments::read(arguments)?;
    check_depth(parent_depth, config)?;
    args.into_call(parent_depth, config)
}

/// Parses the raw argument text a function-calling API hands over. Blank text means no
/// arguments (`{}`).
pub(crate) fn parse_argument_text(text: &str) -> Result<Value, ToolError> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_str(text).map_err(|e| {
        let reason = e.to_string();
        // The parser's own nesting limit is the one parsed arguments get: same refusal.
        if reason.starts_with("recursion limit exceeded") {
            ToolError::ArgumentsTooDeep {
                max: MAX_ARGUMENT_NESTING,
            }
        } else {
            ToolError::ArgumentsNotJson { reason }
        }
    })
}

/// The `tasks` argument, parsed as far as the background-batch and tasks checks need.
enum Tasks<'a> {
    /// Absent, null, or an empty array (then `goal` is the task).
    Absent,
    /// A non-empty array, given as one or parsed from a string.
    List(Cow<'a, [Value]>),
    /// A blank string.
    Blank,
    /// A string that is not JSON.
    NotJson(String),
    /// A string holding JSON that is not an array.
    ParsedNotArray(&'static str),
    /// Neither array, string nor null.
    WrongType(&'static str),
}

impl<'a> Tasks<'a> {
    fn read(value: Option<&'a Value>) -> Tasks<'a> {
        match value {
            None | Some(Value::Null) => Tasks::Absent,
            Some(Value::Array(list)) if list.is_empty() => Tasks::Absent,
            Some(Value::Array(list)) => Tasks::List(Cow::Borrowed(list)),
            Some(Value::String(s)) if s.trim().is_empty() => Tasks::Blank,
            Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(Value::Array(list)) if list.is_empty() => Tasks::Absent,
                Ok(Value::Array(list)) => Tasks::List(Cow::Owned(list)),
                Ok(other) => Tasks::ParsedNotArray(json_kind(&other)),
                Err(e) => Tasks::NotJson(e.to_string()),
            },
            Some(other) => Tasks::WrongType(json_kind(other)),
        }
    }
}

/// Arguments that passed the shape, role and background-batch checks.
pub(crate) struct Arguments<'a> {
    map: &'a Map<String, Value>,
    action: Action,
    role: Role,
    background: bool,
    tasks: Tasks<'a>,
}

impl<'a> Arguments<'a> {
    /// Checks the arguments nest at most [`MAX_ARGUMENT_NESTING`] levels and are an
    /// object, then reads the role and refuses a background batch.
    pub(crate) fn read(arguments: &'a Value) -> Result<Arguments<'a>, ToolError> {
        // First: everything after this may recurse on the value.
        if nests_deeper_than(arguments, MAX_ARGUMENT_NESTING) {
            return Err(ToolError::ArgumentsTooDeep {
                max: MAX_ARGUMENT_NESTING,
            });
        }
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        let map = match arguments {
            Value::Object(map) => map,
            // A function-calling API may hand over `null` for a call without arguments.
            Value::Null => EMPTY.get_or_init(Map::new),
            other => {
                return Err(ToolError::ArgumentsNotObject {
                    kind: json_kind(other),
                })
            }
        };
        let action = Action::read(map.get("action"))?;
        if action != Action::Spawn {
            // Answered at once: nothing below applies.
            return Ok(Arguments {
                map,
                action,
                role: Role::Leaf,
                background: false,
                tasks: Tasks::Absent,
            });
        }
        let role = Role::from_argument(map.get("role"));
        let background = parse_background(map.get("background"));
        let tasks = Tasks::read(map.get("tasks"));
        if background {
            if let Tasks::List(list) = &tasks {
                if list.len() > 1 {
                    return Err(ToolError::BackgroundBatch);
                }
            }
        }
        Ok(Arguments {
            map,
            action,
            role,
            background,
            tasks,
        })
    }

    pub(crate) fn background(&self) -> bool {
        self.background
    }

    /// The control action asked for, with the arguments it reads; `None` for `spawn`.
    pub(crate) fn control(&self) -> Option<(Action, &'a Map<String, Value>)> {
        (self.action != Action::Spawn).then_some((self.action, self.map))
    }

    /// The tasks checks: a `tasks` string, the count, each task.
    pub(crate) fn into_call(
        self,
        parent_depth: u32,
        config: &DelegationConfig,
    ) -> Result<DelegateCall, ToolError> {
        let Arguments {
            map,
            role,
            background,
            tasks,
            ..
        } = self;
        let make =
            |task_index: usize, goal: &str, fields: &Map<String, Value>, role: Role| ChildTask {
                task_index,
                goal: goal.to_owned(),
                context: read_context(fields.get("context")),
                toolsets: read_toolsets(fields.get("toolsets")),
                role,
                depth: parent_depth.saturating_add(1),
                max_iterations: config.max_iterations,
                background,
            };
        let list = match tasks {
            Tasks::Blank => return Err(ToolError::NothingToDo),
            Tasks::NotJson(reason) => return Err(ToolError::TasksNotJson { reason }),
            Tasks::ParsedNotArray(kind) => return Err(ToolError::TasksParsedNotArray { kind }),
            Tasks::WrongType(kind) => return Err(ToolError::TasksNotArray { kind }),
            Tasks::List(list) => list,
            Tasks::Absent => {
                return match map.get("goal").and_then(Value::as_str) {
                    Some(goal) if !goal.trim().is_empty() => Ok(DelegateCall {
                        role,
                        background,
                        tasks: vec![make(0, goal, map, role)],
                    }),
                    _ => Err(ToolError::NothingToDo),
                };
            }
        };
        if list.len() > config.max_concurrent_children {
            return Err(ToolError::TooManyTasks {
                count: list.len(),
                max: config.max_concurrent_children,
            });
        }
        let mut tasks = Vec::with_capacity(list.len());
        // `index` is the 0-based position, as the results' `task_index`.
        for (index, item) in list.iter().enumerate() {
            let Value::Object(fields) = item else {
                return Err(ToolError::TaskNotObject {
                    index,
                    kind: json_kind(item),
                });
            };
            let goal = match fields.get("goal").and_then(Value::as_str) {
                Some(goal) if !goal.trim().is_empty() => goal,
                _ => return Err(ToolError::TaskMissingGoal { index }),
            };
            let task_role = match fields.get("role") {
                Some(Value::String(s)) if !s.trim().is_empty() => {
                    Role::from_argument(fields.get("role"))
                }
                _ => role,
            };
            tasks.push(make(index, goal, fields, task_role));
        }
        Ok(DelegateCall {
            role,
            background,
            tasks,
        })
    }
}

/// The depth check: a parent at `max_spawn_depth` or deeper may not delegate.
pub(crate) fn check_depth(parent_depth: u32, config: &DelegationConfig) -> Result<(), ToolError> {
    if parent_depth >= config.max_spawn_depth {
        return Err(ToolError::DepthLimit {
            depth: parent_depth,
            max: config.max_spawn_depth,
        });
    }
    Ok(())
}

/// A string context as given (blank → none); any other JSON value as its JSON text, so
/// nothing the model sent is lost.
fn read_context(value: Option<&Value>) -> Option<String> {
    match value {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    }
}

/// An array's string entries (trimmed, blanks dropped), or a comma-separated string;
/// anything else means the backend's default.
fn read_toolsets(value: Option<&Value>) -> Option<Vec<String>> {
    let names: Vec<String> = match value? {
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        Value::String(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => return None,
    };
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn role_normalises_to_leaf_unless_orchestrator() {
        for (raw, role) in [
            (None, Role::Leaf),
            (Some(json!("")), Role::Leaf),
            (Some(json!("leaf")), Role::Leaf),
            (Some(json!(" Orchestrator ")), Role::Orchestrator),
            (Some(json!("orchestrator")), Role::Orchestrator),
            (Some(json!("boss")), Role::Leaf),
            (Some(json!(3)), Role::Leaf),
        ] {
            assert_eq!(Role::from_argument(raw.as_ref()), role, "{raw:?}");
        }
    }

    #[test]
    fn background_accepts_bools_and_truthy_strings_in_any_case() {
        for truthy in [
            json!(true),
            json!("1"),
            json!("true"),
            json!("TRUE"),
            json!("Yes"),
            json!("on"),
            json!(" oN "),
            json!(1),
        ] {
            assert!(parse_background(Some(&truthy)), "{truthy}");
        }
        for falsy in [
            json!(false),
            json!("0"),
            json!("false"),
            json!("no"),
            json!("off"),
            json!(""),
            json!("y"),
            json!(2),
            json!(null),
            json!([true]),
        ] {
            assert!(!parse_background(Some(&falsy)), "{falsy}");
        }
        assert!(!parse_background(None));
    }

    #[test]
    fn single_goal_becomes_task_zero_with_its_fields() {
        let config = DelegationConfig::default();
        let call = validate_arguments(
            &json!({"goal": "g", "context": "c", "toolsets": ["web", " ", 3, "file"],
                    "role": "orchestrator", "max_iterations": 7}),
            0,
            &config,
        )
        .unwrap();
        assert_eq!(
            call.tasks,
            vec![ChildTask {
                task_index: 0,
                goal: "g".into(),
                context: Some("c".into()),
                toolsets: Some(vec!["web".into(), "file".into()]),
                role: Role::Orchestrator,
                depth: 1,
                max_iterations: 50, // the model's max_iterations is ignored
                background: false,
            }]
        );
    }

    #[test]
    fn batch_tasks_keep_order_and_may_override_role() {
        let call = validate_arguments(
            &json!({"role": "orchestrator", "tasks": [
                {"goal": "a", "role": "leaf"}, {"goal": "b", "context": {"k": 1}}, {"goal": "c", "toolsets": "web, file"}
            ]}),
            0,
            &DelegationConfig::default(),
        )
        .unwrap();
        let summary: Vec<_> = call
            .tasks
            .iter()
            .map(|t| (t.task_index, t.goal.as_str(), t.role))
            .collect();
        assert_eq!(
            summary,
            [
                (0, "a", Role::Leaf),
                (1, "b", Role::Orchestrator),
                (2, "c", Role::Orchestrator)
            ]
        );
        assert_eq!(call.tasks[1].context.as_deref(), Some(r#"{"k":1}"#));
        assert_eq!(
            call.tasks[2].toolsets,
            Some(vec!["web".to_owned(), "file".to_owned()])
        );
    }

    #[test]
    fn empty_task_list_falls_back_to_goal() {
        let config = DelegationConfig::default();
        let call = validate_arguments(&json!({"goal": "g", "tasks": []}), 0, &config).unwrap();
        assert_eq!(call.tasks.len(), 1);
        let call = validate_arguments(&json!({"goal": "g", "tasks": "[]"}), 0, &config).unwrap();
        assert_eq!(call.tasks.len(), 1);
        assert_eq!(
            validate_arguments(&json!({"tasks": []}), 0, &config),
            Err(ToolError::NothingToDo)
        );
    }

    #[test]
    fn one_task_batch_may_run_in_background() {
        let call = validate_arguments(
            &json!({"tasks": "[{\"goal\": \"only\"}]", "background": true}),
            0,
            &DelegationConfig::default(),
        )
        .unwrap();
        assert!(call.background && call.tasks.len() == 1 && call.tasks[0].background);
    }

    #[test]
    fn argument_text_blank_is_no_arguments_and_garbage_is_an_error() {
        assert_eq!(parse_argument_text("  ").unwrap(), json!({}));
        assert!(matches!(
            parse_argument_text("{goal"),
            Err(ToolError::ArgumentsNotJson { .. })
        ));
        assert_eq!(
            Arguments::read(&json!([1])).err(),
            Some(ToolError::ArgumentsNotObject { kind: "array" })
        );
    }
}
