//! Per-operation percentiles of the SQLite ledger (process durability), each operation
//! timed on its own: the `dispatch` call (its `running` row committed before it returns),
//! the time from a runner's return to a consumer already waiting in `claim_timeout`
//! holding the claim, and sustained claim + ack by one consumer.
//!
//! `cargo bench -p async-delegation --bench sqlite_percentiles` (optionally followed by
//! `-- ROUNDS`, default 2 000). Prints p50/p90/p99/max per operation. Not a criterion
//! benchmark: criterion reports means of batches, and the targets are medians.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use async_delegation::DelegationEngine;
use common::{report, runner_return_to_claim, sqlite_queue, timed_dispatch};
use process_registry::{AsyncDelegationEvent, ClaimFilter, Event};

fn micros(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1e6
}

fn dispatch(rounds: usize) {
    let (queue, _scratch) = sqlite_queue("dispatch");
    let engine = DelegationEngine::new(queue.clone());
    let spent = (0..rounds)
        .map(|_| micros(timed_dispatch(&engine, &queue)))
        .collect();
    report("dispatch", spent);
}

fn runner_return_to_claim_held(rounds: usize) {
    let (queue, _scratch) = sqlite_queue("claim");
    let engine = DelegationEngine::new(queue.clone());
    let spent = (0..rounds)
        .map(|_| micros(runner_return_to_claim(&engine, &queue)))
        .collect();
    report("runner return -> claim held", spent);
}

fn claim_ack(rounds: usize) {
    let (queue, _scratch) = sqlite_queue("claim-ack");
    for n in 0..rounds {
        queue
            .try_put(Event::AsyncDelegation(AsyncDelegationEvent {
                delegation_id: Some(format!("deleg_{n:08x}").into()),
                session_key: "agent:main:telegram:dm:12345:678".into(),
                goal: "Summarise the logs".into(),
                status: Some("completed".into()),
                summary: Some("Three errors, all from the cache layer.".into()),
                ..AsyncDelegationEvent::default()
            }))
            .unwrap();
    }
    let mut spent = Vec::with_capacity(rounds);
    let all = Instant::now();
    for _ in 0..rounds {
        let started = Instant::now();
        let claim = queue.claim(&ClaimFilter::routed()).unwrap().expect("a row");
        claim.ack().unwrap();
        spent.push(micros(started.elapsed()));
    }
    let per_second = rounds as f64 / all.elapsed().as_secs_f64();
    report("claim + ack", spent);
    println!("claim + ack sustained        {per_second:.0} completions/s");
}

fn main() {
    // `cargo bench` passes `--bench`; a number among the arguments sets the rounds.
    let rounds = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(2_000);
    dispatch(rounds);
    runner_return_to_claim_held(rounds / 2);
    claim_ack(rounds * 5);
}
