//! The engine's metrics, read through a debugging recorder installed as the global one
//! (this binary has this one test, so the counts are exactly its own): a known mix of
//! outcomes gives exactly these counts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use async_delegation::metrics::{COMPLETED, DISPATCHED, REJECTED, RUNNING, RUN_SECONDS};
use async_delegation::{DelegationEngine, DelegationResult, DelegationSpec, DispatchError};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::MetricKind;
use process_registry::CompletionQueue;

/// Every metric: `name{label=value,…}` → its value.
fn read(snapshotter: &metrics_util::debugging::Snapshotter) -> BTreeMap<String, DebugValue> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let labels: Vec<String> = key
                .key()
                .labels()
                .map(|label| format!("{}={}", label.key(), label.value()))
                .collect();
            let kind = match key.kind() {
                MetricKind::Counter => "counter",
                MetricKind::Gauge => "gauge",
                MetricKind::Histogram => "histogram",
            };
            (
                format!("{kind} {}{{{}}}", key.key().name(), labels.join(",")),
                value,
            )
        })
        .collect()
}

#[test]
fn a_known_mix_of_outcomes_gives_exactly_these_counts() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    let (release, held) = std::sync::mpsc::channel::<()>();
    let held = std::sync::Mutex::new(Some(held));
    // One held, so the next dispatch at capacity 1 is refused.
    let blocker = held.lock().unwrap().take().unwrap();
    engine
        .try_dispatch(
            DelegationSpec::new("held"),
            move || {
                blocker.recv().ok();
                Ok(DelegationResult::interrupted("stopped"))
            },
            None,
            1,
        )
        .unwrap();
    let refused = engine.try_dispatch(
        DelegationSpec::new("refused"),
        || Ok(DelegationResult::completed("never")),
        None,
        1,
    );
    assert!(matches!(
        refused,
        Err(DispatchError::CapacityReached { max: 1 })
    ));
    release.send(()).unwrap();
    queue
        .take_timeout(Duration::from_secs(20))
        .expect("the held one");
    for i in 0..3 {
        engine
            .try_dispatch(
                DelegationSpec::new(format!("ok {i}")),
                || Ok(DelegationResult::completed("done")),
                None,
                8,
            )
            .unwrap();
    }
    for i in 0..2 {
        engine
            .try_dispatch(
                DelegationSpec::new(format!("fails {i}")),
                || Err("the model refused".into()),
                None,
                8,
            )
            .unwrap();
    }
    engine
        .try_dispatch(
            DelegationSpec::new("panics"),
            || -> Result<DelegationResult, async_delegation::RunnerError> { panic!("boom") },
            None,
            8,
        )
        .unwrap();
    engine
        .try_dispatch(
            DelegationSpec::new("custom"),
            || Ok(DelegationResult::with_status("paused")),
            None,
            8,
        )
        .unwrap();
    for _ in 0..7 {
        queue
            .take_timeout(Duration::from_secs(20))
            .expect("a completion");
    }
    let metrics = read(&snapshotter);
    let counter = |key: &str| match metrics.get(key) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{key}: {other:?} in {metrics:#?}"),
    };
    assert_eq!(counter(&format!("counter {DISPATCHED}{{}}")), 8);
    assert_eq!(
        counter(&format!("counter {REJECTED}{{reason=capacity}}")),
        1
    );
    assert_eq!(
        counter(&format!("counter {COMPLETED}{{status=completed}}")),
        3
    );
    assert_eq!(counter(&format!("counter {COMPLETED}{{status=error}}")), 3);
    assert_eq!(
        counter(&format!("counter {COMPLETED}{{status=interrupted}}")),
        1
    );
    assert_eq!(counter(&format!("counter {COMPLETED}{{status=paused}}")), 1);
    match metrics.get(&format!("gauge {RUNNING}{{}}")) {
        Some(DebugValue::Gauge(running)) => assert_eq!(running.into_inner(), 0.0),
        other => panic!("{other:?}"),
    }
    match metrics.get(&format!("histogram {RUN_SECONDS}{{}}")) {
        Some(DebugValue::Histogram(samples)) => {
            assert_eq!(samples.len(), 8);
            assert!(samples.iter().all(|s| s.into_inner() >= 0.0));
        }
        other => panic!("{other:?}"),
    }
    // Every other counter (registered up front, when the engine was built) stayed at 0.
    let others: Vec<(&String, &DebugValue)> = metrics
        .iter()
        .filter(|(_, value)| matches!(value, DebugValue::Counter(n) if *n > 0))
        .collect();
    assert_eq!(others.len(), 6, "no other counter moved: {others:#?}");
}
