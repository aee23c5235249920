//! Liveness: a child's [`Progress`], the [`StallPolicy`] and the engine's one monitor
//! thread that interrupts, then finalizes, a delegation that stopped making progress or
//! ran past its deadline.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use process_registry::Clock;

/// No progress for this long (outside a tool) → interrupted ([`StallPolicy::idle`]).
pub const DEFAULT_IDLE_STALL: Duration = Duration::from_secs(450);
/// No progress for this long inside a tool call → interrupted ([`StallPolicy::in_tool`]).
pub const DEFAULT_TOOL_STALL: Duration = Duration::from_secs(1200);
/// Still running this long after the interrupt → finalized by the engine
/// ([`StallPolicy::grace`]).
pub const DEFAULT_STALL_GRACE: Duration = Duration::from_secs(120);

/// The default error of a stalled completion ([`StallPolicy::stalled_error`]).
pub const STALLED_ERROR: &str = "{task} stopped responding{after} and was cancelled. Nothing else was affected; ask me to run it again if you still need it.";
/// The default error of a completion past its deadline ([`StallPolicy::deadline_error`]).
pub const DEADLINE_ERROR: &str = "{task} did not finish within its deadline and was cancelled. Nothing else was affected; ask me to run it again if you still need it.";

/// When the engine gives up on a watched delegation (one dispatched with a [`Progress`]
/// or a deadline, see [`Controls`](crate::Controls)).
///
/// A delegation whose progress token has not changed for [`idle`](Self::idle) (or
/// [`in_tool`](Self::in_tool) while its child is inside a tool call), or whose deadline
/// passed, is interrupted through its hook; if it is still running
/// [`grace`](Self::grace) later, the engine finalizes it itself: its slot is freed and its
/// one completion is written, status `stalled` (`timeout` past a deadline) with
/// `stalled_after_quiet_seconds`, `stall_threshold_seconds`, `stall_phase` and
/// `stall_grace_seconds`. A runner that returns after that is logged and its result
/// discarded: never a second completion.
///
/// The error texts are templates: `{task}` is `Background task "{goal}"` (the goal's
/// first 120 characters) or `The background task` when there is no goal, and `{after}` is
/// ` after {N} min of no progress` (whole minutes) when the quiet time was a minute or
/// more, else empty. With the defaults the stalled text is the reference harness's.
///
/// ```
/// use std::time::Duration;
/// use async_delegation::StallPolicy;
///
/// let policy = StallPolicy::default().with_idle(Duration::from_secs(60));
/// assert_eq!(policy.idle, Duration::from_secs(60));
/// assert_eq!(policy.in_tool, Duration::from_secs(1200));
/// assert_eq!(policy.grace, Duration::from_secs(120));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StallPolicy {
    /// Quiet time outside a tool call before the interrupt (default 450 s).
    pub idle: Duration,
    /// Quiet time inside a tool call before the interrupt (default 1200 s).
    pub in_tool: Duration,
    /// Time from the interrupt to the engine's own finalization (default 120 s).
    pub grace: Duration,
    /// The `error` of a stalled completion (default [`STALLED_ERROR`]).
    pub stalled_error: Cow<'static, str>,
    /// The `error` of a completion past its deadline (default [`DEADLINE_ERROR`]).
    pub deadline_error: Cow<'static, str>,
}

impl Default for StallPolicy {
    fn default() -> Self {
        StallPolicy {
            idle: DEFAULT_IDLE_STALL,
            in_tool: DEFAULT_TOOL_STALL,
            grace: DEFAULT_STALL_GRACE,
            stalled_error: Cow::Borrowed(STALLED_ERROR),
            deadline_error: Cow::Borrowed(DEADLINE_ERROR),
        }
    }
}

impl StallPolicy {
    /// This policy with `idle` as the quiet time outside a tool call.
    pub fn with_idle(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }

    /// This policy with `in_tool` as the quiet time inside a tool call.
    pub fn with_in_tool(mut self, in_tool: Duration) -> Self {
        self.in_tool = in_tool;
        self
    }

    /// This policy with `grace` between the interrupt and the finalization.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The error text of a finalized delegation.
    pub(crate) fn error_text(&self, phase: StallPhase, goal: &str, quiet_seconds: f64) -> String {
        let task = if goal.is_empty() {
            "The background task".to_owned()
        } else {
            let goal: String = goal.chars().take(120).collect();
            format!("Background task \"{goal}\"")
        };
        let after = if quiet_seconds >= 60.0 {
            // Whole minutes: a float of at most a few thousand, never negative here.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let minutes = (quiet_seconds / 60.0).floor() as u64;
            format!(" after {minutes} min of no progress")
        } else {
            String::new()
        };
        let template = match phase {
            StallPhase::Deadline => &self.deadline_error,
            StallPhase::Idle | StallPhase::InTool => &self.stalled_error,
        };
        fill(template, &task, &after)
    }
}

/// `{task}` and `{after}` of `template`, filled in one pass (text substituted in is not
/// scanned again; other braces stay as written).
fn fill(template: &str, task: &str, after: &str) -> String {
    let mut out = String::with_capacity(template.len() + task.len() + after.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let tail = &rest[open..];
        if let Some(after_task) = tail.strip_prefix("{task}") {
            out.push_str(task);
            rest = after_task;
        } else if let Some(after_after) = tail.strip_prefix("{after}") {
            out.push_str(after);
            rest = after_after;
        } else {
            out.push('{');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Why a watched delegation was interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StallPhase {
    Idle,
    InTool,
    Deadline,
}

impl StallPhase {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StallPhase::Idle => "idle",
            StallPhase::InTool => "in_tool",
            StallPhase::Deadline => "deadline",
        }
    }
}

/// A running child's progress reports: the stall monitor's input. Made by
/// [`DelegationEngine::progress`](crate::DelegationEngine::progress) (on the engine's
/// clock), given to the engine with [`Controls::with_progress`](crate::Controls::with_progress)
/// and to the child, which calls [`touch`](Self::touch) whenever it makes progress (a
/// model call, a tool result, streamed output) and brackets each tool call with
/// [`enter_tool`](Self::enter_tool) / [`leave_tool`](Self::leave_tool). Each report is a
/// few atomic writes and one read of the clock.
///
/// ```
/// use async_delegation::DelegationEngine;
///
/// let engine = DelegationEngine::new(process_registry::CompletionQueue::new());
/// let progress = engine.progress();
/// let before = progress.token();
/// progress.enter_tool();
/// assert!(progress.in_tool());
/// progress.leave_tool();
/// assert!(!progress.in_tool());
/// assert_ne!(progress.token(), before);
/// ```
#[derive(Clone)]
pub struct Progress(Arc<ProgressState>);

struct ProgressState {
    /// Changes at every report.
    token: AtomicU64,
    in_tool: AtomicBool,
    /// The clock's time of the last report, as `f64` bits.
    last_at: AtomicU64,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("token", &self.token())
            .field("in_tool", &self.in_tool())
            .finish_non_exhaustive()
    }
}

impl Progress {
    /// A handle whose first report is now, on `clock`.
    pub(crate) fn new(clock: Arc<dyn Clock>) -> Self {
        let now = clock.now();
        let now = if now.is_finite() { now } else { 0.0 };
        Progress(Arc::new(ProgressState {
            token: AtomicU64::new(0),
            in_tool: AtomicBool::new(false),
            last_at: AtomicU64::new(now.to_bits()),
            clock,
        }))
    }

    /// The child made progress.
    pub fn touch(&self) {
        let now = self.0.clock.now();
        // A clock that cannot tell the time leaves the last good time.
        if now.is_finite() {
            self.0.last_at.store(now.to_bits(), Ordering::Relaxed);
        }
        self.0.token.fetch_add(1, Ordering::Release);
    }

    /// Moves the last report up to `now` if it is earlier (quiet time counts from the
    /// dispatch at the earliest); the token is left as it is.
    pub(crate) fn not_before(&self, now: f64) {
        if now.is_finite() {
            let _ = self
                .0
                .last_at
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                    (f64::from_bits(bits) < now).then_some(now.to_bits())
                });
        }
    }

    /// The child entered a tool call (progress too): the longer threshold applies until
    /// [`leave_tool`](Self::leave_tool).
    pub fn enter_tool(&self) {
        self.0.in_tool.store(true, Ordering::Relaxed);
        self.touch();
    }

    /// The child left its tool call (progress too).
    pub fn leave_tool(&self) {
        self.0.in_tool.store(false, Ordering::Relaxed);
        self.touch();
    }

    /// `true` between [`enter_tool`](Self::enter_tool) and [`leave_tool`](Self::leave_tool).
    pub fn in_tool(&self) -> bool {
        self.0.in_tool.load(Ordering::Relaxed)
    }

    /// A token that changes at every report.
    pub fn token(&self) -> u64 {
        self.0.token.load(Ordering::Acquire)
    }

    /// When the child last reported, on the engine's clock.
    pub(crate) fn last_at(&self) -> f64 {
        // Read after the token, so a report seen by `token` has its time seen too.
        let _ = self.token();
        f64::from_bits(self.0.last_at.load(Ordering::Relaxed))
    }
}

/// The engine's monitor thread, `async-delegate-monitor`: started with the first watched
/// dispatch, asleep until the earliest moment a watched delegation can stall (woken
/// sooner by a new watched dispatch), gone with the engine.
pub(crate) struct Monitor {
    shared: Arc<MonitorShared>,
}

struct MonitorShared {
    state: Mutex<MonitorState>,
    changed: Condvar,
}

#[derive(Default)]
struct MonitorState {
    started: bool,
    /// A sweep is due sooner than the thread's current sleep.
    woken: bool,
    /// The engine is gone.
    closed: bool,
}

impl Monitor {
    pub(crate) fn new() -> Self {
        Monitor {
            shared: Arc::new(MonitorShared {
                state: Mutex::new(MonitorState::default()),
                changed: Condvar::new(),
            }),
        }
    }

    /// Starts the thread if it is not running and wakes it for a sweep. `sweep` runs one
    /// sweep on the engine (if it still exists) and returns how long until the next is
    /// due (`None`: nothing watched).
    pub(crate) fn wake<E: Send + Sync + 'static>(
        &self,
        engine: Weak<E>,
        sweep: fn(&Arc<E>) -> Option<Duration>,
    ) {
        let mut state = lock(&self.shared.state);
        state.woken = true;
        self.shared.changed.notify_all();
        if state.started {
            return;
        }
        state.started = true;
        drop(state);
        let shared = Arc::clone(&self.shared);
        let started = std::thread::Builder::new()
            .name("async-delegate-monitor".to_owned())
            .spawn(move || run(&shared, &engine, sweep));
        if let Err(error) = started {
            // Watched delegations then stall unnoticed until the next watched dispatch
            // tries again; nothing is lost.
            tracing::error!(%error, "the stall monitor thread could not be started");
            lock(&self.shared.state).started = false;
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        lock(&self.shared.state).closed = true;
        self.shared.changed.notify_all();
    }
}

fn run<E>(shared: &MonitorShared, engine: &Weak<E>, sweep: fn(&Arc<E>) -> Option<Duration>) {
    // However this thread ends, the next watched dispatch starts another.
    struct Started<'a>(&'a MonitorShared);
    impl Drop for Started<'_> {
        fn drop(&mut self) {
            lock(&self.0.state).started = false;
        }
    }
    let _started = Started(shared);
    loop {
        lock(&shared.state).woken = false;
        let next = match engine.upgrade() {
            // The engine's `Arc` is dropped before this sleeps: the monitor never keeps
            // it alive. A panic in a sweep (user code is fenced inside it; this is the
            // engine's own) is logged, and the sweep tried again soon.
            Some(engine) => crate::fence::call(|| sweep(&engine)).unwrap_or_else(|message| {
                tracing::error!(panic = %message, "a stall sweep panicked");
                Some(Duration::from_secs(1))
            }),
            None => return,
        };
        let state = lock(&shared.state);
        let asleep = |state: &mut MonitorState| !state.woken && !state.closed;
        let state = match next {
            // Spurious wake-ups are absorbed by the predicate; a timeout means a sweep is
            // due.
            Some(wait) => {
                shared
                    .changed
                    .wait_timeout_while(state, wait, asleep)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0
            }
            None => shared
                .changed
                .wait_while(state, asleep)
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        };
        if state.closed {
            return;
        }
    }
}

fn lock(state: &Mutex<MonitorState>) -> std::sync::MutexGuard<'_, MonitorState> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stalled_text_is_the_references() {
        let policy = StallPolicy::default();
        assert_eq!(
            policy.error_text(StallPhase::Idle, "Summarise the logs", 452.0),
            "Background task \"Summarise the logs\" stopped responding after 7 min of no progress and was cancelled. Nothing else was affected; ask me to run it again if you still need it."
        );
        assert_eq!(
            policy.error_text(StallPhase::InTool, "", 30.0),
            "The background task stopped responding and was cancelled. Nothing else was affected; ask me to run it again if you still need it."
        );
        let long = "x".repeat(200);
        let text = policy.error_text(StallPhase::Idle, &long, 60.0);
        assert!(text.starts_with(&format!(
            "Background task \"{}\" stopped responding after 1 min of",
            "x".repeat(120)
        )));
        assert_eq!(
            policy.error_text(StallPhase::Deadline, "g", 5.0),
            "Background task \"g\" did not finish within its deadline and was cancelled. Nothing else was affected; ask me to run it again if you still need it."
        );
    }

    #[test]
    fn templates_fill_once_and_keep_other_braces() {
        assert_eq!(
            fill("{task}{after} {x} {", "T{after}", "A"),
            "T{after}A {x} {"
        );
    }
}
