//! Fleet routers in one process: two routers on one shared ledger, each its own instance,
//! that know different custom platforms. A completion of a platform one router does not
//! know waits for the router that leases it, instead of becoming a dead letter; one of a
//! platform nobody leases is still a dead letter.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use gateway::{AdapterError, DeliveryRouter, InternalMessage, Platform, PlatformRegistry};
use process_registry::{
    AsyncDelegationEvent, CompletionQueue, DeliveryState, LedgerBackend, MemoryLedger, RowQuery,
};

const HANG_GUARD: Duration = Duration::from_secs(60);
const LEASE: Duration = Duration::from_secs(30);

/// Long enough that a completion wrongly claimed by the other router would have been:
/// routers are woken at once by every put.
const NOTHING_HAPPENS: Duration = Duration::from_millis(200);

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

#[test]
fn a_platform_one_router_does_not_know_waits_for_the_router_that_leases_it() {
    let backend: Arc<dyn LedgerBackend> = Arc::new(MemoryLedger::new());
    let queue = |instance: &str| {
        CompletionQueue::builder_shared(Arc::clone(&backend))
            .instance(instance)
            .open()
            .unwrap()
    };
    let (queue_a, queue_b) = (queue("gw-a"), queue("gw-b"));
    // gw-a knows the custom platform `zulip` and serves it; gw-b knows only the
    // built-in ones (and serves telegram).
    let platforms = PlatformRegistry::new();
    let zulip = platforms.register("zulip").unwrap();
    let (sender, zulip_inbox) = mpsc::channel::<InternalMessage>();
    let a = DeliveryRouter::builder(queue_a.clone())
        .fleet(LEASE)
        .platforms(platforms)
        .adapter(zulip, move |message: &InternalMessage| {
            sender.send(message.clone())?;
            Ok::<(), AdapterError>(())
        })
        .start()
        .unwrap();
    let b = DeliveryRouter::builder(queue_b.clone())
        .fleet(LEASE)
        .adapter(Platform::Telegram, |_: &InternalMessage| Ok(()))
        .start()
        .unwrap();
    let a_holds = a.ownership().unwrap().clone();
    wait_until("gw-a's lease on zulip", || {
        a_holds.epoch("platform:zulip").is_some()
    });
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
