//! Why a `delegate_task` call was refused, rendered with the context's texts.

use async_delegation::DispatchError;

use crate::texts::{fill, DEFAULT_TEXTS};
use crate::ToolTexts;

/// Why a `delegate_task` call was refused. The tool result is `{"error": "<text>"}`, the
/// text written for the model that made the call: the variant's template in the
/// context's [`ToolTexts`] with its values filled in
/// ([`render`](Self::render)). `Display` renders with the default texts.
///
/// The arguments are checked in this order, and the first failing check refuses the
/// call (no child is built until every check passed):
///
/// 1. the arguments nest at most [`MAX_ARGUMENT_NESTING`](crate::MAX_ARGUMENT_NESTING)
///    levels ([`ArgumentsTooDeep`](Self::ArgumentsTooDeep), checked before anything else
///    reads them), and are JSON ([`ArgumentsNotJson`](Self::ArgumentsNotJson)) holding an
///    object or `null` ([`ArgumentsNotObject`](Self::ArgumentsNotObject));
/// 2. `action`: absent, `null`, blank or `spawn` goes on with the checks below; `list`,
///    `steer` and `stop` are answered at once, in the caller's turn, for the delegations
///    of the caller's own session ([`ControlRequiresId`](Self::ControlRequiresId),
///    [`SteerRequiresMessage`](Self::SteerRequiresMessage),
///    [`NoLiveSubagent`](Self::NoLiveSubagent), [`StopTooLate`](Self::StopTooLate),
///    [`SteerClosed`](Self::SteerClosed)); anything else is
///    [`UnknownAction`](Self::UnknownAction);
/// 3. `role` is read (never refuses: anything but `orchestrator` is `leaf`);
/// 4. `background` with a batch of two or more tasks, given as a list or as a JSON string
///    holding one ([`BackgroundBatch`](Self::BackgroundBatch));
/// 5. the parent's depth against `max_spawn_depth` ([`DepthLimit`](Self::DepthLimit));
/// 6. credentials ([`Credentials`](Self::Credentials));
/// 7. a `tasks` string: blank ([`NothingToDo`](Self::NothingToDo)), not JSON
///    ([`TasksNotJson`](Self::TasksNotJson)), not an array
///    ([`TasksParsedNotArray`](Self::TasksParsedNotArray)); `tasks` of another type
///    ([`TasksNotArray`](Self::TasksNotArray));
/// 8. more tasks than `max_concurrent_children` ([`TooManyTasks`](Self::TooManyTasks));
/// 9. no tasks and no goal ([`NothingToDo`](Self::NothingToDo)), a task that is not an
///    object ([`TaskNotObject`](Self::TaskNotObject)) or has no goal
///    ([`TaskMissingGoal`](Self::TaskMissingGoal)).
///
/// After the checks a call can still fail: the calling agent failing
/// ([`ParentFailed`](Self::ParentFailed)), a background child that cannot be built
/// ([`ChildBuild`](Self::ChildBuild)), or the engine refusing it
/// ([`CapacityReached`](Self::CapacityReached), [`WorkerUnavailable`](Self::WorkerUnavailable),
/// [`Dispatch`](Self::Dispatch)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ToolError {
    /// The raw arguments were not JSON.
    ArgumentsNotJson {
        /// The parser's explanation.
        reason: String,
    },
    /// The arguments nest deeper than [`MAX_ARGUMENT_NESTING`](crate::MAX_ARGUMENT_NESTING)
    /// levels (also argument text the JSON parser refused as too deeply nested).
    ArgumentsTooDeep {
        /// The limit, [`MAX_ARGUMENT_NESTING`](crate::MAX_ARGUMENT_NESTING).
        max: usize,
    },
    /// The arguments were JSON but not an object.
    ArgumentsNotObject {
        /// JSON kind received (`array`, `string`, …).
        kind: &'static str,
    },
    /// `background=true` with a batch of two or more tasks.
    BackgroundBatch,
    /// The parent is already at `max_spawn_depth`.
    DepthLimit {
        /// The parent's delegation depth.
        depth: u32,
        /// The configured `max_spawn_depth`.
        max: u32,
    },
    /// The backend could not resolve credentials: its error text (or the text of its
    /// panic).
    Credentials(String),
    /// `tasks` was a string that is not JSON.
    TasksNotJson {
        /// The parser's explanation.
        reason: String,
    },
    /// `tasks` was a string holding JSON that is not an array.
    TasksParsedNotArray {
        /// JSON kind parsed (`object`, `number`, …).
        kind: &'static str,
    },
    /// `tasks` was neither an array, a string nor null (refused so the model learns the
    /// right shape, rather than ignored).
    TasksNotArray {
        /// JSON kind received (`object`, `number`, `boolean`).
        kind: &'static str,
    },
    /// More tasks than `max_concurrent_children`.
    TooManyTasks {
        /// Tasks provided.
        count: usize,
        /// The configured `max_concurrent_children`.
        max: usize,
    },
    /// No tasks and no non-blank goal (or a blank `tasks` string).
    NothingToDo,
    /// A task that is not an object. `index` is 0-based (the task's position in
    /// `tasks`, the same `task_index` the results carry).
    TaskNotObject {
        /// 0-based position in `tasks`.
        index: usize,
        /// JSON kind received.
        kind: &'static str,
    },
    /// A task whose goal is missing, blank or not a string. `index` is 0-based.
    TaskMissingGoal {
        /// 0-based position in `tasks`.
        index: usize,
    },
    /// The subagent could not be set up: the backend failed to build it, or (after the
    /// build) the parent failed to register or detach it, or it could not tell its model.
    /// The child, if built, was closed.
    ChildBuild(String),
    /// A call into the calling agent ([`ParentAgent`](crate::ParentAgent)) panicked
    /// before any child was built, so the call cannot go on.
    ParentFailed {
        /// The [`ParentAgent`](crate::ParentAgent) method, e.g. `delegate_depth`.
        method: &'static str,
        /// What went wrong (the text of the panic).
        reason: String,
    },
    /// The tool itself failed unexpectedly (a bug in this crate, caught before it could
    /// reach the caller).
    Internal {
        /// What went wrong (the text of the panic).
        reason: String,
    },
    /// The engine is at capacity: `max_async_children` background delegations run.
    CapacityReached {
        /// The limit that was hit.
        max: usize,
    },
    /// The engine could not start a worker thread.
    WorkerUnavailable {
        /// The operating system's error.
        reason: String,
    },
    /// The engine refused the background dispatch for another reason; its text verbatim.
    Dispatch(String),
    /// `action` is none of `spawn`, `list`, `steer`, `stop`.
    UnknownAction {
        /// What was given (a non-string value as its JSON text).
        action: String,
    },
    /// `steer` or `stop` without a non-blank `subagent_id`.
    ControlRequiresId {
        /// `steer` or `stop`.
        action: &'static str,
    },
    /// The `subagent_id` names no running delegation of the caller's session.
    NoLiveSubagent {
        /// The id given.
        subagent_id: String,
    },
    /// `steer` without a non-blank `message`.
    SteerRequiresMessage,
    /// `stop` found the delegation, but it finished before its child could be reached.
    StopTooLate {
        /// The id given.
        subagent_id: String,
    },
    /// `steer` found the delegation, but it takes no more steering.
    SteerClosed {
        /// The id given.
        subagent_id: String,
    },
}

impl ToolError {
    /// The text for the model, from `texts`.
    pub fn render(&self, texts: &ToolTexts) -> String {
        let number = |n: &dyn ToString| n.to_string();
        match self {
            ToolError::ArgumentsNotJson { reason } => {
                fill(&texts.arguments_not_json, &[("reason", reason)])
            }
            ToolError::ArgumentsTooDeep { max } => {
                fill(&texts.arguments_too_deep, &[("max", &number(max))])
            }
            ToolError::ArgumentsNotObject { kind } => {
                fill(&texts.arguments_not_object, &[("kind", kind)])
            }
            ToolError::BackgroundBatch => fill(&texts.background_batch, &[]),
            ToolError::DepthLimit { depth, max } => fill(
                &texts.depth_limit,
                &[("depth", &number(depth)), ("max", &number(max))],
            ),
            ToolError::Credentials(reason) => fill(&texts.credentials, &[("reason", reason)]),
            ToolError::TasksNotJson { reason } => {
                fill(&texts.tasks_not_json, &[("reason", reason)])
            }
            ToolError::TasksParsedNotArray { kind } => {
                fill(&texts.tasks_parsed_not_array, &[("kind", kind)])
            }
            ToolError::TasksNotArray { kind } => fill(&texts.tasks_not_array, &[("kind", kind)]),
            ToolError::TooManyTasks { count, max } => fill(
                &texts.too_many_tasks,
                &[("count", &number(count)), ("max", &number(max))],
            ),
            ToolError::NothingToDo => fill(&texts.nothing_to_do, &[]),
            ToolError::TaskNotObject { index, kind } => fill(
                &texts.task_not_object,
                &[("index", &number(index)), ("kind", kind)],
            ),
            ToolError::TaskMissingGoal { index } => {
                fill(&texts.task_missing_goal, &[("index", &number(index))])
            }
            ToolError::ChildBuild(reason) => fill(&texts.child_build, &[("reason", reason)]),
            ToolError::ParentFailed { method, reason } => fill(
                &texts.parent_failed,
                &[("method", method), ("reason", reason)],
            ),
            ToolError::Internal { reason } => fill(&texts.internal, &[("reason", reason)]),
            ToolError::CapacityReached { max } => {
                fill(&texts.capacity_reached, &[("max", &number(max))])
            }
            ToolError::WorkerUnavailable { reason } => {
                fill(&texts.worker_unavailable, &[("reason", reason)])
            }
            ToolError::Dispatch(reason) => fill(&texts.dispatch_refused, &[("reason", reason)]),
            ToolError::UnknownAction { action } => {
                fill(&texts.unknown_action, &[("action", action)])
            }
            ToolError::ControlRequiresId { action } => {
                fill(&texts.control_requires_id, &[("action", action)])
            }
            ToolError::NoLiveSubagent { subagent_id } => {
                fill(&texts.no_live_subagent, &[("sid", subagent_id)])
            }
            ToolError::SteerRequiresMessage => fill(&texts.steer_requires_message, &[]),
            ToolError::StopTooLate { subagent_id } => {
                fill(&texts.stop_too_late, &[("sid", subagent_id)])
            }
            ToolError::SteerClosed { subagent_id } => {
                fill(&texts.steer_closed, &[("sid", subagent_id)])
            }
        }
    }

    /// The tool result for this error with the default texts: `{"error": "<text>"}`.
    pub fn to_tool_result(&self) -> String {
        self.to_tool_result_with(&DEFAULT_TEXTS)
    }

    /// The tool result for this error with `texts`: `{"error": "<text>"}`.
    pub fn to_tool_result_with(&self, texts: &ToolTexts) -> String {
        serde_json::json!({ "error": self.render(texts) }).to_string()
    }
}

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render(&DEFAULT_TEXTS))
    }
}

impl std::error::Error for ToolError {}

impl From<DispatchError> for ToolError {
    fn from(error: DispatchError) -> Self {
        match error {
            DispatchError::CapacityReached { max } => ToolError::CapacityReached { max },
            DispatchError::WorkerUnavailable(error) => ToolError::WorkerUnavailable {
                reason: error.to_string(),
            },
            other => ToolError::Dispatch(other.to_string()),
        }
    }
}

/// What went wrong reading a [`DelegationConfig`](crate::DelegationConfig).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The text was not JSON.
    #[error("delegation config is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The config was not a map of settings.
    #[error("delegation config must be a map of settings, got {kind}")]
    NotAMap {
        /// What it was instead.
        kind: &'static str,
    },
    /// A setting had the wrong type or an out-of-range value.
    #[error("delegation.{field} must be {expected}, got {got}")]
    InvalidSetting {
        /// The setting's name, e.g. `max_concurrent_children`.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
        /// What it was: its JSON text, or `a deeply nested array` / `a deeply nested
        /// object` when it nests deeper than
        /// [`MAX_ARGUMENT_NESTING`](crate::MAX_ARGUMENT_NESTING) levels.
        got: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_variant_renders_its_own_template() {
        let texts = ToolTexts {
            credentials: "credentials: {reason}".into(),
            internal: "internal: {reason}".into(),
            worker_unavailable: "worker: {reason}".into(),
            dispatch_refused: "refused: {reason}".into(),
            capacity_reached: "full at {max}".into(),
            ..ToolTexts::default()
        };
        let cases = [
            (
                ToolError::Credentials("no key".into()),
                "credentials: no key",
            ),
            (
                ToolError::Internal {
                    reason: "bug".into(),
                },
                "internal: bug",
            ),
            (
                ToolError::WorkerUnavailable {
                    reason: "no threads".into(),
                },
                "worker: no threads",
            ),
            (ToolError::Dispatch("later".into()), "refused: later"),
            (ToolError::CapacityReached { max: 2 }, "full at 2"),
        ];
        for (error, text) in cases {
            assert_eq!(error.render(&texts), text);
            assert_eq!(error.to_string(), error.render(&ToolTexts::default()));
        }
    }

    #[test]
    fn engine_refusals_keep_their_cause() {
        let capacity = ToolError::from(DispatchError::CapacityReached { max: 3 });
        assert_eq!(capacity, ToolError::CapacityReached { max: 3 });
        assert_eq!(
            capacity.to_string(),
            DispatchError::CapacityReached { max: 3 }.to_string()
        );
        let io = || std::io::Error::other("no threads left");
        let worker = ToolError::from(DispatchError::WorkerUnavailable(io()));
        assert_eq!(
            worker.to_string(),
            DispatchError::WorkerUnavailable(io()).to_string()
        );
    }
}
