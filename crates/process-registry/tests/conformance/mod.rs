//! The ledger conformance suite: one plain function per behaviour, each taking a store
//! factory, run against every backend by [`conformance_suite!`]. A case a backend cannot
//! run says so and is counted as skipped — never silently passed.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use jiff::{tz::TimeZone, Timestamp};
use process_registry::{
    format_process_notification_in, AsyncDelegationEvent, CandidateQuery, ClaimFilter,
    CompletionQueue, DeliveryState, DispatchRecord, Event, LedgerBackend, LedgerConfig, Liveness,
    ManualClock, NewPending, Ownership, Recorded, Released, RowQuery, RunState, SessionMatch,
    SettleError, WatchOverflow, OWNER_EXITED_ERROR, RESTORE_HORIZON_REASON,
};

/// Only a guard against hangs.
pub const HANG_GUARD: Duration = Duration::from_secs(20);

/// A fresh, isolated store: `backend()` called twice gives two handles on the same
/// storage (a restarted process opening the same file), all on the store's clock.
pub trait Store {
    /// A handle on the store.
    fn backend(&self) -> Arc<dyn LedgerBackend>;
    /// The clock every handle reads.
    fn clock(&self) -> &Arc<ManualClock>;
}

/// Instances that are dead; everything else is alive.
#[derive(Clone, Default)]
pub struct FakeLiveness {
    dead: Arc<Mutex<HashSet<String>>>,
}

impl FakeLiveness {
    pub fn kill(&self, instance: &str) {
        self.dead.lock().unwrap().insert(instance.to_owned());
    }
}

impl Liveness for FakeLiveness {
    fn is_alive(&self, instance: &str) -> bool {
        !self.dead.lock().unwrap().contains(instance)
    }
}

fn queue_as(store: &dyn Store, instance: &str, liveness: &FakeLiveness) -> CompletionQueue {
    CompletionQueue::builder_shared(store.backend())
        .instance(instance)
        .liveness(liveness.clone())
        .config(LedgerConfig::default().with_sweep_interval(Duration::from_secs(3600)))
        .open()
        .unwrap()
}

/// Every claimable row but restored ones, from the start.
const ANY: CandidateQuery<'static> = CandidateQuery {
    kinds: &[],
    except_kinds: &[],
    sessions: SessionMatch::Any,
    restored: false,
    after_seq: 0,
};

fn queue(store: &dyn Store) -> CompletionQueue {
    queue_as(store, "instance-a", &FakeLiveness::default())
}

fn watch(message: &str) -> Event {
    Event::WatchOverflowTripped(WatchOverflow {
        message: Some(message.to_owned()),
        ..WatchOverflow::default()
    })
}

fn message(event: &Event) -> String {
    match event {
        Event::WatchOverflowTripped(e) => e.message.clone().unwrap(),
        Event::AsyncDelegation(e) => e.goal.to_string(),
        other => panic!("unexpected {other:?}"),
    }
}

fn delegation(id: &str, session_key: &str, goal: &str) -> AsyncDelegationEvent {
    AsyncDelegationEvent {
        delegation_id: Some(id.into()),
        session_key: session_key.into(),
        goal: goal.into(),
        role: Some("leaf".into()),
        ..AsyncDelegationEvent::default()
    }
}

fn dispatch(queue: &CompletionQueue, id: &str, session_key: &str) -> DispatchRecord {
    match queue
        .record_dispatch(
            id,
            session_key,
            Event::from(delegation(id, session_key, "g")),
        )
        .unwrap()
    {
        Recorded::Dispatch(record) => record,
        Recorded::IdTaken => panic!("{id} taken"),
    }
}

fn complete(queue: &CompletionQueue, record: DispatchRecord, id: &str, session_key: &str) {
    let mut event = delegation(id, session_key, "g");
    event.status = Some("completed".into());
    event.summary = Some(format!("result of {id}").into());
    // Dropping the commit wakes the consumers.
    drop(
        queue
            .record_completion(record, id, "completed", Arc::new(event.into()))
            .unwrap(),
    );
}

fn row_of(queue: &CompletionQueue, id: &str) -> process_registry::LedgerRow {
    let rows = queue
        .rows(&RowQuery {
            delegation_id: Some(id.to_owned()),
            ..RowQuery::default()
        })
        .unwrap();
    assert_eq!(rows.len(), 1, "one row for {id}: {rows:?}");
    rows.into_iter().next().unwrap()
}

/// Events are offered in the order they were written.
pub fn write_order(store: &dyn Store) {
    let queue = queue(store);
    for n in 0..5 {
        queue.put(watch(&format!("m{n}")));
    }
    let taken: Vec<String> = std::iter::from_fn(|| queue.try_take())
        .map(|e| message(&e))
        .collect();
    assert_eq!(taken, ["m0", "m1", "m2", "m3", "m4"]);
    assert!(queue.is_empty());
}

/// A running delegation is recorded before its completion, is not claimable, and its
/// completion is claimable once offered — with the delegation id as idempotency key.
pub fn dispatch_then_completion(store: &dyn Store) {
    let queue = queue(store);
    let record = dispatch(&queue, "deleg_00000001", "agent:main:telegram:dm:1");
    let row = row_of(&queue, "deleg_00000001");
    assert_eq!(row.run_state, Some(RunState::Running));
    assert_eq!(row.delivery, None);
    assert_eq!(row.owner, "instance-a");
    assert!(queue.claim(&ClaimFilter::any()).unwrap().is_none());

    let mut event = delegation("deleg_00000001", "agent:main:telegram:dm:1", "g");
    event.status = Some("error".into());
    event.error = Some("boom".into());
    let order = queue
        .record_completion(
            record,
            "deleg_00000001",
            "error",
            Arc::new(event.clone().into()),
        )
        .unwrap();
    let row = row_of(&queue, "deleg_00000001");
    assert_eq!(
        row.seq,
        order.seq(),
        "moved to the tail, at the seq it returned"
    );
    assert_eq!(row.run_state, Some(RunState::Finished("error".into())));
    assert_eq!(row.delivery, Some(DeliveryState::Pending));

    let claim = queue
        .claim(&ClaimFilter::routed())
        .unwrap()
        .expect("claimable");
    assert_eq!(claim.key(), "deleg_00000001");
    assert_eq!(claim.delegation_id(), Some("deleg_00000001"));
    assert_eq!(claim.attempt(), 1);
    assert!(!claim.is_possible_redelivery() && !claim.is_restored());
    assert_eq!(claim.event(), &Event::AsyncDelegation(event.clone()));
    assert_eq!(*claim.ack().unwrap(), Event::AsyncDelegation(event));
}

/// Delegation ids are unique among every row the ledger holds.
pub fn id_uniqueness(store: &dyn Store) {
    let queue = queue(store);
    let record = dispatch(&queue, "deleg_0000000a", "");
    assert_eq!(
        queue
            .record_dispatch(
                "deleg_0000000a",
                "",
                Event::from(delegation("deleg_0000000a", "", "g"))
            )
            .unwrap(),
        Recorded::IdTaken,
        "taken while running"
    );
    complete(&queue, record, "deleg_0000000a", "");
    assert_eq!(
        queue
            .record_dispatch(
                "deleg_0000000a",
                "",
                Event::from(delegation("deleg_0000000a", "", "g"))
            )
            .unwrap(),
        Recorded::IdTaken,
        "taken while pending"
    );
    let other = queue.clone();
    // A second queue on the same store (another process) sees it too.
    let second = queue_as(store, "instance-b", &FakeLiveness::default());
    assert_eq!(
        second
            .record_dispatch(
                "deleg_0000000a",
                "",
                Event::from(delegation("deleg_0000000a", "", "g"))
            )
            .unwrap(),
        Recorded::IdTaken
    );
    drop(other);
}

/// A claim excludes other claims; a decision names the claim; an expired lease makes the
/// completion claimable again as a possible redelivery, and the old claim is fenced off.
pub fn claims_and_leases(store: &dyn Store) {
    let queue = CompletionQueue::builder_shared(store.backend())
        .instance("instance-a")
        .config(LedgerConfig::default().with_lease(Duration::from_secs(300)))
        .open()
        .unwrap();
    queue.put(watch("x"));
    let first = queue
        .claim(&ClaimFilter::any())
        .unwrap()
        .expect("claimable");
    assert!(queue.claim(&ClaimFilter::any()).unwrap().is_none(), "held");
    assert_eq!(queue.len(), 0);

    store.clock().advance(Duration::from_secs(299));
    assert!(
        queue.claim(&ClaimFilter::any()).unwrap().is_none(),
        "lease not over"
    );
    first.renew().unwrap();
    store.clock().advance(Duration::from_secs(299));
    assert!(
        queue.claim(&ClaimFilter::any()).unwrap().is_none(),
        "renewed"
    );
    store.clock().advance(Duration::from_secs(2));

    let second = queue
        .claim(&ClaimFilter::any())
        .unwrap()
        .expect("lease over");
    assert_eq!(second.attempt(), 2);
    assert!(second.is_possible_redelivery());
    assert_eq!(first.ack().unwrap_err(), SettleError::ClaimLost, "fenced");
    assert_eq!(message(&second.ack().unwrap()), "x");
    assert!(queue.is_empty());
}

/// A claim is fenced by its number *and* its instance: another instance's claim that
/// happens to carry the same number cannot decide it.
pub fn claims_are_fenced_by_instance(store: &dyn Store) {
    let queue = queue(store);
    queue.put(watch("contended"));
    let backend = store.backend();
    let seq = backend.candidates(&ANY, 1).unwrap()[0].seq;
    let a = process_registry::ClaimToken {
        id: 7,
        owner: "instance-x",
    };
    let b = process_registry::ClaimToken {
        id: 7,
        owner: "instance-y",
    };
    let lease = |token| process_registry::NewClaim {
        token,
        lease_seconds: 10.0,
    };
    assert!(backend.claim(seq, lease(a)).unwrap().is_some());
    assert!(backend.claim(seq, lease(b)).unwrap().is_none(), "held by x");
    store.clock().advance(Duration::from_secs(11));
    let second = backend
        .claim(seq, lease(b))
        .unwrap()
        .expect("x's lease ran out");
    assert!(second.possible_redelivery);
    assert!(
        !backend.renew(seq, a, 10.0).unwrap(),
        "x no longer holds it"
    );
    assert!(!backend
        .settle(seq, a, process_registry::Settle::Ack)
        .unwrap());
    assert!(backend
        .settle(seq, b, process_registry::Settle::Ack)
        .unwrap());
}

/// A deferral costs no attempt and makes the completion claimable again at once.
pub fn defer_costs_no_attempt(store: &dyn Store) {
    let queue = queue(store);
    queue.put(watch("busy"));
    for _ in 0..20 {
        let claim = queue
            .claim(&ClaimFilter::any())
            .unwrap()
            .expect("claimable");
        assert_eq!(claim.attempt(), 1);
        claim.defer().unwrap();
    }
    let claim = queue
        .claim(&ClaimFilter::any())
        .unwrap()
        .expect("claimable");
    assert!(!claim.is_possible_redelivery());
    claim.ack().unwrap();
}

/// A release backs off (doubling), and the last attempt makes the row dead with its
/// reason; an operator requeue brings it back with no attempts.
pub fn release_backoff_and_dead(store: &dyn Store) {
    let queue = queue(store);
    let config = queue.config().clone();
    queue.put(watch("flaky"));
    for attempt in 1..config.max_attempts {
        let claim = queue.claim(&ClaimFilter::any()).unwrap().expect("due");
        assert_eq!(claim.attempt(), attempt);
        let backoff = config.backoff(attempt);
        assert_eq!(
            claim.release("adapter said 502").unwrap(),
            Released::Retry { after: backoff }
        );
        let row = &queue.rows(&RowQuery::default()).unwrap()[0];
        assert_eq!(row.delivery, Some(DeliveryState::Pending));
        assert_eq!(row.reason.as_deref(), Some("adapter said 502"));
        store.clock().advance(backoff - Duration::from_millis(1));
        assert!(
            queue.claim(&ClaimFilter::any()).unwrap().is_none(),
            "backing off"
        );
        store.clock().advance(Duration::from_millis(1));
    }
    let last = queue.claim(&ClaimFilter::any()).unwrap().expect("due");
    assert_eq!(last.attempt(), config.max_attempts);
    assert_eq!(last.release("adapter said 502").unwrap(), Released::Dead);
    let dead = queue
        .rows(&RowQuery {
            delivery: Some(DeliveryState::Dead),
            ..RowQuery::default()
        })
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].reason.as_deref(),
        Some("gave up after 8 attempts: adapter said 502")
    );
    assert_eq!(dead[0].attempts, 8);
    store.clock().advance(Duration::from_secs(3600));
    assert!(
        queue.claim(&ClaimFilter::any()).unwrap().is_none(),
        "dead stays dead"
    );

    assert!(queue.requeue(dead[0].seq).unwrap());
    assert!(!queue.requeue(dead[0].seq).unwrap(), "no longer dead");
    let claim = queue.claim(&ClaimFilter::any()).unwrap().expect("requeued");
    assert_eq!(claim.attempt(), 1);
    claim.ack().unwrap();
}

/// A row made dead from the middle of the queue and requeued is a row like any other:
/// claimed again, acked once, gone (it was once found only by a scan, so its ack was
/// lost and it came back forever).
pub fn requeued_from_the_middle(store: &dyn Store) {
    let queue = queue(store);
    for n in 0..10 {
        queue.put(watch(&format!("m{n}")));
    }
    let mut claims: Vec<process_registry::Claim> = (0..10)
        .map(|_| queue.claim(&ClaimFilter::any()).unwrap().unwrap())
        .collect();
    let victim = claims.remove(4);
    assert_eq!(message(victim.event()), "m4");
    let seq = queue.rows(&RowQuery::default()).unwrap()[4].seq;
    victim.dead("gave up").unwrap();
    assert!(queue.requeue(seq).unwrap());
    let again = queue.claim(&ClaimFilter::any()).unwrap().expect("requeued");
    assert_eq!(message(again.event()), "m4");
    again.ack().expect("its ack holds");
    for claim in claims {
        claim.ack().unwrap();
    }
    // Gone, or kept as delivered where the store retains delivered rows.
    let rows = queue.rows(&RowQuery::default()).unwrap();
    assert!(
        rows.iter()
            .all(|row| row.delivery == Some(DeliveryState::Delivered)),
        "{rows:?}"
    );
    assert!(
        queue.claim(&ClaimFilter::any()).unwrap().is_none(),
        "never again"
    );
}

/// `dead` is final until requeued; dropping a claim undecided is a release.
pub fn dead_and_dropped_claims(store: &dyn Store) {
    let queue = queue(store);
    queue.put(watch("unroutable"));
    queue.put(watch("dropped"));
    let claim = queue.claim(&ClaimFilter::any()).unwrap().unwrap();
    claim.dead("no route").unwrap();
    let claim = queue.claim(&ClaimFilter::any()).unwrap().unwrap();
    assert_eq!(message(claim.event()), "dropped");
    drop(claim);
    let rows = queue.rows(&RowQuery::default()).unwrap();
    assert_eq!(rows[0].delivery, Some(DeliveryState::Dead));
    assert_eq!(rows[0].reason.as_deref(), Some("no route"));
    assert_eq!(rows[1].delivery, Some(DeliveryState::Pending));
    assert_eq!(
        rows[1].reason.as_deref(),
        Some("the consumer dropped its claim without a decision")
    );
    assert_eq!(queue.requeue_dead().unwrap(), 1);
}

/// The backend's count of completions waiting for delivery: pending and claimed rows,
/// not running, delivered or dead ones.
pub fn undelivered_count(store: &dyn Store) {
    let queue = queue(store);
    let backend = store.backend();
    let running = dispatch(&queue, "deleg_00000001", "");
    assert_eq!(backend.count_undelivered().unwrap(), 0, "a running row");
    complete(&queue, running, "deleg_00000001", "");
    for message in ["delivered", "claimed", "dead", "pending"] {
        queue.put(watch(message));
    }
    assert_eq!(backend.count_undelivered().unwrap(), 5);
    queue.try_take().unwrap();
    let claim = queue.claim(&ClaimFilter::any()).unwrap().unwrap();
    assert_eq!(message(claim.event()), "delivered");
    claim.ack().unwrap();
    let claimed = queue.claim(&ClaimFilter::any()).unwrap().unwrap();
    queue
        .claim(&ClaimFilter::any())
        .unwrap()
        .unwrap()
        .dead("no route")
        .unwrap();
    assert_eq!(
        backend.count_undelivered().unwrap(),
        2,
        "one claimed, one pending"
    );
    claimed.ack().unwrap();
    assert_eq!(backend.count_undelivered().unwrap(), 1);
}

/// A claim of a row the ledger does not hold is never a won claim.
pub fn untracked_claims(store: &dyn Store) {
    let backend = store.backend();
    let token = process_registry::ClaimToken {
        id: 1,
        owner: "nobody",
    };
    let claim = process_registry::NewClaim {
        token,
        lease_seconds: 300.0,
    };
    assert!(backend.claim(999_999, claim).unwrap().is_none());
    assert!(!backend
        .settle(999_999, token, process_registry::Settle::Ack)
        .unwrap());
    assert!(!backend.renew(999_999, token, 1.0).unwrap());
    assert!(!backend.requeue(999_999).unwrap());
    // A completion for a delegation the ledger never recorded is not "finished".
    let queue = queue(store);
    assert!(backend
        .finish_run(process_registry::Finish {
            delegation_id: "deleg_unknown0",
            expect_owner: None,
            run_state: RunState::Finished("completed".into()),
            event: Arc::new(delegation("deleg_unknown0", "", "g").into()),
            reason: None,
        })
        .unwrap()
        .is_none());
    assert!(queue.is_empty());
}

/// Consumers claim only what their filter owns.
pub fn filters(store: &dyn Store) {
    let queue = queue(store);
    queue.put(delegation("deleg_cli00001", "", "cli"));
    queue.put(delegation(
        "deleg_tg000001",
        "agent:main:telegram:dm:1",
        "telegram",
    ));
    queue.put(watch("watch"));
    queue.put(process_registry::ProcessCompletion {
        session_key: Some("agent:main:discord:dm:2".into()),
        ..Default::default()
    });
    let take = |filter: &ClaimFilter| -> Vec<String> {
        std::iter::from_fn(|| queue.claim(filter).unwrap())
            .map(|claim| claim.ack().unwrap())
            .map(|e| match &*e {
                Event::Completion(_) => "process".to_owned(),
                other => message(other),
            })
            .collect()
    };
    assert_eq!(queue.count(&ClaimFilter::routed()), 2);
    assert_eq!(take(&ClaimFilter::cli_completions()), ["cli"]);
    assert_eq!(take(&ClaimFilter::watch_events()), ["watch"]);
    assert_eq!(
        take(&ClaimFilter::sessions(["agent:main:discord:dm:2"])),
        ["process"]
    );
    assert_eq!(
        take(&ClaimFilter::routed().where_event(|e| e.session_key() == Some("nope"))),
        Vec::<String>::new()
    );
    assert_eq!(take(&ClaimFilter::routed()), ["telegram"]);
    assert!(queue.is_empty());
}

/// The plain queue API on a ledger: drain, take_where, len.
pub fn plain_queue_api(store: &dyn Store) {
    let queue = queue(store);
    for n in 0..4 {
        queue.put(watch(&format!("w{n}")));
    }
    queue.put(delegation("deleg_cli00002", "", "cli"));
    assert_eq!(queue.len(), 5);
    let mine = queue.take_where(Event::is_cli_completion);
    assert_eq!(mine.len(), 1);
    assert_eq!(queue.len(), 4);
    let all: Vec<String> = queue.drain().iter().map(message).collect();
    assert_eq!(all, ["w0", "w1", "w2", "w3"]);
    assert!(queue.try_take().is_none());
    assert!(queue.take_timeout(Duration::from_millis(1)).is_none());
}

/// A plain take claims and delivers in one step: FIFO, past a held claim and a row
/// backing off, taking a claim whose lease ran out as a possible redelivery (and fencing
/// that claim off), never a restored row unless asked.
pub fn plain_takes_are_one_step(store: &dyn Store) {
    let queue = CompletionQueue::builder_shared(store.backend())
        .instance("instance-a")
        .config(LedgerConfig::default().with_lease(Duration::from_secs(60)))
        .open()
        .unwrap();
    for name in ["held", "backing off", "free"] {
        queue.put(watch(name));
    }
    let held = queue.claim(&ClaimFilter::any()).unwrap().unwrap();
    let backing_off = queue.claim(&ClaimFilter::any()).unwrap().unwrap();
    assert!(matches!(
        backing_off.release("try later").unwrap(),
        Released::Retry { .. }
    ));
    assert_eq!(message(&queue.try_take().unwrap()), "free");
    assert!(queue.try_take().is_none(), "one held, one backing off");

    // The backoff (1 s) runs out first, the lease (60 s) later.
    store.clock().advance(Duration::from_secs(2));
    let backend = store.backend();
    let taken = backend.take_next(&ANY).unwrap().unwrap();
    assert_eq!(message(&taken.event), "backing off");
    assert!(!taken.possible_redelivery);
    store.clock().advance(Duration::from_secs(60));
    let taken = backend.take_next(&ANY).unwrap().unwrap();
    assert_eq!(message(&taken.event), "held");
    assert!(taken.possible_redelivery, "its lease ran out undecided");
    assert_eq!(held.ack().unwrap_err(), SettleError::ClaimLost, "fenced");
    assert!(backend.take_next(&ANY).unwrap().is_none());

    let retained = backend.capabilities().retains_delivered;
    let delivered = queue
        .rows(&RowQuery {
            delivery: Some(DeliveryState::Delivered),
            ..RowQuery::default()
        })
        .unwrap();
    assert_eq!(delivered.len(), if retained { 3 } else { 0 });
    if retained {
        // Each take counts as an attempt, after the claims before it.
        let attempts: Vec<u32> = delivered.iter().map(|row| row.attempts).collect();
        assert_eq!(attempts, [2, 2, 1], "held, backing off, free");
    }
    assert!(delivered
        .iter()
        .all(|row| row.claimed_by.is_none() && row.lease_until.is_none()));
    assert_eq!(
        queue.rows(&RowQuery::default()).unwrap().len(),
        delivered.len()
    );

    // A row whose writer died is restored: a plain take leaves it for its session's owner.
    let liveness = FakeLiveness::default();
    let writer = queue_as(store, "instance-w", &liveness);
    writer.put(watch("orphan"));
    drop(writer);
    liveness.kill("instance-w");
    let reader = queue_as(store, "instance-r", &liveness);
    assert!(
        reader.try_take().is_none(),
        "restored rows are not the plain queue's"
    );
    let restored = backend
        .take_next(&CandidateQuery {
            restored: true,
            ..ANY
        })
        .unwrap()
        .unwrap();
    assert_eq!(message(&restored.event), "orphan");
}

/// Plain takers racing each other take every event exactly once, waiting between events
/// without polling.
pub fn concurrent_plain_takes_are_exclusive(store: &dyn Store) {
    const EVENTS: usize = 600;
    const TAKERS: usize = 3;
    let queue = queue(store);
    let taken = Arc::new(Mutex::new(Vec::new()));
    let takers: Vec<_> = (0..TAKERS)
        .map(|_| {
            let (queue, taken) = (queue.clone(), Arc::clone(&taken));
            std::thread::spawn(move || {
                while let Some(event) = queue.take_timeout(Duration::from_millis(300)) {
                    taken.lock().unwrap().push(message(&event));
                }
            })
        })
        .collect();
    for n in 0..EVENTS {
        queue.put(watch(&format!("{n}")));
    }
    for taker in takers {
        taker.join().unwrap();
    }
    let taken = taken.lock().unwrap();
    let unique: HashSet<&String> = taken.iter().collect();
    assert_eq!(taken.len(), EVENTS, "each taken");
    assert_eq!(unique.len(), EVENTS, "none twice");
}

/// After an instance died: its running delegations become `unknown` with the exact text,
/// its pending completions are restored (claimed only by owners of their session), and
/// what it had claimed comes back as a possible redelivery.
pub fn restart_recovery(store: &dyn Store) {
    let liveness = FakeLiveness::default();
    let a = queue_as(store, "instance-a", &liveness);
    let running = dispatch(&a, "deleg_0000aaaa", "agent:main:telegram:dm:7");
    let _ = running;
    let done = dispatch(&a, "deleg_0000bbbb", "agent:main:telegram:dm:7");
    complete(&a, done, "deleg_0000bbbb", "agent:main:telegram:dm:7");
    a.put(watch("claimed by a"));
    let held = a.claim(&ClaimFilter::watch_events()).unwrap().unwrap();
    // The process dies: nothing it holds is dropped properly.
    std::mem::forget(held);
    std::mem::forget(a);
    liveness.kill("instance-a");

    let b = queue_as(store, "instance-b", &liveness);
    let unknown = row_of(&b, "deleg_0000aaaa");
    assert_eq!(unknown.run_state, Some(RunState::Unknown));
    assert_eq!(unknown.delivery, Some(DeliveryState::Pending));
    assert_eq!(unknown.reason.as_deref(), Some(OWNER_EXITED_ERROR));
    assert!(unknown.restored);

    // An unfiltered consumer never adopts a restored completion.
    assert!(b.try_take().is_none());
    assert!(b.drain().is_empty());
    assert_eq!(b.len(), 0);

    let owned = ClaimFilter::sessions(["agent:main:telegram:dm:7"]).including_restored();
    let mut outcomes = Vec::new();
    while let Some(claim) = b.claim(&owned).unwrap() {
        assert!(claim.is_restored());
        let Event::AsyncDelegation(event) = claim.event().clone() else {
            panic!("not a delegation")
        };
        // `restored` is a property of the claim, never of the event on the wire.
        let wire = serde_json::to_string(claim.event()).unwrap();
        assert!(!wire.contains("restored"), "{wire}");
        outcomes.push((
            event.delegation_id.clone().unwrap(),
            event.status.clone().unwrap(),
        ));
        if event.status.as_deref() == Some("unknown") {
            assert_eq!(event.error.as_deref(), Some(OWNER_EXITED_ERROR));
            let text = format_process_notification_in(
                claim.event(),
                &TimeZone::UTC,
                Timestamp::UNIX_EPOCH,
            )
            .unwrap();
            assert!(
                text.ends_with(
                    "--- RESULT ---\nThe subagent did not complete successfully (status=unknown).\n\
                     Delegation owner exited before recording a terminal result; outcome unknown."
                ),
                "{text}"
            );
        }
        claim.ack().unwrap();
    }
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            ("deleg_0000aaaa".into(), "unknown".into()),
            ("deleg_0000bbbb".into(), "completed".into())
        ]
    );
    let watch = b
        .claim(&ClaimFilter::watch_events().including_restored())
        .unwrap()
        .expect("the dead instance's claim came back");
    assert!(watch.is_possible_redelivery() && watch.is_restored());
    watch.ack().unwrap();
    // The child is never re-run: nothing is running any more.
    assert!(b
        .rows(&RowQuery {
            running_only: true,
            ..RowQuery::default()
        })
        .unwrap()
        .is_empty());
}

/// A live instance's rows are never recovered by another.
pub fn live_owners_keep_their_rows(store: &dyn Store) {
    let liveness = FakeLiveness::default();
    let a = queue_as(store, "instance-a", &liveness);
    let _running = dispatch(&a, "deleg_0000cccc", "");
    a.put(watch("a's"));
    let b = queue_as(store, "instance-b", &liveness);
    b.sweep().unwrap();
    assert_eq!(
        row_of(&b, "deleg_0000cccc").run_state,
        Some(RunState::Running)
    );
    let claim = b
        .claim(&ClaimFilter::any())
        .unwrap()
        .expect("not restored: a is alive");
    assert!(!claim.is_restored());
    claim.ack().unwrap();
}

/// Restored completions past the restore horizon are dead, not replayed.
pub fn restore_horizon(store: &dyn Store) {
    let liveness = FakeLiveness::default();
    let a = queue_as(store, "instance-a", &liveness);
    a.put(watch("old"));
    store.clock().advance(Duration::from_secs(47 * 3600));
    a.put(watch("recent"));
    std::mem::forget(a);
    store.clock().advance(Duration::from_secs(2 * 3600));
    liveness.kill("instance-a");
    let b = queue_as(store, "instance-b", &liveness);
    let rows = b.rows(&RowQuery::default()).unwrap();
    assert_eq!(rows[0].delivery, Some(DeliveryState::Dead));
    assert_eq!(rows[0].reason.as_deref(), Some(RESTORE_HORIZON_REASON));
    assert_eq!(rows[1].delivery, Some(DeliveryState::Pending));
    let claim = b
        .claim(&ClaimFilter::any().including_restored())
        .unwrap()
        .unwrap();
    assert_eq!(message(claim.event()), "recent");
    claim.ack().unwrap();
}

/// Delivered rows are kept for the retention period, then pruned by a sweep.
pub fn retention(store: &dyn Store) -> Result<(), &'static str> {
    if !store.backend().capabilities().retains_delivered {
        return Err("this backend drops delivered rows at once, by design");
    }
    let queue = queue(store);
    queue.put(watch("delivered"));
    queue.try_take().unwrap();
    let delivered = RowQuery {
        delivery: Some(DeliveryState::Delivered),
        ..RowQuery::default()
    };
    assert_eq!(queue.rows(&delivered).unwrap().len(), 1);
    assert!(queue.rows(&delivered).unwrap()[0].delivered_at.is_some());
    store
        .clock()
        .advance(Duration::from_secs(7 * 24 * 3600 - 1));
    queue.sweep().unwrap();
    assert_eq!(queue.rows(&delivered).unwrap().len(), 1, "kept 7 days");
    store.clock().advance(Duration::from_secs(2));
    queue.sweep().unwrap();
    assert!(queue.rows(&delivered).unwrap().is_empty(), "pruned after");
    Ok(())
}

/// A waiting consumer is woken by the completion itself.
pub fn waiting_consumers_are_woken(store: &dyn Store) {
    let queue = queue(store);
    let waiter = {
        let queue = queue.clone();
        std::thread::spawn(move || {
            let claim = queue
                .claim_timeout(&ClaimFilter::cli_completions(), HANG_GUARD)
                .unwrap()
                .expect("woken");
            claim.ack().unwrap()
        })
    };
    // Noise the waiter does not own does not end its wait.
    queue.put(watch("not yours"));
    let record = dispatch(&queue, "deleg_0000dddd", "");
    complete(&queue, record, "deleg_0000dddd", "");
    let event = waiter.join().unwrap();
    assert_eq!(event.session_key(), Some(""));
    assert_eq!(message(&queue.try_take().unwrap()), "not yours");
}

/// A pending row written by `owner`, put on the store directly (no queue: no instance
/// of that name is opened, and no sweep judges it).
fn put_by(backend: &dyn LedgerBackend, owner: &str, event: Event) -> u64 {
    backend
        .insert_pending(NewPending { owner, event })
        .map_err(|refused| refused.error)
        .unwrap()
}

fn row_at(backend: &dyn LedgerBackend, seq: u64) -> process_registry::LedgerRow {
    backend
        .rows(&RowQuery::default())
        .unwrap()
        .into_iter()
        .find(|row| row.seq == seq)
        .expect("the row")
}

/// A claim with a predicate takes a row only if its query still matches it as it
/// claims: the predicate is asked with no lock held, on a candidate read before, and a
/// row that stopped matching meanwhile — here restored (its dead writer's orphans
/// adopted by another handle's sweep), which a query without restored rows excludes — is
/// left as it is, and the claim goes on to the next candidate. The predicate adopts the
/// orphans itself, so the interleaving is the same every run.
pub fn predicate_claims_recheck_the_query(store: &dyn Store) {
    let backend = store.backend();
    let sweeper = store.backend();
    let orphan = put_by(&*backend, "instance-dead", watch("orphan"));
    put_by(&*backend, "instance-a", watch("live"));
    let asked = Mutex::new(Vec::new());
    let accepts = |event: &Event| {
        asked.lock().unwrap().push(message(event));
        // Another instance's sweep, between the read and the claim.
        sweeper.adopt_orphans("instance-dead").unwrap();
        true
    };
    let claimed = backend
        .claim_next_accepted(&ANY, new_claim(token(1, "instance-a")), &accepts)
        .unwrap()
        .expect("the live row");
    assert_eq!(
        (message(&claimed.event), claimed.restored),
        ("live".to_owned(), false),
        "the orphan was restored after it was read: not this query's"
    );
    assert_eq!(*asked.lock().unwrap(), ["orphan", "live"]);
    let row = row_at(&*backend, orphan);
    assert_eq!(
        (row.delivery, row.restored, row.attempts, row.claimed_by),
        (Some(DeliveryState::Pending), true, 0, None),
        "the restored row is left for its session's owner"
    );
}

/// The same for [`CompletionQueue::take_where`], which judges every waiting event
/// before it takes any: a row restored after it was judged is not taken (the plain queue
/// takes no restored rows), and the others are.
pub fn take_where_rechecks_the_query(store: &dyn Store) {
    let backend = store.backend();
    let sweeper = store.backend();
    let queue = queue(store);
    let orphan = put_by(&*backend, "instance-dead", watch("orphan"));
    queue.put(watch("live"));
    let taken: Vec<String> = queue
        .take_where(|_| {
            sweeper.adopt_orphans("instance-dead").unwrap();
            true
        })
        .iter()
        .map(message)
        .collect();
    assert_eq!(
        taken,
        ["live"],
        "the orphan was restored after it was judged"
    );
    let row = row_at(&*backend, orphan);
    assert_eq!(
        (row.delivery, row.restored, row.attempts),
        (Some(DeliveryState::Pending), true, 0)
    );
}

/// The same for a [`ClaimFilter::fenced`] claim, on both of its paths: a row of a scope
/// this instance holds (claimed fenced by the lease) and a row of no scope (claimed as
/// usual). A row restored while the predicate judged it is claimed by neither; one that
/// still matches is.
pub fn fenced_predicate_claims_recheck_the_query(store: &dyn Store) -> Result<(), String> {
    let backend = store.backend();
    let queue = queue_as(store, "gw-a", &FakeLiveness::default());
    let ownership = Ownership::start(&queue, Duration::from_secs(60)).unwrap();
    ownership.want("platform:telegram");
    ownership.renew_now().map_err(|error| error.to_string())?;
    let sweeper = store.backend();
    let filter = ClaimFilter::routed()
        .where_event(move |_| {
            sweeper.adopt_orphans("gw-dead").unwrap();
            true
        })
        .fenced(&ownership, |event| {
            let key = event.session_key()?;
            key.contains(":telegram:")
                .then(|| "platform:telegram".to_owned())
        });
    for (id, session) in [
        ("deleg_0000f001", "agent:main:telegram:dm:1"),
        ("deleg_0000f002", "agent:main:discord:dm:1"),
    ] {
        let seq = put_by(&*backend, "gw-dead", delegation(id, session, id).into());
        let claimed = queue.claim(&filter).unwrap();
        assert!(
            claimed.is_none(),
            "{session}: restored after it was read, claimed by a filter without restored rows"
        );
        let row = row_at(&*backend, seq);
        assert_eq!(
            (row.delivery, row.restored, row.attempts),
            (Some(DeliveryState::Pending), true, 0),
            "{session}"
        );
    }
    let live = delegation("deleg_0000f003", "agent:main:telegram:dm:1", "live");
    put_by(&*backend, "gw-a", live.into());
    let claim = queue.claim(&filter).unwrap().expect("still matching");
    assert_eq!(message(claim.event()), "live");
    claim.ack().unwrap();
    Ok(())
}

/// The rows and queries [`claim_matching_checks_each_condition`] crosses: a CLI watch, a
/// restored telegram delegation, and a delegation whose session key is an SQL injection
/// attempt (bound as a parameter, it is only a key).
const INJECTED: &str = "x'); DELETE FROM ledger_rows; --";

fn matching_rows(backend: &dyn LedgerBackend) -> Vec<process_registry::LedgerRow> {
    let seqs = [
        put_by(backend, "instance-a", watch("cli")),
        put_by(
            backend,
            "instance-gone",
            delegation("deleg_0000e001", "agent:main:telegram:dm:1", "restored").into(),
        ),
        put_by(
            backend,
            "instance-a",
            delegation("deleg_0000e002", INJECTED, "injected").into(),
        ),
    ];
    backend.adopt_orphans("instance-gone").unwrap();
    seqs.iter().map(|seq| row_at(backend, *seq)).collect()
}

/// Every query [`claim_matching_checks_each_condition`] tries on a row at `seq`.
fn each_query(seq: u64, mut visit: impl FnMut(&CandidateQuery<'_>)) {
    let watch = ["watch_overflow_tripped"];
    let delegation = ["async_delegation"];
    let bogus = ["no_such_kind"];
    let both = ["watch_overflow_tripped", "async_delegation"];
    let kinds: [&[&str]; 5] = [&[], &watch, &delegation, &bogus, &both];
    let none: [String; 0] = [];
    let telegram = ["agent:main:telegram:dm:1".to_owned()];
    let injected = [INJECTED.to_owned()];
    let cli_and_telegram = [String::new(), "agent:main:telegram:dm:1".to_owned()];
    let sessions = [
        SessionMatch::Any,
        SessionMatch::Cli,
        SessionMatch::Routed,
        SessionMatch::Keys(&none),
        SessionMatch::Keys(&telegram),
        SessionMatch::Keys(&injected),
        SessionMatch::Keys(&cli_and_telegram),
    ];
    for kinds in kinds {
        for except_kinds in [&[][..], &watch[..], &bogus[..]] {
            for sessions in sessions {
                for restored in [false, true] {
                    for after_seq in [0, seq - 1, seq, seq + 1] {
                        visit(&CandidateQuery {
                            kinds,
                            except_kinds,
                            sessions,
                            restored,
                            after_seq,
                        });
                    }
                }
            }
        }
    }
}

/// `claim_matching` claims a row exactly when the query selects it, as `candidates`
/// would (`CandidateQuery::wants`, and `seq` past `after_seq`), for every combination of
/// kinds (none listed: any), kinds excepted, sessions (an empty key list: none),
/// restored flag and `after_seq`; a refusal is `None`, never an error, and leaves the
/// row as it was. With `fence`, every claim is also fenced by that lease.
fn claim_matching_crossed(backend: &dyn LedgerBackend, fence: Option<process_registry::Fence<'_>>) {
    let rows = matching_rows(backend);
    let mut id = 100;
    for row in &rows {
        each_query(row.seq, |query| {
            id += 1;
            let expected =
                query.wants(&row.kind, &row.session_key, row.restored) && row.seq > query.after_seq;
            let listed = backend
                .candidates(query, usize::MAX)
                .unwrap()
                .iter()
                .any(|candidate| candidate.seq == row.seq);
            let got = backend
                .claim_matching(row.seq, query, new_claim(token(id, "gw-a")), fence)
                .unwrap_or_else(|error| panic!("{query:?} on {}: {error}", row.seq));
            assert_eq!(
                (got.is_some(), listed),
                (expected, expected),
                "{query:?} on row {} ({}, {:?}, restored {})",
                row.seq,
                row.kind,
                row.session_key,
                row.restored
            );
            if let Some(claimed) = got {
                assert_eq!(claimed.seq, row.seq);
                assert!(backend
                    .settle(row.seq, token(id, "gw-a"), process_registry::Settle::Defer)
                    .unwrap());
            }
        });
    }
    assert_eq!(
        backend.rows(&RowQuery::default()).unwrap().len(),
        rows.len(),
        "every row is still there (the injected key was only a key)"
    );
    for row in &rows {
        let now = row_at(backend, row.seq);
        assert_eq!(
            (now.delivery, now.attempts, now.restored),
            (Some(DeliveryState::Pending), 0, row.restored),
            "deferred claims give their attempts back"
        );
    }
}

/// [`claim_matching_crossed`], unfenced.
pub fn claim_matching_checks_each_condition(store: &dyn Store) {
    claim_matching_crossed(&*store.backend(), None);
}

/// [`claim_matching_crossed`] under a lease `gw-a` holds; and a fence that does not hold
/// refuses even a row the query takes.
pub fn fenced_claim_matching_checks_each_condition(store: &dyn Store) -> Result<(), String> {
    let backend = store.backend();
    let epoch = first_lease(&*backend, "gw-a")?;
    backend
        .acquire_scope("platform:telegram", "gw-a", 3600.0)
        .unwrap()
        .expect("a renewal");
    let held = process_registry::Fence {
        scope: "platform:telegram",
        epoch,
    };
    claim_matching_crossed(&*backend, Some(held));
    let seq = backend.candidates(&ANY, 1).unwrap()[0].seq;
    for (holder, fence) in [
        ("gw-b", held),
        (
            "gw-a",
            process_registry::Fence {
                scope: "platform:telegram",
                epoch: epoch + 1,
            },
        ),
        (
            "gw-a",
            process_registry::Fence {
                scope: "platform:slack",
                epoch,
            },
        ),
    ] {
        assert!(
            backend
                .claim_matching(seq, &ANY, new_claim(token(1, holder)), Some(fence))
                .unwrap()
                .is_none(),
            "{holder} under {fence:?}: not held"
        );
    }
    Ok(())
}

/// Producers write rows of live and of dead writers while a restorer keeps adopting the
/// dead writers' orphans (marking them restored) and consumers of every kind race for
/// them: one-step claims, claims with a predicate (which claim a candidate read earlier,
/// under its query), with and without restored rows, routed only, and `take_where`
/// (and, with `fenced`, claims fenced by an [`Ownership`] lease). Every completion is
/// delivered exactly once, and none restored is delivered to a consumer that takes no
/// restored rows.
fn restores_race_claims(store: &dyn Store, fenced: bool) -> Result<(), String> {
    const PRODUCERS: usize = 4;
    const PER_PRODUCER: usize = 120;
    const TOTAL: usize = PRODUCERS * PER_PRODUCER;
    let queue = queue_as(store, "gw-a", &FakeLiveness::default());
    let ownership = if fenced {
        let ownership = Ownership::start(&queue, Duration::from_secs(3600))
            .map_err(|error| error.to_string())?;
        ownership.want("platform:telegram");
        ownership.renew_now().map_err(|error| error.to_string())?;
        Some(ownership)
    } else {
        None
    };
    let tag = |event: &Event| message(event);
    // Producer `p` writes as a live instance when `p` is even, as one that died when odd.
    let writer = |p: usize| {
        if p.is_multiple_of(2) {
            "gw-a".to_owned()
        } else {
            format!("gw-dead-{p}")
        }
    };
    let session = |n: usize| match n % 3 {
        0 => String::new(),
        1 => format!("agent:main:telegram:dm:{n}"),
        _ => format!("agent:main:discord:dm:{n}"),
    };
    let delivered: Mutex<Vec<(String, &'static str)>> = Mutex::new(Vec::new());
    let count = AtomicUsize::new(0);
    let produced = AtomicUsize::new(0);
    let deadline = std::time::Instant::now() + HANG_GUARD * 3;
    let guard = || {
        assert!(
            std::time::Instant::now() < deadline,
            "hang guard: {} of {TOTAL} delivered",
            count.load(Ordering::SeqCst)
        );
    };
    // Checked once every thread is done (a panic here would leave the others running
    // until the hang guard).
    let wrongly_restored: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let record = |name: &'static str, event: &Event, restored: bool, takes_restored: bool| {
        if restored && !takes_restored {
            wrongly_restored
                .lock()
                .unwrap()
                .push(format!("{name} got {} restored", tag(event)));
        }
        delivered.lock().unwrap().push((tag(event), name));
        count.fetch_add(1, Ordering::SeqCst);
    };
    let mut consumers: Vec<(&'static str, ClaimFilter)> = vec![
        ("one-step", ClaimFilter::any()),
        ("predicate", ClaimFilter::any().where_event(|_| true)),
        (
            "routed predicate",
            ClaimFilter::routed().where_event(|event| message(event).len().is_multiple_of(2)),
        ),
        (
            "restored predicate",
            ClaimFilter::any()
                .including_restored()
                .where_event(|event| message(event).ends_with(['1', '3', '5', '7', '9'])),
        ),
        ("restored", ClaimFilter::any().including_restored()),
    ];
    if let Some(ownership) = &ownership {
        let scope_of = |event: &Event| {
            event
                .session_key()?
                .contains(":telegram:")
                .then(|| "platform:telegram".to_owned())
        };
        consumers.push((
            "fenced",
            ClaimFilter::routed()
                .where_event(|_| true)
                .fenced(ownership, scope_of),
        ));
        consumers.push((
            "fenced restored",
            ClaimFilter::any()
                .including_restored()
                .where_event(|_| true)
                .fenced(ownership, scope_of),
        ));
    }
    std::thread::scope(|scope| {
        let start = Arc::new(Barrier::new(PRODUCERS + consumers.len() + 2));
        for p in 0..PRODUCERS {
            let (backend, start, produced) = (store.backend(), Arc::clone(&start), &produced);
            scope.spawn(move || {
                start.wait();
                for n in 0..PER_PRODUCER {
                    let id = format!("deleg_{p:04x}{n:04x}");
                    let event = delegation(&id, &session(n), &format!("{p}:{n}"));
                    put_by(&*backend, &writer(p), event.into());
                    produced.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        let (restorer, restore_start) = (store.backend(), Arc::clone(&start));
        let produced = &produced;
        scope.spawn(move || {
            restore_start.wait();
            loop {
                // Read before adopting: a pass begun after the last put restores them all.
                let ended = produced.load(Ordering::SeqCst) == TOTAL;
                for p in (1..PRODUCERS).step_by(2) {
                    restorer.adopt_orphans(&format!("gw-dead-{p}")).unwrap();
                }
                if ended {
                    return;
                }
                guard();
                std::thread::yield_now();
            }
        });
        for (name, filter) in &consumers {
            // Each unfenced consumer on a queue of its own (another handle on the store:
            // on SQLite and PostgreSQL, another connection); the fenced ones on the queue
            // their ownership renews.
            let queue = if name.starts_with("fenced") {
                queue.clone()
            } else {
                queue_as(store, "gw-a", &FakeLiveness::default())
            };
            let start = Arc::clone(&start);
            let record = &record;
            let (count, guard) = (&count, &guard);
            scope.spawn(move || {
                start.wait();
                while count.load(Ordering::SeqCst) < TOTAL {
                    match queue.claim(filter).unwrap() {
                        Some(claim) => {
                            let restored = claim.is_restored();
                            let event = claim.ack().unwrap();
                            record(name, &event, restored, filter.includes_restored());
                        }
                        None => {
                            guard();
                            std::thread::yield_now();
                        }
                    }
                }
            });
        }
        let (queue, start) = (
            queue_as(store, "gw-a", &FakeLiveness::default()),
            Arc::clone(&start),
        );
        let (record, count, guard) = (&record, &count, &guard);
        scope.spawn(move || {
            start.wait();
            while count.load(Ordering::SeqCst) < TOTAL {
                // `take_where` takes no restored rows: each it took is recorded as such.
                let taken = queue.take_where(|event| message(event).ends_with('0'));
                if taken.is_empty() {
                    guard();
                    std::thread::yield_now();
                }
                for event in &taken {
                    record("take_where", event, false, false);
                }
            }
        });
    });
    let wrongly_restored = wrongly_restored.into_inner().unwrap();
    assert!(
        wrongly_restored.is_empty(),
        "consumers that take no restored rows got some: {wrongly_restored:?}"
    );
    let delivered = delivered.into_inner().unwrap();
    let mut seen = HashSet::new();
    for (tag, name) in &delivered {
        assert!(
            seen.insert(tag.clone()),
            "{tag} delivered twice (again to {name})"
        );
    }
    assert_eq!(delivered.len(), TOTAL, "every completion delivered");
    let left = backend_undelivered(store);
    assert_eq!(left, 0, "nothing left undelivered");
    Ok(())
}

fn backend_undelivered(store: &dyn Store) -> u64 {
    store.backend().count_undelivered().unwrap()
}

/// [`restores_race_claims`] with every kind of unfenced consumer.
pub fn restores_race_claims_exactly_once(store: &dyn Store) {
    restores_race_claims(store, false).unwrap();
}

/// [`restores_race_claims`] with fenced consumers too.
pub fn restores_race_fenced_claims_exactly_once(store: &dyn Store) -> Result<(), String> {
    restores_race_claims(store, true)
}

/// Many consumers, many producers: every completion is claimed and acked exactly once.
pub fn concurrent_claims_are_exclusive(store: &dyn Store) {
    const PRODUCERS: usize = 4;
    const PER_PRODUCER: usize = 250;
    const CONSUMERS: usize = 3;
    let queue = queue(store);
    let start = Arc::new(Barrier::new(PRODUCERS + CONSUMERS));
    let acked = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for p in 0..PRODUCERS {
        let (queue, start) = (queue.clone(), Arc::clone(&start));
        threads.push(std::thread::spawn(move || {
            start.wait();
            for n in 0..PER_PRODUCER {
                queue.put(watch(&format!("{p}:{n}")));
            }
        }));
    }
    for _ in 0..CONSUMERS {
        let (queue, start, acked, seen) = (
            queue.clone(),
            Arc::clone(&start),
            Arc::clone(&acked),
            Arc::clone(&seen),
        );
        threads.push(std::thread::spawn(move || {
            start.wait();
            while acked.load(Ordering::SeqCst) < PRODUCERS * PER_PRODUCER {
                if let Some(claim) = queue
                    .claim_timeout(&ClaimFilter::any(), Duration::from_millis(50))
                    .unwrap()
                {
                    let event = claim.ack().unwrap();
                    seen.lock().unwrap().push(message(&event));
                    acked.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    for thread in threads {
        thread.join().unwrap();
    }
    let seen = seen.lock().unwrap();
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), PRODUCERS * PER_PRODUCER, "each acked once");
    assert_eq!(unique.len(), seen.len(), "no duplicates");
}

/// Registers one `#[test]` per conformance case for a backend: `$store` is an expression
/// that builds a fresh store. Each optional case (one that returns a `Result`) is named
/// after `run` or after `skip` with the reason: a skipped case shows as ignored, with its
/// reason, in the test output, and run with `--include-ignored` it checks that the
/// backend's capabilities really rule it out.
#[macro_export]
macro_rules! conformance_suite {
    ($backend:ident, $store:expr; run [$($run:ident),*]; skip [$($skipped:ident = $why:literal),*]) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;

            fn store() -> impl $crate::conformance::Store {
                $store
            }

            macro_rules! case {
                ($name:ident) => {
                    #[test]
                    fn $name() {
                        $crate::conformance::$name(&store());
                    }
                };
            }

            case!(write_order);
            case!(dispatch_then_completion);
            case!(id_uniqueness);
            case!(claims_and_leases);
            case!(claims_are_fenced_by_instance);
            case!(defer_costs_no_attempt);
            case!(release_backoff_and_dead);
            case!(dead_and_dropped_claims);
            case!(requeued_from_the_middle);
            case!(untracked_claims);
            case!(undelivered_count);
            case!(filters);
            case!(plain_queue_api);
            case!(plain_takes_are_one_step);
            case!(concurrent_plain_takes_are_exclusive);
            case!(restart_recovery);
            case!(live_owners_keep_their_rows);
            case!(restore_horizon);
            case!(waiting_consumers_are_woken);
            case!(concurrent_claims_are_exclusive);
            case!(predicate_claims_recheck_the_query);
            case!(take_where_rechecks_the_query);
            case!(claim_matching_checks_each_condition);
            case!(restores_race_claims_exactly_once);

            $(
                #[test]
                fn $run() {
                    if let Err(why) = $crate::conformance::$run(&store()) {
                        panic!("{} is declared runnable on {}, but: {why}", stringify!($run), stringify!($backend));
                    }
                }
            )*
            $(
                #[test]
                #[ignore = $why]
                fn $skipped() {
                    assert!(
                        $crate::conformance::$skipped(&store()).is_err(),
                        "declared skipped, but the backend's capabilities allow it"
                    );
                }
            )*
        }
    };
}

// ---- Session ownership: leases on scopes, and claims fenced by them. A backend that keeps
// no leases refuses them with an error: those cases are then skipped, never passed.

/// How long the ownership cases' leases last. Leases run on the clock a store keeps for
/// them (a networked store's server clock, not the store's `ManualClock`), so a lease
/// lapses by both the manual clock's advance and a real wait.
const SCOPE_LEASE: Duration = Duration::from_millis(300);

/// The lease the scope tests hold while they do not wait for it to run out: an hour, so
/// that a loaded machine (a store on the real clock moving on between two steps) cannot
/// end it early. [`run_out`] shortens it first where a test waits for the end.
const HELD: f64 = 3600.0;

/// Renews `holder`'s lease of `platform:telegram` for [`SCOPE_LEASE`] only (a renewal
/// keeps the epoch), then lets it run out.
fn run_out(store: &dyn Store, backend: &dyn LedgerBackend, holder: &str) {
    assert!(
        backend
            .acquire_scope("platform:telegram", holder, SCOPE_LEASE.as_secs_f64())
            .unwrap()
            .is_some(),
        "{holder} renews its lease, short"
    );
    lapse(store);
}

fn lapse(store: &dyn Store) {
    store.clock().advance(SCOPE_LEASE * 2);
    std::thread::sleep(SCOPE_LEASE + Duration::from_millis(150));
}

fn token(id: u64, owner: &str) -> process_registry::ClaimToken<'_> {
    process_registry::ClaimToken { id, owner }
}

fn new_claim(token: process_registry::ClaimToken<'_>) -> process_registry::NewClaim<'_> {
    process_registry::NewClaim {
        token,
        lease_seconds: 60.0,
    }
}

fn fence(epoch: u64) -> process_registry::Fence<'static> {
    process_registry::Fence {
        scope: "platform:telegram",
        epoch,
    }
}

/// The first lease on a scope, or why the backend keeps none.
fn first_lease(backend: &dyn LedgerBackend, holder: &str) -> Result<u64, String> {
    match backend.acquire_scope("platform:telegram", holder, HELD) {
        Ok(Some(epoch)) => Ok(epoch),
        Ok(None) => panic!("a fresh scope is free"),
        Err(error) => Err(error.to_string()),
    }
}

fn delivery_of(backend: &dyn LedgerBackend, seq: u64) -> (Option<DeliveryState>, bool) {
    let row = backend
        .rows(&RowQuery::default())
        .unwrap()
        .into_iter()
        .find(|row| row.seq == seq)
        .expect("the row");
    (row.delivery, row.possible_redelivery)
}

/// One holder at a time; a renewal keeps the epoch; once the holder's lease runs out,
/// another takes the scope over with a greater epoch, its predecessor's claims go back to
/// pending as possible redeliveries, and the stale owner can neither ack nor renew.
pub fn scope_leases_and_takeover(store: &dyn Store) -> Result<(), String> {
    let backend = store.backend();
    let lease = HELD;
    let first = first_lease(&*backend, "gw-a")?;
    assert_eq!(first, 1);
    let scope = "platform:telegram";
    assert_eq!(
        backend.acquire_scope(scope, "gw-b", lease).unwrap(),
        None,
        "a holds it"
    );
    assert_eq!(
        backend.acquire_scope(scope, "gw-a", lease).unwrap(),
        Some(1),
        "renewed"
    );
    queue(store).put(watch("owned"));
    let seq = backend.candidates(&ANY, 1).unwrap()[0].seq;
    assert!(
        backend
            .claim_fenced(seq, new_claim(token(1, "gw-b")), fence(1))
            .unwrap()
            .is_none(),
        "b does not hold the scope"
    );
    let claimed = backend
        .claim_fenced(seq, new_claim(token(1, "gw-a")), fence(1))
        .unwrap()
        .expect("a holds the scope");
    assert_eq!(claimed.attempts, 1);
    assert!(
        backend.renew(seq, token(1, "gw-a"), 60.0).unwrap(),
        "a still owns it"
    );

    run_out(store, &*backend, "gw-a");
    assert_eq!(
        backend.acquire_scope(scope, "gw-b", lease).unwrap(),
        Some(2),
        "a's lease ran out: b takes over"
    );
    assert_eq!(
        delivery_of(&*backend, seq),
        (Some(DeliveryState::Pending), true),
        "a's claim was put back at the takeover, a possible redelivery"
    );
    assert!(!backend.renew(seq, token(1, "gw-a"), 60.0).unwrap());
    assert!(
        !backend
            .settle(seq, token(1, "gw-a"), process_registry::Settle::Ack)
            .unwrap(),
        "the stale owner cannot ack"
    );
    assert!(
        backend
            .claim_fenced(seq, new_claim(token(2, "gw-a")), fence(1))
            .unwrap()
            .is_none(),
        "nor claim under its old epoch"
    );
    let again = backend
        .claim_fenced(seq, new_claim(token(2, "gw-b")), fence(2))
        .unwrap()
        .expect("the new owner claims it at once");
    assert!(again.possible_redelivery);
    assert_eq!(again.attempts, 2);
    assert!(backend
        .settle(seq, token(2, "gw-b"), process_registry::Settle::Ack)
        .unwrap());
    let leases = backend.scope_leases().unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(
        (
            leases[0].scope.as_str(),
            leases[0].holder.as_str(),
            leases[0].epoch
        ),
        (scope, "gw-b", 2)
    );
    Ok(())
}

/// A fenced claim needs the lease held at that epoch and running; a holder that renews a
/// lease that ran out while no one took it keeps its epoch, and its claim still settles.
pub fn fenced_claims_need_a_live_lease(store: &dyn Store) -> Result<(), String> {
    let backend = store.backend();
    queue(store).put(watch("first"));
    queue(store).put(watch("second"));
    let seqs: Vec<u64> = backend
        .candidates(&ANY, 2)
        .unwrap()
        .iter()
        .map(|c| c.seq)
        .collect();
    // No lease at all: nothing is claimed (and nothing is refused with an error either).
    let refused = backend.claim_fenced(seqs[0], new_claim(token(1, "gw-a")), fence(1));
    if let Err(error) = &refused {
        return Err(error.to_string());
    }
    assert!(refused.unwrap().is_none(), "no lease, no fenced claim");
    assert_eq!(first_lease(&*backend, "gw-a")?, 1);
    assert!(
        backend
            .claim_fenced(seqs[0], new_claim(token(1, "gw-a")), fence(7))
            .unwrap()
            .is_none(),
        "the wrong epoch"
    );
    assert!(backend
        .claim_fenced(seqs[0], new_claim(token(1, "gw-a")), fence(1))
        .unwrap()
        .is_some());
    run_out(store, &*backend, "gw-a");
    assert!(
        backend
            .claim_fenced(seqs[1], new_claim(token(2, "gw-a")), fence(1))
            .unwrap()
            .is_none(),
        "the lease ran out: no new claim under it"
    );
    assert_eq!(
        backend
            .acquire_scope("platform:telegram", "gw-a", HELD)
            .unwrap(),
        Some(1),
        "no one took it meanwhile: the same epoch"
    );
    assert!(
        backend
            .settle(seqs[0], token(1, "gw-a"), process_registry::Settle::Ack)
            .unwrap(),
        "the owner never changed: its claim settles"
    );
    // An unfenced claim is not judged by any lease.
    assert!(backend
        .claim(seqs[1], new_claim(token(3, "gw-b")))
        .unwrap()
        .is_some());
    assert!(backend
        .settle(seqs[1], token(3, "gw-b"), process_registry::Settle::Ack)
        .unwrap());
    Ok(())
}

/// A released scope hands over at once: its claims go back to pending, the releaser can
/// no longer settle them, and the next holder gets a greater epoch without waiting.
pub fn released_scopes_hand_over_at_once(store: &dyn Store) -> Result<(), String> {
    let backend = store.backend();
    let lease = HELD;
    let scope = "platform:telegram";
    assert_eq!(first_lease(&*backend, "gw-a")?, 1);
    queue(store).put(watch("handed over"));
    let seq = backend.candidates(&ANY, 1).unwrap()[0].seq;
    assert!(backend
        .claim_fenced(seq, new_claim(token(1, "gw-a")), fence(1))
        .unwrap()
        .is_some());
    assert!(
        !backend.release_scope(scope, "gw-b", 1).unwrap(),
        "not b's to release"
    );
    assert!(
        !backend.release_scope(scope, "gw-a", 2).unwrap(),
        "not that epoch"
    );
    assert!(backend.release_scope(scope, "gw-a", 1).unwrap());
    assert!(
        !backend.release_scope(scope, "gw-a", 1).unwrap(),
        "released once"
    );
    assert_eq!(
        delivery_of(&*backend, seq),
        (Some(DeliveryState::Pending), true)
    );
    assert!(!backend
        .settle(seq, token(1, "gw-a"), process_registry::Settle::Ack)
        .unwrap());
    assert_eq!(
        backend.acquire_scope(scope, "gw-b", lease).unwrap(),
        Some(2)
    );
    assert!(backend
        .claim_fenced(seq, new_claim(token(2, "gw-b")), fence(2))
        .unwrap()
        .is_some());
    assert!(backend
        .settle(seq, token(2, "gw-b"), process_registry::Settle::Ack)
        .unwrap());
    Ok(())
}
