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

/// Every text of the tool a model reads: the tool's description and every parameter's in
/// its schema, the refusals ([`ToolError`](crate::ToolError)), the per-task failure texts,
/// the background `note`, and the interrupt reasons children pass on. A
/// [`DelegateContext`](crate::DelegateContext) carries one
/// ([`with_texts`](crate::DelegateContext::with_texts)); the tool renders every result
/// with it, and [`DelegateContext::tool_schema`](crate::DelegateContext::tool_schema)
/// (and its [`openai_tool`](crate::DelegateContext::openai_tool) /
/// [`anthropic_tool`](crate::DelegateContext::anthropic_tool) shapes) the schema.
///
/// The defaults are the texts of the Python agent harness this tool reimplements,
/// byte for byte, because prompts are tuned on them. Some name that harness's settings
/// (`delegation.… in config.yaml`); each field says which setting of ours the default
/// refers to, so an embedder can put its own words (and setting names) in.
///
/// Templates name their values in braces — `{max}`, `{depth}`, `{count}`, `{index}`,
/// `{kind}`, `{reason}`, `{method}`, as each field lists. The schema texts (the
/// `*_description` fields) may name the context's settings: `{max_spawn_depth}`,
/// `{max_concurrent_children}`, `{max_async_children}`, `{max_iterations}`. Filling is a
/// plain substitution in one pass (never `format!`): an unknown placeholder or a lone
/// brace stays as written, and text substituted in is not scanned again.
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
///
/// // Schema texts may state the settings the context runs with.
/// texts.tasks_description = "At most {max_concurrent_children} tasks.".into();
/// let schema = delegate_tool::tool_schema_with(
///     &texts,
///     &delegate_tool::DelegationConfig { max_concurrent_children: 5, ..Default::default() },
/// );
/// assert_eq!(schema["parameters"]["properties"]["tasks"]["description"], "At most 5 tasks.");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ToolTexts {
    /// The tool's `description` in its schema (default [`TOOL_DESCRIPTION`](crate::TOOL_DESCRIPTION)).
    pub tool_description: Cow<'static, str>,
    /// The schema's description of `goal` (a single task's goal).
    pub goal_description: Cow<'static, str>,
    /// The schema's description of `context` (a single task's background).
    pub context_description: Cow<'static, str>,
    /// The schema's description of `toolsets` (a single task's toolsets).
    pub toolsets_description: Cow<'static, str>,
    /// The schema's description of `tasks` (a batch). `max_concurrent_children` and
    /// `(3 by default)` in the default refer to
    /// [`DelegationConfig::max_concurrent_children`](crate::DelegationConfig::max_concurrent_children)
    /// and its default
    /// ([`DEFAULT_MAX_CONCURRENT_CHILDREN`](crate::DelegationConfig::DEFAULT_MAX_CONCURRENT_CHILDREN));
    /// the default does not follow a configured value — write
    /// `{max_concurrent_children}` to state it.
    pub tasks_description: Cow<'static, str>,
    /// The schema's description of `role`. `the configured depth limit` in the default
    /// refers to
    /// [`DelegationConfig::max_spawn_depth`](crate::DelegationConfig::max_spawn_depth)
    /// (`{max_spawn_depth}` states it).
    pub role_description: Cow<'static, str>,
    /// The schema's description of `background`.
    pub background_description: Cow<'static, str>,
    /// The schema's description of `max_iterations`. `the iteration cap comes from the
    /// configuration` in the default refers to
    /// [`DelegationConfig::max_iterations`](crate::DelegationConfig::max_iterations)
    /// (`{max_iterations}` states it).
    pub max_iterations_description: Cow<'static, str>,
    /// The schema's description of a batch task's `goal`.
    pub task_goal_description: Cow<'static, str>,
    /// The schema's description of a batch task's `context`.
    pub task_context_description: Cow<'static, str>,
    /// The schema's description of a batch task's `toolsets`.
    pub task_toolsets_description: Cow<'static, str>,
    /// The schema's description of a batch task's `role` (overriding the call's `role`).
    pub task_role_description: Cow<'static, str>,
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
    /// The schema's description of `action` (`spawn`, `list`, `steer`, `stop`).
    pub action_description: Cow<'static, str>,
    /// The schema's description of `subagent_id` (`steer` and `stop`).
    pub subagent_id_description: Cow<'static, str>,
    /// The schema's description of `message` (`steer`).
    pub message_description: Cow<'static, str>,
    /// An `action` that is none of the four; `{action}`: what was given.
    pub unknown_action: Cow<'static, str>,
    /// `steer` or `stop` without a `subagent_id`; `{action}`: the action.
    pub control_requires_id: Cow<'static, str>,
    /// A `subagent_id` that names no running delegation of the caller's session (unknown,
    /// finished, or another session's); `{sid}`: the id given.
    pub no_live_subagent: Cow<'static, str>,
    /// `steer` without a non-blank `message`.
    pub steer_requires_message: Cow<'static, str>,
    /// The `note` of a `list` that found no running delegation.
    pub list_empty_note: Cow<'static, str>,
    /// The `note` of a `stop` that reached its delegation's child.
    pub stop_note: Cow<'static, str>,
    /// A `stop` whose delegation finished before its child could be reached; `{sid}`:
    /// the id.
    pub stop_too_late: Cow<'static, str>,
    /// The `note` of a queued `steer`.
    pub steer_note: Cow<'static, str>,
    /// A `steer` of a delegation that takes no more steering (its child has no steering,
    /// or it is finishing); `{sid}`: the id.
    pub steer_closed: Cow<'static, str>,
    /// The note a background completion's summary ends with when steering text never
    /// reached its child (default [`MISSED_STEER_NOTE`](async_delegation::MISSED_STEER_NOTE));
    /// `{text}`: the missed text.
    pub missed_steer_note: Cow<'static, str>,
}

/// The defaults, as a value [`ToolError`](crate::ToolError)'s `Display` can borrow.
pub(crate) const DEFAULT_TEXTS: ToolTexts = ToolTexts {
    tool_description: Cow::Borrowed(crate::TOOL_DESCRIPTION),
    goal_description: Cow::Borrowed("The task for a single subagent. Be specific and self-contained: the subagent does not see this conversation."),
    context_description: Cow::Borrowed("Background information for the single subagent: relevant files, what was tried, constraints."),
    toolsets_description: Cow::Borrowed("Toolsets the single subagent may use (e.g. [\"web\", \"terminal\", \"file\"]). Omit for the default set."),
    tasks_description: Cow::Borrowed("A batch of independent tasks run in parallel, each with its own goal. Use instead of 'goal'. At most max_concurrent_children tasks (3 by default); not allowed with background=true."),
    role_description: Cow::Borrowed("'leaf' (default) does the work itself; 'orchestrator' may delegate further within the configured depth limit."),
    background_description: Cow::Borrowed("false (default): wait for the subagents and get their results in this call. true: dispatch ONE subagent in the background and get a handle (delegation_id) immediately; keep working with the user, and the subagent's full task and result will arrive later as a new message. Do not wait or poll for it. Background calls take a single task ('goal', or 'tasks' with one entry); dispatch one call per background subagent."),
    max_iterations_description: Cow::Borrowed("Accepted for compatibility and ignored: the iteration cap comes from the configuration."),
    task_goal_description: Cow::Borrowed("What this subagent must achieve, self-contained."),
    task_context_description: Cow::Borrowed("Background the subagent needs (files, findings, constraints)."),
    task_toolsets_description: Cow::Borrowed("Toolsets this subagent may use."),
    task_role_description: Cow::Borrowed("Overrides the call's role for this task."),
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
    action_description: Cow::Borrowed("'spawn' (default) delegates work as described by the other arguments. 'list' shows the background subagents of this conversation that are still running. 'steer' sends a running background subagent a course correction ('subagent_id' and 'message'). 'stop' interrupts one ('subagent_id'); its partial result still arrives as a completion message."),
    subagent_id_description: Cow::Borrowed("For 'steer' and 'stop': the delegation_id from the spawn dispatch response or from action='list'."),
    message_description: Cow::Borrowed("For 'steer': the course correction, appended to the subagent's next tool result."),
    unknown_action: Cow::Borrowed("Unknown action '{action}'. Use spawn, list, steer, or stop."),
    control_requires_id: Cow::Borrowed("action='{action}' requires subagent_id (from the spawn dispatch response or action='list')."),
    no_live_subagent: Cow::Borrowed("No live subagent '{sid}' in this conversation's spawn tree. It may have already finished (its result arrives as a normal completion message). Use action='list' to see live children."),
    steer_requires_message: Cow::Borrowed("action='steer' requires a non-empty 'message' describing the course correction."),
    list_empty_note: Cow::Borrowed("No live subagents right now. Children that already finished have delivered (or will deliver) their results as normal completion messages — there is nothing to steer or stop."),
    stop_note: Cow::Borrowed("The subagent stops at its next iteration boundary (in-flight tool calls are asked to cancel). Its partial result still re-enters the conversation as a completion message — do not wait or poll."),
    stop_too_late: Cow::Borrowed("Could not interrupt '{sid}' — it likely finished in the last moment. Its result arrives as a normal completion message."),
    steer_note: Cow::Borrowed("Steering text queued. The subagent sees it appended to its next tool result — the current tool call is never cut. If the child finishes before a delivery boundary remains, the text is reported back as missed_steer in its completion entry."),
    steer_closed: Cow::Borrowed("Subagent '{sid}' is no longer accepting steering (finishing or already finished). Its result arrives as a normal completion message; re-delegate a follow-up task if more work is needed."),
    missed_steer_note: Cow::Borrowed(async_delegation::MISSED_STEER_NOTE),
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
        let pinned: [(&Cow<'static, str>, &str); 50] = [
            (&texts.tool_description, "Delegate work to subagents that run with their own context and tools. Give either 'goal' (one task) or 'tasks' (a batch that runs in parallel). Subagents know nothing of this conversation: put everything they need in 'goal' and 'context'. By default the call waits and returns every subagent's result. With background=true (single task only) it returns a handle at once and the subagent keeps working while you and the user continue; its full task and result re-enter the conversation as a new message when it finishes, so do not wait or poll for it."),
            (&texts.goal_description, "The task for a single subagent. Be specific and self-contained: the subagent does not see this conversation."),
            (&texts.context_description, "Background information for the single subagent: relevant files, what was tried, constraints."),
            (&texts.toolsets_description, "Toolsets the single subagent may use (e.g. [\"web\", \"terminal\", \"file\"]). Omit for the default set."),
            (&texts.tasks_description, "A batch of independent tasks run in parallel, each with its own goal. Use instead of 'goal'. At most max_concurrent_children tasks (3 by default); not allowed with background=true."),
            (&texts.role_description, "'leaf' (default) does the work itself; 'orchestrator' may delegate further within the configured depth limit."),
            (&texts.background_description, "false (default): wait for the subagents and get their results in this call. true: dispatch ONE subagent in the background and get a handle (delegation_id) immediately; keep working with the user, and the subagent's full task and result will arrive later as a new message. Do not wait or poll for it. Background calls take a single task ('goal', or 'tasks' with one entry); dispatch one call per background subagent."),
            (&texts.max_iterations_description, "Accepted for compatibility and ignored: the iteration cap comes from the configuration."),
            (&texts.task_goal_description, "What this subagent must achieve, self-contained."),
            (&texts.task_context_description, "Background the subagent needs (files, findings, constraints)."),
            (&texts.task_toolsets_description, "Toolsets this subagent may use."),
            (&texts.task_role_description, "Overrides the call's role for this task."),
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
            (&texts.action_description, "'spawn' (default) delegates work as described by the other arguments. 'list' shows the background subagents of this conversation that are still running. 'steer' sends a running background subagent a course correction ('subagent_id' and 'message'). 'stop' interrupts one ('subagent_id'); its partial result still arrives as a completion message."),
            (&texts.subagent_id_description, "For 'steer' and 'stop': the delegation_id from the spawn dispatch response or from action='list'."),
            (&texts.message_description, "For 'steer': the course correction, appended to the subagent's next tool result."),
            (&texts.unknown_action, "Unknown action '{action}'. Use spawn, list, steer, or stop."),
            (&texts.control_requires_id, "action='{action}' requires subagent_id (from the spawn dispatch response or action='list')."),
            (&texts.no_live_subagent, "No live subagent '{sid}' in this conversation's spawn tree. It may have already finished (its result arrives as a normal completion message). Use action='list' to see live children."),
            (&texts.steer_requires_message, "action='steer' requires a non-empty 'message' describing the course correction."),
            (&texts.list_empty_note, "No live subagents right now. Children that already finished have delivered (or will deliver) their results as normal completion messages — there is nothing to steer or stop."),
            (&texts.stop_note, "The subagent stops at its next iteration boundary (in-flight tool calls are asked to cancel). Its partial result still re-enters the conversation as a completion message — do not wait or poll."),
            (&texts.stop_too_late, "Could not interrupt '{sid}' — it likely finished in the last moment. Its result arrives as a normal completion message."),
            (&texts.steer_note, "Steering text queued. The subagent sees it appended to its next tool result — the current tool call is never cut. If the child finishes before a delivery boundary remains, the text is reported back as missed_steer in its completion entry."),
            (&texts.steer_closed, "Subagent '{sid}' is no longer accepting steering (finishing or already finished). Its result arrives as a normal completion message; re-delegate a follow-up task if more work is needed."),
            (&texts.missed_steer_note, "[steer did not land — the subagent finished before it could be delivered: {text}]"),
        ];
        for (field, text) in pinned {
            assert_eq!(field, text);
        }
    }
}
