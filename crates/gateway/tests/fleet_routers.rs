//! Fleet routers in one process: two routers on one shared ledger, each its own instance,
//! that know different custom platforms. A completion of a platform one router does not
//! know waits for the router that leases it, instead of becoming a dead letter; one of a
//! platform nobody leases (or nobody has for a day) is still a dead letter.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../process-registry/tests/support/forwarding.rs"]
mod forwarding;
use forwarding::forward_ledger;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use gateway::{AdapterError, DeliveryRouter, InternalMessage, Platform, PlatformRegistry};
use process_registry::{
    AsyncDelegationEvent, CompletionQueue, DeliveryState, LedgerBackend, LedgerError, ManualClock,
    MemoryLedger, RowQuery, ScopeLease,
};

const HANG_GUARD: Duration = Duration::from_secs(60);
const LEASE: Duration = Duration::from_secs(30);

/// Long enough that a completion wrongly claimed by the other router would have been:
/// routers are woken at once by every put.
const NOTHING_HAPPENS: Duration = Duration::from_millis(200);

/// How long a held lease read takes at most (longer than [`NOTHING_HAPPENS`]).
const SLOW_READ: Duration = Duration::from_millis(600);

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < HANG_GUARD,
            "hang guard: still waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn completion(session_key: &str, id: &str) -> AsyncDelegationEvent {
    AsyncDelegationEvent {
        delegation_id: Some(id.into()),
        session_key: session_key.into(),
        goal: "a task".into(),
        status: Some("completed".into()),
        summary: Some("done".into()),
        ..AsyncDelegationEvent::default()
    }
}

fn delivery_of(queue: &CompletionQueue, session_key: &str) -> Option<DeliveryState> {
    let rows = queue
        .rows(&RowQuery {
            session_key: Some(session_key.to_owned()),
            ..RowQuery::default()
        })
        .unwrap();
    assert_eq!(rows.len(), 1, "one row for {session_key}");
    rows[0].delivery
}

/// Two queues on one backend: the fleet's gateways `gw-a` and `gw-b`.
fn queues(backend: &Arc<dyn LedgerBackend>) -> (CompletionQueue, CompletionQueue) {
    let queue = |instance: &str| {
        CompletionQueue::builder_shared(Arc::clone(backend))
            .instance(instance)
            .open()
            .unwrap()
    };
    (queue("gw-a"), queue("gw-b"))
}

/// A fleet router that knows the custom platform `zulip` and serves it, once it holds
/// its lease; with where its deliveries go.
fn zulip_router(queue: &CompletionQueue) -> (DeliveryRouter, mpsc::Receiver<InternalMessage>) {
    let platforms = PlatformRegistry::new();
    let zulip = platforms.register("zulip").unwrap();
    let (sender, inbox) = mpsc::channel::<InternalMessage>();
    let router = DeliveryRouter::builder(queue.clone())
        .fleet(LEASE)
        .platforms(platforms)
        .adapter(zulip, move |message: &InternalMessage| {
            sender.send(message.clone())?;
            Ok::<(), AdapterError>(())
        })
        .start()
        .unwrap();
    let holds = router.ownership().unwrap();
    wait_until("the lease on zulip", || {
        holds.epoch("platform:zulip").is_some()
    });
    (router, inbox)
}

/// A fleet router that knows only the built-in platforms, and serves telegram.
fn telegram_router(queue: &CompletionQueue) -> DeliveryRouter {
    DeliveryRouter::builder(queue.clone())
        .fleet(LEASE)
        .adapter(Platform::Telegram, |_: &InternalMessage| Ok(()))
        .start()
        .unwrap()
}

#[test]
fn a_platform_one_router_does_not_know_waits_for_the_router_that_leases_it() {
    let backend: Arc<dyn LedgerBackend> = Arc::new(MemoryLedger::new());
    let (queue_a, queue_b) = queues(&backend);
    // gw-a knows the custom platform `zulip` and serves it; gw-b knows only the
    // built-in ones (and serves telegram).
    let (a, zulip_inbox) = zulip_router(&queue_a);
    let b = telegram_router(&queue_b);
    let b_sees = b.ownership().unwrap().clone();
    b_sees.renew_now().unwrap();
    assert!(b_sees.is_leased("platform:zulip"));

    // gw-a is busy with the zulip chat, so only gw-b looks at its completion now: it
    // must leave it alone, not make it a dead letter as a platform it does not know.
    let chat = "agent:main:zulip:group:room-1";
    assert!(a.begin_turn(chat));
    queue_b.put(completion(chat, "deleg_zulip"));
    // And a platform nobody leases: a dead letter, whoever claims it.
    let nowhere = "agent:main:nowhere:dm:1";
    queue_b.put(completion(nowhere, "deleg_nowhere"));
    wait_until("the dead letter", || {
        delivery_of(&queue_b, nowhere) == Some(DeliveryState::Dead)
    });
    std::thread::sleep(NOTHING_HAPPENS);
    assert_eq!(
        delivery_of(&queue_b, chat),
        Some(DeliveryState::Pending),
        "waits for gw-a"
    );
    assert!(a.end_turn(chat));
    let message = zulip_inbox.recv_timeout(HANG_GUARD).unwrap();
    assert_eq!(message.source.chat_id, "room-1");
    let (a, b) = (a.stop(), b.stop());
    assert_eq!((a.delivered, b.delivered), (1, 0));
    assert_eq!(a.dead_lettered + b.dead_lettered, 1);
}

/// A memory ledger whose lease reads can be held (a slow first round, as on PostgreSQL).
struct Gated {
    inner: MemoryLedger,
    hold_leases: AtomicBool,
    opened: (Mutex<bool>, Condvar),
}

impl Gated {
    fn open_gate(&self) {
        *self.opened.0.lock().unwrap() = true;
        self.opened.1.notify_all();
    }
}

impl forwarding::Forwarding for Gated {
    fn inner(&self) -> &dyn LedgerBackend {
        &self.inner
    }
    fn scope_leases(&self) -> Result<Vec<ScopeLease>, LedgerError> {
        if self.hold_leases.load(Ordering::SeqCst) {
            // A slow read: at most SLOW_READ, or until the gate opens.
            let opened = self.opened.0.lock().unwrap();
            drop(
                self.opened
                    .1
                    .wait_timeout_while(opened, SLOW_READ, |opened| !*opened)
                    .unwrap(),
            );
        }
        self.inner.scope_leases()
    }
}
forward_ledger!(Gated, scopes, wakes);

/// gw-a serves the custom platform `zulip` and holds its lease; its chat is busy, so a
/// zulip completion waits. gw-b (built-ins only) is started — a restart, a scale-up — and
/// its worker looks before its ownership thread's first round has read the leases: it
/// must wait for that read (woken by it), not make gw-a's completion a dead letter.
#[test]
fn a_router_just_started_waits_for_the_leases_before_judging_an_unknown_platform() {
    let gated = Arc::new(Gated {
        inner: MemoryLedger::new(),
        hold_leases: AtomicBool::new(false),
        opened: (Mutex::new(false), Condvar::new()),
    });
    let backend: Arc<dyn LedgerBackend> = gated.clone();
    let (queue_a, queue_b) = queues(&backend);
    let (a, zulip_inbox) = zulip_router(&queue_a);
    let chat = "agent:main:zulip:group:room-1";
    assert!(a.begin_turn(chat));
    queue_a.put(completion(chat, "deleg_zulip"));
    // gw-b's first round is slow to read the leases (a store round trip away).
    gated.hold_leases.store(true, Ordering::SeqCst);
    let b = telegram_router(&queue_b);
    std::thread::sleep(NOTHING_HAPPENS);
    let state = delivery_of(&queue_b, chat);
    gated.open_gate();
    assert_eq!(
        state,
        Some(DeliveryState::Pending),
        "must wait for gw-a, not be a dead letter"
    );
    assert!(a.end_turn(chat));
    zulip_inbox.recv_timeout(HANG_GUARD).unwrap();
    let (a, b) = (a.stop(), b.stop());
    assert_eq!((a.delivered, b.dead_lettered), (1, 0));
}

/// A platform once served in the fleet and then retired (its router released the lease
/// on a clean stop and is gone; nobody knows the platform any more): a day after the
/// lease ended the fleet takes the platform as retired, and a completion of it is a dead
/// letter again rather than pending forever.
#[test]
fn a_retired_platforms_completion_becomes_a_dead_letter() {
    let clock = Arc::new(ManualClock::new(1_750_000_000.0));
    let backend: Arc<dyn LedgerBackend> = Arc::new(MemoryLedger::with_clock(clock.clone()));
    let (queue_a, queue_b) = queues(&backend);
    let (a, _) = zulip_router(&queue_a);
    a.stop();
    wait_until("the release", || {
        backend
            .scope_leases()
            .unwrap()
            .iter()
            .all(|lease| lease.holder.is_empty())
    });
    // Two days later (on the store's clock), gw-a never came back.
    clock.advance(Duration::from_secs(2 * 24 * 3600));
    let b = telegram_router(&queue_b);
    b.ownership().unwrap().renew_now().unwrap();
    let chat = "agent:main:zulip:group:room-1";
    queue_b.put(completion(chat, "deleg_zulip"));
    // Nobody serves zulip (its lease released two days ago, its router gone).
    wait_until("the dead letter", || {
        delivery_of(&queue_b, chat) == Some(DeliveryState::Dead)
    });
    b.stop();
}
