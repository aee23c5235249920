//! Dispatchers, producers and consumers on one queue at once: threads dispatch
//! delegations while others put plain events and others take — blocking, not waiting,
//! by claim and ack, by filter, by drain — and one more reads the ledger's rows meanwhile.
//! Every dispatched delegation yields exactly one completion, every event put is taken
//! exactly once (and by each taker in put order), no id ever has two rows, and afterwards
//! the ledger holds no running id and nothing undelivered.
//!
//! (`stress.rs` races runners that fail, panic and are interrupted against one consumer
//! that takes after the dispatchers are done; here the consumers race the writers.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;

use async_delegation::{DelegationEngine, DelegationResult, DelegationSpec, DispatchError};
use common::HANG_GUARD;
use process_registry::{ClaimFilter, CompletionQueue, Event, RowQuery, WatchOverflow};

const DISPATCHERS: usize = 3;
const DISPATCHES_EACH: usize = 600;
const PRODUCERS: usize = 2;
const PUTS_EACH: usize = 1200;
const TAKERS: usize = 3;
const CAP: usize = 6;
const TOTAL: usize = DISPATCHERS * DISPATCHES_EACH + PRODUCERS * PUTS_EACH;
/// What tells a taker to stop: put once every other event is written, so (the queue
/// being FIFO) taken after all of them.
const STOP: &str = "stop";

fn plain(message: &str) -> Event {
    Event::WatchOverflowTripped(WatchOverflow {
        message: Some(message.to_owned()),
        ..WatchOverflow::default()
    })
}

/// What a taker got: the delegations' goals with their ids and statuses, the puts'
/// messages.
#[derive(Default)]
struct Taken {
    completions: Vec<(String, String, String)>,
    puts: Vec<String>,
    /// How many events each way of taking took.
    by_way: [usize; 5],
}

/// Takes until it takes a stop; a stop taken beyond its first goes back for another taker.
fn taker(queue: &CompletionQueue, t: usize) -> Taken {
    let mut taken = Taken::default();
    let mut stopped = false;
    for round in t.. {
        let events: Vec<Event> = match round % 5 {
            0 => queue.take_timeout(HANG_GUARD).into_iter().collect(),
            1 => queue.try_take().into_iter().collect(),
            2 => queue
                .claim(&ClaimFilter::any())
                .unwrap()
                .map(|claim| Arc::unwrap_or_clone(claim.ack().unwrap()))
                .into_iter()
                .collect(),
            3 => queue.take_where(|event| matches!(event, Event::AsyncDelegation(_))),
            _ => queue.drain(),
        };
        if round % 5 == 0 && events.is_empty() {
            panic!("nothing to take within {HANG_GUARD:?}, and no stop");
        }
        taken.by_way[round % 5] += events.len();
        for event in events {
            match event {
                Event::AsyncDelegation(event) => taken.completions.push((
                    event.goal.to_string(),
                    event.delegation_id.unwrap().to_string(),
                    event.status.unwrap().to_string(),
                )),
                Event::WatchOverflowTripped(WatchOverflow {
                    message: Some(message),
                    ..
                }) if message == STOP => {
                    if stopped {
                        queue.put(plain(STOP));
                    }
                    stopped = true;
                    continue;
                }
                Event::WatchOverflowTripped(WatchOverflow {
                    message: Some(message),
                    ..
                }) => taken.puts.push(message),
                other => panic!("an event nobody wrote: {other:?}"),
            }
        }
        if stopped {
            break;
        }
    }
    taken
}

/// Reads every row until `done`: at no moment has an id two rows. Returns how many reads
/// it made (at least one, however late it is scheduled).
fn observer(queue: &CompletionQueue, done: &AtomicBool) -> usize {
    let mut reads = 0;
    loop {
        let rows = queue.rows(&RowQuery::default()).unwrap();
        let mut ids = HashSet::new();
        for row in &rows {
            if let Some(id) = &row.delegation_id {
                assert!(ids.insert(id), "two rows for {id}: {rows:?}");
            }
        }
        reads += 1;
        if done.load(Ordering::SeqCst) {
            return reads;
        }
        std::thread::yield_now();
    }
}

/// Dispatches its share, each runner ending its own way; returns goal → (id, status).
fn dispatcher(engine: &DelegationEngine, d: usize) -> Vec<(String, String, &'static str)> {
    let mut dispatched = Vec::with_capacity(DISPATCHES_EACH);
    for i in 0..DISPATCHES_EACH {
        let goal = format!("d{d}-{i}");
        let kind = (d + i) % 3;
        loop {
            let runner = move || match kind {
                0 => Ok(DelegationResult::completed("done")),
                1 => Err("it failed".into()),
                _ => {
                    // Still running while the next dispatches come.
                    for _ in 0..(i % 16) {
                        std::thread::yield_now();
                    }
                    Ok(DelegationResult::interrupted("stopped itself"))
                }
            };
            match engine.try_dispatch(DelegationSpec::new(goal.as_str()), runner, None, CAP) {
                Ok(id) => {
                    let status = ["completed", "error", "interrupted"][kind];
                    dispatched.push((goal, id.to_string(), status));
                    break;
                }
                Err(DispatchError::CapacityReached { .. }) => std::thread::yield_now(),
                Err(other) => panic!("{goal}: {other}"),
            }
        }
    }
    dispatched
}

/// Puts its share, yielding after every few puts: often caught up with, the next put
/// finds no row waiting.
fn producer(queue: &CompletionQueue, p: usize) {
    for i in 0..PUTS_EACH {
        queue.put(plain(&format!("p{p}-{i}")));
        if i % 4 == 3 {
            std::thread::yield_now();
        }
    }
}

/// `n` threads that start together at `start`, the i-th running `body(i)`.
fn started<T: Send + 'static>(
    n: usize,
    start: &Arc<Barrier>,
    body: impl Fn(usize) -> T + Send + Sync + 'static,
) -> Vec<JoinHandle<T>> {
    let body = Arc::new(body);
    (0..n)
        .map(|i| {
            let (body, start) = (Arc::clone(&body), Arc::clone(start));
            std::thread::spawn(move || {
                start.wait();
                body(i)
            })
        })
        .collect()
}

#[test]
fn every_delegation_and_every_put_is_taken_exactly_once_while_all_race() {
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    let start = Arc::new(Barrier::new(DISPATCHERS + PRODUCERS + TAKERS + 1));
    let done = Arc::new(AtomicBool::new(false));
    let observing = started(1, &start, {
        let (queue, done) = (queue.clone(), Arc::clone(&done));
        move |_| observer(&queue, &done)
    });
    let takers = started(TAKERS, &start, {
        let queue = queue.clone();
        move |t| taker(&queue, t)
    });
    let producers = started(PRODUCERS, &start, {
        let queue = queue.clone();
        move |p| producer(&queue, p)
    });
    let dispatchers = started(DISPATCHERS, &start, {
        let engine = engine.clone();
        move |d| dispatcher(&engine, d)
    });

    let mut expected: HashMap<String, (String, &str)> = HashMap::new();
    for dispatcher in dispatchers {
        for (goal, id, status) in dispatcher.join().unwrap() {
            assert!(expected.insert(goal, (id, status)).is_none());
        }
    }
    for producer in producers {
        producer.join().unwrap();
    }
    // Every completion is written once the last runner has ended (its slot frees after
    // the write): then the stops go at the tail.
    assert_eq!(
        engine.shutdown("every delegation dispatched", HANG_GUARD),
        0
    );
    for _ in 0..TAKERS {
        queue.put(plain(STOP));
    }
    let mut completions: HashMap<String, Vec<(String, String)>> = HashMap::new();
    let mut puts: HashMap<String, usize> = HashMap::new();
    let taken: Vec<Taken> = takers.into_iter().map(|t| t.join().unwrap()).collect();
    done.store(true, Ordering::SeqCst);
    let reads: usize = observing.into_iter().map(|o| o.join().unwrap()).sum();
    let mut by_way = [0; 5];
    for taken in &taken {
        for (way, n) in taken.by_way.iter().enumerate() {
            by_way[way] += n;
        }
    }
    println!(
        "exactly once: {TOTAL} events; taken blocking, at once, by claim, by filter, by \
         drain: {by_way:?}; {reads} reads of every row meanwhile"
    );
    for taken in taken {
        // The queue is FIFO: whatever else a taker took between, it took each producer's
        // events in the order they were put.
        let mut last: HashMap<&str, usize> = HashMap::new();
        for message in &taken.puts {
            let (producer, index) = message.split_once('-').unwrap();
            let index: usize = index.parse().unwrap();
            if let Some(before) = last.insert(producer, index) {
                assert!(
                    before < index,
                    "{producer}-{index} taken after {producer}-{before}"
                );
            }
        }
        for (goal, id, status) in taken.completions {
            completions.entry(goal).or_default().push((id, status));
        }
        for message in taken.puts {
            *puts.entry(message).or_default() += 1;
        }
    }

    assert_eq!(expected.len(), DISPATCHERS * DISPATCHES_EACH);
    for (goal, (id, status)) in &expected {
        let seen = completions.remove(goal).unwrap_or_default();
        assert_eq!(
            seen,
            [(id.clone(), (*status).to_owned())],
            "the completions of {goal}"
        );
    }
    assert!(
        completions.is_empty(),
        "completions of no dispatch: {completions:?}"
    );
    for p in 0..PRODUCERS {
        for i in 0..PUTS_EACH {
            let message = format!("p{p}-{i}");
            assert_eq!(puts.remove(&message), Some(1), "{message} taken");
        }
    }
    assert!(puts.is_empty(), "puts nobody made: {puts:?}");

    // Nothing left: no running id, no row (a memory ledger drops what it delivered),
    // nothing undelivered, no slot held.
    assert_eq!(engine.active_count(), 0);
    assert!(engine.list().iter().all(|record| !record.is_running()));
    let running = queue
        .rows(&RowQuery {
            running_only: true,
            ..RowQuery::default()
        })
        .unwrap();
    assert!(running.is_empty(), "running rows left: {running:?}");
    let rows = queue.rows(&RowQuery::default()).unwrap();
    assert!(rows.is_empty(), "rows left: {rows:?}");
    assert_eq!(queue.backend().count_undelivered().unwrap(), 0);
    assert!(queue.is_empty());
    assert_eq!(queue.try_take(), None);
}
