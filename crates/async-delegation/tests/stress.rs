//! Many dispatchers, a mix of completing, failing, panicking and interrupted runners,
//! and racing `interrupt_all` calls: every accepted id yields exactly one event, a
//! rejected dispatch yields none, and capacity is never exceeded.
//!
//! Its own binary because it silences the panic hook (thousands of expected panics).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use async_delegation::{DelegationEngine, DelegationResult, DelegationSpec, InterruptHook};
use common::{capacity_text, take_delegation};
use process_registry::CompletionQueue;

const DISPATCHERS: usize = 8;
const ACCEPTED_PER_DISPATCHER: usize = 2500;
const CAP: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Completes,
    Fails,
    Panics,
    Interruptible,
}

/// Counts runners inside their body, remembering the most at once.
struct Occupancy {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl Occupancy {
    fn enter(&self) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
    }
    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Leave<'a>(&'a Occupancy);
impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

#[test]
fn stress_exactly_one_completion_per_accepted_dispatch() {
    std::panic::set_hook(Box::new(|_| {}));
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    let occupancy = Arc::new(Occupancy {
        now: AtomicUsize::new(0),
        max: AtomicUsize::new(0),
    });
    let done = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(DISPATCHERS + 1));

    let interrupter = {
        let (engine, done, barrier) = (engine.clone(), Arc::clone(&done), Arc::clone(&barrier));
        std::thread::spawn(move || {
            barrier.wait();
            let mut signalled = 0;
            while !done.load(Ordering::SeqCst) {
                signalled += engine.interrupt_all("stress");
                std::thread::yield_now();
            }
            signalled
        })
    };

    let dispatchers: Vec<_> = (0..DISPATCHERS)
        .map(|d| {
            let (engine, occupancy, barrier) =
                (engine.clone(), Arc::clone(&occupancy), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                let mut accepted: Vec<(String, Kind)> = Vec::new();
                let mut rejected = 0usize;
                let mut i = 0usize;
                while accepted.len() < ACCEPTED_PER_DISPATCHER {
                    i += 1;
                    let kind = [
                        Kind::Completes,
                        Kind::Fails,
                        Kind::Panics,
                        Kind::Interruptible,
                    ][(d + i) % 4];
                    let flag = Arc::new(AtomicBool::new(false));
                    let hook_flag = Arc::clone(&flag);
                    let hook: InterruptHook =
                        Arc::new(move |_: &str| hook_flag.store(true, Ordering::SeqCst));
                    let occupancy = Arc::clone(&occupancy);
                    let goal = format!("d{d} i{i}");
                    let runner = move || {
                        occupancy.enter();
                        let _leave = Leave(&occupancy);
                        match kind {
                            Kind::Completes => Ok(DelegationResult::completed("ok")),
                            Kind::Fails => Err(format!("failed {d}/{i}").into()),
                            Kind::Panics => panic!("boom {d}/{i}"),
                            Kind::Interruptible => {
                                // Bounded work that notices an interrupt when one comes.
                                for _ in 0..200 {
                                    if flag.load(Ordering::SeqCst) {
                                        return Ok(DelegationResult::interrupted("stress"));
                                    }
                                    std::thread::yield_now();
                                }
                                Ok(DelegationResult::completed("not interrupted"))
                            }
                        }
                    };
                    let outcome =
                        engine.dispatch(DelegationSpec::new(goal), runner, Some(hook), CAP);
                    match outcome.delegation_id() {
                        Some(id) => accepted.push((id.to_owned(), kind)),
                        None => {
                            assert_eq!(outcome.error(), Some(capacity_text(CAP).as_str()));
                            rejected += 1;
                            std::thread::yield_now();
                        }
                    }
                }
                (accepted, rejected)
            })
        })
        .collect();

    // Ids are unique among live records only: one may be drawn again long after its
    // first delegation ended, so each id maps to every kind dispatched under it.
    let mut expected: HashMap<String, Vec<Kind>> = HashMap::new();
    let mut rejected = 0;
    for dispatcher in dispatchers {
        let (accepted, r) = dispatcher.join().unwrap();
        rejected += r;
        for (id, kind) in accepted {
            expected.entry(id).or_default().push(kind);
        }
    }
    done.store(true, Ordering::SeqCst);
    let signalled = interrupter.join().unwrap();

    let total = DISPATCHERS * ACCEPTED_PER_DISPATCHER;
    for _ in 0..total {
        let event = take_delegation(&queue);
        let kinds = expected
            .get_mut(event.delegation_id.as_deref().unwrap())
            .unwrap_or_else(|| panic!("event for an id never accepted: {event:?}"));
        let status = event.status.as_deref().unwrap();
        let error = event.error.as_deref().unwrap_or("");
        let fits = |kind: &Kind| match kind {
            Kind::Completes => status == "completed",
            Kind::Fails => status == "error" && error.starts_with("failed "),
            Kind::Panics => status == "error" && error.starts_with("panic: boom "),
            Kind::Interruptible => status == "interrupted" || status == "completed",
        };
        let index = kinds
            .iter()
            .position(fits)
            .unwrap_or_else(|| panic!("event does not fit its dispatch {kinds:?}: {event:?}"));
        kinds.swap_remove(index);
    }
    assert_eq!(engine.active_count(), 0);
    assert!(queue.is_empty(), "more events than accepted dispatches");
    assert!(
        expected.values().all(Vec::is_empty),
        "an accepted dispatch got no event"
    );
    let max = occupancy.max.load(Ordering::SeqCst);
    assert!(max <= CAP, "{max} runners ran at once with capacity {CAP}");
    assert!(max >= 1);
    assert_eq!(
        engine.list().len(),
        async_delegation::MAX_RETAINED_COMPLETED
    );
    println!("stress: {total} accepted, {rejected} rejected, {signalled} hooks signalled, max {max} at once");
}
