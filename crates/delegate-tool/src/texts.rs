//! Every text the model reads from the tool, replaceable in one place.

use std::borrow::Cow;

/// The default reason a background child's interrupt hook passes to
/// [`ChildAgent::interrupt`](crate::ChildAgent::interrupt)
/// ([`ToolTexts::async_cancel_reason`]).
pub const ASYNC_CANCEL_REASON: &str = "Async delegation cancelled";

/// The default reason a synchronous child gets when its parent was already interrupted
/// when it was registered ([`ToolTexts::parent_interrupted_reason`]).
pub const PARENT_INTERRUPTED_REASON: &str = "Parent agent interrupted";

/// The default `note` of a dispatched background call ([`ToolTexts::background_note`]).
pub const BACKGROUND_NOTE: &str = "Subagent is running in the background. You and the user can keep working; the full task source and result will re-enter the conversation as a new message when it finishes. Do not wait or poll — just continue.";

/// Every text of the tool a model reads: the refusals ([`ToolError`](crate::ToolError)),
/// the per-task failure texts, the background `note`, and the interrupt reasons children
/// pass on. A [`DelegateContext`](crate::DelegateContext) carries one
/// ([`with_texts`](crate::DelegateContext::with_texts)); the tool renders every result
/// with it.
///
/// The defaults are the texts of the Python agent harness this tool reimplements,
/// byte for byte, because prompts are tuned on them. Some name that harness's settings
/// (`delegation.… in config.yaml`); each field says which setting of ours the default
/// refers to, so an embedder can put its own words (and setting names) in.
///
/// Templates name their values in braces — `{max}`, `{depth}`, `{count}`, `{index}`,
/// `{kind}`, `{reason}`, `{method}`, as each field lists. Filling is a plain
/// substitution in one pass (never `format!`): an unknown placeholder or a lone brace
/// stays as written, and text substituted in is not scanned again.
///
/// ```
/// use delegate_tool::{ToolError, ToolTexts};
///
/// let mut texts = ToolTexts::default();
/// texts.depth_limit =
///     "Depth {depth} reached; DelegationConfig::max_spawn_depth is {max}. {unknown}".into();
/// let error = ToolError::DepthLimit { depth: 1, max: 1 };
/// assert_eq!(
///     error.to_tool_result_with(&texts),
///     r#"{"error":"Depth 1 reached; DelegationConfig::max_spawn_depth is 1. {unknown}"}"#
/// );
/// // `Display` keeps the default.
/// assert!(error.to_string().starts_with("Delegation depth limit reached (depth=1"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ToolTexts {
    /// [`ToolError::ArgumentsNotJson`](crate::ToolError::ArgumentsNotJson); `{reason}`:
    /// the parser's explanation.
    pub arguments_not_json: Cow<'static, str>,
    /// [`ToolError::ArgumentsTooDeep`](crate::ToolError::ArgumentsTooDeep); `{max}`:
    /// [`MAX_ARGUMENT_NESTING`](crate::MAX_ARGUMENT_NESTING).
    pub arguments_too_deep: Cow<'static, str>,
    /// [`ToolError::ArgumentsNotObject`](crate::ToolError::ArgumentsNotObject); `{kind}`:
    /// the JSON kind received.
    pub arguments_not_object: Cow<'static, str>,
    /// [`ToolError::BackgroundBatch`](crate::ToolError::BackgroundBatch).
    pub background_batch: Cow<'static, str>,
    /// [`ToolError::DepthLimit`](crate::ToolError::DepthLimit); `{depth}`: the parent's
    /// depth, `{max}`: the limit. `delegation.max_spawn_depth in config.yaml` in the
    /// default refers to
    /// [`DelegationConfig::max_spawn_depth`](crate::DelegationConfig::max_spawn_depth).
    pub depth_limit: Cow<'static, str>,
    /// [`ToolError::Credentials`](crate::ToolError::Credentials); `{reason}`: the
    /// backend's error text (the default is that text alone).
    pub credentials: Cow<'static, str>,
    /// [`ToolError::TasksNotJson`](crate::ToolError::TasksNotJson); `{reason}`: the
    /// parser's explanation.
    pub tasks_not_json: Cow<'static, str>,
    /// [`ToolError::TasksParsedNotArray`](crate::ToolError::TasksParsedNotArray);
    /// `{kind}`: the JSON kind parsed.
    pub tasks_parsed_not_array: Cow<'static, str>,
    /// [`ToolError::TasksNotArray`](crate::ToolError::TasksNotArray); `{kind}`: the JSON
    /// kind received.
    pub tasks_not_array: Cow<'static, str>,
    /// [`ToolError::TooManyTasks`](crate::ToolError::TooManyTasks); `{count}`: tasks
    /// given, `{max}`: the limit. `max_concurrent_children` and
    /// `delegation.max_concurrent_children in config.yaml` in the default refer to
    /// [`DelegationConfig::max_concurrent_children`](crate::DelegationConfig::max_concurrent_children).
    pub too_many_tasks: Cow<'static, str>,
    /// [`ToolError::NothingToDo`](crate::ToolError::NothingToDo).
    pub nothing_to_do: Cow<'static, str>,
    /// [`ToolError::TaskNotObject`](crate::ToolError::TaskNotObject); `{index}`: the
    /// task's 0-based position, `{kind}`: the JSON kind received.
    pub task_not_object: Cow<'static, str>,
    /// [`ToolError::TaskMissingGoal`](crate::ToolError::TaskMissingGoal); `{index}`: the
    /// task's 0-based position.
    pub task_missing_goal: Cow<'static, str>,
    /// [`ToolError::ChildBuild`](crate::ToolError::ChildBuild), also a synchronous
    /// task's `error`; `{reason}`: what went wrong.
    pub child_build: Cow<'static, str>,
    /// [`ToolError::ParentFailed`](crate::ToolError::ParentFailed); `{method}`: the
    /// [`ParentAgent`](crate::ParentAgent) method, `{reason}`: what went wrong.
    pub parent_failed: Cow<'static, str>,
    /// [`ToolError::Internal`](crate::ToolError::Internal); `{reason}`: what went wrong.
    pub internal: Cow<'static, str>,
    /// [`ToolError::CapacityReached`](crate::ToolError::CapacityReached); `{max}`: the
    /// limit. The default is [`async_delegation::CAPACITY_REACHED_TEXT`], whose
    /// `delegation.max_concurrent_children in config.yaml` refers to
    /// [`DelegationConfig::max_async_children`](crate::DelegationConfig::max_async_children)
    /// (not to `max_concurrent_children`, which bounds a synchronous batch).
    pub capacity_reached: Cow<'static, str>,
    /// [`ToolError::WorkerUnavailable`](crate::ToolError::WorkerUnavailable); `{reason}`:
    /// the operating system's error. The default is
    /// [`async_delegation::WORKER_UNAVAILABLE_TEXT`].
    pub worker_unavailable: Cow<'static, str>,
    /// [`ToolError::Dispatch`](crate::ToolError::Dispatch), any other refusal of the
    /// engine; `{reason}`: the engine's text (the default is that text alone).
    pub dispatch_refused: Cow<'static, str>,
    /// A synchronous task's `error` when its thread could not be started; `{reason}`:
    /// the operating system's error.
    pub thread_unavailable: Cow<'static, str>,
    /// What a panic in the agent implementation reads as (a task's `error`, or the
    /// `{reason}` of a refusal); `{reason}`: the panic's message.
    pub panic: Cow<'static, str>,
    /// What an error whose `Display` panicked reads as; `{reason}`: the panic's message.
    pub error_display_panic: Cow<'static, str>,
    /// The `note` of a dispatched background call (default [`BACKGROUND_NOTE`]).
    pub background_note: Cow<'static, str>,
    /// The reason a background child's interrupt hook passes to
    /// [`ChildAgent::interrupt`](crate::ChildAgent::interrupt), whatever reason the
    /// engine was given (default [`ASYNC_CANCEL_REASON`]). Children usually report it in
    /// their completion, so the model reads it.
    pub async_cancel_reason: Cow<'static, str>,
    /// The reason a synchronous child is interrupted with when its parent was already
    /// interrupted (default [`PARENT_INTERRUPTED_REASON`]).
    pub parent_interrupted_reason: Cow<'static, str>,
}

/// The defaults, as a value [`ToolError`](crate::ToolError)'s `Display` can borrow.
pub(crate) const DEFAULT_TEXTS: ToolTexts = ToolTexts {
    arguments_not_json: Cow::Borrowed("delegate_task arguments must be a JSON object; received text that could not be parsed as JSON ({reason})."),
    arguments_too_deep: Cow::Borrowed("delegate_task arguments are nested too deeply (more than {max} levels)."),
    arguments_not_object: Cow::Borrowed("delegate_task arguments must be a JSON object; got {kind} instead."),
    background_batch: Cow::Borrowed("background=true is single-task only. Dispatch one background subagent per delegate_task call (each returns its own handle and re-enters the conversation independently), or run the batch synchronously with background=false."),
    depth_limit: Cow::Borrowed("Delegation depth limit reached (depth={depth}, max_spawn_depth={max}). Raise delegation.max_spawn_depth in config.yaml if deeper nesting is required (no hard ceiling, but each level multiplies API cost)."),
    credentials: Cow::Borrowed("{reason}"),
    tasks_not_json: Cow::Borrowed("tasks must be a JSON array of task objects; received a string that could not be parsed as JSON ({reason})."),
    tasks_parsed_not_array: Cow::Borrowed("tasks must be a JSON array of task objects; parsed {kind} instead."),
    tasks_not_array: Cow::Borrowed("tasks must be a JSON array of task objects; got {kind} instead."),
    too_many_tasks: Cow::Borrowed("Too many tasks: {count} provided, but max_concurrent_children is {max}. Either reduce the task count, split into multiple delegate_task calls, or increase delegation.max_concurrent_children in config.yaml."),
    nothing_to_do: Cow::Borrowed("Provide either 'goal' (single task) or 'tasks' (batch)."),
    task_not_object: Cow::Borrowed("Task {index} must be an object, got {kind}."),
    task_missing_goal: Cow::Borrowed("Task {index} is missing a 'goal'."),
    child_build: Cow::Borrowed("Failed to build the subagent: {reason}"),
    parent_failed: Cow::Borrowed("delegate_task could not run: the calling agent's {method} failed ({reason})."),
    internal: Cow::Borrowed("delegate_task failed unexpectedly ({reason})."),
    capacity_reached: Cow::Borrowed(async_delegation::CAPACITY_REACHED_TEXT),
    worker_unavailable: Cow::Borrowed(async_delegation::WORKER_UNAVAILABLE_TEXT),
    dispatch_refused: Cow::Borrowed("{reason}"),
    thread_unavailable: Cow::Borrowed("Could not start a thread for the subagent: {reason}"),
    panic: Cow::Borrowed("panic: {reason}"),
    error_display_panic: Cow::Borrowed("panic while formatting the error: {reason}"),
    background_note: Cow::Borrowed(BACKGROUND_NOTE),
    async_cancel_reason: Cow::Borrowed(ASYNC_CANCEL_REASON),
    parent_interrupted_reason: Cow::Borrowed(PARENT_INTERRUPTED_REASON),
};

impl Default for ToolTexts {
    fn default() -> Self {
        DEFAULT_TEXTS
    }
}

impl ToolTexts {
    /// [`panic`](Self::panic) with the panic's message.
    pub(crate) fn panicked(&self, message: &str) -> String {
        fill(&self.panic, &[("reason", message)])
    }

    /// [`error_display_panic`](Self::error_display_panic) with the panic's message.
    pub(crate) fn display_panicked(&self, message: &str) -> String {
        fill(&self.error_display_panic, &[("reason", message)])
    }
}

/// Fills `{name}` placeholders of `template` from `values` in one pass. Unknown names
/// and unmatched braces are kept as written; substituted text is not scanned again.
pub(crate) fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let known = after.find('}').and_then(|close| {
            let name = &after[..close];
            values
                .iter()
                .find(|(known, _)| *known == name)
                .map(|(_, value)| (*value, &after[close + 1..]))
        });
        match known {
            Some((value, tail)) => {
                out.push_str(value);
                rest = tail;
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_substitutes_known_names_once_and_keeps_the_rest() {
        let values = [("max", "3"), ("reason", "{max} {kind}")];
        assert_eq!(fill("at {max} ({reason})", &values), "at 3 ({max} {kind})");
        assert_eq!(
            fill("{unknown} {max", &values),
            "{unknown} {max",
            "unknown names and open braces stay"
        );
        assert_eq!(fill("{{max}} }{", &values), "{3} }{");
        assert_eq!(fill("", &values), "");
        assert_eq!(fill("é{max}ü", &values), "é3ü");
    }

    /// The defaults are the texts the tool has always returned, byte for byte.
    #[test]
    fn defaults_are_the_established_texts() {
        let texts = ToolTexts::default();
        let pinned: [(&Cow<'static, str>, &str); 25] = [
            (&texts.arguments_not_json, "delegate_task arguments must be a JSON object; received text that could not be parsed as JSON ({reason})."),
            (&texts.arguments_too_deep, "delegate_task arguments are nested too deeply (more than {max} levels)."),
            (&texts.arguments_not_object, "delegate_task arguments must be a JSON object; got {kind} instead."),
            (&texts.background_batch, "background=true is single-task only. Dispatch one background subagent per delegate_task call (each returns its own handle and re-enters the conversation independently), or run the batch synchronously with background=false."),
            (&texts.depth_limit, "Delegation depth limit reached (depth={depth}, max_spawn_depth={max}). Raise delegation.max_spawn_depth in config.yaml if deeper nesting is required (no hard ceiling, but each level multiplies API cost)."),
            (&texts.credentials, "{reason}"),
            (&texts.tasks_not_json, "tasks must be a JSON array of task objects; received a string that could not be parsed as JSON ({reason})."),
            (&texts.tasks_parsed_not_array, "tasks must be a JSON array of task objects; parsed {kind} instead."),
            (&texts.tasks_not_array, "tasks must be a JSON array of task objects; got {kind} instead."),
            (&texts.too_many_tasks, "Too many tasks: {count} provided, but max_concurrent_children is {max}. Either reduce the task count, split into multiple delegate_task calls, or increase delegation.max_concurrent_children in config.yaml."),
            (&texts.nothing_to_do, "Provide either 'goal' (single task) or 'tasks' (batch)."),
            (&texts.task_not_object, "Task {index} must be an object, got {kind}."),
            (&texts.task_missing_goal, "Task {index} is missing a 'goal'."),
            (&texts.child_build, "Failed to build the subagent: {reason}"),
            (&texts.parent_failed, "delegate_task could not run: the calling agent's {method} failed ({reason})."),
            (&texts.internal, "delegate_task failed unexpectedly ({reason})."),
            (&texts.capacity_reached, "Async delegation capacity reached ({max} running). Wait for one to finish (its result will re-enter the chat), or run this task synchronously (background=false). Raise delegation.max_concurrent_children in config.yaml to allow more concurrent background subagents."),
            (&texts.worker_unavailable, "Async delegation could not start a background worker ({reason}). Run this task synchronously (background=false) or try again later."),
            (&texts.dispatch_refused, "{reason}"),
            (&texts.thread_unavailable, "Could not start a thread for the subagent: {reason}"),
            (&texts.panic, "panic: {reason}"),
            (&texts.error_display_panic, "panic while formatting the error: {reason}"),
            (&texts.background_note, "Subagent is running in the background. You and the user can keep working; the full task source and result will re-enter the conversation as a new message when it finishes. Do not wait or poll — just continue."),
            (&texts.async_cancel_reason, "Async delegation cancelled"),
            (&texts.parent_interrupted_reason, "Parent agent interrupted"),
        ];
        for (field, text) in pinned {
            assert_eq!(field, text);
        }
    }
}
