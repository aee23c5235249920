//! The router's metrics, read through a debugging recorder installed as the global one
//! (this binary has this one test): a known mix of outcomes gives exactly these counts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::metrics::{
    DEAD, DEFERRED, DELIVERED, QUEUE_WAIT_SECONDS, RELEASED, TIME_TO_DELIVERY_SECONDS,
};
use gateway::{AdapterError, DeliveryRouter, InternalMessage, Platform};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use process_registry::{AsyncDelegationEvent, CompletionQueue, Event, Recorded, WireNumber};

fn record(queue: &CompletionQueue, id: &str, session_key: &str, goal: &str) {
    let event = AsyncDelegationEvent {
        delegation_id: Some(id.into()),
        session_key: session_key.into(),
        goal: goal.into(),
        status: Some("completed".into()),
        completed_at: WireNumber::from_f64(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64(),
        ),
        ..AsyncDelegationEvent::default()
    };
    let Recorded::Dispatch(dispatch) = queue
        .record_dispatch(id, session_key, Event::from(event.clone()))
        .unwrap()
    else {
        panic!("id taken");
    };
    drop(
        queue
            .record_completion(dispatch, id, "completed", Arc::new(Event::from(event)))
            .unwrap(),
    );
}

#[test]
fn a_known_mix_of_outcomes_gives_exactly_these_counts() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    // A failed attempt is retried only after an hour: exactly one release here.
    let hour = Duration::from_secs(3600);
    let queue = CompletionQueue::builder(process_registry::MemoryLedger::new())
        .config(process_registry::LedgerConfig::default().with_backoff(hour, hour))
        .open()
        .unwrap();
    let router = DeliveryRouter::builder(queue.clone())
        .adapter(Platform::Telegram, |_: &InternalMessage| Ok(()))
        .adapter(
            Platform::Discord,
            |_: &InternalMessage| -> Result<(), AdapterError> {
                Err("the chat API is down".into())
            },
        )
        .formatter(|event: &Event| match event {
            Event::AsyncDelegation(e) if e.goal == "no text" => None,
            other => process_registry::format_process_notification(other),
        })
        .start()
        .unwrap();
    for (n, session) in [
        "agent:main:telegram:dm:1",
        "agent:main:telegram:dm:2",
        "agent:main:telegram:dm:3",
    ]
    .iter()
    .enumerate()
    {
        record(&queue, &format!("deleg_0000000{n}"), session, "fine");
    }
    record(&queue, "deleg_00000010", "agent:main:discord:dm:4", "fails");
    record(
        &queue,
        "deleg_00000011",
        "agent:main:telegram:dm:5",
        "no text",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while router.stats().delivered < 3
        || router.stats().released < 1
        || router.stats().dead_lettered < 1
    {
        assert!(Instant::now() < deadline, "{:?}", router.stats());
        std::thread::sleep(Duration::from_millis(1));
    }
    router.stop();

    let metrics: Vec<(String, DebugValue)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| (key.key().name().to_owned(), value))
        .collect();
    let value = |name: &str| {
        metrics
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
            .unwrap_or_else(|| panic!("{name} missing from {metrics:#?}"))
    };
    assert_eq!(value(DELIVERED), &DebugValue::Counter(3));
    assert_eq!(value(RELEASED), &DebugValue::Counter(1));
    assert_eq!(value(DEAD), &DebugValue::Counter(1));
    assert_eq!(
        value(DEFERRED),
        &DebugValue::Counter(0),
        "nothing was deferred"
    );
    let samples = |name: &str| match value(name) {
        DebugValue::Histogram(samples) => samples.len(),
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(samples(TIME_TO_DELIVERY_SECONDS), 3);
    assert_eq!(samples(QUEUE_WAIT_SECONDS), 5, "one per claim");
    // The queue's side: only the released completion still waits (its backoff is an hour).
    assert_eq!(
        value(process_registry::metrics::PENDING),
        &DebugValue::Gauge(1.0.into())
    );
}
