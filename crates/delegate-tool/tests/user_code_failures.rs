//! Whatever the agent implementation does — panic in any call the tool makes, return an
//! error whose `Display` or `Drop` panics, panic when dropped — `delegate_task` answers
//! JSON on the caller's thread, closes every child it built exactly once and lets go of
//! it, in every mode.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use async_delegation::{panic_message, DelegationEngine, DelegationResult, RunnerError};
use common::HANG_GUARD;
use delegate_tool::{
    delegate_task, BackendError, ChildAgent, ChildBackend, ChildTask, DelegateContext,
    DelegationConfig, Parent, ParentAgent,
};
use process_registry::{CompletionQueue, Event};
use serde_json::Value;

/// The one place user code misbehaves in a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trap {
    Nothing,
    DepthPanics,
    SessionKeyPanics,
    IsInterruptedPanics,
    RegisterPanics,
    UnregisterPanics,
    CredentialsPanic,
    CredentialsErrorDisplayPanics,
    CredentialsErrorDropPanics,
    CredentialsDropPanics,
    BuildPanics,
    BuildErrorDisplayPanics,
    BuildErrorDropPanics,
    RunPanics,
    RunErrorDisplayPanics,
    RunErrorDropPanics,
    /// The parent reports itself interrupted, and the child's `interrupt` panics.
    InterruptPanics,
    ClosePanics,
    ModelPanics,
    ChildDropPanics,
}

const TRAPS: [Trap; 20] = [
    Trap::Nothing,
    Trap::DepthPanics,
    Trap::SessionKeyPanics,
    Trap::IsInterruptedPanics,
    Trap::RegisterPanics,
    Trap::UnregisterPanics,
    Trap::CredentialsPanic,
    Trap::CredentialsErrorDisplayPanics,
    Trap::CredentialsErrorDropPanics,
    Trap::CredentialsDropPanics,
    Trap::BuildPanics,
    Trap::BuildErrorDisplayPanics,
    Trap::BuildErrorDropPanics,
    Trap::RunPanics,
    Trap::RunErrorDisplayPanics,
    Trap::RunErrorDropPanics,
    Trap::InterruptPanics,
    Trap::ClosePanics,
    Trap::ModelPanics,
    Trap::ChildDropPanics,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One synchronous task: the child runs on the caller's thread.
    Single,
    /// Two synchronous tasks on `delegate-task-{i}` threads.
    Batch,
    /// One background task, dispatched.
    Background,
    /// One background task the engine refuses (`max_async_children` 0).
    Refused,
}

const MODES: [Mode; 4] = [Mode::Single, Mode::Batch, Mode::Background, Mode::Refused];

/// Panics unless the thread is already unwinding (a second panic would abort the whole
/// test binary instead of failing one case).
fn explode(what: &str) {
    if !thread::panicking() {
        panic!("{what} exploded");
    }
}

/// An error whose `Display` or `Drop` panics.
struct BadError {
    display_panics: bool,
    drop_panics: bool,
}

impl BadError {
    fn boxed(trap: Trap, display: Trap, drop: Trap) -> BackendError {
        Box::new(BadError {
            display_panics: trap == display,
            drop_panics: trap == drop,
        })
    }
}

impl fmt::Debug for BadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BadError")
    }
}

impl fmt::Display for BadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.display_panics {
            explode("display");
        }
        f.write_str("bad error")
    }
}

impl std::error::Error for BadError {}

impl Drop for BadError {
    fn drop(&mut self) {
        if self.drop_panics {
            explode("error drop");
        }
    }
}

/// What happened to one child; the test keeps these, never the child itself (so the
/// tool holds the last handle and the child's `Drop` runs where the tool drops it).
#[derive(Default)]
struct ChildCounts {
    closes: AtomicUsize,
    drops: AtomicUsize,
}

struct TrapChild {
    trap: Trap,
    counts: Arc<ChildCounts>,
}

impl ChildAgent for TrapChild {
    fn run(&self, task: &ChildTask) -> Result<DelegationResult, RunnerError> {
        match self.trap {
            Trap::RunPanics => {
                explode("run");
                unreachable!()
            }
            Trap::RunErrorDisplayPanics | Trap::RunErrorDropPanics => Err(BadError::boxed(
                self.trap,
                Trap::RunErrorDisplayPanics,
                Trap::RunErrorDropPanics,
            )),
            _ => Ok(DelegationResult::completed(format!("done: {}", task.goal))),
        }
    }

    fn interrupt(&self, _reason: &str) {
        if self.trap == Trap::InterruptPanics {
            explode("interrupt");
        }
    }

    fn close(&self) {
        self.counts.closes.fetch_add(1, Ordering::SeqCst);
        if self.trap == Trap::ClosePanics {
            explode("close");
        }
    }

    fn model(&self) -> Option<String> {
        if self.trap == Trap::ModelPanics {
            explode("model");
        }
        Some("m".to_owned())
    }
}

impl Drop for TrapChild {
    fn drop(&mut self) {
        self.counts.drops.fetch_add(1, Ordering::SeqCst);
        if self.trap == Trap::ChildDropPanics {
            explode("child drop");
        }
    }
}

struct TrapCredentials {
    trap: Trap,
}

impl Drop for TrapCredentials {
    fn drop(&mut self) {
        if self.trap == Trap::CredentialsDropPanics {
            explode("credentials drop");
        }
    }
}

struct TrapBackend {
    trap: Trap,
    children: Mutex<Vec<Arc<ChildCounts>>>,
}

impl ChildBackend for TrapBackend {
    type Credentials = TrapCredentials;
    type Child = TrapChild;

    fn resolve_credentials(
        &self,
        _: &dyn ParentAgent,
        _: &DelegationConfig,
    ) -> Result<TrapCredentials, BackendError> {
        match self.trap {
            Trap::CredentialsPanic => {
                explode("credentials");
                unreachable!()
            }
            Trap::CredentialsErrorDisplayPanics | Trap::CredentialsErrorDropPanics => {
                Err(BadError::boxed(
                    self.trap,
                    Trap::CredentialsErrorDisplayPanics,
                    Trap::CredentialsErrorDropPanics,
                ))
            }
            _ => Ok(TrapCredentials { trap: self.trap }),
        }
    }

    fn build_child(
        &self,
        _: &ChildTask,
        _: &TrapCredentials,
        _: &dyn ParentAgent,
    ) -> Result<Arc<TrapChild>, BackendError> {
        match self.trap {
            Trap::BuildPanics => {
                explode("build");
                unreachable!()
            }
            Trap::BuildErrorDisplayPanics | Trap::BuildErrorDropPanics => Err(BadError::boxed(
                self.trap,
                Trap::BuildErrorDisplayPanics,
                Trap::BuildErrorDropPanics,
            )),
            _ => {
                let counts = Arc::new(ChildCounts::default());
                self.children.lock().unwrap().push(Arc::clone(&counts));
                Ok(Arc::new(TrapChild {
                    trap: self.trap,
                    counts,
                }))
            }
        }
    }
}

struct TrapParent {
    trap: Trap,
    inner: Parent,
}

impl ParentAgent for TrapParent {
    fn delegate_depth(&self) -> u32 {
        if self.trap == Trap::DepthPanics {
            explode("depth");
        }
        self.inner.delegate_depth()
    }
    fn session_id(&self) -> String {
        self.inner.session_id()
    }
    fn session_key(&self) -> String {
        if self.trap == Trap::SessionKeyPanics {
            explode("session key");
        }
        self.inner.session_key()
    }
    fn is_interrupted(&self) -> bool {
        match self.trap {
            Trap::IsInterruptedPanics => {
                explode("is_interrupted");
                false
            }
            Trap::InterruptPanics => true,
            _ => self.inner.is_interrupted(),
        }
    }
    fn register_child(&self, child: Arc<dyn ChildAgent>) {
        if self.trap == Trap::RegisterPanics {
            explode("register");
        }
        self.inner.register_child(child);
    }
    fn unregister_child(&self, child: &Arc<dyn ChildAgent>) -> bool {
        if self.trap == Trap::UnregisterPanics {
            explode("unregister");
        }
        self.inner.unregister_child(child)
    }
}

/// What a call came to, as the model and the completion queue see it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// `{"error": …}`.
    Refused(String),
    /// `{"results": […]}`: each task's (status, summary, error).
    Ran(Vec<(String, Option<String>, Option<String>)>),
    /// `{"status": "dispatched", …}`, then the completion event's (status, summary, error).
    Dispatched(String, Option<String>, Option<String>),
}

const CAPACITY_ZERO: &str = "Async delegation capacity reached (0 running). Wait for one to finish (its result will re-enter the chat), or run this task synchronously (background=false). Raise delegation.max_concurrent_children in config.yaml to allow more concurrent background subagents.";
const DISPLAY_PANIC: &str = "panic while formatting the error: display exploded";

fn goals(mode: Mode) -> &'static [&'static str] {
    if mode == Mode::Batch {
        &["a", "b"]
    } else {
        &["a"]
    }
}

/// Every task ran and completed.
fn completed(mode: Mode) -> Outcome {
    match mode {
        Mode::Single | Mode::Batch => Outcome::Ran(
            goals(mode)
                .iter()
                .map(|g| ("completed".to_owned(), Some(format!("done: {g}")), None))
                .collect(),
        ),
        Mode::Background => Outcome::Dispatched("completed".into(), Some("done: a".into()), None),
        Mode::Refused => Outcome::Refused(CAPACITY_ZERO.into()),
    }
}

/// Every task ran and failed with `error`.
fn failed(mode: Mode, error: &str) -> Outcome {
    match mode {
        Mode::Single | Mode::Batch => Outcome::Ran(
            goals(mode)
                .iter()
                .map(|_| ("error".to_owned(), None, Some(error.to_owned())))
                .collect(),
        ),
        Mode::Background => Outcome::Dispatched("error".into(), None, Some(error.into())),
        Mode::Refused => Outcome::Refused(CAPACITY_ZERO.into()),
    }
}

/// No child could be set up: per task in a synchronous call, the whole call otherwise.
fn not_built(mode: Mode, reason: &str) -> Outcome {
    let error = format!("Failed to build the subagent: {reason}");
    match mode {
        Mode::Single | Mode::Batch => Outcome::Ran(
            goals(mode)
                .iter()
                .map(|_| ("error".to_owned(), None, Some(error.clone())))
                .collect(),
        ),
        Mode::Background | Mode::Refused => Outcome::Refused(error),
    }
}

fn refused(text: &str) -> Outcome {
    Outcome::Refused(text.to_owned())
}

fn parent_failed(method: &str, reason: &str) -> Outcome {
    refused(&format!(
        "delegate_task could not run: the calling agent's {method} failed ({reason})."
    ))
}

/// The expected outcome and how many children get built.
fn expected(trap: Trap, mode: Mode) -> (Outcome, usize) {
    let sync = matches!(mode, Mode::Single | Mode::Batch);
    let tasks = goals(mode).len();
    match trap {
        Trap::Nothing
        | Trap::IsInterruptedPanics
        | Trap::CredentialsDropPanics
        | Trap::InterruptPanics
        | Trap::ClosePanics
        | Trap::ChildDropPanics => (completed(mode), tasks),
        Trap::DepthPanics => (parent_failed("delegate_depth", "panic: depth exploded"), 0),
        Trap::SessionKeyPanics if sync => (completed(mode), tasks),
        Trap::SessionKeyPanics => (
            parent_failed("session_key", "panic: session key exploded"),
            0,
        ),
        Trap::RegisterPanics if sync => (not_built(mode, "panic: register exploded"), tasks),
        Trap::RegisterPanics => (completed(mode), tasks),
        Trap::UnregisterPanics if sync => (completed(mode), tasks),
        Trap::UnregisterPanics => (not_built(mode, "panic: unregister exploded"), tasks),
        Trap::ModelPanics if sync => (completed(mode), tasks),
        Trap::ModelPanics => (not_built(mode, "panic: model exploded"), tasks),
        Trap::CredentialsPanic => (refused("panic: credentials exploded"), 0),
        Trap::CredentialsErrorDisplayPanics => (refused(DISPLAY_PANIC), 0),
        Trap::CredentialsErrorDropPanics => (refused("bad error"), 0),
        Trap::BuildPanics => (not_built(mode, "panic: build exploded"), 0),
        Trap::BuildErrorDisplayPanics => (not_built(mode, DISPLAY_PANIC), 0),
        Trap::BuildErrorDropPanics => (not_built(mode, "bad error"), 0),
        Trap::RunPanics => (failed(mode, "panic: run exploded"), tasks),
        Trap::RunErrorDisplayPanics => (failed(mode, DISPLAY_PANIC), tasks),
        Trap::RunErrorDropPanics => (failed(mode, "bad error"), tasks),
    }
}

fn read_outcome(out: &str, queue: &CompletionQueue) -> Result<Outcome, String> {
    let value: Value = serde_json::from_str(out).map_err(|e| format!("not JSON ({e}): {out}"))?;
    let text = |v: &Value| v.as_str().map(str::to_owned);
    if let Some(error) = value.get("error") {
        return Ok(Outcome::Refused(text(error).unwrap_or_default()));
    }
    if let Some(results) = value.get("results").and_then(Value::as_array) {
        return Ok(Outcome::Ran(
            results
                .iter()
                .map(|r| {
                    (
                        text(&r["status"]).unwrap_or_default(),
                        text(&r["summary"]),
                        text(&r["error"]),
                    )
                })
                .collect(),
        ));
    }
    if value["status"] == "dispatched" {
        return match queue.take_timeout(HANG_GUARD) {
            Some(Event::AsyncDelegation(event)) => Ok(Outcome::Dispatched(
                event.status.unwrap_or_default().to_string(),
                event.summary.map(String::from),
                event.error.map(String::from),
            )),
            other => Err(format!("no completion event, got {other:?}")),
        };
    }
    Err(format!("unexpected tool result {out}"))
}

/// Runs one case; `Err` describes what went wrong.
fn run_case(trap: Trap, mode: Mode) -> Result<(), String> {
    let config = DelegationConfig {
        max_async_children: if mode == Mode::Refused { 0 } else { 3 },
        ..DelegationConfig::default()
    };
    let queue = CompletionQueue::new();
    let backend = TrapBackend {
        trap,
        children: Mutex::new(Vec::new()),
    };
    let context = DelegateContext::new(config, DelegationEngine::new(queue.clone()), backend);
    let parent = TrapParent {
        trap,
        inner: Parent::new(0),
    };
    let arguments = match mode {
        Mode::Single => r#"{"goal": "a"}"#,
        Mode::Batch => r#"{"tasks": [{"goal": "a"}, {"goal": "b"}]}"#,
        Mode::Background | Mode::Refused => r#"{"goal": "a", "background": true}"#,
    };
    let out = catch_unwind(AssertUnwindSafe(|| {
        delegate_task(arguments, &parent, &context)
    }))
    .map_err(|payload| format!("a panic escaped delegate_task: {}", panic_message(payload)))?;
    let outcome = read_outcome(&out, &queue)?;
    let (want, want_built) = expected(trap, mode);
    if outcome != want {
        return Err(format!("expected {want:?}, got {outcome:?}"));
    }
    let children = context.backend.children.lock().unwrap().clone();
    if children.len() != want_built {
        return Err(format!(
            "expected {want_built} children built, got {}",
            children.len()
        ));
    }
    // Once the tool, the parent and the engine let go, every child was dropped; a
    // background child's interrupt hook is dropped by its worker just after the event.
    drop(context);
    drop(parent);
    let deadline = Instant::now() + HANG_GUARD;
    while children.iter().any(|c| c.drops.load(Ordering::SeqCst) == 0) {
        if Instant::now() > deadline {
            return Err("a child was never dropped".to_owned());
        }
        thread::sleep(std::time::Duration::from_millis(2));
    }
    for (i, child) in children.iter().enumerate() {
        let closes = child.closes.load(Ordering::SeqCst);
        let drops = child.drops.load(Ordering::SeqCst);
        if (closes, drops) != (1, 1) {
            return Err(format!(
                "child {i}: closed {closes} times and dropped {drops} times, expected once each"
            ));
        }
    }
    Ok(())
}

#[test]
fn no_user_code_failure_escapes_and_every_built_child_is_closed_once() {
    let mut failures = Vec::new();
    for trap in TRAPS {
        for mode in MODES {
            if let Err(why) = run_case(trap, mode) {
                failures.push(format!("{trap:?} × {mode:?}: {why}"));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
