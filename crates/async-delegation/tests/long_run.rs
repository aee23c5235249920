//! Hundreds of thousands of delegations through one engine: retention stays at the cap,
//! worker threads do not accumulate and memory stays flat.
//!
//! Its own binary so that the thread and memory figures of /proc/self are this test's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use async_delegation::{
    DelegationEngine, DelegationResult, DelegationSpec, MAX_RETAINED_COMPLETED,
};
use common::take_delegation;
use process_registry::CompletionQueue;

const DELEGATIONS: usize = 200_000;
const CAP: usize = 4;
const CHECK_EVERY: usize = 10_000;

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn long_run_keeps_records_threads_and_memory_flat() {
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    let threads_before = thread_count();
    let mut rss_baseline = None;
    let (mut accepted, mut completed, mut max_threads) = (0usize, 0usize, 0usize);

    // Keep CAP delegations outstanding (dispatched, completion not yet taken). A taken
    // completion has already freed its slot, so every dispatch here must be accepted.
    while accepted < DELEGATIONS {
        if accepted - completed == CAP {
            take_delegation(&queue);
            completed += 1;
            continue;
        }
        let outcome = engine.dispatch(
            DelegationSpec::new("trivial")
                .with_context("a little context to allocate")
                .with_session_key("agent:main:telegram:dm:1"),
            || Ok(DelegationResult::completed("ok")),
            None,
            CAP,
        );
        assert!(outcome.is_dispatched(), "stale capacity: {outcome:?}");
        accepted += 1;
        if accepted % CHECK_EVERY == 0 {
            max_threads = max_threads.max(thread_count());
            assert!(engine.list().len() <= MAX_RETAINED_COMPLETED + CAP);
            if std::env::var_os("LONG_RUN_TRACE").is_some() {
                eprintln!("{accepted}: rss {} threads {}", rss_bytes(), thread_count());
            }
            if accepted == 2 * CHECK_EVERY {
                rss_baseline = Some(rss_bytes());
            }
        }
    }
    while completed < accepted {
        take_delegation(&queue);
        completed += 1;
    }
    assert!(queue.is_empty());
    assert_eq!(engine.active_count(), 0);
    assert_eq!(engine.list().len(), MAX_RETAINED_COMPLETED);

    // Workers: at most one per slot plus a few that marked themselves idle just before
    // a new dispatch arrived; never one per delegation.
    let extra = max_threads.saturating_sub(threads_before);
    assert!(
        extra <= 2 * CAP + 2,
        "{extra} extra threads for capacity {CAP}"
    );

    let grown = rss_bytes().saturating_sub(rss_baseline.unwrap());
    assert!(
        grown < 16 << 20,
        "RSS grew by {grown} bytes over {DELEGATIONS} delegations"
    );
    println!("long run: {DELEGATIONS} delegations, +{extra} threads, RSS +{grown} bytes");
}
