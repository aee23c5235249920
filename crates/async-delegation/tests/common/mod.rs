//! Helpers shared by the integration tests: gates, hang guards and event takers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use process_registry::{AsyncDelegationEvent, CompletionQueue, Event, LedgerRow, RowQuery};

/// Only a guard against hangs: no test relies on anything taking this long.
pub(crate) const HANG_GUARD: Duration = Duration::from_secs(20);

/// The exact capacity text.
pub(crate) fn capacity_text(max: usize) -> String {
    format!(
        "Async delegation capacity reached ({max} running). Wait for one to finish (its \
         result will re-enter the chat), or run this task synchronously (background=false). \
         Raise delegation.max_concurrent_children in config.yaml to allow more concurrent \
         background subagents."
    )
}

/// A closed gate: runners block in [`wait`] until the test drops the `Sender`.
pub(crate) fn gate() -> (Sender<()>, Receiver<()>) {
    crossbeam_channel::bounded(0)
}

/// Blocks until the gate's sender is dropped (or something is sent), at most the hang guard.
pub(crate) fn wait(gate: &Receiver<()>) {
    let _ = gate.recv_timeout(HANG_GUARD);
}

/// Takes the next event, which must be an `async_delegation` one.
pub(crate) fn take_delegation(queue: &CompletionQueue) -> AsyncDelegationEvent {
    match queue.take_timeout(HANG_GUARD) {
        Some(Event::AsyncDelegation(event)) => event,
        Some(other) => panic!("expected an async_delegation event, got {other:?}"),
        None => panic!("no completion event within {HANG_GUARD:?}"),
    }
}

/// The ledger's one row for delegation `id`.
pub(crate) fn row_of(queue: &CompletionQueue, id: &str) -> LedgerRow {
    let mut rows = queue
        .rows(&RowQuery {
            delegation_id: Some(id.to_owned()),
            ..RowQuery::default()
        })
        .unwrap();
    assert_eq!(rows.len(), 1, "one row for {id}: {rows:?}");
    rows.remove(0)
}

/// Takes `n` delegation events and checks their ids are distinct.
pub(crate) fn take_delegations(queue: &CompletionQueue, n: usize) -> Vec<AsyncDelegationEvent> {
    let events: Vec<_> = (0..n).map(|_| take_delegation(queue)).collect();
    let ids: HashSet<_> = events.iter().map(|e| e.delegation_id.clone()).collect();
    assert_eq!(ids.len(), n, "duplicate completion events: {events:?}");
    events
}

/// `deleg_` + 8 lowercase hex digits.
pub(crate) fn is_delegation_id(id: &str) -> bool {
    id.strip_prefix("deleg_").is_some_and(|hex| {
        hex.len() == 8
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}
