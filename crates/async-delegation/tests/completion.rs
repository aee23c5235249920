//! Exactly one completion per accepted dispatch, whatever the runner does, carrying the
//! dispatch-time spec and the outcome; slots free before the event is visible; retention.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use async_delegation::{
    DelegationEngine, DelegationResult, DelegationSpec, MAX_RETAINED_COMPLETED,
};
use common::{gate, take_delegation, take_delegations, wait};
use process_registry::WireNumber;
use process_registry::{AsyncDelegationEvent, CompletionQueue, Event};
use serde_json::{json, Value};

fn engine() -> (CompletionQueue, DelegationEngine) {
    let queue = CompletionQueue::new();
    (queue.clone(), DelegationEngine::new(queue))
}

fn round_2(seconds: f64) -> f64 {
    (seconds * 100.0).round() / 100.0
}

#[test]
fn completion_event_restates_spec_and_carries_the_outcome() {
    let (queue, engine) = engine();
    let spec = DelegationSpec::new("compute X")
        .with_context("some context")
        .with_toolsets(["web", "file"])
        .with_role("leaf")
        .with_model("spec-model")
        .with_session_key("agent:main:telegram:dm:12345:678");
    let outcome = engine.dispatch(
        spec,
        || {
            Ok(DelegationResult {
                status: Some("completed".into()),
                summary: Some("the result".into()),
                error: None,
                api_calls: Some(3),
                duration_seconds: Some(2.0),
                model: Some("result-model".into()),
                exit_reason: Some("max_iterations".into()),
                truncated: Some(true),
                missed_steer: None,
            })
        },
        None,
        3,
    );
    let event = take_delegation(&queue);
    let expected = AsyncDelegationEvent {
        delegation_id: Some(outcome.delegation_id().unwrap().into()),
        session_key: "agent:main:telegram:dm:12345:678".into(),
        goal: "compute X".into(),
        context: Some("some context".into()),
        toolsets: Some(["web".into(), "file".into()].into()),
        role: Some("leaf".into()),
        model: Some("result-model".into()),
        status: Some("completed".into()),
        summary: Some("the result".into()),
        error: None,
        api_calls: Some(WireNumber::from(3)),
        duration_seconds: WireNumber::from_f64(2.0),
        dispatched_at: event.dispatched_at.clone(),
        completed_at: event.completed_at.clone(),
        exit_reason: Some("max_iterations".into()),
        truncated: Some(true),
        ..AsyncDelegationEvent::default()
    };
    assert_eq!(event, expected);
    let (dispatched, completed) = (
        event.dispatched_at.as_ref().unwrap().as_f64(),
        event.completed_at.as_ref().unwrap().as_f64(),
    );
    assert!(dispatched > 1.6e9 && completed >= dispatched);

    // On the wire: exactly the single-task fields, with their wire names.
    let wire = Event::AsyncDelegation(event).to_value();
    let Value::Object(fields) = &wire else {
        panic!("not an object")
    };
    let mut names: Vec<&str> = fields.keys().map(String::as_str).collect();
    names.sort_unstable();
    let mut want = vec![
        "type",
        "delegation_id",
        "session_key",
        "goal",
        "context",
        "toolsets",
        "role",
        "model",
        "status",
        "summary",
        "error",
        "api_calls",
        "duration_seconds",
        "dispatched_at",
        "completed_at",
        "exit_reason",
        "truncated",
    ];
    want.sort_unstable();
    assert_eq!(names, want);
    assert_eq!(wire["type"], "async_delegation");
    assert_eq!(wire["api_calls"], json!(3));
    assert_eq!(wire["duration_seconds"], json!(2.0));
    assert_eq!(wire["error"], Value::Null);
}

#[test]
fn unset_outcome_fields_fall_back_to_spec_and_measured_time() {
    let (queue, engine) = engine();
    engine.dispatch(
        DelegationSpec::new("bare").with_model("spec-model"),
        || Ok(DelegationResult::default()),
        None,
        3,
    );
    let event = take_delegation(&queue);
    assert_eq!(event.status.as_deref(), Some("completed"));
    assert_eq!(event.model.as_deref(), Some("spec-model"));
    assert_eq!(event.session_key, "", "CLI origin");
    assert_eq!(event.context, None);
    assert_eq!(event.toolsets, None);
    assert_eq!(event.role, None);
    assert_eq!(event.api_calls, Some(WireNumber::from(0)), "never null");
    let measured = round_2(
        event.completed_at.as_ref().unwrap().as_f64()
            - event.dispatched_at.as_ref().unwrap().as_f64(),
    );
    assert_eq!(event.duration_seconds, WireNumber::from_f64(measured));

    // With no model anywhere the event says so (null), never invents one.
    engine.dispatch(
        DelegationSpec::new("modelless"),
        || Ok(DelegationResult::with_status("timeout")),
        None,
        3,
    );
    let event = take_delegation(&queue);
    assert_eq!(event.model, None);
    assert_eq!(event.status.as_deref(), Some("timeout"));
}

#[test]
fn test_crashed_runner_produces_error_completion() {
    let (queue, engine) = engine();

    // A panic: status error, the panic message in the error, no slot leaked.
    let panicked = engine.dispatch(
        DelegationSpec::new("risky").with_model("m"),
        || panic!("subagent exploded"),
        None,
        1,
    );
    assert!(panicked.is_dispatched());
    let event = take_delegation(&queue);
    assert_eq!(event.delegation_id.as_deref(), panicked.delegation_id());
    assert_eq!(event.status.as_deref(), Some("error"));
    assert_eq!(event.error.as_deref(), Some("panic: subagent exploded"));
    assert_eq!(event.goal, "risky");
    assert_eq!(event.model.as_deref(), Some("m"));
    assert_eq!(engine.active_count(), 0, "the panic leaked no slot");
    assert_eq!(engine.list()[0].status, "error");

    // A formatted panic message survives too.
    engine.dispatch(
        DelegationSpec::new("risky 2"),
        || panic!("subagent exploded {} times", 2),
        None,
        1,
    );
    assert_eq!(
        take_delegation(&queue).error.as_deref(),
        Some("panic: subagent exploded 2 times")
    );

    // An error return: status error with the error's text.
    let failed = engine.dispatch(
        DelegationSpec::new("fragile"),
        || Err("subagent exploded".into()),
        None,
        1,
    );
    assert!(
        failed.is_dispatched(),
        "the engine is fully usable after a panic"
    );
    let event = take_delegation(&queue);
    assert_eq!(event.delegation_id.as_deref(), failed.delegation_id());
    assert_eq!(event.status.as_deref(), Some("error"));
    assert_eq!(event.error.as_deref(), Some("subagent exploded"));

    // Still fully usable: a normal delegation at capacity 1 goes through.
    engine.dispatch(
        DelegationSpec::new("fine"),
        || Ok(DelegationResult::completed("ok")),
        None,
        1,
    );
    assert_eq!(take_delegation(&queue).status.as_deref(), Some("completed"));
    assert!(queue.is_empty(), "exactly one event per dispatch");
    assert_eq!(engine.active_count(), 0);
}

#[test]
fn slot_is_free_and_record_complete_when_the_event_is_taken() {
    // A consumer reacting to a completion re-dispatches at capacity 1: it must never
    // meet a stale "capacity reached".
    let (queue, engine) = engine();
    let mut last = None;
    for i in 0..300 {
        let outcome = engine.dispatch(
            DelegationSpec::new(format!("chain {i}")),
            || Ok(DelegationResult::completed("ok")),
            None,
            1,
        );
        assert!(outcome.is_dispatched(), "round {i}: {outcome:?}");
        let event = take_delegation(&queue);
        assert_eq!(event.delegation_id.as_deref(), outcome.delegation_id());
        let newest = engine.list().pop().unwrap();
        assert_eq!(Some(&newest.delegation_id), event.delegation_id.as_ref());
        assert_eq!(
            newest.completed_at,
            event.completed_at.as_ref().map(WireNumber::as_f64)
        );
        last = Some(event.delegation_id);
    }
    assert!(last.is_some());
}

#[test]
fn completion_is_on_the_queue_once_no_longer_active() {
    let (queue, engine) = engine();
    let n = 40;
    for i in 0..n {
        engine.dispatch(
            DelegationSpec::new(format!("t{i}")),
            || Ok(DelegationResult::completed("ok")),
            None,
            n,
        );
    }
    while engine.active_count() > 0 {
        std::thread::yield_now();
    }
    // No waiting: every event is already there.
    assert_eq!(queue.len(), n);
}

#[test]
fn dropping_every_handle_still_delivers_the_completion() {
    let (queue, engine) = engine();
    let (open, closed) = gate();
    engine.dispatch(
        DelegationSpec::new("outlives its engine handle"),
        move || {
            wait(&closed);
            Ok(DelegationResult::completed("still here"))
        },
        None,
        1,
    );
    drop(engine); // returns at once: nothing joins the worker
    drop(open);
    assert_eq!(
        take_delegation(&queue).summary.as_deref(),
        Some("still here")
    );
}

#[test]
fn test_completed_records_pruned_to_cap() {
    let (queue, engine) = engine();
    let n = MAX_RETAINED_COMPLETED + 10;
    for i in 0..n {
        let outcome = engine.dispatch(
            DelegationSpec::new(format!("t{i}")),
            || Ok(DelegationResult::completed("ok")),
            None,
            MAX_RETAINED_COMPLETED + 20,
        );
        assert!(outcome.is_dispatched());
    }
    let events = take_delegations(&queue, n);
    assert_eq!(engine.active_count(), 0);
    let listed = engine.list();
    assert_eq!(listed.len(), MAX_RETAINED_COMPLETED);
    // The oldest completions were dropped: what is left is the newest 50, in
    // completion order (the queue receives events in that same order).
    let newest: Vec<_> = events[n - MAX_RETAINED_COMPLETED..]
        .iter()
        .map(|e| e.delegation_id.clone().unwrap())
        .collect();
    let kept: Vec<_> = listed.iter().map(|r| r.delegation_id.clone()).collect();
    assert_eq!(kept, newest);
    assert!(listed
        .iter()
        .all(|r| r.status == "completed" && !r.is_running()));

    // Running records are never pruned, however many completed ones exist.
    let (open, closed) = gate();
    let running = MAX_RETAINED_COMPLETED + 5;
    for i in 0..running {
        let closed = closed.clone();
        engine.dispatch(
            DelegationSpec::new(format!("long {i}")),
            move || {
                wait(&closed);
                Ok(DelegationResult::completed("done"))
            },
            None,
            running,
        );
    }
    let listed = engine.list();
    assert_eq!(listed.len(), running + MAX_RETAINED_COMPLETED);
    let goals: Vec<_> = listed[..running].iter().map(|r| r.goal.clone()).collect();
    let want: Vec<_> = (0..running).map(|i| format!("long {i}")).collect();
    assert_eq!(goals, want, "running first, in dispatch order");
    assert!(listed[..running].iter().all(|r| r.status == "running"));
    drop(open);
    take_delegations(&queue, running);
    assert_eq!(engine.list().len(), MAX_RETAINED_COMPLETED);
}

#[test]
fn records_carry_the_spec_but_never_the_hook() {
    let (queue, engine) = engine();
    let (open, closed) = gate();
    let outcome = engine.dispatch(
        DelegationSpec::new("listed")
            .with_context("ctx")
            .with_toolsets(["web"])
            .with_role("orchestrator")
            .with_model("m")
            .with_session_key("agent:main:discord:group:9"),
        move || {
            wait(&closed);
            Ok(DelegationResult {
                model: Some("m2".into()),
                ..DelegationResult::completed("ok")
            })
        },
        Some(std::sync::Arc::new(|_: &str| {})),
        1,
    );
    let record = engine.list().remove(0);
    let wire = serde_json::to_value(&record).unwrap();
    assert_eq!(
        wire,
        json!({
            "delegation_id": outcome.delegation_id().unwrap(),
            "goal": "listed",
            "context": "ctx",
            "toolsets": ["web"],
            "role": "orchestrator",
            "model": "m",
            "session_key": "agent:main:discord:group:9",
            "status": "running",
            "dispatched_at": record.dispatched_at,
            "completed_at": null,
            "accepting_steer": false,
        })
    );
    drop(open);
    let event = take_delegation(&queue);
    let record = engine.list().remove(0);
    assert_eq!(record.status, "completed");
    assert_eq!(record.model.as_deref(), Some("m2"));
    assert_eq!(
        record.completed_at,
        event.completed_at.as_ref().map(WireNumber::as_f64)
    );
}

#[test]
fn an_error_whose_display_panics_still_completes() {
    #[derive(Debug)]
    struct Treacherous;
    impl std::fmt::Display for Treacherous {
        fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            panic!("display exploded")
        }
    }
    impl std::error::Error for Treacherous {}

    let (queue, engine) = engine();
    engine.dispatch(
        DelegationSpec::new("treacherous error"),
        || Err(Box::new(Treacherous)),
        None,
        1,
    );
    let event = take_delegation(&queue);
    assert_eq!(event.status.as_deref(), Some("error"));
    assert_eq!(
        event.error.as_deref(),
        Some("panic while formatting the error: display exploded")
    );
    assert_eq!(engine.active_count(), 0);
}

#[test]
fn test_rich_reinjection_block_is_self_contained() {
    let (queue, engine) = engine();
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
    let event = Event::AsyncDelegation(take_delegation(&queue));
    let text = process_registry::format_process_notification(&event).expect("a block");
    let id = outcome.delegation_id().unwrap();
    for needle in [
        format!("[ASYNC DELEGATION COMPLETE — {id}]\n"),
        "Original goal: Compute the meaning of life\n".to_owned(),
        "Context you provided: User is a philosopher. Respond tersely.\n".to_owned(),
        "Toolsets: web\n".to_owned(),
        "Role: leaf   Model: test-model\n".to_owned(),
        "Status: completed   API calls: 7   Duration: 3.5s\n".to_owned(),
        "Dispatched: ".to_owned(),
    ] {
        assert!(text.contains(&needle), "missing {needle:?} in:\n{text}");
    }
    assert!(
        text.ends_with("--- RESULT ---\nThe answer is 42."),
        "{text}"
    );
}

#[test]
fn crashed_runner_block_reads_as_a_failure() {
    let (queue, engine) = engine();
    engine.dispatch(
        DelegationSpec::new("risky"),
        || panic!("subagent exploded"),
        None,
        3,
    );
    let event = Event::AsyncDelegation(take_delegation(&queue));
    let text = process_registry::format_process_notification(&event).expect("a block");
    assert!(text.contains("Status: error   "), "{text}");
    assert!(
        text.ends_with(
            "--- RESULT ---\nThe subagent did not complete successfully (status=error).\n\
             panic: subagent exploded"
        ),
        "{text}"
    );
}

#[test]
fn the_completion_shares_the_dispatched_toolsets_and_id() {
    let (queue, engine) = engine();
    let spec = DelegationSpec::new("shared").with_toolsets(["web", "file"]);
    let toolsets = spec.toolsets.clone().unwrap();
    let id = engine
        .try_dispatch(spec, || Ok(DelegationResult::completed("ok")), None, 1)
        .unwrap();
    let event = take_delegation(&queue);
    // Restated without a copy: the list the caller built is the one the completion holds
    // (and the retained record too).
    assert!(std::sync::Arc::ptr_eq(
        event.toolsets.as_ref().unwrap(),
        &toolsets
    ));
    let record = engine.list().remove(0);
    assert!(std::sync::Arc::ptr_eq(
        record.toolsets.as_ref().unwrap(),
        &toolsets
    ));
    // The id handed back is the event's, compared as text.
    assert_eq!(event.delegation_id.as_ref(), Some(&id));
    assert_eq!(id.len(), "deleg_".len() + 8);
}
