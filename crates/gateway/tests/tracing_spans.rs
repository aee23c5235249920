//! The gateway's spans of one delegation: `delegation.claim` from the claim to its
//! settling (with `delegation_id`, `session_key`, the event's `traceparent` and the
//! `outcome`), and `delegation.delivery` around the adapter call inside it. The
//! `traceparent` the dispatch recorded survives a restart: the recovered `unknown`
//! completion's claim carries it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../async-delegation/tests/support/capture.rs"]
mod capture;

use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::{AdapterError, DeliveryRouter, InternalMessage, Platform};
use process_registry::{
    AsyncDelegationEvent, CompletionQueue, Event, Liveness, Recorded, SqliteLedger,
};

const GUARD: Duration = Duration::from_secs(30);
const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn completion(id: &str, session_key: &str) -> AsyncDelegationEvent {
    AsyncDelegationEvent {
        delegation_id: Some(id.into()),
        session_key: session_key.into(),
        goal: "traced".into(),
        status: Some("completed".into()),
        summary: Some("done".into()),
        traceparent: Some(TRACE.into()),
        ..AsyncDelegationEvent::default()
    }
}

/// A running row and its completion, as the engine writes them.
fn record(queue: &CompletionQueue, event: AsyncDelegationEvent) {
    let id = event.delegation_id.clone().unwrap();
    let Recorded::Dispatch(dispatch) = queue
        .record_dispatch(&id, &event.session_key, Event::from(event.clone()))
        .unwrap()
    else {
        panic!("id taken");
    };
    drop(
        queue
            .record_completion(dispatch, &id, "completed", Arc::new(Event::from(event)))
            .unwrap(),
    );
}

/// Waits for the claim span of `id` whose outcome is recorded, and returns it.
fn settled_claim(id: &str) -> capture::Seen {
    let deadline = Instant::now() + GUARD;
    loop {
        let claims: Vec<capture::Seen> = capture::with_field("delegation_id", id)
            .into_iter()
            .filter(|span| span.name == "delegation.claim" && span.field("outcome").is_some())
            .collect();
        if let Some(claim) = claims.into_iter().next() {
            return claim;
        }
        assert!(Instant::now() < deadline, "no settled claim span for {id}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_delivered_completion_has_its_claim_and_delivery_spans() {
    capture::install();
    let queue = CompletionQueue::new();
    let router = DeliveryRouter::builder(queue.clone())
        .adapter(Platform::Telegram, |_: &InternalMessage| Ok(()))
        .start()
        .unwrap();
    record(
        &queue,
        completion("deleg_7ace0001", "agent:main:telegram:dm:1"),
    );
    let claim = settled_claim("deleg_7ace0001");
    assert_eq!(claim.field("outcome"), Some("delivered"));
    assert_eq!(claim.field("session_key"), Some("agent:main:telegram:dm:1"));
    assert_eq!(claim.field("traceparent"), Some(TRACE));
    let delivery = capture::spans()
        .into_iter()
        .find(|span| span.name == "delegation.delivery" && span.parent == Some(claim.id))
        .expect("the adapter call's span, inside the claim's");
    assert_eq!(delivery.field("platform"), Some("telegram"));
    router.stop();
}

#[test]
fn a_failed_delivery_is_released_and_an_unroutable_one_dead() {
    capture::install();
    let queue = CompletionQueue::new();
    let router = DeliveryRouter::builder(queue.clone())
        .adapter(
            Platform::Telegram,
            |_: &InternalMessage| -> Result<(), AdapterError> {
                Err("the chat API is down".into())
            },
        )
        .adapter(Platform::Discord, |_: &InternalMessage| Ok(()))
        .formatter(|event: &Event| match event {
            Event::AsyncDelegation(e) if e.goal == "no text" => None,
            other => process_registry::format_process_notification(other),
        })
        .start()
        .unwrap();
    record(
        &queue,
        completion("deleg_7ace0002", "agent:main:telegram:dm:2"),
    );
    let mut unrendered = completion("deleg_7ace0003", "agent:main:discord:dm:3");
    unrendered.goal = "no text".into();
    record(&queue, unrendered);
    assert_eq!(
        settled_claim("deleg_7ace0002").field("outcome"),
        Some("released")
    );
    assert_eq!(
        settled_claim("deleg_7ace0003").field("outcome"),
        Some("dead")
    );
    router.stop();
}

/// Every instance but this one is dead.
struct OnlyMe(&'static str);

impl Liveness for OnlyMe {
    fn is_alive(&self, instance: &str) -> bool {
        instance == self.0
    }
}

#[test]
fn the_trace_context_survives_a_restart() {
    capture::install();
    let dir = std::env::temp_dir().join(format!("tracing-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ledger.sqlite3");
    let _ = std::fs::remove_file(&file);
    // The first process records a dispatch in a trace, and dies while it runs.
    {
        let first = CompletionQueue::builder(SqliteLedger::open(&file).unwrap())
            .instance("gateway-1")
            .liveness(OnlyMe("gateway-1"))
            .open()
            .unwrap();
        let event = completion("deleg_7ace0004", "agent:main:telegram:dm:4");
        let session_key = event.session_key.clone();
        let Recorded::Dispatch(_) = first
            .record_dispatch("deleg_7ace0004", &session_key, Event::from(event))
            .unwrap()
        else {
            panic!("id taken");
        };
    }
    // The next one recovers it as `unknown`, in the same trace.
    let second = CompletionQueue::builder(SqliteLedger::open(&file).unwrap())
        .instance("gateway-2")
        .liveness(OnlyMe("gateway-2"))
        .open()
        .unwrap();
    let router = DeliveryRouter::builder(second.clone())
        .adapter(Platform::Telegram, |_: &InternalMessage| Ok(()))
        .start()
        .unwrap();
    let claim = settled_claim("deleg_7ace0004");
    assert_eq!(claim.field("outcome"), Some("delivered"));
    assert_eq!(claim.field("traceparent"), Some(TRACE));
    router.stop();
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
}
