//! Every refusal, in the documented order, with its exact text.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{context, error_of, FakeBackend};
use delegate_tool::{delegate_task, delegate_task_value, DelegationConfig, Parent};
use serde_json::json;

const NOTHING_TO_DO: &str = "Provide either 'goal' (single task) or 'tasks' (batch).";
const BACKGROUND_BATCH: &str = "background=true is single-task only. Dispatch one background subagent per delegate_task call (each returns its own handle and re-enters the conversation independently), or run the batch synchronously with background=false.";

fn refuse(arguments: &str) -> String {
    refuse_with(
        arguments,
        FakeBackend::instant(),
        DelegationConfig::default(),
        &Parent::new(0),
    )
}

fn refuse_with(
    arguments: &str,
    backend: FakeBackend,
    config: DelegationConfig,
    parent: &Parent,
) -> String {
    let (ctx, queue) = context(backend, config);
    let out = delegate_task(arguments, parent, &ctx);
    let text = error_of(&out);
    assert!(
        ctx.backend.built().is_empty(),
        "a refused call builds no child"
    );
    assert!(queue.is_empty() && ctx.engine.active_count() == 0);
    text
}

#[test]
fn background_batch_list_is_single_task_only() {
    assert_eq!(
        refuse(r#"{"tasks": [{"goal": "a"}, {"goal": "b"}], "background": true}"#),
        BACKGROUND_BATCH
    );
}

#[test]
fn background_batch_given_as_json_string_is_single_task_only() {
    let args = json!({"tasks": r#"[{"goal": "a"}, {"goal": "b"}]"#, "background": "on"});
    assert_eq!(refuse(&args.to_string()), BACKGROUND_BATCH);
}

#[test]
fn background_batch_is_checked_before_depth_and_credentials() {
    let mut backend = FakeBackend::instant();
    backend.credentials = Err("no key".into());
    let (ctx, _queue) = context(backend, DelegationConfig::default());
    let out = delegate_task(
        r#"{"tasks": [{"goal": "a"}, 5], "background": "TRUE"}"#,
        &Parent::new(9),
        &ctx,
    );
    assert_eq!(error_of(&out), BACKGROUND_BATCH);
    assert_eq!(
        ctx.backend
            .credential_calls
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[test]
fn depth_limit_text() {
    let text = refuse_with(
        r#"{"goal": "g"}"#,
        FakeBackend::instant(),
        DelegationConfig::default(),
        &Parent::new(1),
    );
    assert_eq!(
        text,
        "Delegation depth limit reached (depth=1, max_spawn_depth=1). Raise delegation.max_spawn_depth in config.yaml if deeper nesting is required (no hard ceiling, but each level multiplies API cost)."
    );
    let deeper = DelegationConfig {
        max_spawn_depth: 3,
        ..DelegationConfig::default()
    };
    let text = refuse_with(
        r#"{"goal": "g"}"#,
        FakeBackend::instant(),
        deeper,
        &Parent::new(4),
    );
    assert_eq!(
        text,
        "Delegation depth limit reached (depth=4, max_spawn_depth=3). Raise delegation.max_spawn_depth in config.yaml if deeper nesting is required (no hard ceiling, but each level multiplies API cost)."
    );
}

#[test]
fn background_batch_as_json_string_is_checked_before_depth() {
    let args = json!({"tasks": r#"[{"goal": "a"}, {"goal": "b"}]"#, "background": true});
    let text = refuse_with(
        &args.to_string(),
        FakeBackend::instant(),
        DelegationConfig::default(),
        &Parent::new(5),
    );
    assert_eq!(text, BACKGROUND_BATCH);
}

#[test]
fn depth_below_the_limit_is_allowed() {
    let config = DelegationConfig {
        max_spawn_depth: 2,
        ..DelegationConfig::default()
    };
    let (ctx, _queue) = context(FakeBackend::instant(), config);
    let out = delegate_task(r#"{"goal": "g"}"#, &Parent::new(1), &ctx);
    assert!(out.contains("\"results\""), "{out}");
    assert_eq!(ctx.backend.only_child().task.depth, 2);
}

#[test]
fn depth_is_checked_before_credentials() {
    let mut backend = FakeBackend::instant();
    backend.credentials = Err("no key".into());
    let text = refuse_with(
        r#"{"goal": "g"}"#,
        backend,
        DelegationConfig::default(),
        &Parent::new(1),
    );
    assert!(text.starts_with("Delegation depth limit reached"), "{text}");
}

#[test]
fn credential_failure_returns_its_message() {
    let mut backend = FakeBackend::instant();
    backend.credentials = Err("No API key configured for provider 'x'.".into());
    let text = refuse_with(
        r#"{"goal": "g"}"#,
        backend,
        DelegationConfig::default(),
        &Parent::new(0),
    );
    assert_eq!(text, "No API key configured for provider 'x'.");
}

#[test]
fn credentials_are_checked_before_the_tasks() {
    let mut backend = FakeBackend::instant();
    backend.credentials = Err("creds".into());
    let text = refuse_with(
        r#"{"tasks": "not json"}"#,
        backend,
        DelegationConfig::default(),
        &Parent::new(0),
    );
    assert_eq!(text, "creds");
}

#[test]
fn blank_tasks_string() {
    assert_eq!(refuse(r#"{"tasks": "   "}"#), NOTHING_TO_DO);
    // The `tasks` check refuses a blank string as such, even next to a goal.
    assert_eq!(refuse(r#"{"tasks": "", "goal": "g"}"#), NOTHING_TO_DO);
}

#[test]
fn tasks_string_that_is_not_json() {
    let reason = serde_json::from_str::<serde_json::Value>("[{goal: a}]")
        .unwrap_err()
        .to_string();
    assert_eq!(
        refuse(r#"{"tasks": "[{goal: a}]"}"#),
        format!("tasks must be a JSON array of task objects; received a string that could not be parsed as JSON ({reason}).")
    );
}

#[test]
fn tasks_string_holding_something_else() {
    for (inner, kind) in [
        (r#"{\"goal\": \"a\"}"#, "object"),
        ("42", "number"),
        (r#"\"a\""#, "string"),
        ("true", "boolean"),
        ("null", "null"),
    ] {
        assert_eq!(
            refuse(&format!(r#"{{"tasks": "{inner}"}}"#)),
            format!("tasks must be a JSON array of task objects; parsed {kind} instead."),
            "{inner}"
        );
    }
}

#[test]
fn tasks_of_another_type() {
    assert_eq!(
        refuse(r#"{"tasks": {"goal": "a"}}"#),
        "tasks must be a JSON array of task objects; got object instead."
    );
    assert_eq!(
        refuse(r#"{"tasks": 3, "goal": "g"}"#),
        "tasks must be a JSON array of task objects; got number instead."
    );
}

#[test]
fn too_many_tasks() {
    assert_eq!(
        refuse(r#"{"tasks": [{"goal": "a"}, {"goal": "b"}, {"goal": "c"}, {"goal": "d"}]}"#),
        "Too many tasks: 4 provided, but max_concurrent_children is 3. Either reduce the task count, split into multiple delegate_task calls, or increase delegation.max_concurrent_children in config.yaml."
    );
}

#[test]
fn too_many_tasks_in_a_json_string_and_before_task_checks() {
    let config = DelegationConfig {
        max_concurrent_children: 1,
        ..DelegationConfig::default()
    };
    let args = json!({"tasks": "[1, 2]"});
    let text = refuse_with(
        &args.to_string(),
        FakeBackend::instant(),
        config,
        &Parent::new(0),
    );
    assert_eq!(
        text,
        "Too many tasks: 2 provided, but max_concurrent_children is 1. Either reduce the task count, split into multiple delegate_task calls, or increase delegation.max_concurrent_children in config.yaml."
    );
}

#[test]
fn neither_tasks_nor_goal() {
    for args in [
        r#"{}"#,
        r#"{"goal": ""}"#,
        r#"{"goal": "  \n"}"#,
        r#"{"goal": 7}"#,
        r#"{"goal": null, "context": "c"}"#,
        r#"{"tasks": []}"#,
        r#"{"tasks": null}"#,
        "",
        "null",
    ] {
        assert_eq!(refuse(args), NOTHING_TO_DO, "{args}");
    }
}

/// `Task {i}`: `i` is 0-based, the `enumerate()` index the Python harness formats, which
/// is also the zero-based `task_index` results and events carry, so the model can match
/// an error to a result.
#[test]
fn task_that_is_not_an_object() {
    for (task, kind) in [
        ("7", "number"),
        (r#""do it""#, "string"),
        ("[]", "array"),
        ("null", "null"),
        ("false", "boolean"),
    ] {
        assert_eq!(
            refuse(&format!(r#"{{"tasks": [{{"goal": "a"}}, {task}]}}"#)),
            format!("Task 1 must be an object, got {kind}."),
            "{task}"
        );
    }
    assert_eq!(
        refuse(r#"{"tasks": ["x"]}"#),
        "Task 0 must be an object, got string."
    );
}

/// 0-based, as above.
#[test]
fn task_missing_a_goal() {
    for task in [
        r#"{}"#,
        r#"{"goal": ""}"#,
        r#"{"goal": "   "}"#,
        r#"{"goal": 3}"#,
        r#"{"goal": null, "context": "c"}"#,
    ] {
        assert_eq!(
            refuse(&format!(
                r#"{{"tasks": [{{"goal": "a"}}, {{"goal": "b"}}, {task}]}}"#
            )),
            "Task 2 is missing a 'goal'.",
            "{task}"
        );
    }
    assert_eq!(
        refuse(r#"{"tasks": "[{\"context\": \"c\"}]"}"#),
        "Task 0 is missing a 'goal'."
    );
}

#[test]
fn task_checks_stop_at_the_first_bad_task() {
    assert_eq!(
        refuse(r#"{"tasks": [{}, 5]}"#),
        "Task 0 is missing a 'goal'."
    );
    assert_eq!(
        refuse(r#"{"tasks": [5, {}]}"#),
        "Task 0 must be an object, got number."
    );
}

#[test]
fn arguments_that_are_not_json_or_not_an_object() {
    let reason = serde_json::from_str::<serde_json::Value>("{goal")
        .unwrap_err()
        .to_string();
    assert_eq!(
        refuse("{goal"),
        format!("delegate_task arguments must be a JSON object; received text that could not be parsed as JSON ({reason}).")
    );
    assert_eq!(
        refuse("[1]"),
        "delegate_task arguments must be a JSON object; got array instead."
    );
    assert_eq!(
        refuse(r#""goal""#),
        "delegate_task arguments must be a JSON object; got string instead."
    );
}

#[test]
fn value_form_matches_text_form() {
    let (ctx, _queue) = context(FakeBackend::instant(), DelegationConfig::default());
    let parent = Parent::new(0);
    let args = json!({"tasks": [{"goal": "a"}, 1]});
    assert_eq!(
        delegate_task_value(&args, &parent, &ctx),
        delegate_task(&args.to_string(), &parent, &ctx)
    );
}

#[test]
fn unknown_role_is_leaf_and_max_iterations_is_ignored() {
    let (ctx, _queue) = context(FakeBackend::instant(), DelegationConfig::default());
    let out = delegate_task(
        r#"{"goal": "g", "role": "supervisor", "max_iterations": "lots"}"#,
        &Parent::new(0),
        &ctx,
    );
    assert!(out.contains("\"results\""), "{out}");
    let child = ctx.backend.only_child();
    assert_eq!(child.task.role, delegate_tool::Role::Leaf);
    assert_eq!(child.task.max_iterations, 50);
}
