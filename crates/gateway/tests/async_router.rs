//! The router on a tokio runtime (feature `tokio`) and async adapters: a slow platform
//! never delays another's deliveries (shown by the order of events, not by timing), a
//! delivery is acked only once its send succeeded, panics cost one attempt, a sync adapter
//! never holds a runtime thread, and a stop waits for the tasks. Every wait is bounded by a
//! generous timeout so a wait that never ends fails instead of hanging.
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use gateway::{AdapterError, DeliveryRouter, InternalMessage, Platform};
use process_registry::{AsyncDelegationEvent, CompletionQueue, LedgerConfig, MemoryLedger};
use tokio::sync::{mpsc, oneshot};

const HANG_GUARD: Duration = Duration::from_secs(20);

fn completion(session_key: &str, id: &str) -> AsyncDelegationEvent {
    AsyncDelegationEvent {
        delegation_id: Some(id.into()),
        session_key: session_key.into(),
        goal: "g".into(),
        summary: Some(format!("summary of {id}").into()),
        ..AsyncDelegationEvent::default()
    }
}

/// A queue whose released completions come back at once (1 ms backoff).
fn quick_retry_queue() -> CompletionQueue {
    CompletionQueue::builder(MemoryLedger::new())
        .config(
            LedgerConfig::default()
                .with_backoff(Duration::from_millis(1), Duration::from_millis(1)),
        )
        .open()
        .unwrap()
}

async fn recv<T>(inbox: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(HANG_GUARD, inbox.recv())
        .await
        .expect("a delivery in time")
        .expect("the adapter is alive")
}

/// Waits (yielding, bounded) until the router has acked `n` deliveries: an adapter sees a
/// message before its ack is counted.
async fn delivered(router: &DeliveryRouter, n: u64) {
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while router.stats().delivered < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} acked deliveries"
        );
        tokio::task::yield_now().await;
    }
}

/// The delegation id of the completion a message carries.
fn id_of(message: &InternalMessage) -> String {
    match &*message.event {
        process_registry::Event::AsyncDelegation(e) => {
            e.delegation_id.clone().unwrap_or_default().to_string()
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// An async adapter that forwards each message's delegation id.
fn forwarding(
    inbox: mpsc::UnboundedSender<String>,
) -> impl Fn(InternalMessage) -> std::future::Ready<Result<(), AdapterError>> + Send + Sync {
    move |message: InternalMessage| {
        std::future::ready(
            inbox
                .send(id_of(&message))
                .map_err(|e| AdapterError::from(e.to_string())),
        )
    }
}

async fn a_slow_platform_never_delays_another() {
    let queue = CompletionQueue::new();
    let (discord_entered, mut discord_in_send) = mpsc::unbounded_channel::<String>();
    let (finish_discord, discord_may_finish) = oneshot::channel::<()>();
    let discord_may_finish = std::sync::Mutex::new(Some(discord_may_finish));
    let (telegram_inbox, mut telegram) = mpsc::unbounded_channel::<String>();
    let router = DeliveryRouter::builder(queue.clone())
        .async_adapter(Platform::Discord, move |message: InternalMessage| {
            let entered = discord_entered.clone();
            let gate = discord_may_finish.lock().unwrap().take();
            async move {
                entered.send(id_of(&message)).unwrap();
                // The slow send: it ends only when the test says so.
                if let Some(gate) = gate {
                    gate.await.map_err(|e| AdapterError::from(e.to_string()))?;
                }
                Ok(())
            }
        })
        .async_adapter(Platform::Telegram, forwarding(telegram_inbox))
        .start_on(&tokio::runtime::Handle::current())
        .unwrap();

    queue.put(completion("agent:main:discord:dm:1", "deleg_d0000001"));
    assert_eq!(recv(&mut discord_in_send).await, "deleg_d0000001");
    // Discord's send is in progress; Telegram's completions go through meanwhile.
    for n in 1..=3 {
        queue.put(completion(
            "agent:main:telegram:dm:2",
            &format!("deleg_t000000{n}"),
        ));
    }
    for n in 1..=3 {
        assert_eq!(recv(&mut telegram).await, format!("deleg_t000000{n}"));
    }
    delivered(&router, 3).await;
    assert_eq!(router.stats().delivered, 3, "Discord's is not acked yet");
    finish_discord.send(()).unwrap();
    delivered(&router, 4).await;
    let stats = router.stop_async().await;
    assert_eq!(stats.delivered, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_platform_never_delays_another_on_a_multi_thread_runtime() {
    a_slow_platform_never_delays_another().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_slow_platform_never_delays_another_on_a_current_thread_runtime() {
    a_slow_platform_never_delays_another().await;
}

/// A send that fails after awaiting is a failed attempt (released, not acked); the retry
/// that succeeds is the delivery. A send that panics while polled costs its attempt only.
#[tokio::test(flavor = "current_thread")]
async fn an_async_delivery_is_acked_only_when_its_send_succeeded() {
    let queue = quick_retry_queue();
    let (inbox, mut delivered) = mpsc::unbounded_channel::<(u32, String)>();
    let attempts = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = std::sync::Arc::clone(&attempts);
    let router = DeliveryRouter::builder(queue.clone())
        .async_adapter(Platform::Slack, move |message: InternalMessage| {
            let attempt = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let inbox = inbox.clone();
            async move {
                tokio::task::yield_now().await;
                match attempt {
                    1 => Err(AdapterError::from("slack answered 502")),
                    2 => panic!("the slack client panicked"),
                    _ => {
                        inbox.send((attempt, id_of(&message))).unwrap();
                        Ok(())
                    }
                }
            }
        })
        .start_on(&tokio::runtime::Handle::current())
        .unwrap();
    queue.put(completion("agent:main:slack:group:C1", "deleg_s0000001"));
    let (attempt, key) = recv(&mut delivered).await;
    assert_eq!((attempt, key.as_str()), (3, "deleg_s0000001"));
    let stats = router.stop_async().await;
    assert_eq!((stats.released, stats.delivered), (2, 1));
    assert!(queue.is_empty());
}

/// On a current-thread runtime a sync adapter that blocks must not hold the runtime's
/// only thread: the test's own task answers it meanwhile.
#[tokio::test(flavor = "current_thread")]
async fn a_sync_adapter_on_a_runtime_runs_on_a_blocking_thread() {
    let queue = CompletionQueue::new();
    let (entered, mut in_send) = mpsc::unbounded_channel::<()>();
    let (go, gate) = std::sync::mpsc::channel::<()>();
    let gate = std::sync::Mutex::new(gate);
    let router = DeliveryRouter::builder(queue.clone())
        .adapter(Platform::Telegram, move |_: &InternalMessage| {
            entered.send(()).unwrap();
            gate.lock()
                .unwrap()
                .recv_timeout(HANG_GUARD)
                .map_err(|e| AdapterError::from(e.to_string()))
        })
        .start_on(&tokio::runtime::Handle::current())
        .unwrap();
    queue.put(completion("agent:main:telegram:dm:1", "deleg_b0000001"));
    recv(&mut in_send).await;
    go.send(()).unwrap();
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while router.stats().delivered < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the blocking send's ack"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(router.stop_async().await.delivered, 1);
}

/// A held completion waits for its session's turn to end; an adapter registered after the
/// start gets a task of its own; unroutable completions still become dead letters; after
/// `stop_async` nothing more is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_late_adapters_dead_letters_and_stop_on_a_runtime() {
    let queue = CompletionQueue::new();
    let router = DeliveryRouter::builder(queue.clone())
        .start_on(&tokio::runtime::Handle::current())
        .unwrap();
    let held = "agent:main:matrix:dm:7";
    assert!(router.begin_turn(held));
    queue.put(completion(held, "deleg_m0000001"));
    queue.put(completion("agent:main:nowhere:dm:1", "deleg_x0000001"));
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while router.stats().dead_lettered < 1 {
        assert!(tokio::time::Instant::now() < deadline, "the unroutable one");
        tokio::task::yield_now().await;
    }
    let (inbox, mut matrix) = mpsc::unbounded_channel::<String>();
    router.register_async_adapter(Platform::Matrix, forwarding(inbox));
    assert_eq!(router.waiting(), 1, "held by the open turn");
    router.end_turn(held);
    assert_eq!(recv(&mut matrix).await, "deleg_m0000001");

    let stats = router.stop_async().await;
    assert_eq!((stats.delivered, stats.dead_lettered), (1, 1));
    queue.put(completion(held, "deleg_m0000002"));
    tokio::task::yield_now().await;
    assert!(matrix.try_recv().is_err());
    assert_eq!(queue.len(), 1, "left in the ledger for the next router");
}

/// The thread router drives an async adapter's send to its end on its own thread.
#[test]
fn the_thread_router_delivers_through_an_async_adapter() {
    let queue = CompletionQueue::new();
    let (inbox, delivered) = std::sync::mpsc::channel::<String>();
    let inbox = std::sync::Mutex::new(inbox);
    let router = DeliveryRouter::builder(queue.clone())
        .async_adapter(Platform::Telegram, move |message: InternalMessage| {
            let sent = inbox.lock().unwrap().send(id_of(&message));
            async move {
                // A future that is not ready at once: woken from another thread.
                let (done, finished) = oneshot::channel::<()>();
                std::thread::spawn(move || done.send(()));
                finished
                    .await
                    .map_err(|e| AdapterError::from(e.to_string()))?;
                sent.map_err(|e| AdapterError::from(e.to_string()))
            }
        })
        .start()
        .unwrap();
    queue.put(completion("agent:main:telegram:dm:1", "deleg_a0000001"));
    assert_eq!(
        delivered.recv_timeout(HANG_GUARD).unwrap(),
        "deleg_a0000001"
    );
    let deadline = std::time::Instant::now() + HANG_GUARD;
    while router.stats().delivered < 1 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::yield_now();
    }
    assert_eq!(router.stop().delivered, 1);
}

/// An origin store that answers later (a database read): awaited before routing, on the
/// task router and on the thread router; one that panics costs nothing but its answer.
struct SlowOrigins;

impl gateway::AsyncOriginStore for SlowOrigins {
    fn origin(&self, session_key: &str) -> gateway::OriginLookup {
        let panics = session_key.ends_with(":666");
        Box::pin(async move {
            tokio::task::yield_now().await;
            if panics {
                panic!("the session store is down");
            }
            Some(gateway::SessionSource::new(Platform::Telegram, "-100777").with_thread_id("42"))
        })
    }
}

fn source_of(message: &InternalMessage) -> (String, String, Option<String>) {
    (
        id_of(message),
        message.source.chat_id.clone(),
        message.source.thread_id.clone(),
    )
}

#[tokio::test(flavor = "current_thread")]
async fn an_async_origin_store_is_awaited_before_routing() {
    let queue = CompletionQueue::new();
    let (inbox, mut delivered) = mpsc::unbounded_channel();
    let router = DeliveryRouter::builder(queue.clone())
        .async_origins(SlowOrigins)
        .async_adapter(Platform::Telegram, move |message: InternalMessage| {
            std::future::ready(
                inbox
                    .send(source_of(&message))
                    .map_err(|e| AdapterError::from(e.to_string())),
            )
        })
        .start_on(&tokio::runtime::Handle::current())
        .unwrap();
    queue.put(completion("agent:main:telegram:dm:1", "deleg_o0000001"));
    queue.put(completion("agent:main:telegram:dm:666", "deleg_o0000002"));
    assert_eq!(
        recv(&mut delivered).await,
        ("deleg_o0000001".into(), "-100777".into(), Some("42".into()))
    );
    // The store panicked for this one: routed by its key instead.
    assert_eq!(
        recv(&mut delivered).await,
        ("deleg_o0000002".into(), "666".into(), None)
    );
    router.stop_async().await;
}

#[test]
fn the_thread_router_awaits_an_async_origin_store_too() {
    let queue = CompletionQueue::new();
    let (inbox, delivered) = std::sync::mpsc::channel();
    let inbox = std::sync::Mutex::new(inbox);
    let router = DeliveryRouter::builder(queue.clone())
        .async_origins(SlowOrigins)
        .adapter(Platform::Telegram, move |message: &InternalMessage| {
            inbox
                .lock()
                .unwrap()
                .send(source_of(message))
                .map_err(|e| AdapterError::from(e.to_string()))
        })
        .start()
        .unwrap();
    queue.put(completion("agent:main:telegram:dm:1", "deleg_o0000003"));
    assert_eq!(
        delivered.recv_timeout(HANG_GUARD).unwrap(),
        ("deleg_o0000003".into(), "-100777".into(), Some("42".into()))
    );
    router.stop();
}

/// An adapter may stop its own router: `stop_async` awaited inside the delivery does not
/// wait for the task it runs on, and returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_async_from_inside_an_adapter_returns() {
    let queue = CompletionQueue::new();
    let slot: std::sync::Arc<std::sync::Mutex<Option<DeliveryRouter>>> = Default::default();
    let inner = std::sync::Arc::clone(&slot);
    let (stopped, mut stops) = mpsc::unbounded_channel();
    let router = DeliveryRouter::builder(queue.clone())
        .async_adapter(Platform::Telegram, move |_: InternalMessage| {
            let router = inner.lock().unwrap().take();
            let stopped = stopped.clone();
            async move {
                if let Some(router) = router {
                    stopped.send(router.stop_async().await).unwrap();
                }
                Ok(())
            }
        })
        .start_on(&tokio::runtime::Handle::current())
        .unwrap();
    *slot.lock().unwrap() = Some(router);
    queue.put(completion("agent:main:telegram:dm:1", "deleg_q0000001"));
    let stats = recv(&mut stops).await;
    assert_eq!(
        stats.delivered, 0,
        "its own delivery is acked after the stop returned"
    );
}

/// `stop_async` on a router running on its thread joins that thread off the runtime: on a
/// current-thread runtime, the adapter it waits for can still be answered by a task.
#[tokio::test(flavor = "current_thread")]
async fn stop_async_on_a_thread_router_never_blocks_the_runtime() {
    let queue = CompletionQueue::new();
    let (entered, mut in_send) = mpsc::unbounded_channel::<()>();
    let (ack, acks) = std::sync::mpsc::channel::<()>();
    let acks = std::sync::Mutex::new(acks);
    let router = DeliveryRouter::builder(queue.clone())
        .adapter(Platform::Telegram, move |_: &InternalMessage| {
            entered.send(()).unwrap();
            acks.lock()
                .unwrap()
                .recv_timeout(HANG_GUARD)
                .map_err(|e| AdapterError::from(e.to_string()))
        })
        .start()
        .unwrap();
    queue.put(completion("agent:main:telegram:dm:1", "deleg_q0000002"));
    recv(&mut in_send).await;
    tokio::spawn(async move {
        tokio::task::yield_now().await;
        ack.send(()).unwrap();
    });
    let stats = tokio::time::timeout(HANG_GUARD, router.stop_async())
        .await
        .expect("stopped");
    assert_eq!(stats.delivered, 1, "the runtime task answered the adapter");
}
