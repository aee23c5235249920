//! The completion queue contract: FIFO, put never blocks or drops, non-blocking
//! take, take with timeout, len/is_empty, drain, put-back to the tail — and many
//! producers with many consumers, every event taken exactly once, in order per producer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

#[path = "support/forwarding.rs"]
mod forwarding;
use forwarding::forward_ledger;

use process_registry::{
    AsyncDelegationEvent, ClaimFilter, CompletionQueue, Event, ExtraFields, LedgerBackend,
    LedgerError, MemoryLedger, NewPending, PendingRefused, ProcessRegistry, WatchMatch,
    WatchOverflow,
};
use serde_json::json;

fn numbered(n: u64) -> Event {
    Event::WatchMatch(WatchMatch {
        suppressed: Some(process_registry::WireNumber::from(n)),
        ..Default::default()
    })
}

fn number(event: &Event) -> u64 {
    match event {
        Event::WatchMatch(e) => e.suppressed.as_ref().unwrap().as_u64().unwrap(),
        other => panic!("unexpected event {other:?}"),
    }
}

#[test]
fn fifo_with_len_and_is_empty() {
    let queue = CompletionQueue::new();
    assert!(queue.is_empty());
    assert_eq!(queue.len(), 0);
    for n in 0..5 {
        queue.put(numbered(n));
    }
    assert!(!queue.is_empty());
    assert_eq!(queue.len(), 5);
    let taken: Vec<u64> = std::iter::from_fn(|| queue.try_take())
        .map(|e| number(&e))
        .collect();
    assert_eq!(taken, [0, 1, 2, 3, 4]);
    assert!(queue.is_empty());
    assert_eq!(queue.try_take(), None);
}

#[test]
fn put_accepts_every_event_struct() {
    let queue = CompletionQueue::new();
    queue.put(WatchMatch::default());
    queue.put(Event::WatchOverflowTripped(WatchOverflow::default()));
    queue.put(process_registry::ProcessCompletion::default());
    queue.put(process_registry::WatchDisabled::default());
    queue.put(process_registry::AsyncDelegationEvent::default());
    let types: Vec<String> = queue
        .drain()
        .iter()
        .map(|e| e.type_name().to_owned())
        .collect();
    assert_eq!(
        types,
        [
            "watch_match",
            "watch_overflow_tripped",
            "completion",
            "watch_disabled",
            "async_delegation"
        ]
    );
}

#[test]
fn put_back_goes_to_the_tail() {
    let queue = CompletionQueue::new();
    for n in 0..3 {
        queue.put(numbered(n));
    }
    let head = queue.try_take().unwrap();
    queue.put(head);
    let order: Vec<u64> = queue.drain().iter().map(number).collect();
    assert_eq!(order, [1, 2, 0]);
}

#[test]
fn drain_takes_what_was_waiting_and_ends_even_with_put_backs() {
    let queue = CompletionQueue::new();
    for n in 0..4 {
        queue.put(numbered(n));
    }
    // A consumer that puts every event back while draining still terminates.
    let drained = queue.drain();
    for event in &drained {
        queue.put(event.clone());
    }
    assert_eq!(drained.iter().map(number).collect::<Vec<_>>(), [0, 1, 2, 3]);
    assert_eq!(queue.len(), 4);
    assert_eq!(queue.drain().len(), 4);
    assert!(queue.drain().is_empty());
}

#[test]
fn take_where_takes_the_wanted_in_order_and_puts_the_rest_back_in_order() {
    let queue = CompletionQueue::new();
    for n in 0..6 {
        queue.put(numbered(n));
    }
    let even = queue.take_where(|event| number(event).is_multiple_of(2));
    assert_eq!(even.iter().map(number).collect::<Vec<_>>(), [0, 2, 4]);
    assert_eq!(
        queue.drain().iter().map(number).collect::<Vec<_>>(),
        [1, 3, 5]
    );
    assert!(queue.take_where(|_| true).is_empty());
}

#[test]
fn take_where_cli_completions_leaves_routed_and_other_events() {
    let queue = CompletionQueue::new();
    let routed = AsyncDelegationEvent {
        delegation_id: Some("deleg_00000001".into()),
        session_key: "agent:main:telegram:dm:1".into(),
        ..Default::default()
    };
    let cli = AsyncDelegationEvent {
        delegation_id: Some("deleg_00000002".into()),
        ..Default::default()
    };
    queue.put(routed.clone());
    queue.put(numbered(7));
    queue.put(cli.clone());
    assert_eq!(
        queue.take_where(Event::is_cli_completion),
        [Event::AsyncDelegation(cli)]
    );
    assert_eq!(queue.drain(), [Event::AsyncDelegation(routed), numbered(7)]);
}

#[test]
fn take_timeout_returns_none_when_nothing_arrives() {
    let queue = CompletionQueue::new();
    assert_eq!(queue.take_timeout(Duration::from_millis(5)), None);
    queue.put(numbered(9));
    assert_eq!(
        queue.take_timeout(Duration::ZERO).map(|e| number(&e)),
        Some(9)
    );
}

#[test]
fn take_timeout_wakes_for_an_event_put_later() {
    let queue = CompletionQueue::new();
    let producer = queue.clone();
    let handle = thread::Builder::new()
        .name("late-producer".into())
        .spawn(move || {
            thread::sleep(Duration::from_millis(20));
            producer.put(numbered(1));
        })
        .unwrap();
    let event = queue.take_timeout(Duration::from_secs(10));
    handle.join().unwrap();
    assert_eq!(event.map(|e| number(&e)), Some(1));
}

#[test]
fn clones_and_registries_share_one_queue() {
    let queue = CompletionQueue::new();
    let clone = queue.clone();
    assert!(queue.same_queue(&clone));
    assert!(!queue.same_queue(&CompletionQueue::new()));
    clone.put(numbered(5));
    assert_eq!(queue.len(), 1);

    let registry = ProcessRegistry::with_queue(queue.clone());
    assert!(registry.completion_queue().same_queue(&queue));
    let other = ProcessRegistry::new();
    assert!(!other.completion_queue().same_queue(&queue));
    assert!(other.completion_queue().is_empty());
    assert!(registry.clone().completion_queue().same_queue(&queue));
}

const PRODUCERS: u64 = 8;
const PER_PRODUCER: u64 = 10_000;
const CONSUMERS: usize = 3;

fn tagged(producer: u64, seq: u64) -> Event {
    let mut extra = ExtraFields::new();
    extra.insert("producer", json!(producer));
    extra.insert("seq", json!(seq));
    Event::WatchMatch(WatchMatch {
        extra,
        ..Default::default()
    })
}

fn tag(event: &Event) -> (u64, u64) {
    let Event::WatchMatch(e) = event else {
        panic!("unexpected event {event:?}");
    };
    (
        e.extra.value("producer").unwrap().as_u64().unwrap(),
        e.extra.value("seq").unwrap().as_u64().unwrap(),
    )
}

#[test]
fn many_producers_many_consumers_take_each_event_once_in_producer_order() {
    let queue = CompletionQueue::new();
    let producers_done = Arc::new(AtomicBool::new(false));

    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|c| {
            let queue = queue.clone();
            let producers_done = Arc::clone(&producers_done);
            thread::Builder::new()
                .name(format!("queue-test-consumer-{c}"))
                .spawn(move || {
                    let mut taken = Vec::new();
                    loop {
                        // Check the flag before taking: if it was set and the take then
                        // finds nothing, every event has been taken.
                        let done = producers_done.load(Ordering::Acquire);
                        match queue.take_timeout(Duration::from_millis(5)) {
                            Some(event) => taken.push(tag(&event)),
                            None if done => break,
                            None => {}
                        }
                        // Exercise the other take forms too.
                        if let Some(event) = queue.try_take() {
                            taken.push(tag(&event));
                        }
                        if taken.len() % 64 == 0 {
                            taken.extend(queue.drain().iter().map(tag));
                        }
                    }
                    taken
                })
                .unwrap()
        })
        .collect();

    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let queue = queue.clone();
            thread::Builder::new()
                .name(format!("queue-test-producer-{p}"))
                .spawn(move || {
                    for seq in 0..PER_PRODUCER {
                        queue.put(tagged(p, seq));
                    }
                })
                .unwrap()
        })
        .collect();
    for producer in producers {
        producer.join().unwrap();
    }
    producers_done.store(true, Ordering::Release);

    let per_consumer: Vec<Vec<(u64, u64)>> =
        consumers.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(queue.is_empty());

    // FIFO per producer: each consumer sees any one producer's events in sequence order.
    for taken in &per_consumer {
        let mut last: HashMap<u64, u64> = HashMap::new();
        for &(producer, seq) in taken {
            if let Some(previous) = last.insert(producer, seq) {
                assert!(
                    previous < seq,
                    "producer {producer}: {seq} after {previous}"
                );
            }
        }
    }

    // Exactly once: every (producer, seq) appears once over all consumers.
    let mut all: Vec<(u64, u64)> = per_consumer.into_iter().flatten().collect();
    assert_eq!(all.len() as u64, PRODUCERS * PER_PRODUCER);
    all.sort_unstable();
    let expected: Vec<(u64, u64)> = (0..PRODUCERS)
        .flat_map(|p| (0..PER_PRODUCER).map(move |s| (p, s)))
        .collect();
    assert_eq!(all, expected);
}

/// A put reaches a waiting consumer while other threads keep moving puts from the
/// memory ledger's inbox into its FIFO (every `len` does): a put is visible, lock-free,
/// in one place or the other at every instant, so no wake-up is lost. One event at a
/// time, so a lost wake-up would leave the consumer asleep: a generous bound turns that
/// into a failure rather than a hang.
#[test]
fn a_waiting_consumer_is_woken_while_other_threads_move_puts_into_the_fifo() {
    const ROUNDS: u64 = 2_000;
    let queue = CompletionQueue::new();
    let done = Arc::new(AtomicBool::new(false));
    let lookers: Vec<_> = (0..2)
        .map(|_| {
            let queue = queue.clone();
            let done = Arc::clone(&done);
            thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    std::hint::black_box(queue.len());
                }
            })
        })
        .collect();
    let (took, taken) = std::sync::mpsc::channel();
    let consumer = {
        let queue = queue.clone();
        thread::spawn(move || {
            for round in 0..ROUNDS {
                // The consumer's protocol: arm the wait, look, then wait.
                let event = loop {
                    let wait = queue.listen();
                    let looked = if round % 2 == 0 {
                        queue.try_take()
                    } else {
                        queue
                            .claim(&process_registry::ClaimFilter::any())
                            .unwrap()
                            .map(|claim| (*claim.ack().unwrap()).clone())
                    };
                    if let Some(event) = looked {
                        break event;
                    }
                    let deadline = std::time::Instant::now() + Duration::from_secs(10);
                    assert!(wait.wait_until(deadline), "round {round}: never woken");
                };
                took.send(tag(&event)).unwrap();
            }
        })
    };
    for round in 0..ROUNDS {
        queue.put(tagged(0, round));
        assert_eq!(taken.recv().unwrap(), (0, round));
    }
    consumer.join().unwrap();
    done.store(true, Ordering::Relaxed);
    for looker in lookers {
        looker.join().unwrap();
    }
    assert!(queue.is_empty());
}

/// A locked step takes the puts that were waiting when it began, not those sent while
/// it runs: with producers that never pause (they stop only when the step has
/// returned), `len` still returns — it used to drain until the producers stopped.
/// Bounded: the producers give up after `CAP` puts, and then the step's answer shows it
/// waited. (Against the unbounded drain this failed in every release run and in about
/// one debug run in three: a debug drain sometimes catches up with the producers.)
#[test]
fn a_locked_step_returns_while_a_producer_keeps_putting() {
    const CAP: u64 = 200_000;
    let queue = CompletionQueue::new();
    queue.put(tagged(0, 0)); // the queue's instance is known: later puts use the inbox
    assert!(queue.try_take().is_some());
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // Two producers: together they put faster than one step moves puts to the FIFO.
    let producers: Vec<_> = (0..2)
        .map(|p| {
            let (queue, stop, sent) = (queue.clone(), Arc::clone(&stop), Arc::clone(&sent));
            thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) && n < CAP / 2 {
                    queue.put(tagged(p, n));
                    n += 1;
                    sent.fetch_add(1, Ordering::Release);
                }
                n
            })
        })
        .collect();
    while sent.load(Ordering::Acquire) < 1_000 {
        std::hint::spin_loop();
    }
    let waiting = queue.len();
    stop.store(true, Ordering::Relaxed);
    let put: u64 = producers.into_iter().map(|p| p.join().unwrap()).sum();
    assert!(
        waiting >= 1_000 && (waiting as u64) < CAP,
        "len() saw {waiting} of {put} puts: it waited for the producer to stop"
    );
    assert_eq!(queue.drain().len() as u64, put);
}

/// A put waiting in the memory ledger's inbox is seen by a take whose `after_seq` is
/// past every `seq` issued so far (the put is numbered when it leaves the inbox).
#[test]
fn a_take_past_the_last_seq_sees_a_waiting_put() {
    use process_registry::{CandidateQuery, LedgerBackend, MemoryLedger, SessionMatch};
    let backend: Arc<dyn LedgerBackend> = Arc::new(MemoryLedger::new());
    let queue = CompletionQueue::builder_shared(Arc::clone(&backend))
        .open()
        .unwrap();
    queue.put(tagged(0, 0)); // seq 1, and the instance is known: later puts use the inbox
    assert!(queue.try_take().is_some());
    queue.put(tagged(0, 1));
    queue.put(tagged(0, 2));
    let after_2 = CandidateQuery {
        kinds: &[],
        except_kinds: &[],
        sessions: SessionMatch::Any,
        restored: false,
        after_seq: 2,
    };
    let taken = backend.take_next(&after_2).unwrap().unwrap();
    assert_eq!((taken.seq, tag(&taken.event)), (3, (0, 2)));
}

#[test]
fn a_claim_predicate_may_read_the_queue_it_claims_from() {
    // The predicate is the consumer's code: the memory ledger asks it with no lock of its
    // own held, so a predicate that reads the queue (or waits on something that writes
    // to it) cannot deadlock the claim.
    let queue = CompletionQueue::new();
    for n in 0..3 {
        queue.put(numbered(n));
    }
    let (done, claimed) = std::sync::mpsc::channel();
    let reading = queue.clone();
    let claiming = queue.clone();
    thread::spawn(move || {
        let filter = ClaimFilter::any().where_event(move |event| {
            // Reads the ledger (its lock) from inside the claim.
            reading.len() == 3 && number(event) == 1
        });
        let claim = claiming.claim(&filter).map(|claim| {
            let claim = claim.expect("the second event is wanted");
            let seen = number(claim.event());
            claim.ack().map(|_| seen)
        });
        let _ = done.send(claim);
    });
    let seen = claimed
        .recv_timeout(Duration::from_secs(20))
        .expect("the claim returned (a predicate asked under the ledger's lock deadlocks)")
        .unwrap()
        .unwrap();
    assert_eq!(seen, 1);
    assert_eq!(queue.len(), 2);
}

/// A memory ledger whose next put fails once told, and whose adoptions of a dead owner's
/// orphans, expiries and prunes fail while told.
#[derive(Default)]
struct FailingHousekeeping {
    inner: MemoryLedger,
    refuse_next_put: AtomicBool,
    refuse_adoption: AtomicBool,
    refuse_expiry: AtomicBool,
    refuse_prunes: AtomicBool,
}

/// `Err("the {step} cannot finish")` while `refuse` is set.
fn refused_while(refuse: &AtomicBool, step: &str) -> Result<(), LedgerError> {
    if refuse.load(Ordering::SeqCst) {
        return Err(LedgerError::Unwritable {
            reason: format!("the {step} cannot finish"),
        });
    }
    Ok(())
}

impl forwarding::Forwarding for FailingHousekeeping {
    fn inner(&self) -> &dyn LedgerBackend {
        &self.inner
    }
    fn insert_pending(&self, row: NewPending<'_>) -> Result<u64, PendingRefused> {
        if self.refuse_next_put.swap(false, Ordering::SeqCst) {
            return Err(PendingRefused {
                error: LedgerError::Unwritable {
                    reason: "the disk is full".to_owned(),
                },
                event: Box::new(row.event),
            });
        }
        self.inner.insert_pending(row)
    }
    fn adopt_orphans(&self, owner: &str) -> Result<u64, LedgerError> {
        refused_while(&self.refuse_adoption, "adoption")?;
        self.inner.adopt_orphans(owner)
    }
    fn expire_pending(&self, before: f64, reason: &str) -> Result<u64, LedgerError> {
        refused_while(&self.refuse_expiry, "expiry")?;
        self.inner.expire_pending(before, reason)
    }
    fn prune_delivered(&self, before: f64) -> Result<u64, LedgerError> {
        refused_while(&self.refuse_prunes, "prune")?;
        self.inner.prune_delivered(before)
    }
}
forward_ledger!(FailingHousekeeping);

/// The open's housekeeping only tidies: a prune the store cannot finish is logged and
/// left for a later sweep, and the queue opens (on the build before, the open returned
/// the prune's error, so a ledger with a backlog the prune could not clear in time kept
/// every process from opening its queue). The rows already there are still delivered,
/// and a sweep still reports the prune's failure.
#[test]
fn a_queue_opens_when_its_first_prune_fails() {
    let ledger = Arc::new(FailingHousekeeping::default());
    ledger.refuse_prunes.store(true, Ordering::SeqCst);
    let shared: Arc<dyn LedgerBackend> = ledger.clone();
    // A completion another queue left pending, before this one opens.
    let first = CompletionQueue::builder_shared(Arc::clone(&shared))
        .open()
        .expect("opens though its prune fails");
    first.put(numbered(3));
    drop(first);
    let queue = CompletionQueue::builder_shared(shared)
        .open()
        .expect("opens though its prune fails");
    let taken = queue
        .try_take()
        .expect("the pending completion is delivered");
    assert_eq!(number(&taken), 3);
    assert!(
        matches!(queue.sweep(), Err(LedgerError::Unwritable { reason }) if reason == "the prune cannot finish"),
        "a sweep still says the prune failed"
    );
}

#[test]
fn a_sweep_retries_refused_writes_even_when_its_prune_fails() {
    let ledger = Arc::new(FailingHousekeeping::default());
    let shared: Arc<dyn LedgerBackend> = ledger.clone();
    let queue = CompletionQueue::builder_shared(shared).open().unwrap();
    ledger.refuse_prunes.store(true, Ordering::SeqCst);
    ledger.refuse_next_put.store(true, Ordering::SeqCst);
    // Refused: kept in memory for the sweep.
    queue.put(numbered(7));
    assert!(queue.try_take().is_none());
    // The sweep's prune fails (and says so), and the refused event is written anyway.
    let swept = queue.sweep();
    assert!(
        matches!(&swept, Err(LedgerError::Unwritable { reason }) if reason == "the prune cannot finish"),
        "{swept:?}"
    );
    let taken = queue
        .try_take()
        .expect("the refused put was written by the sweep");
    assert_eq!(number(&taken), 7);
}

/// `is_empty` looks for one waiting completion instead of counting them: it must agree
/// with `len` whatever the rows' states (held by a claim, backing off after a release,
/// back at once after a deferral, taken).
#[test]
fn is_empty_agrees_with_len_through_claims_releases_and_takes() {
    let queue = CompletionQueue::new();
    let agree = |queue: &CompletionQueue, empty: bool, when: &str| {
        assert_eq!(queue.is_empty(), empty, "{when}: is_empty");
        let waiting = queue.len();
        assert_eq!(waiting > 0, !empty, "{when}: len {waiting}");
    };
    agree(&queue, true, "new");
    queue.put(numbered(1));
    queue.put(numbered(2));
    agree(&queue, false, "two put");
    let first = queue.claim(&ClaimFilter::any()).unwrap().unwrap();
    let second = queue.claim(&ClaimFilter::any()).unwrap().unwrap();
    agree(&queue, true, "both held");
    second.release("not now").unwrap();
    agree(&queue, true, "one held, one backing off");
    first.defer().unwrap();
    agree(&queue, false, "one back at once");
    assert_eq!(number(&queue.try_take().unwrap()), 1);
    agree(&queue, true, "the other still backing off");
}

/// Every instance but `gw-a` is dead.
struct OnlyGwA;

impl process_registry::Liveness for OnlyGwA {
    fn is_alive(&self, instance: &str) -> bool {
        instance == "gw-a"
    }
}

fn open_as_gw_a(shared: &Arc<dyn LedgerBackend>) -> Result<CompletionQueue, LedgerError> {
    CompletionQueue::builder_shared(Arc::clone(shared))
        .instance("gw-a")
        .liveness(OnlyGwA)
        .open()
}

/// The recovery of a dead owner still decides the open: when it fails, the open fails
/// with its error (a dead owner's completions must not be left unrestored), whatever the
/// housekeeping answers; once it can, the queue opens, though its expiry and prune
/// still fail, and the dead owner's completion is restored.
#[test]
fn a_queue_does_not_open_when_its_recovery_fails() {
    let ledger = Arc::new(FailingHousekeeping::default());
    let shared: Arc<dyn LedgerBackend> = ledger.clone();
    ledger
        .insert_pending(NewPending {
            owner: "gw-dead",
            event: numbered(5),
        })
        .map_err(|refused| refused.error)
        .unwrap();
    ledger.refuse_adoption.store(true, Ordering::SeqCst);
    ledger.refuse_expiry.store(true, Ordering::SeqCst);
    ledger.refuse_prunes.store(true, Ordering::SeqCst);
    let refused = open_as_gw_a(&shared).err();
    assert!(
        matches!(&refused, Some(LedgerError::Unwritable { reason }) if reason == "the adoption cannot finish"),
        "{refused:?}"
    );
    ledger.refuse_adoption.store(false, Ordering::SeqCst);
    let queue = open_as_gw_a(&shared).expect("the recovery holds now");
    let restored = queue
        .claim(&ClaimFilter::any().including_restored())
        .unwrap()
        .expect("the dead owner's completion, restored");
    assert!(restored.is_restored());
    assert_eq!(number(&restored.ack().unwrap()), 5);
}

/// A sweep returns the first error, in its order (the recovery first), and runs every
/// step whatever the others answered.
#[test]
fn a_sweep_returns_its_first_error() {
    let ledger = Arc::new(FailingHousekeeping::default());
    let shared: Arc<dyn LedgerBackend> = ledger.clone();
    let queue = open_as_gw_a(&shared).unwrap();
    ledger
        .insert_pending(NewPending {
            owner: "gw-dead",
            event: numbered(6),
        })
        .map_err(|refused| refused.error)
        .unwrap();
    ledger.refuse_adoption.store(true, Ordering::SeqCst);
    ledger.refuse_expiry.store(true, Ordering::SeqCst);
    ledger.refuse_prunes.store(true, Ordering::SeqCst);
    let swept = queue.sweep();
    assert!(
        matches!(&swept, Err(LedgerError::Unwritable { reason }) if reason == "the adoption cannot finish"),
        "{swept:?}"
    );
    ledger.refuse_adoption.store(false, Ordering::SeqCst);
    let swept = queue.sweep();
    assert!(
        matches!(&swept, Err(LedgerError::Unwritable { reason }) if reason == "the expiry cannot finish"),
        "{swept:?}"
    );
    ledger.refuse_expiry.store(false, Ordering::SeqCst);
    let swept = queue.sweep();
    assert!(
        matches!(&swept, Err(LedgerError::Unwritable { reason }) if reason == "the prune cannot finish"),
        "{swept:?}"
    );
    ledger.refuse_prunes.store(false, Ordering::SeqCst);
    queue.sweep().unwrap();
    let restored = queue
        .claim(&ClaimFilter::any().including_restored())
        .unwrap()
        .expect("restored by the sweep that failed only its prune");
    assert!(restored.is_restored());
}
