//! The `delegate_task(background=true)` contract of the Python harness's test file, across
//! the real crates: the tool returns a handle at once, the child runs on the engine and its
//! completion lands on the queue; batches are refused; the child is detached from its
//! parent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_delegation::DelegationEngine;
use delegate_tool::{delegate_task, DelegateContext, DelegationConfig, Parent};
use integration_tests::{take_delegation, Gate, ScriptedBackend};
use process_registry::{format_process_notification, CompletionQueue, Event};
use serde_json::Value;

fn context(backend: ScriptedBackend) -> (DelegateContext<ScriptedBackend>, CompletionQueue) {
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    (
        DelegateContext::new(DelegationConfig::default(), engine, backend),
        queue,
    )
}

fn sess_parent() -> Parent {
    Parent::new(0).with_session_id("sess")
}

fn parse(out: &str) -> Value {
    serde_json::from_str(out).unwrap()
}

#[test]
fn test_delegate_task_background_routes_async_and_does_not_block() {
    let gate = Gate::new();
    let (ctx, queue) = context(ScriptedBackend::gated(&gate));
    let parent = sess_parent();

    let out = delegate_task(
        r#"{"goal": "the real task", "context": "ctx", "toolsets": ["web"], "background": true}"#,
        &parent,
        &ctx,
    );
    let parsed = parse(&out);
    assert_eq!(parsed["status"], "dispatched");
    assert_eq!(parsed["mode"], "background");
    assert!(parsed["delegation_id"]
        .as_str()
        .unwrap()
        .starts_with("deleg_"));
    // The call returned while the child is still held by the closed gate: no completion
    // exists yet and the child is running in the background.
    assert!(queue.is_empty());
    assert_eq!(ctx.engine.active_count(), 1);

    gate.open();
    let event = take_delegation(&queue).expect("a completion");
    assert_eq!(
        event.delegation_id.as_deref(),
        parsed["delegation_id"].as_str()
    );
    assert_eq!(event.summary.as_deref(), Some("done: the real task"));
    let text = format_process_notification(&Event::AsyncDelegation(event)).expect("a block");
    assert!(
        text.contains("the real task") && text.contains("ctx"),
        "{text}"
    );
}

#[test]
fn test_delegate_task_background_rejects_batch() {
    let (ctx, queue) = context(ScriptedBackend::gated(&Gate::new()));
    let parent = sess_parent();
    for args in [
        r#"{"tasks": [{"goal": "a"}, {"goal": "b"}], "background": true}"#,
        // Also when the batch comes as a JSON string (a deliberate difference: the harness only caught a list).
        r#"{"tasks": "[{\"goal\": \"a\"}, {\"goal\": \"b\"}]", "background": true}"#,
    ] {
        let parsed = parse(&delegate_task(args, &parent, &ctx));
        let error = parsed["error"].as_str().unwrap();
        assert!(error.contains("single-task only"), "{error}");
        assert_eq!(
            error,
            "background=true is single-task only. Dispatch one background subagent per \
             delegate_task call (each returns its own handle and re-enters the conversation \
             independently), or run the batch synchronously with background=false."
        );
    }
    assert!(ctx.backend.built().is_empty());
    assert!(queue.is_empty());
    assert_eq!(ctx.engine.active_count(), 0);
}

#[test]
fn test_delegate_task_background_detaches_child_from_parent() {
    let gate = Gate::new();
    let (ctx, queue) = context(ScriptedBackend::gated(&gate).registering_on_build());
    let parent = sess_parent();

    let out = delegate_task(r#"{"goal": "bg task", "background": true}"#, &parent, &ctx);
    assert_eq!(parse(&out)["status"], "dispatched");
    let built = ctx.backend.built();
    assert_eq!(built.len(), 1);
    // Detached at dispatch, while it is still running…
    let child: std::sync::Arc<dyn delegate_tool::ChildAgent> = built[0].clone();
    assert!(!parent.has_active_child(&child));
    assert_eq!(parent.active_child_count(), 0);
    assert_eq!(ctx.engine.active_count(), 1);
    // …so an interrupt of the parent's turn does not reach it.
    assert_eq!(parent.interrupt("parent turn interrupted"), 0);
    assert!(built[0].interrupt_reasons().is_empty());

    gate.open();
    let event = take_delegation(&queue).expect("a completion");
    assert_eq!(event.status.as_deref(), Some("completed"));
}
