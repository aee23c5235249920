//! Waiting consumers are woken by what makes a completion claimable — a new completion, a
//! backoff running out, a claim's lease running out — never by polling, and `count` judges
//! a filter whole (its predicate included).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use process_registry::{
    ClaimFilter, CompletionQueue, Event, LedgerConfig, MemoryLedger, Released, WatchOverflow,
};

const HANG_GUARD: Duration = Duration::from_secs(20);

fn watch(message: &str) -> Event {
    Event::WatchOverflowTripped(WatchOverflow {
        message: Some(message.to_owned()),
        ..WatchOverflow::default()
    })
}

fn queue(config: LedgerConfig) -> CompletionQueue {
    CompletionQueue::builder(MemoryLedger::new())
        .config(config)
        .open()
        .unwrap()
}

#[test]
fn a_waiting_consumer_wakes_when_a_stale_claims_lease_runs_out() {
    let queue = queue(LedgerConfig::default().with_lease(Duration::from_millis(150)));
    queue.put(watch("held by a consumer that died"));
    let stale = queue.claim(&ClaimFilter::any()).unwrap().unwrap();
    // The consumer dies without a decision: nothing will release the claim but its lease.
    std::mem::forget(stale);
    let started = Instant::now();
    let claim = queue
        .claim_timeout(&ClaimFilter::any(), HANG_GUARD)
        .unwrap()
        .expect("claimable once the lease ran out");
    assert!(claim.is_possible_redelivery());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "woken by the lease, not the guard"
    );
    claim.ack().unwrap();
}

#[test]
fn a_waiting_consumer_wakes_when_a_backoff_runs_out() {
    let queue = queue(
        LedgerConfig::default()
            .with_backoff(Duration::from_millis(100), Duration::from_millis(100)),
    );
    queue.put(watch("retry me"));
    let first = queue.claim(&ClaimFilter::any()).unwrap().unwrap();
    assert_eq!(
        first.release("adapter down").unwrap(),
        Released::Retry {
            after: Duration::from_millis(100)
        }
    );
    assert!(
        queue.claim(&ClaimFilter::any()).unwrap().is_none(),
        "backing off"
    );
    let claim = queue
        .claim_timeout(&ClaimFilter::any(), HANG_GUARD)
        .unwrap()
        .expect("claimable once the backoff ran out");
    assert_eq!(claim.attempt(), 2);
    claim.ack().unwrap();
}

#[test]
fn many_short_backoffs_never_leave_a_waiting_consumer_asleep() {
    let queue = queue(
        LedgerConfig::default()
            .with_backoff(Duration::from_micros(20), Duration::from_micros(40))
            .with_max_attempts(u32::MAX),
    );
    queue.put(watch("flaky"));
    for _ in 0..500 {
        let claim = queue
            .claim_timeout(&ClaimFilter::any(), HANG_GUARD)
            .unwrap()
            .expect("a due retry is never slept through");
        claim.release("still down").unwrap();
    }
}

#[test]
fn count_applies_the_filters_predicate() {
    let queue = CompletionQueue::new();
    queue.put(watch("a"));
    queue.put(watch("b"));
    let only_b = ClaimFilter::any().where_event(|event| {
        matches!(event, Event::WatchOverflowTripped(e) if e.message.as_deref() == Some("b"))
    });
    assert_eq!(queue.count(&ClaimFilter::any()), 2);
    assert_eq!(queue.count(&only_b), 1);
}
