//! Background routing: `delegate_task(background=true)` dispatches one child on
//! the engine and returns at once; the child is detached from its parent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use async_delegation::DelegationResult;
use common::{context, error_of, parse, take_delegation, wait_until, FakeBackend, Gate};
use delegate_tool::{
    delegate_task, DelegationConfig, Parent, ParentAgent, ASYNC_CANCEL_REASON, BACKGROUND_NOTE,
};
use process_registry::{format_process_notification, Event};

fn sess_parent() -> Parent {
    Parent::new(0).with_session_id("sess")
}

#[test]
fn test_delegate_task_background_routes_async_and_does_not_block() {
    let gate = Gate::new();
    let (ctx, queue) = context(FakeBackend::gated(&gate), DelegationConfig::default());
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
    // The non-blocking invariant without a clock: the call returned while the child is
    // still blocked on the closed gate, so no completion exists yet.
    assert!(queue.is_empty());
    assert_eq!(ctx.engine.active_count(), 1);

    gate.open();
    let event = take_delegation(&queue);
    assert_eq!(
        event.delegation_id.as_deref(),
        parsed["delegation_id"].as_str()
    );
    assert_eq!(event.summary.as_deref(), Some("done: the real task"));
    assert_eq!(event.goal, "the real task");
    assert_eq!(event.context.as_deref(), Some("ctx"));
    assert_eq!(event.toolsets.as_deref(), Some(&["web".into()][..]));
    let text = format_process_notification(&Event::AsyncDelegation(event))
        .expect("an async delegation renders");
    assert!(
        text.contains("the real task") && text.contains("ctx"),
        "{text}"
    );
    assert!(text.contains("Original goal: the real task"), "{text}");
    assert!(text.contains("Context you provided: ctx"), "{text}");
    assert!(text.contains("done: the real task"), "{text}");
}

#[test]
fn test_delegate_task_background_rejects_batch() {
    let (ctx, queue) = context(FakeBackend::instant(), DelegationConfig::default());
    let parent = sess_parent();
    for args in [
        r#"{"tasks": [{"goal": "a"}, {"goal": "b"}], "background": true}"#,
        r#"{"tasks": "[{\"goal\": \"a\"}, {\"goal\": \"b\"}]", "background": true}"#,
    ] {
        let error = error_of(&delegate_task(args, &parent, &ctx));
        assert!(error.contains("single-task only"), "{error}");
    }
    assert!(ctx.backend.built().is_empty());
    assert!(queue.is_empty());
}

#[test]
fn test_delegate_task_background_detaches_child_from_parent() {
    let gate = Gate::new();
    let mut backend = FakeBackend::gated(&gate);
    // Mirror the Python harness's builder, which registers the child for interrupt propagation.
    backend.register_on_build = true;
    let (ctx, queue) = context(backend, DelegationConfig::default());
    let parent = sess_parent();

    let out = delegate_task(r#"{"goal": "bg task", "background": true}"#, &parent, &ctx);
    assert_eq!(parse(&out)["status"], "dispatched");
    let child = ctx.backend.only_child();
    // Detached at dispatch, while it is still running.
    assert!(!parent.has_active_child(&child.as_dyn()));
    assert_eq!(parent.active_child_count(), 0);
    assert_eq!(ctx.engine.active_count(), 1);
    // So the parent's interrupts no longer reach it.
    assert_eq!(parent.interrupt("parent turn interrupted"), 0);
    assert!(child.interrupt_reasons().is_empty());

    gate.open();
    let event = take_delegation(&queue);
    assert_eq!(event.status.as_deref(), Some("completed"));
}

#[test]
fn dispatched_result_has_the_spec_keys_in_order() {
    let (ctx, queue) = context(FakeBackend::instant(), DelegationConfig::default());
    let out = delegate_task(
        r#"{"goal": "say \"hi\"", "background": "yes"}"#,
        &sess_parent(),
        &ctx,
    );
    let id = parse(&out)["delegation_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 14);
    assert!(id[6..]
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    let expected = format!(
        r#"{{"status":"dispatched","delegation_id":"{id}","goal":"say \"hi\"","mode":"background","note":"{BACKGROUND_NOTE}"}}"#
    );
    assert_eq!(out, expected);
    assert_eq!(
        BACKGROUND_NOTE,
        "Subagent is running in the background. You and the user can keep working; the full task source and result will re-enter the conversation as a new message when it finishes. Do not wait or poll — just continue."
    );
    take_delegation(&queue);
}

#[test]
fn spec_restates_role_toolsets_model_and_the_session_key_captured_at_call_time() {
    let gate = Gate::new();
    let (ctx, queue) = context(FakeBackend::gated(&gate), DelegationConfig::default());
    let parent = sess_parent().with_session_key("agent:main:telegram:dm:12345:678");
    let out = delegate_task(
        r#"{"tasks": [{"goal": "g", "toolsets": ["web", "file"], "role": "orchestrator"}], "background": 1}"#,
        &parent,
        &ctx,
    );
    assert_eq!(parse(&out)["status"], "dispatched", "{out}");
    // The parent moves on to another conversation before the child ends.
    parent.set_session_key("agent:main:discord:group:other");
    let record = ctx.engine.list().pop().unwrap();
    assert_eq!(record.session_key, "agent:main:telegram:dm:12345:678");
    assert_eq!(record.model.as_deref(), Some("m"));
    gate.open();
    let event = take_delegation(&queue);
    assert_eq!(event.session_key, "agent:main:telegram:dm:12345:678");
    assert_eq!(event.role.as_deref(), Some("orchestrator"));
    assert_eq!(
        event.toolsets.as_deref(),
        Some(&["web".into(), "file".into()][..])
    );
    assert_eq!(event.model.as_deref(), Some("m"));
    assert_eq!(event.api_calls.map(|n| n.to_string()).as_deref(), Some("1"));
    let child = ctx.backend.only_child();
    assert!(child.task.background);
    assert!(child
        .run_thread
        .lock()
        .unwrap()
        .as_deref()
        .unwrap()
        .starts_with("async-delegate"));
}

#[test]
fn child_is_closed_once_after_its_background_run() {
    let (ctx, queue) = context(FakeBackend::instant(), DelegationConfig::default());
    delegate_task(r#"{"goal": "g", "background": true}"#, &sess_parent(), &ctx);
    take_delegation(&queue);
    let child = ctx.backend.only_child();
    // The event is queued right after the runner returns; close ran inside the runner.
    assert_eq!((child.run_count(), child.close_count()), (1, 1));
}

#[test]
fn rejected_dispatch_at_capacity_returns_the_engine_text_and_closes_the_child() {
    let gate = Gate::new();
    let config = DelegationConfig {
        max_async_children: 1,
        ..DelegationConfig::default()
    };
    let (ctx, queue) = context(FakeBackend::gated(&gate), config);
    let parent = sess_parent();
    let first = delegate_task(r#"{"goal": "first", "background": true}"#, &parent, &ctx);
    assert_eq!(parse(&first)["status"], "dispatched");

    let second = delegate_task(r#"{"goal": "second", "background": true}"#, &parent, &ctx);
    assert_eq!(
        error_of(&second),
        "Async delegation capacity reached (1 running). Wait for one to finish (its result will re-enter the chat), or run this task synchronously (background=false). Raise delegation.max_concurrent_children in config.yaml to allow more concurrent background subagents."
    );
    let built = ctx.backend.built();
    assert_eq!(built.len(), 2);
    let refused = &built[1];
    assert_eq!(refused.task.goal, "second");
    assert_eq!((refused.run_count(), refused.close_count()), (0, 1));
    assert_eq!(built[0].close_count(), 0, "the running child is not closed");

    gate.open();
    assert_eq!(take_delegation(&queue).goal, "first");
    assert!(
        queue
            .take_timeout(std::time::Duration::from_millis(50))
            .is_none(),
        "no event for a refused dispatch"
    );
}

#[test]
fn zero_async_children_refuses_every_background_call() {
    let config = DelegationConfig {
        max_async_children: 0,
        ..DelegationConfig::default()
    };
    let (ctx, queue) = context(FakeBackend::instant(), config);
    let error = error_of(&delegate_task(
        r#"{"goal": "g", "background": true}"#,
        &sess_parent(),
        &ctx,
    ));
    assert!(
        error.starts_with("Async delegation capacity reached (0 running)."),
        "{error}"
    );
    assert_eq!(ctx.backend.only_child().close_count(), 1);
    assert!(queue.is_empty());
}

#[test]
fn engine_interrupt_reaches_the_child_with_the_cancel_reason() {
    let gate = Gate::new();
    let (ctx, queue) = context(FakeBackend::gated(&gate), DelegationConfig::default());
    delegate_task(
        r#"{"goal": "long", "background": true}"#,
        &sess_parent(),
        &ctx,
    );
    let child = ctx.backend.only_child();
    wait_until(|| child.run_count() == 1);
    assert_eq!(ctx.engine.interrupt_all("user pressed stop"), 1);
    let event = take_delegation(&queue);
    assert_eq!(event.status.as_deref(), Some("interrupted"));
    assert_eq!(child.interrupt_reasons(), [ASYNC_CANCEL_REASON]);
    assert_eq!(ASYNC_CANCEL_REASON, "Async delegation cancelled");
    assert_eq!(child.close_count(), 1);
}

#[test]
fn panicking_background_child_still_completes_and_is_closed() {
    let backend = FakeBackend::new(|_, _| panic!("subagent exploded"));
    let (ctx, queue) = context(backend, DelegationConfig::default());
    delegate_task(r#"{"goal": "g", "background": true}"#, &sess_parent(), &ctx);
    let event = take_delegation(&queue);
    assert_eq!(event.status.as_deref(), Some("error"));
    assert!(event
        .error
        .as_deref()
        .unwrap()
        .contains("panic: subagent exploded"));
    assert_eq!(ctx.backend.only_child().close_count(), 1);
    assert_eq!(ctx.engine.active_count(), 0);
}

#[test]
fn failed_child_result_is_carried_to_the_event() {
    let backend = FakeBackend::new(|_, _| Err("model unreachable".into()));
    let (ctx, queue) = context(backend, DelegationConfig::default());
    delegate_task(r#"{"goal": "g", "background": true}"#, &sess_parent(), &ctx);
    let event = take_delegation(&queue);
    assert_eq!(event.status.as_deref(), Some("error"));
    assert_eq!(event.error.as_deref(), Some("model unreachable"));
}

#[test]
fn build_failure_refuses_the_call_without_dispatching() {
    let mut backend = FakeBackend::instant();
    backend.fail_build_goal = Some("g".into());
    let (ctx, queue) = context(backend, DelegationConfig::default());
    let out = delegate_task(r#"{"goal": "g", "background": true}"#, &sess_parent(), &ctx);
    assert_eq!(error_of(&out), "Failed to build the subagent: boom");
    assert!(queue.is_empty() && ctx.engine.list().is_empty());
}

#[test]
fn parent_interrupted_before_the_call_does_not_stop_a_background_child() {
    let (ctx, queue) = context(
        FakeBackend::new(|child, _| {
            Ok(if child.is_interrupted() {
                DelegationResult::interrupted("stopped")
            } else {
                DelegationResult::completed("ok")
            })
        }),
        DelegationConfig::default(),
    );
    let parent = sess_parent();
    parent.interrupt("old turn");
    delegate_task(r#"{"goal": "g", "background": true}"#, &parent, &ctx);
    assert_eq!(take_delegation(&queue).status.as_deref(), Some("completed"));
    let _: Arc<dyn ParentAgent> = Arc::new(parent);
}
