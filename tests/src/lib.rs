//! Shared fixtures for the workspace integration tests: gates, hang-guarded takes from a
//! completion queue, and a scriptable child backend for `delegate_task`.
//!
//! The tests themselves live in `tests/tests/*.rs`, one file per capability. Nothing here
//! measures time: the only clock is [`HANG_GUARD`], a ceiling that turns a hang into a
//! failure instead of a stuck CI run.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_delegation::{DelegationResult, RunnerError};
use delegate_tool::{
    BackendError, ChildAgent, ChildBackend, ChildTask, DelegationConfig, ParentAgent,
};
use process_registry::{AsyncDelegationEvent, CompletionQueue, Event};

/// Only a guard against hangs: no test relies on anything taking this long.
pub const HANG_GUARD: Duration = Duration::from_secs(20);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A one-shot gate: runners wait on it until the test opens it.
#[derive(Debug, Default)]
pub struct Gate {
    open: Mutex<bool>,
    changed: Condvar,
}

impl Gate {
    /// A closed gate, shareable between the test and its runners.
    pub fn new() -> Arc<Gate> {
        Arc::new(Gate::default())
    }

    /// Opens the gate for every waiter, present and future.
    pub fn open(&self) {
        *lock(&self.open) = true;
        self.changed.notify_all();
    }

    /// `true` once opened.
    pub fn is_open(&self) -> bool {
        *lock(&self.open)
    }

    /// Waits until the gate opens (or [`HANG_GUARD`] passes); `true` when it opened.
    pub fn wait(&self) -> bool {
        let deadline = Instant::now() + HANG_GUARD;
        let mut open = lock(&self.open);
        while !*open {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            open = self
                .changed
                .wait_timeout(open, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }
}

/// Takes the next event from `queue`, waiting at most [`HANG_GUARD`].
pub fn take_event(queue: &CompletionQueue) -> Option<Event> {
    queue.take_timeout(HANG_GUARD)
}

/// Takes the next event from `queue` and returns it when it is an `async_delegation`.
pub fn take_delegation(queue: &CompletionQueue) -> Option<AsyncDelegationEvent> {
    match take_event(queue)? {
        Event::AsyncDelegation(event) => Some(event),
        _ => None,
    }
}

/// Polls `condition` every millisecond until it holds or [`HANG_GUARD`] passes; returns
/// its last value.
pub fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// What a [`ScriptedChild`] does when run.
pub type Script =
    Arc<dyn Fn(&ScriptedChild, &ChildTask) -> Result<DelegationResult, RunnerError> + Send + Sync>;

/// A child agent whose `run` is a script; it records interrupts and closes.
pub struct ScriptedChild {
    script: Script,
    interrupted: AtomicBool,
    interrupts: Mutex<Vec<String>>,
    closes: AtomicUsize,
}

impl std::fmt::Debug for ScriptedChild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedChild")
            .field("interrupts", &self.interrupt_reasons())
            .field("closes", &self.close_count())
            .finish_non_exhaustive()
    }
}

impl ScriptedChild {
    /// `true` once interrupted.
    pub fn is_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }

    /// The reasons of every interrupt received, in order.
    pub fn interrupt_reasons(&self) -> Vec<String> {
        lock(&self.interrupts).clone()
    }

    /// How many times the tool closed it.
    pub fn close_count(&self) -> usize {
        self.closes.load(Ordering::SeqCst)
    }
}

impl ChildAgent for ScriptedChild {
    fn run(&self, task: &ChildTask) -> Result<DelegationResult, RunnerError> {
        (self.script)(self, task)
    }

    fn interrupt(&self, reason: &str) {
        lock(&self.interrupts).push(reason.to_owned());
        self.interrupted.store(true, Ordering::SeqCst);
    }

    fn close(&self) {
        self.closes.fetch_add(1, Ordering::SeqCst);
    }

    fn model(&self) -> Option<String> {
        Some("m".to_owned())
    }
}

/// A backend building [`ScriptedChild`]ren that all run the same script; it keeps every
/// child it built.
pub struct ScriptedBackend {
    script: Script,
    register_on_build: bool,
    built: Mutex<Vec<Arc<ScriptedChild>>>,
}

impl std::fmt::Debug for ScriptedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedBackend")
            .field("built", &lock(&self.built).len())
            .finish_non_exhaustive()
    }
}

impl ScriptedBackend {
    /// A backend whose children run `script`.
    pub fn new(
        script: impl Fn(&ScriptedChild, &ChildTask) -> Result<DelegationResult, RunnerError>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        ScriptedBackend {
            script: Arc::new(script),
            register_on_build: false,
            built: Mutex::new(Vec::new()),
        }
    }

    /// Children wait on `gate`, then complete with `done: {goal}` (or return
    /// `interrupted` as soon as they are interrupted).
    pub fn gated(gate: &Arc<Gate>) -> Self {
        let gate = Arc::clone(gate);
        Self::new(move |child, task| {
            while !gate.is_open() {
                if child.is_interrupted() {
                    return Ok(DelegationResult::interrupted(
                        child.interrupt_reasons().join(", "),
                    ));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(DelegationResult {
                status: Some("completed".into()),
                summary: Some(format!("done: {}", task.goal).into()),
                api_calls: Some(1),
                duration_seconds: Some(0.1),
                model: Some("m".into()),
                exit_reason: Some("completed".into()),
                ..DelegationResult::default()
            })
        })
    }

    /// Registers each built child in its parent's active children, as the Python harness's
    /// builder did (the tool must detach background children again).
    pub fn registering_on_build(mut self) -> Self {
        self.register_on_build = true;
        self
    }

    /// Every child built so far.
    pub fn built(&self) -> Vec<Arc<ScriptedChild>> {
        lock(&self.built).clone()
    }
}

impl ChildBackend for ScriptedBackend {
    type Credentials = ();
    type Child = ScriptedChild;

    fn resolve_credentials(
        &self,
        _: &dyn ParentAgent,
        _: &DelegationConfig,
    ) -> Result<(), BackendError> {
        Ok(())
    }

    fn build_child(
        &self,
        _task: &ChildTask,
        _credentials: &(),
        parent: &dyn ParentAgent,
    ) -> Result<Arc<ScriptedChild>, BackendError> {
        let child = Arc::new(ScriptedChild {
            script: Arc::clone(&self.script),
            interrupted: AtomicBool::new(false),
            interrupts: Mutex::new(Vec::new()),
            closes: AtomicUsize::new(0),
        });
        if self.register_on_build {
            parent.register_child(child.clone());
        }
        lock(&self.built).push(Arc::clone(&child));
        Ok(child)
    }
}

/// The async-delegation event of the Python harness's gateway tests (`_make_async_evt`).
pub fn make_async_event() -> AsyncDelegationEvent {
    let value = serde_json::json!({
        "type": "async_delegation",
        "delegation_id": "deleg_x1",
        "session_key": "agent:main:telegram:dm:12345:678",
        "goal": "Investigate flaky test",
        "context": "repo /tmp/p",
        "toolsets": ["terminal"],
        "role": "leaf",
        "model": "m",
        "status": "completed",
        "summary": "Found the bug in test_foo",
        "api_calls": 4,
        "duration_seconds": 12.0,
        "dispatched_at": 1000.0,
        "completed_at": 1012.0,
    });
    match Event::from_value(value) {
        Ok(Event::AsyncDelegation(event)) => event,
        // The literal above is a well-formed async_delegation event.
        _ => AsyncDelegationEvent::default(),
    }
}
