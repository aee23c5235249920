//! User code that must never take the caller, or the whole process, down — values whose
//! `Display` and `Drop` both panic, panic payloads whose `Drop` panics, hooks holding the
//! last reference — and the defaults the engine writes where a runner reports nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_delegation::{DelegationEngine, DelegationResult, DelegationSpec, InterruptHook};
use crossbeam_channel::{bounded, Receiver, Sender};
use process_registry::{CompletionQueue, Event};

const HANG_GUARD: Duration = Duration::from_secs(20);

/// Runs the test `name` again in a child process with `EDGE_CHILD=name`, and returns
/// whether the child exited normally. An abort (a panic while panicking, a stack
/// overflow) shows up as a failed exit.
fn survives_in_a_child_process(name: &str) -> (bool, String) {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env("EDGE_CHILD", name)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (
        output.status.success(),
        format!("{:?}\n{stderr}", output.status),
    )
}

fn in_child(name: &str) -> bool {
    std::env::var("EDGE_CHILD").as_deref() == Ok(name)
}

/// Panics when dropped.
#[derive(Debug)]
struct DropBomb(&'static str);

impl Drop for DropBomb {
    fn drop(&mut self) {
        panic!("{} exploded on drop", self.0);
    }
}

/// A runner that waits for its release, then completes.
fn gated_runner() -> (
    impl FnOnce() -> Result<DelegationResult, async_delegation::RunnerError> + Send + 'static,
    Sender<()>,
) {
    let (release, released): (Sender<()>, Receiver<()>) = bounded(1);
    let runner = move || {
        let _ = released.recv_timeout(HANG_GUARD);
        Ok(DelegationResult::completed("done"))
    };
    (runner, release)
}

/// Issue 9 item 5: "interrupt_all / interrupt / interrupt_session let a panic escape on the
/// caller's thread when a hook's captured state panics on drop". The fix fences the drop of
/// a hook that *returned*; a hook that itself panics is dropped by `Iterator::filter`
/// (engine.rs `call_hooks`) outside any fence. When the delegation finished meanwhile,
/// that copy is the last one, and its captured state's panicking `Drop` unwinds into the
/// interrupting caller.
#[test]
fn a_panicking_hook_holding_the_last_reference_never_reaches_the_interrupter() {
    type Interrupt = fn(&DelegationEngine, &str) -> usize;
    let ways: [(&str, Interrupt); 3] = [
        ("interrupt_all", |engine, _| engine.interrupt_all("stop")),
        ("interrupt", |engine, id| {
            usize::from(engine.interrupt(id, "stop"))
        }),
        ("interrupt_session", |engine, _| {
            engine.interrupt_session("agent:main:telegram:dm:7", "stop")
        }),
    ];
    let mut escaped = Vec::new();
    for (name, interrupt) in ways {
        let queue = CompletionQueue::new();
        let engine = DelegationEngine::new(queue.clone());
        let (runner, release) = gated_runner();
        let watch = queue.clone();
        let bomb = DropBomb("hook state");
        let hook: InterruptHook = Arc::new(move |_reason: &str| {
            let _keep = &bomb;
            // Let the delegation finish and the engine drop its copy of this hook.
            let _ = release.send(());
            let deadline = Instant::now() + HANG_GUARD;
            while watch.is_empty() && Instant::now() < deadline {
                std::thread::yield_now();
            }
            std::thread::sleep(Duration::from_millis(100));
            panic!("the hook failed too");
        });
        let id = engine
            .try_dispatch(
                DelegationSpec::new("g").with_session_key("agent:main:telegram:dm:7"),
                runner,
                Some(hook),
                3,
            )
            .unwrap();
        let outcome = catch_unwind(AssertUnwindSafe(|| interrupt(&engine, &id)));
        match outcome {
            Ok(count) => assert_eq!(count, 0, "{name}: a panicking hook is not counted"),
            Err(_) => escaped.push(name),
        }
        assert!(matches!(
            queue.take_timeout(HANG_GUARD),
            Some(Event::AsyncDelegation(_))
        ));
    }
    assert!(
        escaped.is_empty(),
        "a hook state's panicking Drop escaped {escaped:?}"
    );
}

/// A runner error whose `Display` panics *and* whose `Drop` panics: the engine formats
/// it with `error.to_string()` on the owned error inside its fence, so unwinding out of
/// `Display` drops the error, whose `Drop` panics while panicking — the process aborts.
/// (delegate-tool's `fence::error_text` borrows the error inside the fence and drops it
/// in a fence of its own; the engine does not.) Every completion of every delegation is
/// lost with the process.
#[test]
fn a_runner_error_whose_display_and_drop_panic_is_still_one_completion() {
    const NAME: &str = "a_runner_error_whose_display_and_drop_panic_is_still_one_completion";
    #[derive(Debug)]
    struct Rude(#[allow(dead_code)] DropBomb);
    impl fmt::Display for Rude {
        fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
            panic!("display exploded")
        }
    }
    impl std::error::Error for Rude {}

    if in_child(NAME) {
        let queue = CompletionQueue::new();
        let engine = DelegationEngine::new(queue.clone());
        engine
            .try_dispatch(
                DelegationSpec::new("g"),
                || Err(Box::new(Rude(DropBomb("runner error"))) as _),
                None,
                1,
            )
            .unwrap();
        let Some(Event::AsyncDelegation(event)) = queue.take_timeout(HANG_GUARD) else {
            panic!("no completion");
        };
        assert_eq!(event.status.as_deref(), Some("error"));
        return;
    }
    let (ok, report) = survives_in_a_child_process(NAME);
    assert!(ok, "the process died: {report}");
}

/// Issue 9 ("check every other field the engine writes the same way"): the harness's
/// defaults are Python `or` defaults — `""` status is `completed`. The model falls back to
/// the spec's only when the runner set none; a runner reporting `model: ""` hides the
/// spec's model from every consumer (a Python `result.get("model") or model` would not).
/// (Probable finding: it follows the rule the issue states for `status`.)
#[test]
fn an_empty_model_from_the_runner_falls_back_to_the_spec_model() {
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    engine
        .try_dispatch(
            DelegationSpec::new("g").with_model("spec-model"),
            || {
                Ok(DelegationResult {
                    model: Some(String::new().into()),
                    ..DelegationResult::completed("s")
                })
            },
            None,
            1,
        )
        .unwrap();
    let Some(Event::AsyncDelegation(event)) = queue.take_timeout(HANG_GUARD) else {
        panic!("no completion");
    };
    assert_eq!(event.model.as_deref(), Some("spec-model"));
    assert_eq!(engine.list()[0].model.as_deref(), Some("spec-model"));
}

/// Coverage: a runner whose panic payload panics on drop costs nothing: one completion,
/// `panic: a non-string panic payload` (`panic_message` is called eagerly there).
#[test]
fn a_runner_panic_payload_that_panics_on_drop_is_fenced() {
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    engine
        .try_dispatch(
            DelegationSpec::new("payload"),
            || std::panic::panic_any(DropBomb("runner payload")),
            None,
            2,
        )
        .unwrap();
    let Some(Event::AsyncDelegation(event)) = queue.take_timeout(HANG_GUARD) else {
        panic!("no completion");
    };
    assert_eq!(
        event.error.as_deref(),
        Some("panic: a non-string panic payload")
    );
    assert_eq!(engine.active_count(), 0);
}

/// The engine fences the panic payloads of hooks and of dropped runners/hooks with
/// `tracing::warn!(panic = %panic_message(payload), …)` (engine.rs `call_hooks` and
/// `drop_fenced`). `tracing` evaluates field expressions only when the event is enabled:
/// with no subscriber (this test, and any program that logs nothing at WARN for this
/// target) `panic_message` never runs, and the payload is dropped unfenced at the end of
/// the arm. A payload whose `Drop` panics then escapes `interrupt_all` and `dispatch`.
/// Whether user code is fenced depends on the logging configuration.
#[test]
fn panic_payloads_are_fenced_without_a_tracing_subscriber() {
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    let mut escaped = Vec::new();

    // A hook that panics with a payload that panics on drop.
    let (runner, release) = gated_runner();
    let hook: InterruptHook = Arc::new(|_: &str| std::panic::panic_any(DropBomb("hook payload")));
    engine
        .try_dispatch(DelegationSpec::new("h"), runner, Some(hook), 2)
        .unwrap();
    match catch_unwind(AssertUnwindSafe(|| engine.interrupt_all("stop"))) {
        Ok(count) => assert_eq!(count, 0),
        Err(_) => escaped.push("interrupt_all (hook panic payload)"),
    }
    release.send(()).unwrap();
    assert!(queue.take_timeout(HANG_GUARD).is_some());

    // A refused runner whose Drop panics with such a payload.
    struct LoudDrop;
    impl Drop for LoudDrop {
        fn drop(&mut self) {
            std::panic::panic_any(DropBomb("runner drop payload"));
        }
    }
    let loud = LoudDrop;
    let refused = catch_unwind(AssertUnwindSafe(|| {
        engine.dispatch(
            DelegationSpec::new("refused"),
            move || {
                let _keep = &loud;
                Ok(DelegationResult::default())
            },
            None,
            0,
        )
    }));
    match refused {
        Ok(outcome) => assert!(!outcome.is_dispatched()),
        Err(_) => escaped.push("dispatch (refused runner's Drop payload)"),
    }
    assert!(escaped.is_empty(), "escaped: {escaped:?}");
}

/// Coverage: the api_calls default and the empty-status rule hold for a runner error
/// and for an `interrupted` result with no status text, on the wire as a Python consumer
/// reads it (never `null`).
#[test]
fn the_wire_never_carries_null_api_calls_or_an_empty_status() {
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    engine
        .try_dispatch(
            DelegationSpec::new("g"),
            || {
                Ok(DelegationResult {
                    status: Some(String::new().into()),
                    api_calls: None,
                    ..DelegationResult::interrupted("cancelled")
                })
            },
            None,
            1,
        )
        .unwrap();
    let event = queue.take_timeout(HANG_GUARD).unwrap();
    let wire = serde_json::to_string(&event).unwrap();
    assert!(wire.contains(r#""status":"completed""#), "{wire}");
    assert!(wire.contains(r#""api_calls":0"#), "{wire}");
    assert_eq!(engine.list()[0].status, "completed");
}
