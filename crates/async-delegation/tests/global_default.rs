//! The process-wide default engine puts completions on process_registry's shared queue.
//! Its own binary: the tests here share the global engine and queue, so they run one
//! after another under a lock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Mutex, MutexGuard};

use async_delegation::{
    active_count, dispatch_async_delegation, interrupt_all, list_async_delegations,
    DelegationResult, DelegationSpec, InterruptHook,
};
use common::{take_delegation, HANG_GUARD};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn test_completion_event_lands_on_shared_queue_with_session_key() {
    let _serial = serial();
    let shared = process_registry::global().completion_queue();
    assert!(async_delegation::global()
        .completion_queue()
        .same_queue(shared));
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
    let event = take_delegation(shared);
    let wire = process_registry::Event::AsyncDelegation(event.clone()).to_value();
    assert_eq!(wire["type"], "async_delegation");
    assert_eq!(event.summary.as_deref(), Some("the result"));
    assert_eq!(event.session_key, "agent:main:cli:dm:local");
    assert_eq!(event.delegation_id.as_deref(), outcome.delegation_id());
    assert_eq!(
        event.toolsets.as_deref(),
        Some(&["web".into(), "file".into()][..])
    );
    assert_eq!(active_count(), 0);
    assert!(
        list_async_delegations()
            .iter()
            .any(|r| Some(&r.delegation_id) == event.delegation_id.as_ref()
                && r.status == "completed")
    );
}

#[test]
fn global_interrupt_all_reaches_global_delegations() {
    let _serial = serial();
    let shared = process_registry::global().completion_queue();
    let (tx, rx) = crossbeam_channel::unbounded::<String>();
    let hook: InterruptHook = std::sync::Arc::new(move |reason: &str| {
        let _ = tx.send(reason.to_owned());
    });
    let outcome = dispatch_async_delegation(
        DelegationSpec::new("long"),
        move || match rx.recv_timeout(HANG_GUARD) {
            Ok(reason) => Ok(DelegationResult::interrupted(reason)),
            Err(_) => Ok(DelegationResult::completed("timed out waiting")),
        },
        Some(hook),
        3,
    );
    assert!(outcome.is_dispatched());
    assert_eq!(active_count(), 1);
    assert_eq!(list_async_delegations()[0].status, "running");
    assert_eq!(interrupt_all("shutting down"), 1);
    let event = take_delegation(shared);
    assert_eq!(event.status.as_deref(), Some("interrupted"));
    assert_eq!(event.error.as_deref(), Some("shutting down"));
    assert_eq!(active_count(), 0);
}
