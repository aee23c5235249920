//! The injected agent implementation: credentials, building and running children.

use std::error::Error;
use std::sync::Arc;

use async_delegation::{DelegationResult, Progress, RunnerError, Steering};
use process_registry::Text;

use crate::{DelegationConfig, ParentAgent, Role};

/// What a backend may fail with; its `Display` text reaches the model.
pub type BackendError = Box<dyn Error + Send + Sync>;

/// One validated task, as handed to [`ChildBackend::build_child`] and [`ChildAgent::run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildTask {
    /// 0-based position in the call's batch (0 for a single task); results carry it as
    /// `task_index`.
    pub task_index: usize,
    /// The goal, verbatim (never blank).
    pub goal: String,
    /// Context from the parent (`None` when absent or blank).
    pub context: Option<String>,
    /// Toolsets requested for the child (`None`: the backend's default).
    pub toolsets: Option<Vec<String>>,
    /// The child's role, normalised.
    pub role: Role,
    /// The child's delegation depth: the parent's + 1.
    pub depth: u32,
    /// The iteration cap from [`DelegationConfig::max_iterations`].
    pub max_iterations: u32,
    /// `true` when the child will run as a background delegation.
    pub background: bool,
}

/// Plugs an agent implementation into `delegate_task`.
///
/// Both methods run on the thread that called `delegate_task`, before anything runs.
///
/// The tool fences everything it calls here and in the [`ChildAgent`]s it gets: a panic
/// (also in the `Display` or `Drop` of a returned error, or in the `Drop` of the
/// credentials or of a child) never reaches the caller. A panic reads `panic: {message}`
/// and an error whose `Display` panicked reads `panic while formatting the error:
/// {message}` (both replaceable, see [`ToolTexts`](crate::ToolTexts)); a panicking `Drop`
/// is logged.
pub trait ChildBackend {
    /// Whatever the backend needs to build children (model, provider, keys, …).
    type Credentials;
    /// The child agents it builds.
    type Child: ChildAgent + 'static;

    /// Resolves the credentials children of `parent` will use. Called once per call,
    /// after the depth check and before the tasks are parsed.
    ///
    /// # Errors
    /// Any error; its `Display` text is returned to the model verbatim (through the
    /// [`credentials`](crate::ToolTexts::credentials) template, by default the text alone).
    fn resolve_credentials(
        &self,
        parent: &dyn ParentAgent,
        config: &DelegationConfig,
    ) -> Result<Self::Credentials, BackendError>;

    /// Builds the child for `task`. The backend may register the child in `parent`'s
    /// active children itself; the tool does so too for synchronous children, and
    /// removes it again for background ones.
    ///
    /// # Errors
    /// Any error; the model reads `Failed to build the subagent: {error}`.
    fn build_child(
        &self,
        task: &ChildTask,
        credentials: &Self::Credentials,
        parent: &dyn ParentAgent,
    ) -> Result<Arc<Self::Child>, BackendError>;
}

/// A subagent built by a [`ChildBackend`].
///
/// `run` happens on a `delegate-task-…` thread (synchronous batch), on the calling thread
/// (synchronous single task) or on an `async-delegate-…` worker (background), while
/// `interrupt` may be called from any thread at any time, also after `run` returned.
pub trait ChildAgent: Send + Sync {
    /// Runs the task to its end and reports the outcome. An unset `status` means
    /// `completed`; an error becomes status `error`; a panic is caught and becomes status
    /// `error` with `panic: {message}`.
    ///
    /// # Errors
    /// Any error; its text becomes the result's `error`.
    fn run(&self, task: &ChildTask) -> Result<DelegationResult, RunnerError>;

    /// Asks the child to stop soon (set a flag); `run` should then return, usually with
    /// status `interrupted`. Must not block.
    fn interrupt(&self, reason: &str);

    /// Releases what the child holds. Called exactly once by the tool after `run`
    /// returned, or instead of `run` when the child never ran (the call failed after the
    /// child was built, or the engine refused the dispatch).
    fn close(&self) {}

    /// The model the child runs, restated in the background completion event. Asked on
    /// the calling thread before a background dispatch; if it panics the call fails like
    /// a build (`Failed to build the subagent: panic: …`) and the child is closed.
    fn model(&self) -> Option<String> {
        None
    }

    /// Whether this child reads steering text (`delegate_task`'s `action='steer'`). Asked
    /// on the calling thread before a background dispatch; when `true` its
    /// [`run_background`](Self::run_background) gets a steering inbox and `list` reports
    /// `accepting_steer: true` while it runs. A panic counts as `false` (logged).
    fn accepts_steering(&self) -> bool {
        false
    }

    /// Whether this child reports its progress. Asked like
    /// [`accepts_steering`](Self::accepts_steering); when `true` its
    /// [`run_background`](Self::run_background) gets a [`Progress`] to report on, and the
    /// engine's stall monitor watches it: no progress for the engine's
    /// [`StallPolicy`](async_delegation::StallPolicy) thresholds → interrupted, then (still
    /// running after the grace) finalized `stalled` by the engine itself. A child that
    /// does not report is never judged stalled.
    fn reports_progress(&self) -> bool {
        false
    }

    /// [`run`](Self::run) for a background child, with what it
    /// [accepts](Self::accepts_steering) and [reports](Self::reports_progress). A
    /// steerable child calls [`take_steering`](BackgroundRun::take_steering) at each
    /// point where it can hand text to its model — after a tool call, appended to the
    /// tool's result, never cutting the call short — and delivers what that returns;
    /// text it never took comes back in its completion as `missed_steer`, with a note in
    /// the summary (a steer is delivered or reported, never lost and never both). A
    /// reporting child calls [`Progress::touch`] at each model call, tool result or
    /// streamed chunk, and brackets tool calls with [`Progress::enter_tool`] /
    /// [`Progress::leave_tool`]. The default runs [`run`](Self::run).
    ///
    /// # Errors
    /// As [`run`](Self::run).
    fn run_background(
        &self,
        task: &ChildTask,
        run: &BackgroundRun,
    ) -> Result<DelegationResult, RunnerError> {
        let _ = run;
        self.run(task)
    }
}

/// What a background child can use while it runs ([`ChildAgent::run_background`], and
/// `AsyncChildAgent::run_background` with the `tokio` feature): its steering inbox, if it
/// [accepts steering](ChildAgent::accepts_steering), and its progress reports, if it
/// [reports progress](ChildAgent::reports_progress). Cheap to clone: both are shared
/// handles.
#[derive(Debug, Clone, Default)]
pub struct BackgroundRun {
    steering: Option<Steering>,
    progress: Option<Progress>,
}

impl BackgroundRun {
    /// A run with this steering inbox and these progress reports (either may be absent).
    pub fn new(steering: Option<Steering>, progress: Option<Progress>) -> Self {
        BackgroundRun { steering, progress }
    }

    /// The steering text queued since the last take, oldest first: the child's to
    /// deliver now. Empty without steering.
    pub fn take_steering(&self) -> Vec<Text> {
        self.steering
            .as_ref()
            .map(Steering::take)
            .unwrap_or_default()
    }

    /// The steering inbox, when the child accepts steering.
    pub fn steering(&self) -> Option<&Steering> {
        self.steering.as_ref()
    }

    /// The progress reports, when the child reports progress.
    pub fn progress(&self) -> Option<&Progress> {
        self.progress.as_ref()
    }
}
