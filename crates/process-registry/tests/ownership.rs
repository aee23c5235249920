//! `Ownership` and fenced claim filters on one shared ledger, two consumers: one owner
//! and one standby per scope, takeover after the owner's lease runs out or when it lets
//! go, a stale owner's ack refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/forwarding.rs"]
mod forwarding;
use forwarding::forward_ledger;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use process_registry::{
    AsyncDelegationEvent, Candidate, CandidateQuery, ClaimFilter, CompletionQueue, Event,
    LedgerBackend, LedgerError, ManualClock, MemoryLedger, Ownership, SettleError,
};

/// Long enough for anything that should happen to have happened; a failure, not a wait.
const HANG_GUARD: Duration = Duration::from_secs(30);

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let guard = Instant::now() + HANG_GUARD;
    while !condition() {
        assert!(
            Instant::now() < guard,
            "hang guard: still waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

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

/// Wants the scope and waits for the thread's round that asked for it (taking it, or
/// finding it held): the thread is asleep for the next 10 s of real time after that, so
/// it cannot renew a lease behind the test's back once the manual clock moves (a round
/// of `renew_now` here could race the thread's own, woken by the same `want`). Only
/// for a scope the store keeps no lease on yet, or one another holder holds: otherwise
/// `is_leased` may answer from the thread's first round, before the `want`.
fn owning(queue: &CompletionQueue) -> Ownership {
    let ownership = Ownership::start(queue, LEASE).unwrap();
    ownership.want(SCOPE);
    wait_until("the thread's round", || ownership.is_leased(SCOPE));
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

/// A memory ledger whose lease requests can be made to fail or to wait at a gate, and
/// which counts the candidate reads of one named thread.
struct Faulty {
    inner: MemoryLedger,
    failing: AtomicBool,
    /// Gates for the next lease requests on [`SCOPE`], in order: an acquire reports on
    /// the sender and waits on the receiver.
    gates: Mutex<VecDeque<(mpsc::Sender<()>, mpsc::Receiver<()>)>>,
    looks: AtomicU64,
}

const CONSUMER: &str = "ownership-test-consumer";

impl Faulty {
    /// A gate for the next lease request on [`SCOPE`]: (entered, open).
    fn gate(&self) -> (mpsc::Receiver<()>, mpsc::Sender<()>) {
        let (entered_tx, entered) = mpsc::channel();
        let (open, open_rx) = mpsc::channel();
        self.gates.lock().unwrap().push_back((entered_tx, open_rx));
        (entered, open)
    }

    fn new() -> Arc<Faulty> {
        Arc::new(Faulty {
            inner: MemoryLedger::with_clock(Arc::new(ManualClock::new(1_750_000_000.0))),
            failing: AtomicBool::new(false),
            gates: Mutex::new(VecDeque::new()),
            looks: AtomicU64::new(0),
        })
    }

    fn queue(self: &Arc<Self>, instance: &str) -> CompletionQueue {
        let backend: Arc<dyn LedgerBackend> = self.clone();
        CompletionQueue::builder_shared(backend)
            .instance(instance)
            .open()
            .unwrap()
    }
}

impl forwarding::Forwarding for Faulty {
    fn inner(&self) -> &dyn LedgerBackend {
        &self.inner
    }
    fn candidates(
        &self,
        query: &CandidateQuery<'_>,
        limit: usize,
    ) -> Result<Vec<Candidate>, LedgerError> {
        if std::thread::current().name() == Some(CONSUMER) {
            self.looks.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.candidates(query, limit)
    }
    fn acquire_scope(
        &self,
        scope: &str,
        holder: &str,
        lease_seconds: f64,
    ) -> Result<Option<u64>, LedgerError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(LedgerError::Unavailable {
                reason: "the test's store is down".to_owned(),
            });
        }
        let gate = if scope == SCOPE {
            self.gates.lock().unwrap().pop_front()
        } else {
            None
        };
        if let Some((entered, open)) = gate {
            entered.send(()).unwrap();
            open.recv().unwrap();
        }
        self.inner.acquire_scope(scope, holder, lease_seconds)
    }
}
forward_ledger!(Faulty, scopes);

/// Puts a completion of [`SCOPE`] and starts a consumer claiming it through `ownership`'s
/// fenced filter, which the scope's lease, not held now, makes pass it over; returns once
/// the consumer sleeps, with where its claim arrives. Its wait is longer than the tests'
/// guard: only a wake-up (not the last look at its deadline) brings the claim in time.
fn sleeping_consumer(
    ledger: &Faulty,
    queue: &CompletionQueue,
    ownership: &Ownership,
) -> mpsc::Receiver<Option<process_registry::Claim>> {
    queue.put(completion("agent:main:telegram:dm:1"));
    let (claimed, consumer) = mpsc::channel();
    let (queue, filter) = (queue.clone(), filter(ownership));
    std::thread::Builder::new()
        .name(CONSUMER.to_owned())
        .spawn(move || claimed.send(queue.claim_timeout(&filter, 2 * HANG_GUARD).unwrap()))
        .unwrap();
    // Its look, its look after arming its wait, and its last before sleeping: asleep,
    // the completion passed over.
    wait_until("the consumer to sleep", || {
        ledger.looks.load(Ordering::SeqCst) >= 3
    });
    consumer
}

/// Renewals that fail until the lease has run out by the consumer's own clock, then
/// succeed with the same epoch (nobody took the scope meanwhile): a consumer that passed
/// the scope's completion over while the lease had run out, and went to sleep, is woken
/// and claims it.
#[test]
fn a_lease_regained_after_running_out_wakes_the_consumers() {
    let ledger = Faulty::new();
    let queue = ledger.queue("gw-a");
    let ownership = Ownership::start(&queue, Duration::from_millis(150)).unwrap();
    ownership.want(SCOPE);
    wait_until("the lease", || ownership.epoch(SCOPE) == Some(1));
    ledger.failing.store(true, Ordering::SeqCst);
    wait_until("the lease to run out", || ownership.epoch(SCOPE).is_none());
    let consumer = sleeping_consumer(&ledger, &queue, &ownership);
    assert_eq!(ownership.epoch(SCOPE), None);
    ledger.failing.store(false, Ordering::SeqCst);
    let claim = consumer
        .recv_timeout(HANG_GUARD)
        .expect("hang guard: the consumer was not woken when the lease came back")
        .expect("claimed");
    assert_eq!(
        ownership.epoch(SCOPE),
        Some(1),
        "the same epoch: never taken over"
    );
    claim.ack().unwrap();
}

/// A renewal asked before the lease ran out by the local clock and answered after it (a
/// slow store, the round before slow too): meanwhile `epoch` answered `None` and a
/// consumer passed the scope's completion over and went to sleep. The grant keeps the
/// epoch and holds past the next round, so no later round sees a lapse: the grant itself
/// must wake the consumer (judged by when it is recorded, not by when it was asked for).
///
/// Lease 3 s, rounds every 1 s after the last one ended. The round asked at `a + 1` is
/// answered at `a + 2.2` (its lease to `a + 4`); the next, asked at `a + 3.2`, is answered
/// after the local lapse at `a + 4`: its lease to `a + 6.2`, the round after at `a + 5.1`.
#[test]
fn a_renewal_answered_after_the_lease_ran_out_wakes_the_consumers() {
    const LEASE: Duration = Duration::from_secs(3);
    let ledger = Faulty::new();
    let queue = ledger.queue("gw-a");
    let ownership = Ownership::start(&queue, LEASE).unwrap();
    ownership.want(SCOPE);
    wait_until("the lease", || ownership.epoch(SCOPE) == Some(1));
    let (entered, open) = ledger.gate();
    entered.recv_timeout(HANG_GUARD).expect("the thread renews");
    let (entered_late, open_late) = ledger.gate();
    std::thread::sleep(LEASE * 2 / 5);
    open.send(()).unwrap();
    entered_late
        .recv_timeout(HANG_GUARD)
        .expect("the thread renews again");
    wait_until("the lease to run out", || ownership.epoch(SCOPE).is_none());
    let consumer = sleeping_consumer(&ledger, &queue, &ownership);
    open_late.send(()).unwrap();
    let claim = consumer
        .recv_timeout(HANG_GUARD)
        .expect("hang guard: the consumer was not woken when the renewal was answered")
        .expect("claimed");
    assert_eq!(ownership.epoch(SCOPE), Some(1), "the same epoch");
    claim.ack().unwrap();
}

/// A scope given up while the thread's request for it is under way, then the last
/// handle dropped: the lease that request was granted is released as the thread ends,
/// not left to run out.
#[test]
fn a_lease_granted_after_it_was_given_up_is_released_at_the_end() {
    let ledger = Faulty::new();
    let queue = ledger.queue("gw-a");
    let (entered, open) = ledger.gate();
    let ownership = Ownership::start(&queue, LEASE).unwrap();
    ownership.want(SCOPE);
    entered
        .recv_timeout(HANG_GUARD)
        .expect("the thread asks for the lease");
    ownership.give_up(SCOPE);
    drop(ownership);
    open.send(()).unwrap();
    wait_until("the lease released", || {
        let leases = ledger.scope_leases().unwrap();
        leases.len() == 1 && leases[0].holder.is_empty()
    });
    // (Not `owning`: the released lease is in the store already, so `is_leased` could
    // answer before the round that asks for it.) A round here and the thread's own may
    // race; the first takes the lease, the other renews it: epoch 2 either way.
    let standby = Ownership::start(&ledger.queue("gw-b"), LEASE).unwrap();
    standby.want(SCOPE);
    standby.renew_now().unwrap();
    assert_eq!(standby.epoch(SCOPE), Some(2), "handed over at once");
}

/// A lease longer than any clock can count is held as a day's, never a panic.
#[test]
fn an_endless_lease_is_held_as_a_day() {
    let (_, a, _) = pair();
    let owner = Ownership::start(&a, Duration::MAX).unwrap();
    owner.want(SCOPE);
    owner.renew_now().unwrap();
    assert_eq!(owner.epoch(SCOPE), Some(1));
    // (The manual clock stands still: the thread's own rounds ask for the same end.)
    let leases = a.backend().scope_leases().unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(
        leases[0].lease_until - a.backend().now(),
        24.0 * 60.0 * 60.0
    );
}

/// `is_leased` tells every scope the store keeps a lease on, whoever holds it, released
/// ones included, as of the last round.
#[test]
fn is_leased_sees_every_holders_scopes() {
    let (_, a, b) = pair();
    let owner = owning(&a);
    let other = Ownership::start(&b, LEASE).unwrap();
    other.renew_now().unwrap();
    assert!(other.is_leased(SCOPE), "gw-a's");
    assert!(!other.is_leased("platform:slack"));
    owner.give_up(SCOPE);
    owner.renew_now().unwrap();
    other.renew_now().unwrap();
    assert!(other.is_leased(SCOPE), "released, still known");
}

/// An empty instance id is refused at open: it is how the store marks a released lease's
/// holder, so such a queue could renew a lease nobody holds.
#[test]
fn an_empty_instance_id_is_refused() {
    let error = CompletionQueue::builder(MemoryLedger::new())
        .instance("")
        .open()
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "the completion ledger is unavailable: a queue's instance id must not be empty"
    );
}
