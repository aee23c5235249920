//! From the Python harness's test file: one test about the process-wide defaults: a
//! delegation dispatched with the convenience function lands on *the* shared completion
//! queue. Its own binary, so no other test touches the globals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_delegation::{dispatch_async_delegation, DelegationResult, DelegationSpec};
use integration_tests::take_delegation;

#[test]
fn test_completion_event_lands_on_shared_queue_with_session_key() {
    let outcome = dispatch_async_delegation(
        DelegationSpec::new("compute X")
            .with_context("some context")
            .with_toolsets(["web", "file"])
            .with_role("leaf")
            .with_model("test-model")
            .with_session_key("agent:main:cli:dm:local"),
        || {
            Ok(DelegationResult {
                status: Some("completed".into()),
                summary: Some("the result".into()),
                api_calls: Some(3),
                duration_seconds: Some(2.0),
                model: Some("test-model".into()),
                ..DelegationResult::default()
            })
        },
        None,
        3,
    );
    assert_eq!(outcome.to_json()["status"], "dispatched");

    let queue = process_registry::global().completion_queue();
    assert!(queue.same_queue(async_delegation::global().completion_queue()));
    let event = take_delegation(queue).expect("a completion on the shared queue");
    assert_eq!(event.summary.as_deref(), Some("the result"));
    assert_eq!(event.session_key, "agent:main:cli:dm:local");
    assert_eq!(event.delegation_id.as_deref(), outcome.delegation_id());
    assert_eq!(event.goal, "compute X");
    assert_eq!(event.context.as_deref(), Some("some context"));
    assert_eq!(
        event.toolsets.as_deref(),
        Some(&["web".into(), "file".into()][..])
    );
    assert_eq!(event.model.as_deref(), Some("test-model"));
    assert_eq!(event.api_calls, Some(3.into()));
    let wire = serde_json::to_value(process_registry::Event::AsyncDelegation(event)).unwrap();
    assert_eq!(wire["type"], "async_delegation");
    assert_eq!(wire["duration_seconds"], 2.0);
}
