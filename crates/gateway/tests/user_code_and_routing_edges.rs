//! Edges of user code and routing: session keys that must round-trip (and reference keys
//! that must parse as they always did), platform names that must not print like another,
//! turns that a guard must not end for someone else, and user code on the delivery thread
//! (adapters, their errors, their drops) that must cost at most the completion at hand.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt;
use std::process::Command;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gateway::{
    AdapterError, DeliveryRouter, InternalMessage, Platform, PlatformRegistry, SessionKey,
    SessionKeyOptions, SessionSource, Unroutable,
};
use process_registry::{
    format_process_notification, AsyncDelegationEvent, CompletionQueue, DeliveryState, Event,
    LedgerConfig, MemoryLedger, RowQuery,
};

const HANG_GUARD: Duration = Duration::from_secs(30);

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < HANG_GUARD,
            "hang guard: still waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A memory queue whose failed deliveries are retried after 1 ms, 2 ms, 4 ms, 4 ms, …
/// (instead of 1 s, 2 s, 4 s, …), so a test sees all 8 attempts at once.
fn fast_retry_queue() -> CompletionQueue {
    CompletionQueue::builder(MemoryLedger::new())
        .config(
            LedgerConfig::default()
                .with_backoff(Duration::from_millis(1), Duration::from_millis(4)),
        )
        .open()
        .unwrap()
}

fn in_child(name: &str) -> bool {
    std::env::var("GATEWAY_EDGE_CHILD").as_deref() == Ok(name)
}

/// Runs the test `name` again in a child process; `true` when it exited normally.
fn survives_in_a_child_process(name: &str) -> (bool, String) {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env("GATEWAY_EDGE_CHILD", name)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (
        output.status.success(),
        format!("{:?}\n{stderr}", output.status),
    )
}

/// Panics when dropped.
#[derive(Debug)]
struct DropBomb(&'static str);

impl Drop for DropBomb {
    fn drop(&mut self) {
        panic!("{} exploded on drop", self.0);
    }
}

fn completion(session_key: &str, id: &str) -> AsyncDelegationEvent {
    AsyncDelegationEvent {
        delegation_id: Some(id.into()),
        session_key: session_key.into(),
        goal: "g".into(),
        status: Some("completed".into()),
        summary: Some("s".into()),
        ..AsyncDelegationEvent::default()
    }
}

fn delegation_id(event: &Event) -> Option<String> {
    match event {
        Event::AsyncDelegation(e) => e.delegation_id.as_deref().map(str::to_owned),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Session keys
// ---------------------------------------------------------------------------------------

/// Building then parsing a session key round-trips every id: a `thread` chat without a
/// thread id, with per-user thread sessions on, builds `agent:main:slack:thread:C1::U7` —
/// the empty part 5 is "no thread" — so the user id never comes back as the thread (the
/// Python harness builds `…:C1:U7`, which reads `U7` as the thread).
#[test]
fn a_per_user_thread_key_without_a_thread_id_gives_back_no_thread() {
    let source = SessionSource::new(Platform::Slack, "C1")
        .with_chat_type("thread")
        .with_user_id("U7");
    let options = SessionKeyOptions {
        thread_sessions_per_user: true,
        ..SessionKeyOptions::default()
    };
    let key = SessionKey::build(&source, &options);
    assert_eq!(key.as_str(), "agent:main:slack:thread:C1::U7");
    let route = key.route().unwrap();
    assert_eq!(route.chat_id, "C1");
    assert_eq!(
        route.thread_id, None,
        "key {key} gave back the user as the thread"
    );
}

/// "Keys built by the reference (which never escapes) must still parse exactly as
/// today": a plain key (part 0 `agent`) is never decoded, so a reference key whose id is
/// URL-encoded (`%3A` for `:`) gives back the id as written — and building that id gives
/// back the reference's key byte for byte.
#[test]
fn a_reference_key_with_a_url_encoded_id_parses_as_written() {
    let id = "https%3A%2F%2Fexample.com%2Fhooks%2F42";
    let reference_key = format!("agent:main:webhook:dm:{id}");
    let route = SessionKey::parse(&reference_key).unwrap();
    assert_eq!(route.chat_id, id, "got {:?}", route.chat_id);
    let built = SessionKey::build(
        &SessionSource::new(Platform::Webhook, id),
        &SessionKeyOptions::default(),
    );
    assert_eq!(built.as_str(), reference_key);
}

/// A source with an empty chat type (SessionSource's docs: "any string") is a `dm` when
/// its key is built, so the key parses and the chat id comes back.
#[test]
fn an_empty_chat_type_builds_a_dm_key_that_parses() {
    let source = SessionSource::new(Platform::Telegram, "c1").with_chat_type("");
    let key = SessionKey::build(&source, &SessionKeyOptions::default());
    assert_eq!(key.as_str(), "agent:main:telegram:dm:c1");
    let route = key.route();
    assert!(route.is_ok(), "{key}: {route:?}");
    assert_eq!(route.unwrap().chat_id, "c1");
}

/// Every Matrix/Slack-shaped id (`:`, `.`, `%`, both escapes written literally) survives
/// build → parse in every chat type that carries it, and the built key of ids without
/// `:` is byte for byte the plain, unescaped one — `%` sequences included.
#[test]
fn awkward_ids_round_trip_in_dm_thread_and_group_keys() {
    let ids = [
        "!abc:matrix.org",
        "1700000000.123456",
        "a%3Ab",
        "%25",
        "%",
        ":",
        "::",
        "x%3",
    ];
    for chat in ids {
        for thread in ids {
            let dm = SessionSource::new(Platform::Matrix, chat).with_thread_id(thread);
            let route = SessionKey::build(&dm, &SessionKeyOptions::default())
                .route()
                .unwrap();
            assert_eq!(
                (route.chat_id.as_str(), route.thread_id.as_deref()),
                (chat, Some(thread))
            );
            let th = dm.clone().with_chat_type("thread");
            let route = SessionKey::build(&th, &SessionKeyOptions::default())
                .route()
                .unwrap();
            assert_eq!(
                (route.chat_id.as_str(), route.thread_id.as_deref()),
                (chat, Some(thread))
            );
            let group = SessionSource::new(Platform::Matrix, chat)
                .with_chat_type("group")
                .with_user_id(thread);
            let route = SessionKey::build(&group, &SessionKeyOptions::default())
                .route()
                .unwrap();
            assert_eq!(route.chat_id, chat);
        }
    }
    let plain = SessionSource::new(Platform::Slack, "C024BE91L")
        .with_chat_type("thread")
        .with_thread_id("1700000000.123456");
    assert_eq!(
        SessionKey::build(&plain, &SessionKeyOptions::default()).as_str(),
        "agent:main:slack:thread:C024BE91L:1700000000.123456"
    );
    let percent = SessionSource::new(Platform::Telegram, "a%3Ab").with_thread_id("%25");
    assert_eq!(
        SessionKey::build(&percent, &SessionKeyOptions::default()).as_str(),
        "agent:main:telegram:dm:a%3Ab:%25"
    );
}

// ---------------------------------------------------------------------------------------
// Platforms
// ---------------------------------------------------------------------------------------

/// No custom twin of a built-in: a name with an invisible character — a byte-order mark
/// from a config file, a zero-width space — is neither trimmed (not Unicode White_Space)
/// nor a built-in, and it is refused (custom names are letters, digits, `_`, `-` and `.`
/// only), so nothing registers a platform that prints like `webhook` and whose
/// completions never reach the webhook adapter.
#[test]
fn a_name_with_an_invisible_character_registers_no_twin_of_a_builtin() {
    let registry = PlatformRegistry::new();
    for name in ["\u{FEFF}webhook", "web\u{200B}hook"] {
        let platform = registry.register(name).unwrap_or(Platform::Webhook);
        assert_eq!(
            platform,
            Platform::Webhook,
            "{name:?} registered {platform:?}"
        );
        assert!(matches!(
            registry.register(name),
            Err(gateway::GatewayError::InvalidPlatformName { .. })
        ));
    }
    assert!(registry.custom_platforms().is_empty());
}

// ---------------------------------------------------------------------------------------
// Fences on the delivery thread
// ---------------------------------------------------------------------------------------

/// A replaced adapter is dropped on the delivery thread when the router's clone is the
/// last one (it was replaced during its own `deliver` call). Its `Drop` is user code: here
/// it panics with a payload whose own `Drop` panics. The fence drops that payload inside a
/// fence of its own, so the `gateway-delivery` thread lives on: the completion in hand is
/// acknowledged, and the one waiting for a busy session is delivered by the new adapter
/// when the turn ends — nothing is lost, nothing is a dead letter.
#[test]
fn a_replaced_adapter_whose_drop_panics_with_a_panicking_payload_loses_nothing() {
    struct LoudDrop;
    impl Drop for LoudDrop {
        fn drop(&mut self) {
            std::panic::panic_any(DropBomb("adapter drop payload"));
        }
    }
    let queue = CompletionQueue::new();
    let (in_call_tx, in_call) = mpsc::channel::<()>();
    let (go, go_rx) = mpsc::channel::<()>();
    let go_rx = Mutex::new(go_rx);
    let in_call_tx = Mutex::new(in_call_tx);
    let loud = LoudDrop;
    let router = DeliveryRouter::builder(queue.clone())
        .adapter(Platform::Telegram, move |_: &InternalMessage| {
            let _keep = &loud;
            in_call_tx.lock().unwrap().send(()).unwrap();
            let _ = go_rx.lock().unwrap().recv_timeout(HANG_GUARD);
            Ok(())
        })
        .start()
        .unwrap();

    // A completion waiting for a busy session.
    let busy = "agent:main:telegram:dm:2";
    router.begin_turn(busy);
    queue.put(completion(busy, "deleg_held0002"));
    assert_eq!(router.waiting(), 1);

    // A completion delivered through the adapter, which is replaced during the call.
    queue.put(completion("agent:main:telegram:dm:1", "deleg_0000001"));
    in_call.recv_timeout(HANG_GUARD).unwrap();
    let (tx, delivered) = mpsc::channel::<InternalMessage>();
    let tx = Mutex::new(tx);
    let previous = router.register_adapter(Platform::Telegram, move |m: &InternalMessage| {
        tx.lock().unwrap().send(m.clone()).unwrap();
        Ok(())
    });
    drop(previous); // the router's copy is now the last one
    go.send(()).unwrap();
    wait_until("the first delivery to be acknowledged", || {
        router.stats().delivered == 1
    });

    // The thread survived the drop: the waiting completion reaches the new adapter.
    router.end_turn(busy);
    let message = delivered.recv_timeout(HANG_GUARD).unwrap();
    assert_eq!(
        delegation_id(&message.event).as_deref(),
        Some("deleg_held0002")
    );
    let waiting = router.waiting();
    let stats = router.stop();
    assert_eq!((stats.delivered, stats.dead_lettered, waiting), (2, 0, 0));
    assert!(queue.is_empty());
}

/// An adapter error whose `Display` panics and whose `Drop` panics: the router formats
/// it by reference and drops it apart, each in its own fence, so the two panics never
/// meet (a panic while unwinding would abort the process). Each attempt is an adapter
/// panic, retried; after the last the completion is a dead letter (`gave up after 8
/// attempts: …AdapterPanicked…`) and the gateway process lives on.
/// (`adapter_error_whose_display_panics_is_retried_then_dead_lettered` covers a `Display`
/// panic alone.)
#[test]
fn an_adapter_error_whose_display_and_drop_panic_is_a_dead_letter_not_an_abort() {
    const NAME: &str =
        "an_adapter_error_whose_display_and_drop_panic_is_a_dead_letter_not_an_abort";
    #[derive(Debug)]
    struct Rude(#[allow(dead_code)] DropBomb);
    impl fmt::Display for Rude {
        fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
            panic!("display exploded")
        }
    }
    impl std::error::Error for Rude {}

    if in_child(NAME) {
        let queue = fast_retry_queue();
        let router = DeliveryRouter::builder(queue.clone())
            .adapter(
                Platform::Telegram,
                |_: &InternalMessage| -> Result<(), AdapterError> {
                    Err(Box::new(Rude(DropBomb("adapter error"))))
                },
            )
            .start()
            .unwrap();
        queue.put(completion("agent:main:telegram:dm:1", "deleg_00000001"));
        wait_until("a dead letter", || router.stats().dead_lettered == 1);
        let letters = router.dead_letters().snapshot().unwrap();
        assert_eq!(
            letters[0].reason,
            format!(
                "gave up after 8 attempts: {}",
                Unroutable::AdapterPanicked {
                    platform: Platform::Telegram,
                    message: "display exploded".into()
                }
            )
        );
        assert_eq!(letters[0].attempts, 8);
        assert_eq!(router.stop().released, 7);
        return;
    }
    let (ok, report) = survives_in_a_child_process(NAME);
    assert!(ok, "the gateway process died: {report}");
}

// ---------------------------------------------------------------------------------------
// Process completions through the router
// ---------------------------------------------------------------------------------------

/// A *legacy, untyped* process completion (no `"type"`, as old Python producers write
/// it) with a session key is owned by the router, routed from its key (a Matrix room id
/// with `:`, so an escaped `agent%:` key), rendered by `format_process_notification`; the
/// same event with `"session_key": ""` stays on the queue.
#[test]
fn an_untyped_process_completion_with_a_key_reaches_its_matrix_room() {
    let room = SessionSource::new(Platform::Matrix, "!room:matrix.org").with_thread_id("$t:1");
    let key = SessionKey::build(&room, &SessionKeyOptions::default());
    let wire = format!(
        r#"{{"session_id":"proc_9","session_key":"{key}","command":"make","exit_code":143,"output":"bye"}}"#
    );
    let keyed = Event::from_json(&wire).unwrap();
    let cli = Event::from_json(
        r#"{"session_id":"proc_8","session_key":"","command":"ls","exit_code":0,"output":""}"#,
    )
    .unwrap();
    let queue = CompletionQueue::new();
    let (tx, rx) = mpsc::channel::<InternalMessage>();
    let tx = Mutex::new(tx);
    let router = DeliveryRouter::builder(queue.clone())
        .adapter(Platform::Matrix, move |m: &InternalMessage| {
            tx.lock().unwrap().send(m.clone()).unwrap();
            Ok(())
        })
        .start()
        .unwrap();
    queue.put(cli.clone());
    queue.put(keyed.clone());
    let message = rx.recv_timeout(HANG_GUARD).unwrap();
    assert_eq!(message.source.chat_id, "!room:matrix.org");
    assert_eq!(message.source.thread_id.as_deref(), Some("$t:1"));
    assert_eq!(
        Some(message.text.clone()),
        format_process_notification(&keyed)
    );
    assert!(
        message.text.contains("(exit code 143, SIGTERM)"),
        "{}",
        message.text
    );
    let stats = router.stop();
    assert_eq!(stats.delivered, 1);
    // Never claimed: still pending with no attempt made.
    let rows = queue
        .rows(&RowQuery {
            delivery: Some(DeliveryState::Pending),
            ..RowQuery::default()
        })
        .unwrap();
    assert_eq!((rows.len(), rows[0].attempts), (1, 0));
    assert_eq!(queue.drain(), vec![cli]);
}

// ---------------------------------------------------------------------------------------
// Turns
// ---------------------------------------------------------------------------------------

/// A guard holds the token of its own turn: after a stray `end_turn` (a second code path
/// ending "its" turn early) ended the guard's turn, a turn opened later is not the
/// guard's to end, and dropping the guard leaves the session busy while that turn runs.
#[test]
fn a_guard_whose_turn_a_stray_end_ended_leaves_a_later_turn_open() {
    let queue = CompletionQueue::new();
    let router = DeliveryRouter::builder(queue.clone()).start().unwrap();
    let key = "agent:main:telegram:dm:5";
    let guard = router.turn(key);
    assert!(
        router.end_turn(key),
        "a stray end (e.g. an error path) ends the guard's turn"
    );
    assert!(
        router.begin_turn(key),
        "a new turn, the one the user is in now"
    );
    drop(guard); // the first turn's guard, long after its turn was ended
    assert!(
        router.is_busy(key),
        "the running turn was ended by another turn's guard"
    );
    router.stop();
}

/// A `begin_turn`/`end_turn` pair that overlaps a guard ends its own (anonymous) turn, not
/// the guard's: when both have ended the session is idle again — it is not left busy for
/// good with an anonymous turn that no end remains to close.
#[test]
fn a_begin_end_pair_inside_a_guard_leaves_the_session_idle_once_both_end() {
    let queue = CompletionQueue::new();
    let router = DeliveryRouter::builder(queue.clone()).start().unwrap();
    let key = "agent:main:telegram:dm:6";
    let guard = router.turn(key);
    assert!(
        !router.begin_turn(key),
        "already busy with the guard's turn"
    );
    assert!(router.end_turn(key));
    assert!(router.is_busy(key), "the guard's turn is still open");
    drop(guard);
    assert!(!router.is_busy(key));
    router.stop();
}

/// An adapter registered for a custom platform — with the builder or at run time — makes
/// that platform known to the router, whose default registry is a fresh one: its
/// completions are delivered, not dead-lettered as an unknown platform. A registry
/// passed with `.platforms(..)` (before or after `.adapter(..)`) gains the platform too.
#[test]
fn an_adapter_for_a_custom_platform_makes_the_platform_known_to_the_router() {
    let elsewhere = PlatformRegistry::new();
    let zulip = elsewhere.register("zulip").unwrap();
    let irc = elsewhere.register("irc").unwrap();
    let queue = CompletionQueue::new();
    let (tx, rx) = mpsc::channel::<InternalMessage>();
    let tx = Mutex::new(tx);
    let forward = move |m: &InternalMessage| {
        tx.lock().unwrap().send(m.clone()).unwrap();
        Ok(())
    };
    let forward = Arc::new(forward);
    let zulip_forward = Arc::clone(&forward);
    let router = DeliveryRouter::builder(queue.clone())
        .adapter(zulip.clone(), move |m: &InternalMessage| zulip_forward(m))
        .start()
        .unwrap();
    assert_eq!(router.platforms().parse("zulip"), Ok(zulip.clone()));
    assert!(!router.platforms().is_known("irc"));
    let irc_forward = Arc::clone(&forward);
    router.register_adapter(irc.clone(), move |m: &InternalMessage| irc_forward(m));
    assert_eq!(router.platforms().parse("irc"), Ok(irc.clone()));

    queue.put(completion("agent:main:zulip:dm:stream1", "deleg_000zulip"));
    queue.put(completion("agent:main:irc:dm:#rust", "deleg_00000irc"));
    let first = rx.recv_timeout(HANG_GUARD).unwrap();
    let second = rx.recv_timeout(HANG_GUARD).unwrap();
    assert_eq!(
        (first.source.platform, second.source.platform),
        (zulip.clone(), irc)
    );
    let stats = router.stop();
    assert_eq!((stats.delivered, stats.dead_lettered), (2, 0));

    let gateway_platforms = PlatformRegistry::new();
    let router = DeliveryRouter::builder(CompletionQueue::new())
        .adapter(zulip.clone(), |_: &InternalMessage| Ok(()))
        .platforms(gateway_platforms.clone())
        .start()
        .unwrap();
    assert_eq!(gateway_platforms.parse("zulip"), Ok(zulip));
    router.stop();
}

/// The adapters a stopped router still holds are user code too: their `Drop` runs when
/// the router goes, on the thread that stops or drops it. A panicking `Drop` there must
/// not become a panic of `stop()` or of dropping the router.
#[test]
fn adapters_whose_drop_panics_do_not_panic_the_router_stop_or_drop() {
    struct LoudDrop(&'static str);
    impl Drop for LoudDrop {
        fn drop(&mut self) {
            panic!("{} exploded on drop", self.0);
        }
    }
    for stop in [true, false] {
        let queue = CompletionQueue::new();
        let (loud, louder) = (LoudDrop("telegram adapter"), LoudDrop("slack adapter"));
        let router = DeliveryRouter::builder(queue.clone())
            .adapter(Platform::Telegram, move |_: &InternalMessage| {
                let _keep = &loud;
                Ok(())
            })
            .start()
            .unwrap();
        router.register_adapter(Platform::Slack, move |_: &InternalMessage| {
            let _keep = &louder;
            Ok(())
        });
        queue.put(completion("agent:main:telegram:dm:1", "deleg_0000001"));
        wait_until("the delivery", || router.stats().delivered == 1);
        let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            if stop {
                assert_eq!(router.stop().delivered, 1);
            } else {
                drop(router);
            }
        }));
        assert!(
            ended.is_ok(),
            "a panicking adapter drop escaped (stop: {stop})"
        );
    }
}

/// A router dropped from inside its own adapter (the adapter held the last handle) ends
/// its thread once the adapter returns; the adapters it held are dropped there, each in
/// its own fence — two panicking `Drop`s do not abort the process, and the delivery's ack
/// is not lost.
#[test]
fn a_router_dropped_inside_its_adapter_drops_panicking_adapters_fenced() {
    struct LoudDrop;
    impl Drop for LoudDrop {
        fn drop(&mut self) {
            panic!("adapter exploded on drop");
        }
    }
    let queue = CompletionQueue::new();
    let handle: Arc<Mutex<Option<DeliveryRouter>>> = Arc::default();
    let (done_tx, done) = mpsc::channel::<()>();
    let done_tx = Mutex::new(done_tx);
    let loud = LoudDrop;
    let slot = Arc::clone(&handle);
    let router = DeliveryRouter::builder(queue.clone())
        .adapter(Platform::Telegram, move |_: &InternalMessage| {
            let _keep = &loud;
            // The last handle goes here, on the delivery thread.
            drop(slot.lock().unwrap().take());
            done_tx.lock().unwrap().send(()).unwrap();
            Ok(())
        })
        .start()
        .unwrap();
    // A second one: dropped unfenced, the two panics in one drop would abort the process.
    let louder = LoudDrop;
    let (slack_tx, slack_dropped) = mpsc::channel::<()>();
    let slack_tx = Mutex::new(slack_tx);
    router.register_adapter(Platform::Slack, move |_: &InternalMessage| {
        let _keep = (&louder, &slack_tx);
        Ok(())
    });
    *handle.lock().unwrap() = Some(router);
    queue.put(completion("agent:main:telegram:dm:1", "deleg_0000001"));
    done.recv_timeout(HANG_GUARD).unwrap();
    // Both adapters are dropped when the thread ends (their senders go with them).
    assert_eq!(
        done.recv_timeout(HANG_GUARD),
        Err(mpsc::RecvTimeoutError::Disconnected)
    );
    assert_eq!(
        slack_dropped.recv_timeout(HANG_GUARD),
        Err(mpsc::RecvTimeoutError::Disconnected)
    );
    // The delivery was acknowledged before the thread ended: nothing comes back.
    assert!(queue.rows(&RowQuery::default()).unwrap().is_empty());
    assert!(queue.is_empty());
}
