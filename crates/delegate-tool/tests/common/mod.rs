//! Fakes shared by the integration tests: a scriptable backend and child, gates.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use async_delegation::{DelegationEngine, DelegationResult, RunnerError, Steering};
use delegate_tool::{
    BackendError, ChildAgent, ChildBackend, ChildTask, DelegateContext, DelegationConfig,
    ParentAgent,
};
use process_registry::{AsyncDelegationEvent, CompletionQueue, Event};
use serde_json::Value;

/// Only a guard against hangs: no test relies on anything taking this long.
pub const HANG_GUARD: Duration = Duration::from_secs(20);

/// What a fake child does when run.
pub type RunFn =
    Arc<dyn Fn(&FakeChild, &ChildTask) -> Result<DelegationResult, RunnerError> + Send + Sync>;

/// A gate children wait on until the test opens it (or the child is interrupted).
#[derive(Default)]
pub struct Gate {
    open: Mutex<bool>,
    changed: Condvar,
}

impl Gate {
    pub fn new() -> Arc<Gate> {
        Arc::new(Gate::default())
    }

    pub fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.changed.notify_all();
    }

    /// Waits until the gate opens or `child` is interrupted; `true` when interrupted.
    pub fn wait(&self, child: &FakeChild) -> bool {
        let deadline = Instant::now() + HANG_GUARD;
        let mut open = self.open.lock().unwrap();
        while !*open && !child.is_interrupted() && Instant::now() < deadline {
            // Short waits so an interrupt (which does not know the gate) is noticed.
            open = self
                .changed
                .wait_timeout(open, Duration::from_millis(5))
                .unwrap()
                .0;
        }
        child.is_interrupted()
    }
}

/// A child that records what happened to it.
pub struct FakeChild {
    pub task: ChildTask,
    run: RunFn,
    model: Option<String>,
    interrupted: AtomicBool,
    pub interrupts: Mutex<Vec<String>>,
    pub runs: AtomicUsize,
    pub closes: AtomicUsize,
    pub run_thread: Mutex<Option<String>>,
    steerable: bool,
    steering: Mutex<Option<Steering>>,
    reports: bool,
    pub progress: Mutex<Option<async_delegation::Progress>>,
}

impl FakeChild {
    pub fn is_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }
    pub fn interrupt_reasons(&self) -> Vec<String> {
        self.interrupts.lock().unwrap().clone()
    }
    pub fn run_count(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }
    pub fn close_count(&self) -> usize {
        self.closes.load(Ordering::SeqCst)
    }
    pub fn as_dyn(self: &Arc<Self>) -> Arc<dyn ChildAgent> {
        self.clone()
    }
    /// What the child's steering holds now, taken (as a steerable child does at a
    /// delivery boundary); empty when it runs without steering.
    pub fn take_steer(&self) -> Vec<String> {
        self.steering
            .lock()
            .unwrap()
            .as_ref()
            .map(|steering| steering.take().iter().map(|t| t.to_string()).collect())
            .unwrap_or_default()
    }
}

impl ChildAgent for FakeChild {
    fn run(&self, task: &ChildTask) -> Result<DelegationResult, RunnerError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        *self.run_thread.lock().unwrap() = std::thread::current().name().map(str::to_owned);
        (self.run)(self, task)
    }
    fn interrupt(&self, reason: &str) {
        self.interrupts.lock().unwrap().push(reason.to_owned());
        self.interrupted.store(true, Ordering::SeqCst);
    }
    fn close(&self) {
        self.closes.fetch_add(1, Ordering::SeqCst);
    }
    fn model(&self) -> Option<String> {
        self.model.clone()
    }
    fn accepts_steering(&self) -> bool {
        self.steerable
    }
    fn reports_progress(&self) -> bool {
        self.reports
    }
    fn run_background(
        &self,
        task: &ChildTask,
        run: &delegate_tool::BackgroundRun,
    ) -> Result<DelegationResult, RunnerError> {
        *self.steering.lock().unwrap() = run.steering().cloned();
        *self.progress.lock().unwrap() = run.progress().cloned();
        self.run(task)
    }
}

/// A backend that builds [`FakeChild`]ren running `run`.
pub struct FakeBackend {
    pub run: RunFn,
    /// `Err(text)` makes credential resolution fail with `text`.
    pub credentials: Result<String, String>,
    /// Register each built child in the parent, as the Python harness's builder did.
    pub register_on_build: bool,
    /// Building a child for this goal fails.
    pub fail_build_goal: Option<String>,
    pub model: Option<String>,
    /// Children accept steering.
    pub steerable: bool,
    /// Children report progress (the engine's stall monitor watches them).
    pub reports_progress: bool,
    pub built: Mutex<Vec<Arc<FakeChild>>>,
    pub credential_calls: AtomicUsize,
}

impl FakeBackend {
    pub fn new(
        run: impl Fn(&FakeChild, &ChildTask) -> Result<DelegationResult, RunnerError>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        FakeBackend {
            run: Arc::new(run),
            credentials: Ok("m".to_owned()),
            register_on_build: false,
            fail_build_goal: None,
            model: Some("m".to_owned()),
            steerable: false,
            reports_progress: false,
            built: Mutex::new(Vec::new()),
            credential_calls: AtomicUsize::new(0),
        }
    }

    /// Children complete at once with `done: {goal}`.
    pub fn instant() -> Self {
        Self::new(|_, task| Ok(DelegationResult::completed(format!("done: {}", task.goal))))
    }

    /// Children wait on `gate` (returning `interrupted` when interrupted first).
    pub fn gated(gate: &Arc<Gate>) -> Self {
        let gate = Arc::clone(gate);
        Self::new(move |child, task| {
            if gate.wait(child) {
                return Ok(DelegationResult::interrupted(
                    child.interrupt_reasons().join(", "),
                ));
            }
            Ok(DelegationResult {
                api_calls: Some(1),
                duration_seconds: Some(0.1),
                model: Some("m".into()),
                exit_reason: Some("completed".into()),
                ..DelegationResult::completed(format!("done: {}", task.goal))
            })
        })
    }

    pub fn built(&self) -> Vec<Arc<FakeChild>> {
        self.built.lock().unwrap().clone()
    }

    pub fn only_child(&self) -> Arc<FakeChild> {
        let built = self.built();
        assert_eq!(built.len(), 1, "expected exactly one built child");
        built[0].clone()
    }
}

impl ChildBackend for FakeBackend {
    type Credentials = String;
    type Child = FakeChild;

    fn resolve_credentials(
        &self,
        _parent: &dyn ParentAgent,
        _config: &DelegationConfig,
    ) -> Result<String, BackendError> {
        self.credential_calls.fetch_add(1, Ordering::SeqCst);
        self.credentials.clone().map_err(Into::into)
    }

    fn build_child(
        &self,
        task: &ChildTask,
        credentials: &String,
        parent: &dyn ParentAgent,
    ) -> Result<Arc<FakeChild>, BackendError> {
        assert_eq!(credentials, "m");
        if self.fail_build_goal.as_deref() == Some(task.goal.as_str()) {
            return Err("boom".into());
        }
        let child = Arc::new(FakeChild {
            task: task.clone(),
            run: Arc::clone(&self.run),
            model: self.model.clone(),
            interrupted: AtomicBool::new(false),
            interrupts: Mutex::new(Vec::new()),
            runs: AtomicUsize::new(0),
            closes: AtomicUsize::new(0),
            run_thread: Mutex::new(None),
            steerable: self.steerable,
            steering: Mutex::new(None),
            reports: self.reports_progress,
            progress: Mutex::new(None),
        });
        if self.register_on_build {
            parent.register_child(child.clone());
        }
        self.built.lock().unwrap().push(Arc::clone(&child));
        Ok(child)
    }
}

/// A context on its own engine and queue.
pub fn context(
    backend: FakeBackend,
    config: DelegationConfig,
) -> (DelegateContext<FakeBackend>, CompletionQueue) {
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    (DelegateContext::new(config, engine, backend), queue)
}

pub fn parse(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("tool result is not JSON ({e}): {out}"))
}

/// The `error` text of a tool result, which must be exactly `{"error": …}`.
pub fn error_of(out: &str) -> String {
    let value = parse(out);
    let map = value.as_object().expect("an object");
    assert_eq!(map.len(), 1, "an error result has only `error`: {out}");
    map["error"].as_str().expect("error is a string").to_owned()
}

/// Takes the next event, which must be an `async_delegation` one.
pub fn take_delegation(queue: &CompletionQueue) -> AsyncDelegationEvent {
    match queue.take_timeout(HANG_GUARD) {
        Some(Event::AsyncDelegation(event)) => event,
        Some(other) => panic!("expected an async_delegation event, got {other:?}"),
        None => panic!("no completion event within {HANG_GUARD:?}"),
    }
}

/// Waits (at most the hang guard) until `cond` holds.
pub fn wait_until(mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + HANG_GUARD;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "condition not reached within the hang guard"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}
