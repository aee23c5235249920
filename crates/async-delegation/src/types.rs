//! The values that cross the API: what to run, what it returned, what dispatch answered,
//! and what `list` reports.

use std::error::Error;
use std::sync::Arc;

use process_registry::{Status, Text};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Most completed records an engine keeps for [`list`](crate::DelegationEngine::list).
/// Running records are never pruned; older completed ones are dropped first.
pub const MAX_RETAINED_COMPLETED: usize = 50;

/// The usual `max_async_children`: how many background delegations may run at once
/// (delegate-tool's `DelegationConfig::max_async_children`).
pub const DEFAULT_MAX_ASYNC_CHILDREN: usize = 3;

/// What a runner may fail with. Its `Display` text becomes the event's `error`.
pub type RunnerError = Box<dyn Error + Send + Sync>;

/// Asks a running delegation to stop. Receives the reason given to
/// [`interrupt_all`](crate::DelegationEngine::interrupt_all) and friends.
///
/// The hook is called on the interrupting thread, outside every engine lock. It should
/// only *signal* the child (set a flag, cancel a token): the child still finishes through
/// its runner, whose result becomes the completion event (usually `interrupted`).
pub type InterruptHook = Arc<dyn Fn(&str) + Send + Sync>;

/// What to delegate: the task and where it came from. Restated verbatim in the
/// completion event so the re-injected text is self-contained.
///
/// ```
/// use async_delegation::DelegationSpec;
///
/// let spec = DelegationSpec::new("Summarise the logs")
///     .with_context("Only the last hour matters")
///     .with_toolsets(["terminal", "file"])
///     .with_role("leaf")
///     .with_session_key("agent:main:telegram:dm:12345");
/// assert_eq!(spec.toolsets.as_deref(), Some(&["terminal".into(), "file".into()][..]));
/// assert_eq!(spec.goal, "Summarise the logs"); // shared text, compared as a `&str`
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegationSpec {
    /// The task, verbatim.
    pub goal: Text,
    /// Context the parent gives the subagent.
    #[serde(default)]
    pub context: Option<Text>,
    /// Toolsets the subagent may use (shared with the completion that restates them).
    #[serde(default)]
    pub toolsets: Option<Arc<[Text]>>,
    /// `leaf` or `orchestrator` (not checked here; the tool layer normalises it).
    #[serde(default)]
    pub role: Option<Text>,
    /// The model the subagent is configured with (the result's model wins in the event).
    #[serde(default)]
    pub model: Option<Text>,
    /// The dispatching gateway session key; `""` means CLI origin (unrouted).
    #[serde(default)]
    pub session_key: Text,
    /// The W3C trace context to continue (`traceparent`), restated in the completion.
    /// Unset, the engine starts one when a `tracing` subscriber records the dispatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<Text>,
}

impl DelegationSpec {
    /// A spec with this goal, CLI origin (`session_key` `""`) and nothing else set.
    pub fn new(goal: impl Into<Text>) -> Self {
        DelegationSpec {
            goal: goal.into(),
            ..DelegationSpec::default()
        }
    }

    /// Sets the context.
    pub fn with_context(mut self, context: impl Into<Text>) -> Self {
        self.context = Some(context.into());
        self
    }

    /// Sets the toolsets.
    pub fn with_toolsets<I, S>(mut self, toolsets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Text>,
    {
        self.toolsets = Some(toolsets.into_iter().map(Into::into).collect());
        self
    }

    /// Sets the role.
    pub fn with_role(mut self, role: impl Into<Text>) -> Self {
        self.role = Some(role.into());
        self
    }

    /// Sets the model.
    pub fn with_model(mut self, model: impl Into<Text>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Sets the dispatching session key.
    pub fn with_session_key(mut self, session_key: impl Into<Text>) -> Self {
        self.session_key = session_key.into();
        self
    }

    /// The W3C trace context to continue (`00-{trace id}-{span id}-{flags}`).
    pub fn with_traceparent(mut self, traceparent: impl Into<Text>) -> Self {
        self.traceparent = Some(traceparent.into());
        self
    }
}

/// What a runner reports when its subagent stops. Every field is optional; unset
/// `status` means `completed`, unset `model` means the spec's, unset `duration_seconds`
/// means the wall time the engine measured.
///
/// Deserializes from result objects such as `{"status": …, "summary": …}`, ignoring
/// fields it does not know.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DelegationResult {
    /// `completed`, `success`, `error`, `failed`, `interrupted`, `timeout`, …
    pub status: Option<Status>,
    /// What the subagent reported.
    pub summary: Option<Text>,
    /// Why it failed, when it did.
    pub error: Option<Text>,
    /// Model API calls the subagent made.
    pub api_calls: Option<u64>,
    /// Run time in seconds as the subagent measured it.
    pub duration_seconds: Option<f64>,
    /// The model that actually ran.
    pub model: Option<Text>,
    /// Why the subagent loop stopped, e.g. `completed` or `max_iterations`.
    pub exit_reason: Option<Text>,
    /// The summary was cut short.
    pub truncated: Option<bool>,
    /// Steering text the child never took, as the completion's `missed_steer`. The
    /// engine sets it (and the summary's note) from the dispatch's
    /// [`Steering`](crate::Steering) when the runner returns.
    pub missed_steer: Option<Text>,
}

impl DelegationResult {
    /// A result with this status and nothing else.
    pub fn with_status(status: impl Into<Status>) -> Self {
        DelegationResult {
            status: Some(status.into()),
            ..DelegationResult::default()
        }
    }

    /// A `completed` result with this summary.
    pub fn completed(summary: impl Into<Text>) -> Self {
        DelegationResult {
            status: Some(Status::Completed),
            summary: Some(summary.into()),
            ..DelegationResult::default()
        }
    }

    /// The status the completion carries: the result's, or `completed` when it set none
    /// or an empty one.
    ///
    /// ```
    /// use async_delegation::DelegationResult;
    ///
    /// assert_eq!(DelegationResult::default().status_or_completed(), "completed");
    /// assert_eq!(DelegationResult::with_status("").status_or_completed(), "completed");
    /// assert_eq!(DelegationResult::with_status("timeout").status_or_completed(), "timeout");
    /// ```
    pub fn status_or_completed(&self) -> &str {
        match self.status.as_deref() {
            None | Some("") => "completed",
            Some(status) => status,
        }
    }

    /// An `interrupted` result with this error text.
    pub fn interrupted(error: impl Into<Text>) -> Self {
        DelegationResult {
            status: Some(Status::Interrupted),
            error: Some(error.into()),
            ..DelegationResult::default()
        }
    }
}

/// What [`dispatch`](crate::DelegationEngine::dispatch) answered. It always answers at
/// once; the work (if accepted) runs in the background.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DispatchOutcome {
    /// Accepted: exactly one `async_delegation` completion event with this id will land
    /// on the engine's queue.
    Dispatched {
        /// `deleg_` + 8 lowercase hex digits.
        delegation_id: Text,
    },
    /// Not accepted and not queued: no event will ever carry it. The runner was dropped
    /// without being called.
    Rejected {
        /// Why, as text for the model (see [`DispatchError`](crate::DispatchError)).
        error: String,
    },
}

impl DispatchOutcome {
    /// `true` when the delegation was accepted.
    pub fn is_dispatched(&self) -> bool {
        matches!(self, DispatchOutcome::Dispatched { .. })
    }

    /// The id of an accepted delegation.
    pub fn delegation_id(&self) -> Option<&str> {
        match self {
            DispatchOutcome::Dispatched { delegation_id } => Some(delegation_id),
            DispatchOutcome::Rejected { .. } => None,
        }
    }

    /// The rejection text.
    pub fn error(&self) -> Option<&str> {
        match self {
            DispatchOutcome::Dispatched { .. } => None,
            DispatchOutcome::Rejected { error } => Some(error),
        }
    }

    /// The wire answer: exactly `{"status":"dispatched","delegation_id":…}` or
    /// `{"status":"rejected","error":…}`.
    pub fn to_json(&self) -> Value {
        match self {
            DispatchOutcome::Dispatched { delegation_id } => {
                json!({"status": "dispatched", "delegation_id": delegation_id})
            }
            DispatchOutcome::Rejected { error } => json!({"status": "rejected", "error": error}),
        }
    }
}

impl Serialize for DispatchOutcome {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

/// One delegation as [`list`](crate::DelegationEngine::list) reports it: the spec, its
/// status (`running` until it completes, then the completion's status) and its times.
/// Never carries the interrupt hook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DelegationRecord {
    /// `deleg_` + 8 lowercase hex digits.
    pub delegation_id: Text,
    /// The task, verbatim.
    pub goal: Text,
    /// Context given at dispatch.
    pub context: Option<Text>,
    /// Toolsets given at dispatch.
    pub toolsets: Option<Arc<[Text]>>,
    /// Role given at dispatch.
    pub role: Option<Text>,
    /// The spec's model while running; the completion's model (the result's, else the
    /// spec's) once completed.
    pub model: Option<Text>,
    /// The dispatching session key.
    pub session_key: Text,
    /// [`Status::Running`], then the completion event's status.
    pub status: Status,
    /// Unix seconds at dispatch.
    pub dispatched_at: f64,
    /// Unix seconds at completion; `None` while running.
    pub completed_at: Option<f64>,
    /// `true` while the delegation runs with an open [`Steering`](crate::Steering)
    /// inbox: [`steer`](crate::DelegationEngine::steer) would queue text.
    #[serde(default)]
    pub accepting_steer: bool,
    /// Seconds since the child last reported progress (on the engine's clock), while it
    /// runs and reports ([`Progress`](crate::Progress)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_since_progress: Option<f64>,
    /// Whether the child is inside a tool call, while it runs and reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_tool: Option<bool>,
}

impl DelegationRecord {
    /// The status of a record whose runner has not finished yet.
    pub const RUNNING: Status = Status::Running;

    /// `true` while the runner has not finished.
    pub fn is_running(&self) -> bool {
        self.completed_at.is_none()
    }
}
