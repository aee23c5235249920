//! From a hostile review of the boxed event parts and of claims judged outside the memory
//! ledger's lock: an event equals its own round trip (through the wire and through
//! SQLite) whatever its empty boxes; a claim with a predicate takes only rows its query
//! still matches, exactly once and in order while producers race; the direct wall clock
//! agrees with `SystemTime`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use process_registry::{
    AsyncDelegationEvent, CandidateQuery, ClaimFilter, ClaimToken, Clock, CompletionQueue, Event,
    LedgerBackend, MemoryLedger, NewClaim, NewPending, Routing, SessionMatch, SystemClock,
    WatchMatch, WatchOverflow,
};

fn delegation() -> AsyncDelegationEvent {
    AsyncDelegationEvent {
        delegation_id: Some("deleg_0000abcd".into()),
        session_key: "agent:main:telegram:dm:1".into(),
        goal: "g".into(),
        ..AsyncDelegationEvent::default()
    }
}

/// An event whose routing was touched but left empty (`Some(Box::default())`, which
/// writes nothing and reads back as `None`) equals the event read back from its JSON:
/// events compare their boxed parts by what they say.
#[test]
fn an_event_with_an_empty_boxed_routing_equals_its_round_trip() {
    let mut event = delegation();
    // What `routing_mut()` does on an event with none, e.g. setting an optional field to
    // an absent value: `event.routing_mut().thread_id = None`.
    event.routing_mut().thread_id = None;
    assert!(event.routing().is_empty());
    let wire = serde_json::to_string(&Event::AsyncDelegation(event.clone())).unwrap();
    let back = Event::from_json(&wire).unwrap();
    assert_eq!(
        back,
        Event::AsyncDelegation(event),
        "the same wire text, the same routing() — and unequal events"
    );
}

/// The same for the watch events, whose routing is boxed the same way.
#[test]
fn a_watch_match_with_an_empty_boxed_routing_equals_its_round_trip() {
    let event = WatchMatch {
        session_id: Some("proc_1".into()),
        routing: Some(Box::new(Routing::default())),
        ..WatchMatch::default()
    };
    let wire = serde_json::to_string(&Event::WatchMatch(event.clone())).unwrap();
    assert_eq!(Event::from_json(&wire).unwrap(), Event::WatchMatch(event));
}

/// The memory ledger hands back the event as put (routing `Some(empty)`), the SQLite
/// ledger the event parsed from its JSON (routing `None`): both equal what was put.
#[cfg(feature = "sqlite")]
#[test]
fn an_event_read_back_from_sqlite_equals_the_one_recorded() {
    let dir = std::env::temp_dir().join(format!("findings-review-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut event = delegation();
    event.routing = Some(Box::default());
    let recorded = Event::AsyncDelegation(event);

    let memory = CompletionQueue::new();
    memory.put(recorded.clone());
    let from_memory = memory.try_take().unwrap();

    let sqlite = CompletionQueue::builder(
        process_registry::SqliteLedger::open(dir.join("ledger.sqlite")).unwrap(),
    )
    .open()
    .unwrap();
    sqlite.put(recorded.clone());
    let from_sqlite = sqlite.try_take().unwrap();
    drop(sqlite);
    let _ = std::fs::remove_dir_all(&dir);

    assert_eq!(from_memory, recorded);
    assert_eq!(
        from_sqlite, recorded,
        "the SQLite ledger hands back an event unequal to the one recorded"
    );
}

/// A pending row whose writer, `dead-instance`, is gone (its orphans not yet adopted).
fn put_by_a_dead_instance(ledger: &MemoryLedger) {
    ledger
        .insert_pending(NewPending {
            owner: "dead-instance",
            event: Event::AsyncDelegation(delegation()),
        })
        .map_err(|refused| refused.error)
        .unwrap();
}

fn not_restored() -> CandidateQuery<'static> {
    CandidateQuery {
        kinds: &[],
        except_kinds: &[],
        sessions: SessionMatch::Any,
        restored: false,
        after_seq: 0,
    }
}

/// The memory ledger judges a claim's predicate outside its lock, on a candidate it read
/// first, then claims it by `seq`: a row that stopped matching the query meanwhile (here
/// its writer's orphans are adopted, so it becomes *restored*, which the query excludes)
/// is not claimed. The predicate adopts the orphans itself to make the interleaving
/// deterministic; another thread's sweep does the same at the wrong moment.
#[test]
fn a_claim_with_a_predicate_never_claims_a_row_its_query_excludes() {
    let ledger = Arc::new(MemoryLedger::new());
    put_by_a_dead_instance(&ledger);
    let adopting = Arc::clone(&ledger);
    let adopted = Mutex::new(0);
    let accepts = |_: &Event| {
        // Another instance's sweep, between the read and the claim.
        *adopted.lock().unwrap() += adopting.adopt_orphans("dead-instance").unwrap();
        true
    };
    let claimed = ledger
        .claim_next_accepted(
            &not_restored(),
            NewClaim {
                token: ClaimToken { id: 1, owner: "me" },
                lease_seconds: 60.0,
            },
            &accepts,
        )
        .unwrap();
    assert_eq!(
        *adopted.lock().unwrap(),
        1,
        "the row was restored meanwhile"
    );
    assert!(
        claimed.as_ref().is_none_or(|row| !row.restored),
        "a query without restored rows claimed a restored row: {claimed:?}"
    );
}

/// The same claim without a predicate (`claim_next`, one step under the lock) refuses it
/// too: both claim paths of the ledger agree on which rows a query takes.
#[test]
fn claim_next_without_a_predicate_refuses_the_restored_row() {
    let ledger = MemoryLedger::new();
    put_by_a_dead_instance(&ledger);
    assert_eq!(ledger.adopt_orphans("dead-instance").unwrap(), 1);
    let claimed = ledger
        .claim_next(
            &not_restored(),
            NewClaim {
                token: ClaimToken { id: 1, owner: "me" },
                lease_seconds: 60.0,
            },
        )
        .unwrap();
    assert!(claimed.is_none());
}

const PRODUCERS: usize = 3;
const PUTS_EACH: usize = 4000;
const CLAIMERS: usize = 4;

fn tagged(producer: usize, n: usize) -> Event {
    Event::WatchOverflowTripped(WatchOverflow {
        message: Some(format!("{producer}:{n}")),
        ..WatchOverflow::default()
    })
}

fn tag(event: &Event) -> (usize, usize) {
    let Event::WatchOverflowTripped(w) = event else {
        panic!("{event:?}")
    };
    let (p, n) = w.message.as_deref().unwrap().split_once(':').unwrap();
    (p.parse().unwrap(), n.parse().unwrap())
}

/// Claimers whose predicates each refuse a quarter of the events (a different quarter
/// each, so every event is wanted by three) and read the queue, racing producers. Every event is claimed exactly once, and each claimer sees each producer's
/// events in put order (no later one claimed before an earlier one it wanted).
#[test]
fn predicate_claims_race_producers_exactly_once_in_order() {
    let queue = CompletionQueue::new();
    let start = Arc::new(Barrier::new(PRODUCERS + CLAIMERS));
    let done_putting = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (queue, start) = (queue.clone(), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                for n in 0..PUTS_EACH {
                    queue.put(tagged(p, n));
                    if n % 7 == 0 {
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    let claimers: Vec<_> = (0..CLAIMERS)
        .map(|c| {
            let (queue, start, done) =
                (queue.clone(), Arc::clone(&start), Arc::clone(&done_putting));
            std::thread::spawn(move || {
                // The predicate reads the queue too (allowed now).
                let reading = queue.clone();
                let filter = ClaimFilter::any().where_event(move |event| {
                    // `is_empty` reads one row (it counted them all once: with a
                    // backlog of thousands, this test was quadratic).
                    let _ = reading.is_empty();
                    tag(event).1 % CLAIMERS != c
                });
                start.wait();
                let mut got = Vec::new();
                loop {
                    // Read before the claim: a claim that began before the last put may
                    // miss it, one that begins after every put sees all that is left.
                    let ended = done.load(Ordering::SeqCst);
                    match queue.claim(&filter).unwrap() {
                        Some(claim) => {
                            got.push(tag(claim.event()));
                            claim.ack().unwrap();
                        }
                        None if ended => break,
                        None => std::thread::yield_now(),
                    }
                }
                got
            })
        })
        .collect();
    for producer in producers {
        producer.join().unwrap();
    }
    done_putting.store(true, Ordering::SeqCst);
    let mut seen: HashMap<(usize, usize), usize> = HashMap::new();
    for (c, claimer) in claimers.into_iter().enumerate() {
        let got = claimer.join().unwrap();
        let mut last = [None::<usize>; PRODUCERS];
        for &(p, n) in &got {
            assert_ne!(
                n % CLAIMERS,
                c,
                "claimer {c} claimed {p}:{n} its predicate refuses"
            );
            assert!(
                last[p].is_none_or(|l| l < n),
                "claimer {c}: {p}:{n} after {:?}",
                last[p]
            );
            last[p] = Some(n);
            *seen.entry((p, n)).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), PRODUCERS * PUTS_EACH, "every event claimed");
    assert!(seen.values().all(|&k| k == 1), "exactly once");
    assert!(queue.is_empty());
}

/// `SystemClock::now` (CLOCK_REALTIME read into seconds) interleaved with
/// `SystemTime::now()`: never outside the readings around it, over many reads (the same
/// clock, and the same formula as `Duration::as_secs_f64`).
#[test]
fn the_direct_wall_clock_agrees_with_system_time() {
    let before = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    for _ in 0..200_000 {
        let a = before(SystemTime::now());
        let b = SystemClock.now();
        let c = before(SystemTime::now());
        assert!(a <= b && b <= c, "{a} {b} {c}");
    }
    // Same formula: a reading converted both ways is the same double.
    let d = Duration::new(1_764_771_234, 999_999_999);
    assert_eq!(d.as_secs_f64(), 1_764_771_234_f64 + 999_999_999_f64 / 1e9);
}
