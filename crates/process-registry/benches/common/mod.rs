//! What the ledger benchmarks share.

use process_registry::{AsyncDelegationEvent, Event};

/// A completion of the size a real one has.
pub(crate) fn event(n: u64) -> Event {
    Event::AsyncDelegation(AsyncDelegationEvent {
        delegation_id: Some(format!("deleg_{n:08x}").into()),
        session_key: "agent:main:telegram:dm:12345:678".into(),
        goal: "Summarise the logs".into(),
        status: Some("completed".into()),
        summary: Some("Three errors, all from the cache layer.".into()),
        ..AsyncDelegationEvent::default()
    })
}
