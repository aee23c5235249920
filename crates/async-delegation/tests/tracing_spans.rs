//! The `tracing` spans of one delegation: `delegation.dispatch`, then `delegation.run`
//! (a root linked to the dispatch with `follows_from`, around the runner: the runner's own
//! spans nest in it), then `delegation.completion` inside the run — with the fields the
//! crate docs list, and one W3C `traceparent` that the completion event carries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/capture.rs"]
mod capture;

use std::time::Duration;

use async_delegation::{DelegationEngine, DelegationResult, DelegationSpec};
use capture::{with_field, Seen};
use process_registry::{CompletionQueue, Event};

const GUARD: Duration = Duration::from_secs(20);

fn one<'a>(spans: &'a [Seen], name: &str) -> &'a Seen {
    let found: Vec<&Seen> = spans.iter().filter(|span| span.name == name).collect();
    assert_eq!(found.len(), 1, "one `{name}` span: {spans:#?}");
    found[0]
}

fn take(queue: &CompletionQueue) -> process_registry::AsyncDelegationEvent {
    match queue.take_timeout(GUARD) {
        Some(Event::AsyncDelegation(event)) => event,
        other => panic!("expected a completion, got {other:?}"),
    }
}

/// Checks the three spans of `id` and returns its traceparent.
fn check_spans(id: &str, session_key: &str, status: &str) -> String {
    let spans = with_field("delegation_id", id);
    let dispatch = one(&spans, "delegation.dispatch");
    let run = one(&spans, "delegation.run");
    let completion = one(&spans, "delegation.completion");
    assert!(
        dispatch.order < run.order && run.order < completion.order,
        "{spans:#?}"
    );
    assert_eq!(run.parent, None, "the run is a root of its own");
    assert_eq!(run.follows_from, [dispatch.id], "linked to its dispatch");
    assert_eq!(completion.parent, Some(run.id));
    assert_eq!(completion.field("status"), Some(status));
    for span in [dispatch, run] {
        assert_eq!(span.field("session_key"), Some(session_key), "{span:?}");
    }
    let traceparent = dispatch
        .field("traceparent")
        .expect("a trace context")
        .to_owned();
    assert_eq!(run.field("traceparent"), Some(traceparent.as_str()));
    // The user's own span, entered by the runner, nests in the run.
    let user = capture::spans()
        .into_iter()
        .find(|span| span.name == "user.work" && span.field("task") == Some(id))
        .expect("the runner's span");
    assert_eq!(user.parent, Some(run.id));
    traceparent
}

#[test]
fn a_threaded_delegation_is_dispatch_then_run_then_completion() {
    capture::install();
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    let (tell, told) = std::sync::mpsc::channel::<String>();
    let id = engine
        .try_dispatch(
            DelegationSpec::new("traced").with_session_key("agent:main:telegram:dm:1"),
            move || {
                let id = told.recv().unwrap();
                let _work = tracing::info_span!("user.work", task = id.as_str()).entered();
                Ok(DelegationResult::completed("done"))
            },
            None,
            4,
        )
        .unwrap();
    tell.send(id.to_string()).unwrap();
    let event = take(&queue);
    let traceparent = check_spans(&id, "agent:main:telegram:dm:1", "completed");
    assert_eq!(event.traceparent.as_deref(), Some(traceparent.as_str()));
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(
        (parts[0], parts[1].len(), parts[2].len(), parts[3]),
        ("00", 32, 16, "01")
    );
}

#[test]
fn a_given_trace_context_is_continued_not_replaced() {
    capture::install();
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    let given = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let id = engine
        .try_dispatch(
            DelegationSpec::new("continued").with_traceparent(given),
            || Ok(DelegationResult::with_status("error")),
            None,
            4,
        )
        .unwrap();
    let event = take(&queue);
    assert_eq!(event.traceparent.as_deref(), Some(given));
    let spans = with_field("delegation_id", &id);
    assert_eq!(
        one(&spans, "delegation.dispatch").field("traceparent"),
        Some(given)
    );
    assert_eq!(
        one(&spans, "delegation.completion").field("status"),
        Some("error")
    );
}

#[cfg(feature = "tokio")]
#[test]
fn an_async_delegation_has_the_same_spans() {
    capture::install();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    let (tell, told) = tokio::sync::oneshot::channel::<String>();
    let handle = engine
        .dispatch_async(
            DelegationSpec::new("traced async").with_session_key("agent:main:discord:dm:2"),
            runtime.handle(),
            move |_cancel| async move {
                let id = told.await.unwrap();
                let work = tracing::info_span!("user.work", task = id.as_str());
                let _ = tracing::Instrument::instrument(tokio::task::yield_now(), work).await;
                Ok(DelegationResult::completed("done"))
            },
            4,
        )
        .unwrap();
    let id = handle.id().to_owned();
    tell.send(id.clone()).unwrap();
    let event = take(&queue);
    let traceparent = check_spans(&id, "agent:main:discord:dm:2", "completed");
    assert_eq!(event.traceparent.as_deref(), Some(traceparent.as_str()));
}

/// A runner that returns after the engine finalized its delegation is logged and
/// discarded, on the async path too: the engine aborts the wedged task, and its end is
/// the log line, never a second completion.
#[cfg(feature = "tokio")]
#[test]
fn a_late_async_runner_is_logged_and_discarded() {
    use std::sync::Arc;

    capture::install();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let queue = CompletionQueue::new();
    let clock = Arc::new(process_registry::ManualClock::new(1_000.0));
    let engine = DelegationEngine::builder(queue.clone())
        .clock(clock.clone())
        .build();
    let handle = engine
        .dispatch_async_with(
            DelegationSpec::new("late"),
            runtime.handle(),
            move |_cancel| std::future::pending(),
            async_delegation::Controls::default().with_progress(engine.progress()),
            3,
        )
        .unwrap();
    let id = handle.id().to_owned();
    clock.advance(Duration::from_secs(451));
    assert_eq!(engine.sweep_stalls(), 1);
    clock.advance(Duration::from_secs(121));
    assert_eq!(engine.sweep_stalls(), 1);
    assert_eq!(take(&queue).status.as_deref(), Some("stalled"));
    let logged = |words: &str| {
        capture::events_with("delegation_id", &id)
            .iter()
            .any(|fields| fields.get("message").is_some_and(|m| m.contains(words)))
    };
    assert!(logged("finalized by the engine"));
    let deadline = std::time::Instant::now() + GUARD;
    while !logged("discarded") {
        assert!(
            std::time::Instant::now() < deadline,
            "the late end was never logged"
        );
        std::thread::yield_now();
    }
    assert!(queue.take_timeout(Duration::from_millis(50)).is_none());
    // The stalled completion is the one the handle reports.
    let finished = runtime.block_on(handle.finished());
    assert_eq!(finished.status.as_deref(), Some("stalled"));
}
