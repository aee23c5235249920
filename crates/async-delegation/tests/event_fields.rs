//! The engine writes every field a consumer of the Python harness reads, with that
//! harness's defaults (`api_calls` 0, status `completed`), whatever the runner reported —
//! compared as whole events on the wire.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use async_delegation::{DelegationEngine, DelegationResult, DelegationSpec, RunnerError};
use common::take_delegation;
use process_registry::{CompletionQueue, Event};
use serde_json::{json, Value};

/// Dispatches `runner`, takes its completion and returns it as wire JSON, with the
/// clock-dependent fields checked and replaced by fixed values (`"<measured>"` for a
/// duration the engine measured itself: completed − dispatched, to 2 decimals).
fn completion_json(
    spec: DelegationSpec,
    runner: impl FnOnce() -> Result<DelegationResult, RunnerError> + Send + 'static,
) -> Value {
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    let id = engine
        .try_dispatch(spec, runner, None, 1)
        .expect("dispatched");
    let event = take_delegation(&queue);
    let mut wire = serde_json::to_value(Event::AsyncDelegation(event)).unwrap();
    let fields = wire.as_object_mut().unwrap();
    assert_eq!(fields["delegation_id"], json!(id));
    let elapsed =
        fields["completed_at"].as_f64().unwrap() - fields["dispatched_at"].as_f64().unwrap();
    if fields["duration_seconds"] == json!((elapsed * 100.0).round() / 100.0) {
        fields.insert("duration_seconds".into(), json!("<measured>"));
    }
    for time in ["dispatched_at", "completed_at"] {
        assert!(
            fields[time].as_f64().unwrap() > 1.6e9,
            "{time} is a Unix time"
        );
        fields.insert(time.into(), json!("<time>"));
    }
    fields.insert("delegation_id".into(), json!("<id>"));
    wire
}

fn spec() -> DelegationSpec {
    DelegationSpec::new("g")
        .with_role("leaf")
        .with_model("spec-model")
        .with_session_key("agent:main:telegram:dm:1")
}

/// The event every case below starts from: the spec restated, the harness's defaults.
fn expected(outcome: Value) -> Value {
    let mut event = json!({
        "type": "async_delegation", "delegation_id": "<id>",
        "session_key": "agent:main:telegram:dm:1", "goal": "g", "context": null,
        "toolsets": null, "role": "leaf", "model": "spec-model", "status": "completed",
        "summary": null, "error": null, "api_calls": 0, "duration_seconds": "<measured>",
        "dispatched_at": "<time>", "completed_at": "<time>", "exit_reason": null,
    });
    for (key, value) in outcome.as_object().unwrap() {
        event[key] = value.clone();
    }
    event
}

#[test]
fn a_runner_that_reports_nothing_gets_the_harness_defaults() {
    let wire = completion_json(spec(), || Ok(DelegationResult::default()));
    assert_eq!(wire, expected(json!({})));
}

#[test]
fn an_empty_status_is_completed() {
    let wire = completion_json(spec(), || {
        Ok(DelegationResult {
            status: Some(String::new().into()),
            summary: Some("done".into()),
            duration_seconds: Some(1.5),
            ..DelegationResult::default()
        })
    });
    assert_eq!(
        wire,
        expected(json!({"summary": "done", "duration_seconds": 1.5}))
    );
}

#[test]
fn a_non_finite_duration_falls_back_to_the_measured_one() {
    for reported in [f64::NAN, f64::INFINITY] {
        let wire = completion_json(spec(), move || {
            Ok(DelegationResult {
                duration_seconds: Some(reported),
                api_calls: Some(2),
                ..DelegationResult::default()
            })
        });
        assert_eq!(wire, expected(json!({"api_calls": 2})), "{reported}");
    }
}

#[test]
fn failures_and_panics_carry_zero_api_calls() {
    let wire = completion_json(spec(), || Err("tool crashed".into()));
    assert_eq!(
        wire,
        expected(json!({"status": "error", "error": "tool crashed"}))
    );
    let wire = completion_json(spec(), || panic!("subagent exploded"));
    assert_eq!(
        wire,
        expected(json!({"status": "error", "error": "panic: subagent exploded"}))
    );
}
