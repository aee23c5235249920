//! `Ownership` and fenced claim filters on one shared ledger, two consumers: one owner
//! and one standby per scope, takeover after the owner's lease runs out or when it lets
//! go, a stale owner's ack refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use process_registry::{
    AsyncDelegationEvent, ClaimFilter, CompletionQueue, Event, LedgerBackend, ManualClock,
    MemoryLedger, Ownership, SettleError,
};

const LEASE: Duration = Duration::from_secs(30);
const SCOPE: &str = "platform:telegram";

fn pair() -> (Arc<ManualClock>, CompletionQueue, CompletionQueue) {
    let clock = Arc::new(ManualClock::new(1_750_000_000.0));
    let backend: Arc<dyn LedgerBackend> = Arc::new(MemoryLedger::with_clock(clock.clone()));
    let open = |instance: &str| {
        CompletionQueue::builder_shared(Arc::clone(&backend))
            .instance(instance)
            .open()
            .unwrap()
    };
    (clock, open("gw-a"), open("gw-b"))
}

fn platform(event: &Event) -> Option<String> {
    let key = event.session_key().filter(|key| !key.is_empty())?;
    Some(format!("platform:{}", key.split(':').nth(2)?))
}

fn completion(session_key: &str) -> AsyncDelegationEvent {
    AsyncDelegationEvent {
        session_key: session_key.into(),
        ..AsyncDelegationEvent::default()
    }
}

fn owning(queue: &CompletionQueue) -> Ownership {
    let ownership = Ownership::start(queue, LEASE).unwrap();
    ownership.want(SCOPE);
    ownership.renew_now().unwrap();
    ownership
}

fn filter(ownership: &Ownership) -> ClaimFilter {
    ClaimFilter::any().fenced(ownership, platform)
}

#[test]
fn the_owner_claims_its_scope_and_the_standby_only_the_rest() {
    let (_, a, b) = pair();
    let (owner, standby) = (owning(&a), owning(&b));
    assert_eq!(owner.epoch(SCOPE), Some(1));
    assert_eq!(standby.epoch(SCOPE), None, "held by gw-a");
    a.put(completion("agent:main:telegram:dm:1"));
    b.put(Event::WatchOverflowTripped(Default::default()));
    // The standby passes over the owned completion and takes the unscoped one.
    let unscoped = b
        .claim(&filter(&standby))
        .unwrap()
        .expect("no scope: anyone's");
    assert_eq!(unscoped.event().type_name(), "watch_overflow_tripped");
    unscoped.ack().unwrap();
    assert!(b.claim(&filter(&standby)).unwrap().is_none());
    a.claim(&filter(&owner))
        .unwrap()
        .expect("gw-a owns telegram")
        .ack()
        .unwrap();
}

#[test]
fn a_stale_owner_cannot_ack_after_a_takeover() {
    let (clock, a, b) = pair();
    let owner = owning(&a);
    let standby = owning(&b);
    a.put(completion("agent:main:telegram:dm:1"));
    let held = a.claim(&filter(&owner)).unwrap().expect("owned");
    // gw-a stalls past its lease (its thread renews only every 10 s of real time).
    clock.advance(LEASE + Duration::from_secs(1));
    standby.renew_now().unwrap();
    assert_eq!(standby.epoch(SCOPE), Some(2), "taken over");
    assert_eq!(held.ack().unwrap_err(), SettleError::ClaimLost);
    let again = b
        .claim(&filter(&standby))
        .unwrap()
        .expect("offered to the new owner");
    assert!(again.is_possible_redelivery());
    again.ack().unwrap();
    // gw-a learns it at its next round, and claims nothing of the scope any more.
    owner.renew_now().unwrap();
    assert_eq!(owner.epoch(SCOPE), None);
    a.put(completion("agent:main:telegram:dm:2"));
    assert!(a.claim(&filter(&owner)).unwrap().is_none());
}

#[test]
fn letting_go_hands_over_at_once() {
    let (_, a, b) = pair();
    let owner = owning(&a);
    let standby = owning(&b);
    a.put(completion("agent:main:telegram:dm:1"));
    let held = a.claim(&filter(&owner)).unwrap().expect("owned");
    owner.give_up(SCOPE);
    owner.renew_now().unwrap();
    standby.renew_now().unwrap();
    assert_eq!(standby.epoch(SCOPE), Some(2));
    assert_eq!(held.ack().unwrap_err(), SettleError::ClaimLost);
    b.claim(&filter(&standby))
        .unwrap()
        .expect("handed over")
        .ack()
        .unwrap();
}

#[test]
fn the_last_handle_dropped_releases_its_leases() {
    let (_, a, b) = pair();
    let owner = owning(&a);
    let standby = owning(&b);
    let thread_holder = owner.clone();
    drop(owner);
    assert_eq!(
        thread_holder.epoch(SCOPE),
        Some(1),
        "a clone still holds it"
    );
    drop(thread_holder);
    // The thread releases as it ends.
    let guard = Instant::now() + Duration::from_secs(20);
    while standby.epoch(SCOPE).is_none() {
        assert!(Instant::now() < guard, "never released");
        std::thread::sleep(Duration::from_millis(10));
        standby.renew_now().unwrap();
    }
    assert_eq!(standby.epoch(SCOPE), Some(2));
}
