//! Every text the model reads when a `delegate_task` call is refused, built in one place.

/// Why a `delegate_task` call was refused. Its `Display` text is the `error` of the tool
/// result (`{"error": "…"}`), written for the model that made the call; the texts of
/// SPEC §5 are reproduced byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// The raw arguments were not JSON.
    #[error(
        "delegate_task arguments must be a JSON object; received text that could not be parsed \
         as JSON ({reason})."
    )]
    ArgumentsNotJson {
        /// The parser's explanation.
        reason: String,
    },
    /// The arguments nest deeper than [`MAX_ARGUMENT_NESTING`](crate::MAX_ARGUMENT_NESTING)
    /// levels (also for argument text the JSON parser refused as too deeply nested).
    /// Checked first, before anything else reads the arguments.
    #[error("delegate_task arguments are nested too deeply (more than {max} levels).")]
    ArgumentsTooDeep {
        /// The limit, [`MAX_ARGUMENT_NESTING`](crate::MAX_ARGUMENT_NESTING).
        max: usize,
    },
    /// The arguments were JSON but not an object.
    #[error("delegate_task arguments must be a JSON object; got {kind} instead.")]
    ArgumentsNotObject {
        /// JSON kind received (`array`, `string`, …).
        kind: &'static str,
    },
    /// SPEC §5 step 2: `background=true` with a batch of two or more tasks.
    #[error(
        "background=true is single-task only. Dispatch one background subagent per \
         delegate_task call (each returns its own handle and re-enters the conversation \
         independently), or run the batch synchronously with background=false."
    )]
    BackgroundBatch,
    /// SPEC §5 step 3: the parent is already at `max_spawn_depth`.
    #[error(
        "Delegation depth limit reached (depth={depth}, max_spawn_depth={max}). Raise \
         delegation.max_spawn_depth in config.yaml if deeper nesting is required (no hard \
         ceiling, but each level multiplies API cost)."
    )]
    DepthLimit {
        /// The parent's delegation depth.
        depth: u32,
        /// The configured `max_spawn_depth`.
        max: u32,
    },
    /// SPEC §5 step 4: the backend could not resolve credentials; its message verbatim.
    #[error("{0}")]
    Credentials(String),
    /// SPEC §5 step 5: `tasks` was a string that is not JSON.
    #[error(
        "tasks must be a JSON array of task objects; received a string that could not be \
         parsed as JSON ({reason})."
    )]
    TasksNotJson {
        /// The parser's explanation.
        reason: String,
    },
    /// SPEC §5 step 5: `tasks` was a string holding JSON that is not an array.
    #[error("tasks must be a JSON array of task objects; parsed {kind} instead.")]
    TasksParsedNotArray {
        /// JSON kind parsed (`object`, `number`, …).
        kind: &'static str,
    },
    /// `tasks` was neither an array, a string nor null (not in the reference, which
    /// silently ignored it; refused here so the model learns the right shape).
    #[error("tasks must be a JSON array of task objects; got {kind} instead.")]
    TasksNotArray {
        /// JSON kind received (`object`, `number`, `boolean`).
        kind: &'static str,
    },
    /// SPEC §5 step 6: more tasks than `max_concurrent_children`.
    #[error(
        "Too many tasks: {count} provided, but max_concurrent_children is {max}. Either reduce \
         the task count, split into multiple delegate_task calls, or increase \
         delegation.max_concurrent_children in config.yaml."
    )]
    TooManyTasks {
        /// Tasks provided.
        count: usize,
        /// The configured `max_concurrent_children`.
        max: usize,
    },
    /// SPEC §5 steps 5 and 7: no tasks and no non-blank goal (or a blank `tasks` string).
    #[error("Provide either 'goal' (single task) or 'tasks' (batch).")]
    NothingToDo,
    /// SPEC §5 step 7: a task that is not an object. `index` is 0-based (the task's
    /// position in `tasks`, the same `task_index` the results carry).
    #[error("Task {index} must be an object, got {kind}.")]
    TaskNotObject {
        /// 0-based position in `tasks`.
        index: usize,
        /// JSON kind received.
        kind: &'static str,
    },
    /// SPEC §5 step 7: a task whose goal is missing, blank or not a string. `index` is
    /// 0-based.
    #[error("Task {index} is missing a 'goal'.")]
    TaskMissingGoal {
        /// 0-based position in `tasks`.
        index: usize,
    },
    /// The backend could not build the subagent.
    #[error("Failed to build the subagent: {0}")]
    ChildBuild(String),
    /// A call into the calling agent ([`ParentAgent`](crate::ParentAgent)) failed — it
    /// panicked — before any child was built, so the call cannot go on.
    #[error("delegate_task could not run: the calling agent's {method} failed ({reason}).")]
    ParentFailed {
        /// The [`ParentAgent`](crate::ParentAgent) method, e.g. `delegate_depth`.
        method: &'static str,
        /// What went wrong (`panic: {message}`).
        reason: String,
    },
    /// The tool itself failed unexpectedly (a bug in this crate, caught before it could
    /// reach the caller).
    #[error("delegate_task failed unexpectedly ({reason}).")]
    Internal {
        /// What went wrong (`panic: {message}`).
        reason: String,
    },
    /// The engine refused the background dispatch; its text verbatim (e.g. the capacity
    /// text of SPEC §4).
    #[error("{0}")]
    Dispatch(String),
}

impl ToolError {
    /// The tool result for this error: `{"error": "<text>"}`.
    pub fn to_tool_result(&self) -> String {
        serde_json::json!({ "error": self.to_string() }).to_string()
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
        /// What it was, as JSON text.
        got: String,
    },
}
