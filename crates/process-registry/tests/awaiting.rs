//! Awaiting the queue: `next_event`, `next_claim` and their streams, on both tokio runtime
//! flavours and on an executor that is not tokio; on SQLite and PostgreSQL, futures
//! dropped at every point of their looks. Every wait is bounded by a generous
//! timeout so that a wait that never wakes fails instead of hanging; nothing measures time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Context, Waker};
use std::time::Duration;

use futures_core::Stream;
use process_registry::{
    AsyncDelegationEvent, Claim, ClaimFilter, CompletionQueue, Event, LedgerConfig, LedgerError,
    MemoryLedger, Released, WatchOverflow,
};

/// Long enough for any machine; a wait that needs it has failed.
const HANG_GUARD: Duration = Duration::from_secs(20);

fn numbered(n: u64) -> Event {
    Event::WatchOverflowReleased(WatchOverflow {
        suppressed: Some(n.into()),
        ..WatchOverflow::default()
    })
}

fn number(event: &Event) -> u64 {
    match event {
        Event::WatchOverflowReleased(e) => e.suppressed.as_ref().unwrap().as_u64().unwrap(),
        other => panic!("unexpected {other:?}"),
    }
}

fn routed(key: &str) -> Event {
    Event::AsyncDelegation(AsyncDelegationEvent {
        session_key: key.into(),
        ..AsyncDelegationEvent::default()
    })
}

async fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}

/// On a current-thread runtime the waiting task and the producing task share the one
/// thread: the wait must yield it (a blocking `take_timeout` here would never let the
/// producer run).
#[tokio::test(flavor = "current_thread")]
async fn next_event_yields_the_only_thread_to_the_producer() {
    let queue = CompletionQueue::new();
    let producer = queue.clone();
    tokio::spawn(async move {
        tokio::task::yield_now().await;
        producer.put(numbered(7));
    });
    let event = tokio::time::timeout(HANG_GUARD, queue.next_event())
        .await
        .expect("woken by the put")
        .unwrap();
    assert_eq!(number(&event), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_yields_every_event_in_order_from_another_thread() {
    let queue = CompletionQueue::new();
    let producer = queue.clone();
    let thread = std::thread::spawn(move || {
        for n in 0..500 {
            producer.put(numbered(n));
            if n % 50 == 0 {
                std::thread::yield_now();
            }
        }
    });
    let mut events = queue.events();
    let got = tokio::time::timeout(HANG_GUARD, async {
        let mut got = Vec::new();
        while got.len() < 500 {
            got.push(number(&next(&mut events).await.unwrap().unwrap()));
        }
        got
    })
    .await
    .expect("every event arrived");
    thread.join().unwrap();
    assert_eq!(got, (0..500).collect::<Vec<_>>());
    assert!(queue.is_empty());
}

/// A released completion comes back after its backoff with no write to wake anyone: the
/// wait's timer does it.
#[tokio::test(flavor = "current_thread")]
async fn next_claim_wakes_when_a_released_completion_comes_due() {
    let queue = CompletionQueue::builder(MemoryLedger::new())
        .config(
            LedgerConfig::default()
                .with_backoff(Duration::from_millis(30), Duration::from_millis(30)),
        )
        .open()
        .unwrap();
    queue.put(routed("agent:main:telegram:dm:1"));
    let routed_only = ClaimFilter::routed();
    let first = queue.next_claim(&routed_only).await.unwrap();
    assert!(matches!(
        first.release("adapter down").unwrap(),
        Released::Retry { .. }
    ));
    assert!(
        queue.claim(&routed_only).unwrap().is_none(),
        "held back by its backoff"
    );
    let again = tokio::time::timeout(HANG_GUARD, queue.next_claim(&routed_only))
        .await
        .expect("woken when the backoff ran out")
        .unwrap();
    assert_eq!(again.attempt(), 2);
    again.ack().unwrap();
}

/// The claim stream claims only what its filter matches, as the completions arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_claim_stream_claims_what_its_filter_matches() {
    let queue = CompletionQueue::new();
    let mut claims = queue.claims(ClaimFilter::cli_completions());
    let producer = queue.clone();
    tokio::spawn(async move {
        producer.put(routed("agent:main:telegram:dm:1"));
        producer.put(routed(""));
        producer.put(routed("agent:main:discord:dm:2"));
        producer.put(routed(""));
    });
    for _ in 0..2 {
        let claim: Claim = tokio::time::timeout(HANG_GUARD, next(&mut claims))
            .await
            .expect("a CLI completion")
            .unwrap()
            .unwrap();
        assert_eq!(claim.event().session_key(), Some(""));
        claim.ack().unwrap();
    }
    // The two routed completions are still there, for a gateway.
    assert_eq!(queue.count(&ClaimFilter::routed()), 2);
}

/// Dropping a wait that has not returned takes nothing: the event stays for the next
/// consumer.
#[test]
fn a_dropped_wait_takes_nothing() {
    let queue = CompletionQueue::new();
    let mut cx = Context::from_waker(Waker::noop());
    let mut waiting = Box::pin(queue.next_event());
    assert!(waiting.as_mut().poll(&mut cx).is_pending());
    let mut stream = queue.events();
    assert!(Pin::new(&mut stream).poll_next(&mut cx).is_pending());
    queue.put(numbered(1));
    drop(waiting);
    drop(stream);
    assert_eq!(number(&queue.try_take().expect("still queued")), 1);
}

/// No tokio: the `futures` executor, with the producer on a plain thread.
#[test]
fn any_executor_can_await_the_queue() {
    let queue = CompletionQueue::new();
    let producer = queue.clone();
    let thread = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(5));
        producer.put(numbered(3));
        producer.put(routed(""));
    });
    let (event, claim) = futures_executor::block_on(async {
        let event = queue.next_event().await?;
        let claim = queue.next_claim(&ClaimFilter::cli_completions()).await?;
        Ok::<_, LedgerError>((event, claim))
    })
    .unwrap();
    thread.join().unwrap();
    assert_eq!(number(&event), 3);
    claim.ack().unwrap();
    assert!(queue.is_empty());
}

/// The futures and streams can move between threads (a multi-thread runtime's tasks).
#[test]
fn the_futures_and_streams_are_send() {
    fn send<T: Send>(_: &T) {}
    let queue = CompletionQueue::new();
    let filter = ClaimFilter::any().where_event(|_| true);
    send(&queue.next_event());
    send(&queue.next_claim(&filter));
    send(&queue.events());
    send(&queue.claims(filter.clone()));
}

/// The same wait on a SQLite ledger: woken by a commit from another thread.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "current_thread")]
async fn next_event_on_a_sqlite_ledger_is_woken_by_the_commit() {
    let dir = std::env::temp_dir().join(format!("awaiting-sqlite-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ledger = process_registry::SqliteLedger::open(dir.join("ledger.sqlite3")).unwrap();
    let queue = CompletionQueue::builder(ledger).open().unwrap();
    let producer = queue.clone();
    let thread = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(5));
        producer.try_put(numbered(11)).unwrap();
    });
    let event = tokio::time::timeout(HANG_GUARD, queue.next_event())
        .await
        .expect("woken by the commit")
        .unwrap();
    thread.join().unwrap();
    assert_eq!(number(&event), 11);
    drop(queue);
    let _ = std::fs::remove_dir_all(&dir);
}

// Stores whose calls may block (SQLite, PostgreSQL): a future dropped at any moment loses
// nothing — whatever its look took or claimed comes back, and every completion is
// received exactly once. (That a poll never waits on such a store is shown across the
// stack in the workspace's `tests/tests/async_faces_never_wait_on_the_store.rs`.)

#[cfg(feature = "postgres")]
mod pg_support;

/// Polls `future` once on this thread.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn poll_once<F: Future + Unpin>(future: &mut F) -> std::task::Poll<F::Output> {
    Pin::new(future).poll(&mut Context::from_waker(Waker::noop()))
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
/// Futures of `next_event` and `next_claim` dropped at every point of their looks — before
/// the store answered, after it answered and before the future saw it, after it returned
/// — while producers put: every completion is received exactly once, and the queue ends
/// empty. A look whose future is gone defers its claim (a `next_event` on such a store
/// claims, then acknowledges once its future has the event), so every
/// completion is claimed at its first attempt.
fn dropped_futures_lose_nothing(queue: &CompletionQueue) {
    const EVENTS: u64 = 120;
    let producer = queue.clone();
    let putting = std::thread::spawn(move || {
        for n in 0..EVENTS {
            producer.try_put(numbered(n)).unwrap();
            if n % 8 == 0 {
                std::thread::yield_now();
            }
        }
    });
    let mut received: std::collections::BTreeMap<u64, u32> = std::collections::BTreeMap::new();
    let keep = |received: &mut std::collections::BTreeMap<u64, u32>, n: u64| {
        *received.entry(n).or_default() += 1
    };
    let any = ClaimFilter::any();
    let mut round = 0_u64;
    let mut claims: Vec<Claim> = Vec::new();
    while round < 400 {
        round += 1;
        // A varying pause between the first poll and the drop: some drops come before
        // the store answered, some after.
        let pause = Duration::from_micros((round * 37) % 700);
        let second_look = round.is_multiple_of(3);
        if round.is_multiple_of(2) {
            if let Some(event) = poll_then_drop(queue.next_event(), pause, second_look) {
                keep(&mut received, number(&event.unwrap()));
            }
        } else if let Some(claim) = poll_then_drop(queue.next_claim(&any), pause, second_look) {
            claims.push(claim.unwrap());
        }
    }
    putting.join().unwrap();
    for claim in claims {
        // A claim given back by a dropped future was deferred: its attempt given back.
        assert_eq!(claim.attempt(), 1, "{claim:?}");
        keep(&mut received, number(claim.event()));
        claim.ack().unwrap();
    }
    // What the dropped futures gave back (some of it on the offload threads, after the
    // drop) is taken now.
    while received.values().sum::<u32>() < EVENTS as u32 {
        let claim = queue
            .claim_timeout(&any, HANG_GUARD)
            .unwrap()
            .expect("every completion comes back");
        assert_eq!(claim.attempt(), 1, "{claim:?}");
        keep(&mut received, number(claim.event()));
        claim.ack().unwrap();
    }
    let twice: Vec<_> = received.iter().filter(|(_, times)| **times != 1).collect();
    assert!(twice.is_empty(), "received more than once: {twice:?}");
    assert_eq!(
        received.keys().copied().collect::<Vec<_>>(),
        (0..EVENTS).collect::<Vec<_>>()
    );
    // The awaited takes' claims are acknowledged on the offload threads, just after.
    let deadline = std::time::Instant::now() + HANG_GUARD;
    while !queue.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "every completion acknowledged"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
/// Polls `future` once; if it is not done, waits `pause`, polls once more when
/// `second_look` says so, and drops it.
fn poll_then_drop<F: Future>(future: F, pause: Duration, second_look: bool) -> Option<F::Output> {
    let mut future = Box::pin(future);
    if let std::task::Poll::Ready(done) = poll_once(&mut future) {
        return Some(done);
    }
    std::thread::sleep(pause);
    match second_look {
        true => match poll_once(&mut future) {
            std::task::Poll::Ready(done) => Some(done),
            std::task::Poll::Pending => None,
        },
        false => None,
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use process_registry::SqliteLedger;

    /// A fresh ledger file of the test's own, and its queue.
    fn queue(name: &str) -> (CompletionQueue, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("awaiting-blocking-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ledger.sqlite3");
        let queue = CompletionQueue::builder(SqliteLedger::open(&path).unwrap())
            .open()
            .unwrap();
        (queue, dir)
    }

    #[test]
    fn dropped_futures_lose_no_completion() {
        let (queue, dir) = queue("drops");
        dropped_futures_lose_nothing(&queue);
        drop(queue);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use pg_support::{params, Schema};
    use process_registry::PostgresLedger;

    fn queue(schema: &Schema) -> CompletionQueue {
        let ledger = PostgresLedger::connect_with(&params(), schema.options(2)).unwrap();
        CompletionQueue::builder(ledger).open().unwrap()
    }

    #[test]
    fn dropped_futures_lose_no_completion() {
        let schema = Schema::new("awaiting_blocking", "drops");
        let queue = queue(&schema);
        dropped_futures_lose_nothing(&queue);
    }
}
