//! A status its caller built by hand — `Status::Other("completed")`, the text of a known
//! status, or one no variant names — reads back as it was recorded: equal to it, a
//! success exactly when its text is one, and rendered as the known status with that text
//! would be; from the memory ledger and from the SQLite one, whether a runner returned it
//! to the engine or the queue's own API recorded it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::path::PathBuf;
use std::sync::Arc;

use async_delegation::{DelegationEngine, DelegationResult, DelegationSpec};
use common::{row_of, take_delegation};
use process_registry::{
    format_process_notification, AsyncDelegationEvent, CompletionQueue, Event, Recorded, RunState,
    SqliteLedger, Status,
};

/// Built as `Other` whatever their text: three known ones, a known one in another case
/// (not that status), and one nothing knows.
fn hand_built() -> Vec<Status> {
    ["completed", "error", "success", "Completed", "weird"]
        .into_iter()
        .map(|text| Status::Other(text.to_owned()))
        .collect()
}

/// A fresh SQLite ledger file's directory, and the queue on it.
fn sqlite_queue(name: &str) -> (PathBuf, CompletionQueue) {
    let dir = std::env::temp_dir().join(format!("status-text-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ledger = SqliteLedger::open(dir.join("ledger.sqlite3")).unwrap();
    (dir, CompletionQueue::builder(ledger).open().unwrap())
}

/// The same status as its text makes it (a variant for a known text).
fn canonical(status: &Status) -> Status {
    Status::from(status.as_str())
}

/// `read` is `recorded`, in every way a reader looks at a status.
fn same_status(read: &Status, recorded: &Status, what: &str) {
    assert_eq!(read, recorded, "{what}");
    assert_eq!(read.as_str(), recorded.as_str(), "{what}");
    assert_eq!(read.is_success(), recorded.is_success(), "{what}");
    assert_eq!(
        recorded.is_success(),
        canonical(recorded).is_success(),
        "{what}: a success exactly when its text is"
    );
    assert_eq!(read.cmp(recorded), std::cmp::Ordering::Equal, "{what}");
    let hasher = RandomState::new();
    assert_eq!(hasher.hash_one(read), hasher.hash_one(recorded), "{what}");
}

/// The row of `id` is finished with `recorded`, and so is the event it carries.
fn row_reads_back(queue: &CompletionQueue, id: &str, recorded: &Status) {
    let row = row_of(queue, id);
    let Some(RunState::Finished(read)) = &row.run_state else {
        panic!("{id} not finished: {:?}", row.run_state);
    };
    same_status(read, recorded, &format!("the row's run state, {recorded}"));
    assert_eq!(
        row.run_state,
        Some(RunState::Finished(canonical(recorded))),
        "{recorded}"
    );
    let Event::AsyncDelegation(event) = &*row.event else {
        panic!("{:?}", row.event);
    };
    same_status(
        event.status.as_ref().unwrap(),
        recorded,
        &format!("the row's event, {recorded}"),
    );
}

/// The completion taken off the queue carries `recorded`, and renders as the known
/// status with its text does.
fn taken_reads_back(queue: &CompletionQueue, id: &str, recorded: &Status) {
    let mut event = take_delegation(queue);
    assert_eq!(event.delegation_id.as_deref(), Some(id));
    same_status(
        event.status.as_ref().unwrap(),
        recorded,
        &format!("the taken event, {recorded}"),
    );
    // Without its dispatch time the rendering reads no clock.
    event.dispatched_at = None;
    let mut twin = event.clone();
    twin.status = Some(canonical(recorded));
    assert_eq!(
        format_process_notification(&Event::AsyncDelegation(event)),
        format_process_notification(&Event::AsyncDelegation(twin)),
        "{recorded}"
    );
}

/// A runner returns each status to the engine.
fn returned_by_runners(queue: &CompletionQueue) {
    let engine = DelegationEngine::new(queue.clone());
    for recorded in hand_built() {
        let status = recorded.clone();
        let handle = engine
            .dispatch_handle(
                DelegationSpec::new(format!("returns {recorded}")),
                move || {
                    Ok(DelegationResult {
                        summary: Some("what it found".into()),
                        ..DelegationResult::with_status(status)
                    })
                },
                None,
                1,
            )
            .unwrap();
        let outcome = handle.wait();
        same_status(
            outcome.status.as_ref().unwrap(),
            &recorded,
            &format!("the handle's outcome, {recorded}"),
        );
        let id = handle.id().to_owned();
        let listed = engine
            .list()
            .into_iter()
            .find(|record| record.delegation_id == *id.as_str())
            .unwrap();
        same_status(
            &listed.status,
            &recorded,
            &format!("the engine's record, {recorded}"),
        );
        row_reads_back(queue, &id, &recorded);
        taken_reads_back(queue, &id, &recorded);
    }
}

/// The queue's own API records each status.
fn recorded_by_the_queue(queue: &CompletionQueue) {
    for (n, recorded) in hand_built().into_iter().enumerate() {
        let id = format!("deleg_0000000{n}");
        let skeleton = AsyncDelegationEvent {
            delegation_id: Some(id.as_str().into()),
            goal: "recorded by hand".into(),
            ..AsyncDelegationEvent::default()
        };
        let Recorded::Dispatch(record) = queue
            .record_dispatch(&id, "", Event::from(skeleton.clone()))
            .unwrap()
        else {
            panic!("{id} taken");
        };
        let completion = AsyncDelegationEvent {
            status: Some(recorded.clone()),
            summary: Some("what it found".into()),
            ..skeleton
        };
        drop(
            queue
                .record_completion(
                    record,
                    &id,
                    recorded.clone(),
                    Arc::new(Event::from(completion)),
                )
                .unwrap(),
        );
        row_reads_back(queue, &id, &recorded);
        taken_reads_back(queue, &id, &recorded);
    }
}

#[test]
fn hand_built_statuses_read_back_from_the_memory_ledger() {
    returned_by_runners(&CompletionQueue::new());
    recorded_by_the_queue(&CompletionQueue::new());
}

#[test]
fn hand_built_statuses_read_back_from_the_sqlite_ledger() {
    let (dir, queue) = sqlite_queue("runners");
    returned_by_runners(&queue);
    drop(queue);
    let _ = std::fs::remove_dir_all(&dir);

    let (dir, queue) = sqlite_queue("queue");
    recorded_by_the_queue(&queue);
    drop(queue);
    let _ = std::fs::remove_dir_all(&dir);
}
