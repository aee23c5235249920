//! Hostile user code and values never unwind into, nor abort, the caller: a child whose
//! `interrupt` panics with a payload that panics on drop, a child whose last handle
//! panics on drop, errors whose `Display` and `Drop` both panic, a `model()` panic with a
//! bomb payload — through `delegate_task` and through the crate's own `Parent` handle —
//! nor does a setting nested 100 000 levels deep in `DelegationConfig::from_value`.
//! (First written as a hostile review's failing tests.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use async_delegation::{DelegationEngine, DelegationResult, RunnerError};
use delegate_tool::{
    delegate_task, BackendError, ChildAgent, ChildBackend, ChildTask, DelegateContext,
    DelegationConfig, Parent, ParentAgent,
};
use process_registry::{CompletionQueue, Event};

const HANG_GUARD: Duration = Duration::from_secs(20);

/// Panics when dropped.
#[derive(Debug)]
struct DropBomb(&'static str);

impl Drop for DropBomb {
    fn drop(&mut self) {
        panic!("{} exploded on drop", self.0);
    }
}

/// An error whose `Display` panics and whose `Drop` panics: formatting it while owning it
/// inside a fence would abort the process (a panic while panicking).
#[derive(Debug)]
struct Rude(#[allow(dead_code)] DropBomb);

impl fmt::Display for Rude {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        panic!("display exploded")
    }
}

impl std::error::Error for Rude {}

fn rude(what: &'static str) -> Box<Rude> {
    Box::new(Rude(DropBomb(what)))
}

#[derive(Default)]
struct Flag {
    set: Mutex<bool>,
    changed: Condvar,
}

impl Flag {
    fn raise(&self) {
        *self.set.lock().unwrap() = true;
        self.changed.notify_all();
    }
    fn wait(&self) {
        let deadline = Instant::now() + HANG_GUARD;
        let mut set = self.set.lock().unwrap();
        while !*set && Instant::now() < deadline {
            set = self
                .changed
                .wait_timeout(set, Duration::from_millis(5))
                .unwrap()
                .0;
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    /// `run` returns an error whose Display and Drop panic.
    RudeRunError,
    /// `model()` panics with a payload that panics on drop.
    ModelPanicsWithBomb,
    /// `interrupt` panics with a payload that panics on drop.
    InterruptPanicsWithBomb,
    /// `run` waits for an interrupt; `interrupt` then waits until the tool call returned;
    /// the child's `Drop` panics.
    LastHandleBomb,
    Fine,
}

struct Child {
    behaviour: Behaviour,
    interrupted: AtomicBool,
    closes: Arc<AtomicUsize>,
    tool_returned: Arc<Flag>,
    _bomb: Option<DropBomb>,
}

impl ChildAgent for Child {
    fn run(&self, _task: &ChildTask) -> Result<DelegationResult, RunnerError> {
        match self.behaviour {
            Behaviour::RudeRunError => Err(rude("run error")),
            Behaviour::LastHandleBomb => {
                let deadline = Instant::now() + HANG_GUARD;
                while !self.interrupted.load(Ordering::SeqCst) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Ok(DelegationResult::interrupted("stopped"))
            }
            _ => Ok(DelegationResult::completed("ok")),
        }
    }

    fn interrupt(&self, _reason: &str) {
        match self.behaviour {
            Behaviour::InterruptPanicsWithBomb => {
                std::panic::panic_any(DropBomb("interrupt payload"))
            }
            Behaviour::LastHandleBomb => {
                self.interrupted.store(true, Ordering::SeqCst);
                // Keep the interrupter inside this call until the tool is done with us.
                self.tool_returned.wait();
            }
            _ => self.interrupted.store(true, Ordering::SeqCst),
        }
    }

    fn close(&self) {
        self.closes.fetch_add(1, Ordering::SeqCst);
    }

    fn model(&self) -> Option<String> {
        if self.behaviour == Behaviour::ModelPanicsWithBomb {
            std::panic::panic_any(DropBomb("model payload"));
        }
        Some("m".into())
    }
}

struct Backend {
    behaviour: Behaviour,
    rude_credentials: bool,
    rude_build: bool,
    closes: Arc<AtomicUsize>,
    tool_returned: Arc<Flag>,
}

impl Backend {
    fn new(behaviour: Behaviour) -> Self {
        Backend {
            behaviour,
            rude_credentials: false,
            rude_build: false,
            closes: Arc::default(),
            tool_returned: Arc::default(),
        }
    }
}

impl ChildBackend for Backend {
    type Credentials = ();
    type Child = Child;

    fn resolve_credentials(
        &self,
        _: &dyn ParentAgent,
        _: &DelegationConfig,
    ) -> Result<(), BackendError> {
        if self.rude_credentials {
            return Err(rude("credentials error"));
        }
        Ok(())
    }

    fn build_child(
        &self,
        _: &ChildTask,
        _: &(),
        _: &dyn ParentAgent,
    ) -> Result<Arc<Child>, BackendError> {
        if self.rude_build {
            return Err(rude("build error"));
        }
        Ok(Arc::new(Child {
            behaviour: self.behaviour,
            interrupted: AtomicBool::new(false),
            closes: Arc::clone(&self.closes),
            tool_returned: Arc::clone(&self.tool_returned),
            _bomb: (self.behaviour == Behaviour::LastHandleBomb).then(|| DropBomb("child")),
        }))
    }
}

fn context(backend: Backend) -> (DelegateContext<Backend>, CompletionQueue) {
    let queue = CompletionQueue::new();
    let ctx = DelegateContext::new(
        DelegationConfig::default(),
        DelegationEngine::new(queue.clone()),
        backend,
    );
    (ctx, queue)
}

/// `Parent::interrupt` (what a gateway calls when the user presses stop) fences each
/// child's `interrupt` including the drop of its panic payload: a child that panics with
/// a payload whose `Drop` panics is not counted, and nothing reaches the caller.
#[test]
fn parent_interrupt_survives_a_child_panic_whose_payload_panics_on_drop() {
    let backend = Backend::new(Behaviour::InterruptPanicsWithBomb);
    let child: Arc<dyn ChildAgent> = backend.build_child(&task(), &(), &Parent::new(0)).unwrap();
    let parent = Parent::new(0);
    parent.register_child(child);
    let outcome = catch_unwind(AssertUnwindSafe(|| parent.interrupt("stop")));
    assert_eq!(
        outcome.ok(),
        Some(0),
        "the panic of the payload's Drop escaped"
    );
}

/// `Parent::interrupt` snapshots the children and calls them outside its lock. When a
/// synchronous child's run ends meanwhile (the interrupt is what ends it) the tool
/// unregisters and drops its handles, so the snapshot holds the last one: its panicking
/// `Drop` is fenced there too, and the child still counts as signalled.
#[test]
fn parent_interrupt_fences_the_drop_of_the_last_child_handle() {
    let backend = Backend::new(Behaviour::LastHandleBomb);
    let tool_returned = Arc::clone(&backend.tool_returned);
    let closes = Arc::clone(&backend.closes);
    let (ctx, _queue) = context(backend);
    let parent = Parent::new(0);
    let outcome = std::thread::scope(|scope| {
        let tool = scope.spawn(|| {
            let out = delegate_task(r#"{"goal": "wait for stop"}"#, &parent, &ctx);
            tool_returned.raise();
            out
        });
        let deadline = Instant::now() + HANG_GUARD;
        while parent.active_child_count() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| parent.interrupt("user pressed stop")));
        let out = tool.join().unwrap();
        assert!(out.contains(r#""status":"interrupted""#), "{out}");
        outcome
    });
    assert_eq!(closes.load(Ordering::SeqCst), 1);
    assert_eq!(
        outcome.ok(),
        Some(1),
        "the child's panicking Drop escaped Parent::interrupt"
    );
}

fn task() -> ChildTask {
    ChildTask {
        task_index: 0,
        goal: "g".into(),
        context: None,
        toolsets: None,
        role: delegate_tool::Role::Leaf,
        depth: 1,
        max_iterations: 50,
        background: false,
    }
}

/// The three user errors (child run error, credentials error, build error) with a
/// `Display` *and* a `Drop` that panic — the double panic that would abort a naive
/// fence — read `panic while formatting the error: display exploded`
/// in sync and background modes, and the background child is closed once.
#[test]
fn errors_whose_display_and_drop_both_panic_read_as_text_in_every_mode() {
    let expected = "panic while formatting the error: display exploded";

    let mut backend = Backend::new(Behaviour::Fine);
    backend.rude_credentials = true;
    let (ctx, _) = context(backend);
    let out = delegate_task(r#"{"goal": "g"}"#, &Parent::new(0), &ctx);
    assert_eq!(out, format!(r#"{{"error":"{expected}"}}"#));

    let mut backend = Backend::new(Behaviour::Fine);
    backend.rude_build = true;
    let (ctx, _) = context(backend);
    let out = delegate_task(
        r#"{"goal": "g", "background": true}"#,
        &Parent::new(0),
        &ctx,
    );
    assert_eq!(
        out,
        format!(r#"{{"error":"Failed to build the subagent: {expected}"}}"#)
    );
    let out = delegate_task(
        r#"{"tasks": [{"goal": "a"}, {"goal": "b"}]}"#,
        &Parent::new(0),
        &ctx,
    );
    assert_eq!(
        out.matches(&format!("Failed to build the subagent: {expected}"))
            .count(),
        2,
        "{out}"
    );

    let backend = Backend::new(Behaviour::RudeRunError);
    let closes = Arc::clone(&backend.closes);
    let (ctx, queue) = context(backend);
    let out = delegate_task(r#"{"goal": "g"}"#, &Parent::new(0), &ctx);
    assert!(out.contains(expected), "{out}");
    let out = delegate_task(
        r#"{"goal": "g", "background": true}"#,
        &Parent::new(0),
        &ctx,
    );
    assert!(out.contains(r#""status":"dispatched""#), "{out}");
    let Some(Event::AsyncDelegation(event)) = queue.take_timeout(HANG_GUARD) else {
        panic!("no completion");
    };
    assert_eq!(event.error.as_deref(), Some(expected));
    assert_eq!(closes.load(Ordering::SeqCst), 2, "each child closed once");
}

/// `model()` panicking with a payload that panics on drop, after the child was
/// detached, fails the call like a build and closes the child exactly once; nothing is
/// queued and nothing escapes.
#[test]
fn a_model_panic_with_a_bomb_payload_fails_the_call_and_closes_the_child_once() {
    let backend = Backend::new(Behaviour::ModelPanicsWithBomb);
    let closes = Arc::clone(&backend.closes);
    let (ctx, queue) = context(backend);
    let parent = Parent::new(0);
    let out = catch_unwind(AssertUnwindSafe(|| {
        delegate_task(r#"{"goal": "g", "background": true}"#, &parent, &ctx)
    }))
    .expect("no panic escapes delegate_task");
    assert_eq!(
        out,
        r#"{"error":"Failed to build the subagent: panic: a non-string panic payload"}"#
    );
    assert_eq!(closes.load(Ordering::SeqCst), 1);
    assert_eq!(parent.active_child_count(), 0);
    assert!(queue.is_empty() && ctx.engine.active_count() == 0);
}

/// `DelegationConfig::from_value` takes any `Value`: a setting nested 100 000 levels deep
/// (a `Value` built by a YAML/TOML loader, or by code) is `ConfigError::InvalidSetting`
/// naming its kind, not a stack overflow that aborts the process. Run in a child process,
/// since the failure it guards against is an abort.
#[test]
fn config_from_a_setting_nested_100_000_deep_is_an_error_not_a_stack_overflow() {
    const NAME: &str = "config_from_a_setting_nested_100_000_deep_is_an_error_not_a_stack_overflow";
    if std::env::var("HOSTILE_CHILD").as_deref() == Ok(NAME) {
        let mut deep = serde_json::Value::Null;
        for _ in 0..100_000 {
            deep = serde_json::Value::Array(vec![deep]);
        }
        let mut map = serde_json::Map::new();
        map.insert("max_concurrent_children".into(), deep);
        let config = serde_json::Value::Object(map);
        let error = DelegationConfig::from_value(&config).unwrap_err();
        assert_eq!(
            error.to_string(),
            "delegation.max_concurrent_children must be a non-negative integer, got a deeply nested array"
        );
        std::mem::forget(config); // `Value`'s own drop recurses too
        return;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
        .env("HOSTILE_CHILD", NAME)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the process died: {:?}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}
