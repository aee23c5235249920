//! Every model-facing text can be replaced through `DelegateContext::with_texts`, and the
//! replacement is what the model reads: whole tool results compared.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fmt;
use std::sync::Arc;

use async_delegation::DelegationEngine;
use common::{parse, take_delegation, wait_until, FakeBackend, Gate};
use delegate_tool::{
    delegate_task, ChildAgent, DelegateContext, DelegationConfig, Parent, ParentAgent, ToolTexts,
};
use process_registry::CompletionQueue;

/// Every text replaced by a marker naming its field, with the field's placeholders (and
/// one it does not have, which must stay as written).
fn marked() -> ToolTexts {
    let mut t = ToolTexts::default();
    t.arguments_not_json = "<arguments_not_json {reason}>".into();
    t.arguments_too_deep = "<arguments_too_deep {max}>".into();
    t.arguments_not_object = "<arguments_not_object {kind}>".into();
    t.background_batch = "<background_batch {max}>".into();
    t.depth_limit = "<depth_limit {depth}/{max} (DelegationConfig::max_spawn_depth)>".into();
    t.credentials = "<credentials {reason}>".into();
    t.tasks_not_json = "<tasks_not_json {reason}>".into();
    t.tasks_parsed_not_array = "<tasks_parsed_not_array {kind}>".into();
    t.tasks_not_array = "<tasks_not_array {kind}>".into();
    t.too_many_tasks = "<too_many_tasks {count}/{max}>".into();
    t.nothing_to_do = "<nothing_to_do>".into();
    t.task_not_object = "<task_not_object {index} {kind}>".into();
    t.task_missing_goal = "<task_missing_goal {index}>".into();
    t.child_build = "<child_build {reason}>".into();
    t.parent_failed = "<parent_failed {method} {reason}>".into();
    t.capacity_reached = "<capacity_reached {max} (DelegationConfig::max_async_children)>".into();
    t.panic = "<panic {reason}>".into();
    t.error_display_panic = "<error_display_panic {reason}>".into();
    t.background_note = "<background_note>".into();
    t.async_cancel_reason = "<async_cancel_reason>".into();
    t.parent_interrupted_reason = "<parent_interrupted_reason>".into();
    t
}

fn context(
    backend: FakeBackend,
    config: DelegationConfig,
) -> (DelegateContext<FakeBackend>, CompletionQueue) {
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    let context = DelegateContext::new(config, engine, backend).with_texts(marked());
    (context, queue)
}

fn call(arguments: &str) -> String {
    let (ctx, _queue) = context(FakeBackend::instant(), DelegationConfig::default());
    delegate_task(arguments, &Parent::new(0), &ctx)
}

#[test]
fn replaced_refusal_texts_reach_the_model() {
    let parse_error = |text: &str| {
        serde_json::from_str::<serde_json::Value>(text)
            .unwrap_err()
            .to_string()
    };
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let cases = [
        (
            "{goal".to_owned(),
            format!(
                r#"{{"error":"<arguments_not_json {}>"}}"#,
                parse_error("{goal")
            ),
        ),
        (deep, r#"{"error":"<arguments_too_deep 128>"}"#.to_owned()),
        (
            "[1]".to_owned(),
            r#"{"error":"<arguments_not_object array>"}"#.to_owned(),
        ),
        (
            r#"{"tasks": [{"goal": "a"}, {"goal": "b"}], "background": true}"#.to_owned(),
            r#"{"error":"<background_batch {max}>"}"#.to_owned(),
        ),
        (
            r#"{"tasks": "[{goal"}"#.to_owned(),
            format!(
                r#"{{"error":"<tasks_not_json {}>"}}"#,
                parse_error("[{goal")
            ),
        ),
        (
            r#"{"tasks": "{}"}"#.to_owned(),
            r#"{"error":"<tasks_parsed_not_array object>"}"#.to_owned(),
        ),
        (
            r#"{"tasks": 3}"#.to_owned(),
            r#"{"error":"<tasks_not_array number>"}"#.to_owned(),
        ),
        (
            r#"{"tasks": [{"goal": "a"}, {"goal": "b"}, {"goal": "c"}, {"goal": "d"}]}"#.to_owned(),
            r#"{"error":"<too_many_tasks 4/3>"}"#.to_owned(),
        ),
        ("{}".to_owned(), r#"{"error":"<nothing_to_do>"}"#.to_owned()),
        (
            r#"{"tasks": [{"goal": "a"}, 7]}"#.to_owned(),
            r#"{"error":"<task_not_object 1 number>"}"#.to_owned(),
        ),
        (
            r#"{"tasks": [{}]}"#.to_owned(),
            r#"{"error":"<task_missing_goal 0>"}"#.to_owned(),
        ),
    ];
    for (arguments, expected) in cases {
        assert_eq!(call(&arguments), expected, "{arguments}");
    }
}

#[test]
fn replaced_depth_credentials_and_build_texts_reach_the_model() {
    let (ctx, _queue) = context(FakeBackend::instant(), DelegationConfig::default());
    assert_eq!(
        delegate_task(r#"{"goal": "g"}"#, &Parent::new(1), &ctx),
        r#"{"error":"<depth_limit 1/1 (DelegationConfig::max_spawn_depth)>"}"#
    );

    let mut backend = FakeBackend::instant();
    backend.credentials = Err("no key".into());
    let (ctx, _queue) = context(backend, DelegationConfig::default());
    assert_eq!(
        delegate_task(r#"{"goal": "g"}"#, &Parent::new(0), &ctx),
        r#"{"error":"<credentials no key>"}"#
    );

    let mut backend = FakeBackend::instant();
    backend.fail_build_goal = Some("g".into());
    let (ctx, _queue) = context(backend, DelegationConfig::default());
    assert_eq!(
        delegate_task(
            r#"{"goal": "g", "background": true}"#,
            &Parent::new(0),
            &ctx
        ),
        r#"{"error":"<child_build boom>"}"#
    );
    let value = parse(&delegate_task(r#"{"goal": "g"}"#, &Parent::new(0), &ctx));
    assert_eq!(value["results"][0]["error"], "<child_build boom>");
}

#[test]
fn replaced_capacity_text_and_note_reach_the_model() {
    let config = DelegationConfig {
        max_async_children: 0,
        ..DelegationConfig::default()
    };
    let (ctx, _queue) = context(FakeBackend::instant(), config);
    assert_eq!(
        delegate_task(
            r#"{"goal": "g", "background": true}"#,
            &Parent::new(0),
            &ctx
        ),
        r#"{"error":"<capacity_reached 0 (DelegationConfig::max_async_children)>"}"#
    );

    let (ctx, queue) = context(FakeBackend::instant(), DelegationConfig::default());
    let out = delegate_task(
        r#"{"goal": "g", "background": true}"#,
        &Parent::new(0),
        &ctx,
    );
    let id = parse(&out)["delegation_id"].as_str().unwrap().to_owned();
    assert_eq!(
        out,
        format!(
            r#"{{"status":"dispatched","delegation_id":"{id}","goal":"g","mode":"background","note":"<background_note>"}}"#
        )
    );
    take_delegation(&queue);
}

#[test]
fn replaced_interrupt_reasons_reach_the_children() {
    let gate = Gate::new();
    let (ctx, queue) = context(FakeBackend::gated(&gate), DelegationConfig::default());
    delegate_task(
        r#"{"goal": "g", "background": true}"#,
        &Parent::new(0),
        &ctx,
    );
    let child = ctx.backend.only_child();
    wait_until(|| child.run_count() == 1);
    assert_eq!(ctx.engine.interrupt_all("stop"), 1);
    let event = take_delegation(&queue);
    assert_eq!(event.error.as_deref(), Some("<async_cancel_reason>"));
    gate.open();

    let (ctx, _queue) = context(FakeBackend::instant(), DelegationConfig::default());
    let parent = Parent::new(0);
    parent.interrupt("old turn");
    delegate_task(r#"{"goal": "g"}"#, &parent, &ctx);
    assert_eq!(
        ctx.backend.only_child().interrupt_reasons(),
        ["<parent_interrupted_reason>"]
    );
}

#[derive(Debug)]
struct RudeError;
impl fmt::Display for RudeError {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        panic!("display exploded")
    }
}
impl std::error::Error for RudeError {}

/// A parent whose `delegate_depth` panics.
struct BrokenParent;
impl ParentAgent for BrokenParent {
    fn delegate_depth(&self) -> u32 {
        panic!("depth exploded")
    }
    fn session_id(&self) -> String {
        String::new()
    }
    fn session_key(&self) -> String {
        String::new()
    }
    fn is_interrupted(&self) -> bool {
        false
    }
    fn register_child(&self, _: Arc<dyn ChildAgent>) {}
    fn unregister_child(&self, _: &Arc<dyn ChildAgent>) -> bool {
        false
    }
}

#[test]
fn replaced_panic_texts_reach_the_model() {
    let backend = FakeBackend::new(|_, task| match task.goal.as_str() {
        "panic" => panic!("subagent exploded"),
        _ => Err(Box::new(RudeError)),
    });
    let (ctx, _queue) = context(backend, DelegationConfig::default());
    let value = parse(&delegate_task(
        r#"{"tasks": [{"goal": "panic"}, {"goal": "rude"}]}"#,
        &Parent::new(0),
        &ctx,
    ));
    assert_eq!(value["results"][0]["error"], "<panic subagent exploded>");
    assert_eq!(
        value["results"][1]["error"],
        "<error_display_panic display exploded>"
    );
    assert_eq!(
        delegate_task(r#"{"goal": "g"}"#, &BrokenParent, &ctx),
        r#"{"error":"<parent_failed delegate_depth <panic depth exploded>>"}"#
    );
}
