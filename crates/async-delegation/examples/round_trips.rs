//! Runs a number of dispatch → completion → taken round trips on an in-memory queue, for
//! counting the instructions each one costs (the count does not depend on the machine's
//! load, unlike a timing):
//!
//! ```text
//! cargo build --release -p async-delegation --example round_trips
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/rt.%p \
//!     target/release/examples/round_trips 20000
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/rt0.%p \
//!     target/release/examples/round_trips 0
//! ```
//!
//! The difference of the two totals (`Collected` in `callgrind_annotate`), divided by the
//! round trips, is the cost of one: the run with 0 prices the start-up alone. With `pipelined`
//! as the second argument it keeps up to 64 delegations in flight instead of one. With
//! `busy` it times each `dispatch` made while every worker is busy (bursts of 16 held
//! runners, each burst starting from the spare alone) and prints the percentiles. With
//! `queue` it counts puts and takes of the plain queue instead (one thread, no engine).
#![allow(clippy::expect_used)]

use std::time::Duration;

use async_delegation::{DelegationEngine, DelegationResult, DelegationSpec};
use process_registry::CompletionQueue;

const GUARD: Duration = Duration::from_secs(20);

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let mode = args.next();
    if mode.as_deref() == Some("busy") {
        busy(rounds);
        return;
    }
    if mode.as_deref() == Some("queue") {
        put_take(rounds);
        return;
    }
    let pipelined = mode.as_deref() == Some("pipelined");
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    let spec = || {
        DelegationSpec::new("Summarise the logs")
            .with_context("Only the last hour matters")
            .with_toolsets(["terminal"])
            .with_role("leaf")
            .with_session_key("agent:main:telegram:dm:12345")
    };
    let runner = || Ok(DelegationResult::completed("done"));
    // Warm up: one worker started, every lazy initialisation done.
    let warm = engine.dispatch(spec(), runner, None, 64);
    assert!(warm.is_dispatched());
    queue.take_timeout(GUARD).expect("completion");
    let cap = if pipelined { 64 } else { 1 };
    let (mut sent, mut taken) = (0, 0);
    while taken < rounds {
        while sent < rounds && sent - taken < cap {
            if !engine.dispatch(spec(), runner, None, cap).is_dispatched() {
                break;
            }
            sent += 1;
        }
        queue.take_timeout(GUARD).expect("completion");
        taken += 1;
    }
    println!("{rounds} round trips");
}

fn spec() -> DelegationSpec {
    DelegationSpec::new("Summarise the logs")
        .with_context("Only the last hour matters")
        .with_toolsets(["terminal"])
        .with_role("leaf")
        .with_session_key("agent:main:telegram:dm:12345")
}

/// `pairs` puts and takes on one thread, in batches of up to 10 000 puts then as many
/// takes: the plain queue's path through the memory ledger, without the engine.
fn put_take(pairs: usize) {
    let queue = CompletionQueue::new();
    let event = |n: usize| {
        process_registry::Event::WatchOverflowReleased(process_registry::WatchOverflow {
            suppressed: Some(process_registry::WireNumber::from(n as u64)),
            ..Default::default()
        })
    };
    let mut done = 0;
    while done < pairs {
        let batch = (pairs - done).min(10_000);
        for n in 0..batch {
            queue.put(event(n));
        }
        for _ in 0..batch {
            std::hint::black_box(queue.try_take().expect("put"));
        }
        done += batch;
    }
    println!("{pairs} puts and takes");
}

/// Percentiles of `dispatch` with every worker busy.
fn busy(dispatches: usize) {
    const BURST: usize = 16;
    let queue = CompletionQueue::new();
    // Idle workers beyond the spare retire at once.
    let engine = DelegationEngine::with_worker_keep_alive(queue.clone(), Duration::ZERO);
    let mut spent = Vec::with_capacity(dispatches);
    while spent.len() < dispatches {
        let (open, closed) = crossbeam_channel::bounded::<()>(0);
        for _ in 0..BURST {
            let closed = closed.clone();
            let spec = spec();
            let started = std::time::Instant::now();
            let outcome = engine.dispatch(
                spec,
                move || {
                    let _ = closed.recv_timeout(GUARD);
                    Ok(DelegationResult::completed("done"))
                },
                None,
                usize::MAX,
            );
            spent.push(started.elapsed());
            assert!(outcome.is_dispatched());
        }
        drop(open);
        for _ in 0..BURST {
            queue.take_timeout(GUARD).expect("completion");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    spent.sort();
    let at = |p: usize| spent[(spent.len() - 1) * p / 100];
    println!(
        "dispatch with every worker busy, {} dispatches: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        spent.len(),
        at(50),
        at(90),
        at(99),
        spent[spent.len() - 1]
    );
}
