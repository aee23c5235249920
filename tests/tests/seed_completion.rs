//! The completion contract of the Python harness's test file, across the real crates: every
//! dispatched delegation yields exactly one `async_delegation` event whose rendering is
//! self-contained — whether the runner returns, panics or is interrupted — and retention
//! stays capped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_delegation::{
    DelegationEngine, DelegationResult, DelegationSpec, InterruptHook, MAX_RETAINED_COMPLETED,
};
use integration_tests::{take_delegation, wait_until, Gate};
use process_registry::{format_process_notification, CompletionQueue, Event};

#[test]
fn test_rich_reinjection_block_is_self_contained() {
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    let outcome = engine.dispatch(
        DelegationSpec::new("Compute the meaning of life")
            .with_context("User is a philosopher. Respond tersely.")
            .with_toolsets(["web"])
            .with_role("leaf")
            .with_model("test-model"),
        || {
            Ok(DelegationResult {
                status: Some("completed".into()),
                summary: Some("The answer is 42.".into()),
                api_calls: Some(7),
                duration_seconds: Some(3.5),
                model: Some("test-model".into()),
                ..DelegationResult::default()
            })
        },
        None,
        3,
    );
    assert!(outcome.is_dispatched());
    let event = take_delegation(&queue).expect("a completion");
    let text = format_process_notification(&Event::AsyncDelegation(event)).expect("a block");
    for needle in [
        "ASYNC DELEGATION COMPLETE",
        "Compute the meaning of life",
        "User is a philosopher",
        "Toolsets: web",
        "The answer is 42.",
        "Status: completed",
        "API calls: 7",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    // The exact lines of the block that do not depend on the clock.
    let id = outcome.delegation_id().unwrap();
    assert!(
        text.starts_with(&format!("[ASYNC DELEGATION COMPLETE — {id}]\n")),
        "{text}"
    );
    assert!(
        text.contains(
            "\nOriginal goal: Compute the meaning of life\n\
         Context you provided: User is a philosopher. Respond tersely.\n\
         Toolsets: web\n\
         Role: leaf   Model: test-model\n\
         Status: completed   API calls: 7   Duration: 3.5s\n\
         --- RESULT ---\n\
         The answer is 42."
        ),
        "{text}"
    );
}

#[test]
fn test_crashed_runner_produces_error_completion() {
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    let outcome = engine.dispatch(
        DelegationSpec::new("risky")
            .with_role("leaf")
            .with_model("m"),
        || -> Result<DelegationResult, async_delegation::RunnerError> {
            panic!("subagent exploded")
        },
        None,
        3,
    );
    assert!(outcome.is_dispatched());
    let event = take_delegation(&queue).expect("a completion despite the panic");
    assert_eq!(event.status.as_deref(), Some("error"));
    let text = format_process_notification(&Event::AsyncDelegation(event)).expect("a block");
    assert!(text.contains("did not complete successfully"), "{text}");
    assert!(text.contains("subagent exploded"), "{text}");
    assert!(
        text.contains("The subagent did not complete successfully (status=error).\n"),
        "{text}"
    );

    // No slot leaked: the engine is fully usable at capacity 1.
    assert!(wait_until(|| engine.active_count() == 0));
    let again = engine.dispatch(
        DelegationSpec::new("after"),
        || Ok(DelegationResult::completed("ok")),
        None,
        1,
    );
    assert!(again.is_dispatched());
    assert_eq!(
        take_delegation(&queue).unwrap().summary.as_deref(),
        Some("ok")
    );
}

#[test]
fn test_interrupt_all_signals_running_children() {
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    let gate = Gate::new();
    let interrupted = Arc::new(AtomicUsize::new(0));

    let runner_gate = Arc::clone(&gate);
    let hook_gate = Arc::clone(&gate);
    let hook_count = Arc::clone(&interrupted);
    let hook: InterruptHook = Arc::new(move |_reason: &str| {
        hook_count.fetch_add(1, Ordering::SeqCst);
        hook_gate.open();
    });
    let outcome = engine.dispatch(
        DelegationSpec::new("long task")
            .with_role("leaf")
            .with_model("m"),
        move || {
            runner_gate.wait();
            Ok(DelegationResult {
                status: Some("interrupted".into()),
                summary: None,
                error: Some("cancelled".into()),
                ..DelegationResult::default()
            })
        },
        Some(hook),
        3,
    );
    assert!(outcome.is_dispatched());

    assert_eq!(engine.interrupt_all("test"), 1);
    assert_eq!(interrupted.load(Ordering::SeqCst), 1);
    // The child still emits its completion after the interrupt.
    let event = take_delegation(&queue).expect("a completion after the interrupt");
    assert_eq!(event.status.as_deref(), Some("interrupted"));
    let text = format_process_notification(&Event::AsyncDelegation(event)).expect("a block");
    assert!(
        text.ends_with("The subagent was interrupted before completing: cancelled"),
        "{text}"
    );
}

#[test]
fn test_completed_records_pruned_to_cap() {
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    let total = MAX_RETAINED_COMPLETED + 10;
    for i in 0..total {
        let outcome = engine.dispatch(
            DelegationSpec::new(format!("t{i}"))
                .with_role("leaf")
                .with_model("m"),
            || Ok(DelegationResult::completed("ok")),
            None,
            MAX_RETAINED_COMPLETED + 20,
        );
        assert!(outcome.is_dispatched());
    }
    assert!(wait_until(|| engine.active_count() == 0));
    assert!(engine.list().len() <= MAX_RETAINED_COMPLETED);
    // Pruning touches the records only: every completion was delivered.
    assert_eq!(queue.drain().len(), total);
}
