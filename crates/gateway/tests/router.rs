//! The delivery router across many sessions and platforms: exactly-once delivery to the
//! right chat and thread, busy sessions, dead letters, CLI-origin events, shutdown.
//!
//! No timing thresholds: tests wait for conditions, with a generous hang guard.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use gateway::{
    AdapterError, DeliveryRouter, InMemoryOriginStore, InternalMessage, Platform, PlatformRegistry,
    SessionKey, SessionKeyOptions, SessionSource, Unroutable, DELIVERY_THREAD_NAME,
};
use process_registry::{
    format_process_notification, AsyncDelegationEvent, CompletionQueue, Event, ProcessCompletion,
    WatchMatch,
};

const HANG_GUARD: Duration = Duration::from_secs(60);

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

#[derive(Debug, Clone, PartialEq)]
struct Delivery {
    platform: Platform,
    chat_type: String,
    chat_id: String,
    thread_id: Option<String>,
    session_key: String,
    delegation_id: String,
    text: String,
    reply_to: Option<String>,
    thread_name: Option<String>,
}

type Inbox = Arc<Mutex<Vec<Delivery>>>;

fn recorder(inbox: &Inbox) -> impl Fn(&InternalMessage) -> Result<(), AdapterError> {
    let inbox = Arc::clone(inbox);
    move |message: &InternalMessage| {
        let Event::AsyncDelegation(event) = &message.event else {
            return Err("not an async delegation".into());
        };
        inbox.lock().unwrap().push(Delivery {
            platform: message.source.platform.clone(),
            chat_type: message.source.chat_type.clone(),
            chat_id: message.source.chat_id.clone(),
            thread_id: message.source.thread_id.clone(),
            session_key: message.session_key.to_string(),
            delegation_id: event.delegation_id.clone().unwrap(),
            text: message.text.clone(),
            reply_to: message.reply_to_message_id.clone(),
            thread_name: std::thread::current().name().map(str::to_owned),
        });
        Ok(())
    }
}

fn completion(session_key: &str, n: usize) -> AsyncDelegationEvent {
    AsyncDelegationEvent {
        delegation_id: Some(format!("deleg_{n:08x}")),
        session_key: session_key.to_owned(),
        goal: format!("task {n}"),
        status: Some("completed".into()),
        summary: Some(format!("result {n}")),
        dispatched_at: process_registry::WireNumber::from_f64(1000.0),
        completed_at: process_registry::WireNumber::from_f64(1012.0),
        ..AsyncDelegationEvent::default()
    }
}

fn ids(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            Event::AsyncDelegation(e) => e.delegation_id.clone().unwrap(),
            other => other.type_name().to_owned(),
        })
        .collect()
}

/// A routable session: its key and where its completions must land.
#[derive(Debug, Clone)]
struct Session {
    key: String,
    platform: Platform,
    chat_id: String,
    thread_id: Option<String>,
}

fn sessions() -> Vec<Session> {
    let options = SessionKeyOptions::default();
    let mut sessions = Vec::new();
    let mut add = |source: SessionSource, route_thread: Option<&str>| {
        sessions.push(Session {
            key: SessionKey::build(&source, &options).into_string(),
            platform: source.platform.clone(),
            chat_id: source.chat_id.clone(),
            thread_id: route_thread.map(str::to_owned),
        });
    };
    for i in 0..4 {
        let chat = format!("{}", 10_000 + i);
        add(SessionSource::new(Platform::Telegram, chat.clone()), None);
        let topic = format!("{}", 600 + i);
        add(
            SessionSource::new(Platform::Telegram, chat).with_thread_id(topic.clone()),
            Some(&topic),
        );
        let thread = format!("t{i}");
        add(
            SessionSource::new(Platform::Discord, format!("guild{i}"))
                .with_chat_type("thread")
                .with_thread_id(thread.clone())
                .with_user_id("u1"),
            Some(&thread),
        );
        add(
            SessionSource::new(Platform::Discord, format!("dm{i}")),
            None,
        );
        add(
            SessionSource::new(Platform::Slack, format!("C{i}"))
                .with_chat_type("channel")
                .with_user_id(format!("U{i}")),
            None,
        );
        add(
            SessionSource::new(Platform::Slack, format!("G{i}"))
                .with_chat_type("group")
                .with_user_id("U9")
                .with_profile("work"),
            None,
        );
    }
    sessions
}

#[test]
fn router_delivers_hundreds_of_completions_to_their_own_chats() {
    const PER_SESSION: usize = 12;
    const PER_UNROUTABLE_KIND: usize = 8;
    const CLI_EVENTS: usize = 20;

    let queue = CompletionQueue::new();
    let inbox: Inbox = Arc::default();
    let router = DeliveryRouter::builder(queue.clone())
        .adapter(Platform::Telegram, recorder(&inbox))
        .adapter(Platform::Discord, recorder(&inbox))
        .adapter(Platform::Slack, recorder(&inbox))
        .adapter(
            Platform::Whatsapp,
            |_: &InternalMessage| -> Result<(), AdapterError> { Err("rate limited".into()) },
        )
        .adapter(
            Platform::Signal,
            |_: &InternalMessage| -> Result<(), AdapterError> { panic!("signal adapter exploded") },
        )
        .start()
        .unwrap();

    let sessions = sessions();
    assert_eq!(sessions.len(), 24);
    // Every fourth session is mid-turn before its completions arrive.
    let busy: Vec<&Session> = sessions.iter().step_by(4).collect();
    let mut guards = Vec::new();
    for (i, session) in busy.iter().enumerate() {
        if i % 2 == 0 {
            assert!(router.begin_turn(session.key.clone()));
        } else {
            guards.push(router.turn(session.key.clone()));
        }
    }
    let busy_keys: HashSet<&str> = busy.iter().map(|s| s.key.as_str()).collect();

    // Three producers, one per platform family, each interleaving its sessions.
    let mut expected_order: HashMap<String, Vec<String>> = HashMap::new();
    let mut n = 0;
    let mut per_producer: BTreeMap<String, Vec<AsyncDelegationEvent>> = BTreeMap::new();
    for _round in 0..PER_SESSION {
        for session in &sessions {
            let event = completion(&session.key, n);
            n += 1;
            expected_order
                .entry(session.key.clone())
                .or_default()
                .push(event.delegation_id.clone().unwrap());
            per_producer
                .entry(session.platform.to_string())
                .or_default()
                .push(event);
        }
    }
    let routable = n;
    let producers: Vec<_> = per_producer
        .into_values()
        .map(|events| {
            let queue = queue.clone();
            std::thread::spawn(move || {
                for event in events {
                    queue.put(event);
                }
            })
        })
        .collect();

    // Unroutable completions, one kind per reason, and events the router does not own.
    let unroutable_keys = [
        ("agent:main:myspace:dm:1", "unknown platform"),
        ("cron:main:telegram:dm:1", "no platform"),
        ("agent:main:matrix:dm:!room", "no adapter"),
        ("agent:main:whatsapp:dm:4477", "adapter failed"),
        ("agent:main:signal:dm:+1555", "adapter panicked"),
    ];
    let mut not_owned = Vec::new();
    for i in 0..PER_UNROUTABLE_KIND.max(CLI_EVENTS) {
        if i < PER_UNROUTABLE_KIND {
            for (key, _) in unroutable_keys {
                queue.put(completion(key, n));
                n += 1;
            }
        }
        if i < CLI_EVENTS {
            let cli = Event::from(completion("", n));
            n += 1;
            queue.put(cli.clone());
            not_owned.push(cli);
            if i % 4 == 0 {
                let watch = Event::from(WatchMatch {
                    session_id: Some(format!("proc_{i}")),
                    ..WatchMatch::default()
                });
                queue.put(watch.clone());
                not_owned.push(watch);
            }
        }
    }
    for producer in producers {
        producer.join().unwrap();
    }

    let busy_total = busy.len() * PER_SESSION;
    let dead_total = (unroutable_keys.len() * PER_UNROUTABLE_KIND) as u64;
    wait_until(
        "every idle session's completions and every dead letter",
        || {
            let stats = router.stats();
            stats.delivered == (routable - busy_total) as u64
                && stats.dead_lettered == dead_total
                && stats.pending == busy_total
        },
    );
    {
        let inbox = inbox.lock().unwrap();
        assert!(
            inbox
                .iter()
                .all(|d| !busy_keys.contains(d.session_key.as_str())),
            "a busy session received a completion during its turn"
        );
    }

    // End the turns: half by end_turn, half by dropping guards.
    for (i, session) in busy.iter().enumerate() {
        if i % 2 == 0 {
            assert!(router.end_turn(&session.key));
        }
    }
    drop(guards);
    wait_until("the held completions", || {
        router.stats().delivered == routable as u64
    });
    assert_eq!(router.stats().pending, 0);

    // Exactly once, in order, to the session's own platform, chat and thread.
    let inbox = inbox.lock().unwrap().clone();
    assert_eq!(inbox.len(), routable);
    let by_key: HashMap<&str, &Session> = sessions.iter().map(|s| (s.key.as_str(), s)).collect();
    let mut seen_order: HashMap<String, Vec<String>> = HashMap::new();
    for delivery in &inbox {
        let session = by_key[delivery.session_key.as_str()];
        assert_eq!(delivery.platform, session.platform, "{delivery:?}");
        assert_eq!(delivery.chat_id, session.chat_id, "{delivery:?}");
        assert_eq!(delivery.thread_id, session.thread_id, "{delivery:?}");
        assert_eq!(delivery.thread_name.as_deref(), Some(DELIVERY_THREAD_NAME));
        assert!(
            delivery.text.starts_with(&format!(
                "[ASYNC DELEGATION COMPLETE — {}]",
                delivery.delegation_id
            )),
            "{}",
            delivery.text
        );
        seen_order
            .entry(delivery.session_key.clone())
            .or_default()
            .push(delivery.delegation_id.clone());
    }
    assert_eq!(seen_order, expected_order);

    // Dead letters: each with its reason.
    let letters = router.dead_letters().snapshot();
    assert_eq!(letters.len() as u64, dead_total);
    let mut kinds: HashMap<&str, usize> = HashMap::new();
    for letter in &letters {
        let key = letter.event.session_key().unwrap();
        let kind = unroutable_keys.iter().find(|(k, _)| *k == key).unwrap().1;
        let expected = match kind {
            "unknown platform" => Unroutable::UnknownPlatform {
                platform: "myspace".into(),
                session_key: key.into(),
            },
            "no platform" => Unroutable::MissingPlatform {
                session_key: key.into(),
            },
            "no adapter" => Unroutable::NoAdapter(Platform::Matrix),
            "adapter failed" => Unroutable::AdapterFailed {
                platform: Platform::Whatsapp,
                error: "rate limited".into(),
            },
            _ => Unroutable::AdapterPanicked {
                platform: Platform::Signal,
                message: "signal adapter exploded".into(),
            },
        };
        assert_eq!(letter.reason, expected);
        *kinds.entry(kind).or_default() += 1;
    }
    assert_eq!(kinds.len(), unroutable_keys.len());
    assert!(kinds.values().all(|&count| count == PER_UNROUTABLE_KIND));

    // CLI-origin and watch events stay on the queue. (Each put-back goes to the tail, so
    // their order may rotate against events that arrived in between.)
    let stats = router.stop();
    assert!(stats.put_back >= not_owned.len() as u64);
    assert_eq!(stats.delivered, routable as u64);
    let mut left = queue.drain();
    let key = |e: &Event| serde_json::to_string(e).unwrap();
    left.sort_by_key(key);
    not_owned.sort_by_key(key);
    assert_eq!(left, not_owned);
}

#[test]
fn stop_requeues_completions_held_for_busy_sessions_in_order() {
    let queue = CompletionQueue::new();
    let inbox: Inbox = Arc::default();
    let router = DeliveryRouter::builder(queue.clone())
        .adapter(Platform::Telegram, recorder(&inbox))
        .start()
        .unwrap();
    let a = "agent:main:telegram:dm:1";
    let b = "agent:main:telegram:dm:2:55";
    router.begin_turn(a);
    router.begin_turn(b);
    let mut put = Vec::new();
    for n in 0..9 {
        let event = completion(if n % 3 == 0 { b } else { a }, n);
        put.push(Event::from(event.clone()));
        queue.put(event);
    }
    wait_until("all nine held", || router.stats().pending == 9);
    let stats = router.stop();
    assert_eq!(stats.requeued_on_stop, 9);
    assert_eq!(stats.pending, 0);
    assert!(inbox.lock().unwrap().is_empty());
    let requeued = queue.drain();
    assert_eq!(ids(&requeued), ids(&put), "oldest first");
    // They come back enriched, ready for the next router.
    let Event::AsyncDelegation(first) = &requeued[0] else {
        panic!("not async")
    };
    assert_eq!(first.routing.chat_id.as_deref(), Some("2"));
    assert_eq!(first.routing.thread_id.as_deref(), Some("55"));

    // A later router with idle sessions delivers them, in order.
    for event in requeued {
        queue.put(event);
    }
    let router = DeliveryRouter::builder(queue.clone())
        .adapter(Platform::Telegram, recorder(&inbox))
        .start()
        .unwrap();
    wait_until("the second router", || router.stats().delivered == 9);
    drop(router);
    let delivered: Vec<String> = inbox
        .lock()
        .unwrap()
        .iter()
        .map(|d| d.delegation_id.clone())
        .collect();
    assert_eq!(delivered, ids(&put));
    assert!(queue.is_empty());
}

#[test]
fn stopping_mid_stream_loses_nothing() {
    let queue = CompletionQueue::new();
    let inbox: Inbox = Arc::default();
    let record = recorder(&inbox);
    let router = DeliveryRouter::builder(queue.clone())
        .adapter(Platform::Discord, move |message: &InternalMessage| {
            std::thread::yield_now();
            record(message)
        })
        .start()
        .unwrap();
    let total = 400;
    let producer = {
        let queue = queue.clone();
        std::thread::spawn(move || {
            for n in 0..total {
                queue.put(completion(&format!("agent:main:discord:dm:{}", n % 7), n));
            }
        })
    };
    wait_until("some deliveries", || router.stats().delivered >= 20);
    let stats = router.stop();
    producer.join().unwrap();

    let delivered: Vec<String> = inbox
        .lock()
        .unwrap()
        .iter()
        .map(|d| d.delegation_id.clone())
        .collect();
    assert_eq!(delivered.len() as u64, stats.delivered);
    let left = ids(&queue.drain());
    let mut all: Vec<String> = delivered.iter().chain(left.iter()).cloned().collect();
    all.sort();
    let mut expected: Vec<String> = (0..total).map(|n| format!("deleg_{n:08x}")).collect();
    expected.sort();
    assert_eq!(
        all, expected,
        "every completion delivered exactly once or back on the queue"
    );
}

#[test]
fn router_pauses_instead_of_spinning_on_events_it_does_not_own() {
    let queue = CompletionQueue::new();
    queue.put(completion("", 1));
    let router = DeliveryRouter::builder(queue.clone())
        .poll_interval(Duration::from_millis(5))
        .requeue_backoff(Duration::from_secs(3600))
        .start()
        .unwrap();
    wait_until("the first put-back", || router.stats().put_back >= 1);
    // Plenty of time for a spinning router to take the event again thousands of times.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(router.stats().put_back, 1);
    // stop cuts the hour-long pause short.
    let stats = router.stop();
    assert_eq!(stats.put_back, 1);
    assert_eq!(ids(&queue.drain()), vec!["deleg_00000001".to_owned()]);
}

#[test]
fn adapters_run_without_router_locks_and_can_call_back_into_the_router() {
    let queue = CompletionQueue::new();
    let cell: Arc<OnceLock<Weak<DeliveryRouter>>> = Arc::default();
    let inbox: Inbox = Arc::default();
    let record = recorder(&inbox);
    let adapter_cell = Arc::clone(&cell);
    let key = "agent:main:telegram:dm:7";
    let router = Arc::new(
        DeliveryRouter::builder(queue.clone())
            .adapter(Platform::Telegram, move |message: &InternalMessage| {
                let router = adapter_cell
                    .get()
                    .and_then(Weak::upgrade)
                    .ok_or("no router")?;
                // Each of these takes a router lock: a lock held across this callback
                // would deadlock here.
                router.begin_turn(message.session_key.as_str());
                assert!(router.is_busy(message.session_key.as_str()));
                router.end_turn(message.session_key.as_str());
                router.register_adapter(Platform::Slack, |_: &InternalMessage| Ok(()));
                router.remove_adapter(&Platform::Slack);
                let _ = router.stats();
                let _ = router.dead_letters().len();
                record(message)
            })
            .start()
            .unwrap(),
    );
    cell.set(Arc::downgrade(&router)).unwrap();
    for n in 0..5 {
        queue.put(completion(key, n));
    }
    wait_until("five deliveries", || router.stats().delivered == 5);
    let router = Arc::try_unwrap(router).unwrap();
    assert_eq!(router.stop().dead_lettered, 0);
    assert_eq!(inbox.lock().unwrap().len(), 5);
}

#[test]
fn origins_custom_platforms_and_requeued_dead_letters() {
    let queue = CompletionQueue::new();
    let platforms = PlatformRegistry::new();
    let irc = platforms.register("IRC").unwrap();
    let origins = InMemoryOriginStore::new();
    let key = "agent:main:telegram:group:chat1:user99";
    let mut origin = SessionSource::new(Platform::Telegram, "chat1")
        .with_chat_type("group")
        .with_user_id("user99")
        .with_message_id("m-42");
    origin.chat_name = Some("Team".into());
    origins.record(key, origin);
    let inbox: Inbox = Arc::default();
    let router = DeliveryRouter::builder(queue.clone())
        .platforms(platforms.clone())
        .origins(origins.clone())
        .adapter(Platform::Telegram, recorder(&inbox))
        .start()
        .unwrap();
    queue.put(completion(key, 1));
    queue.put(completion("agent:main:irc:dm:#rust", 2));
    wait_until("one delivery and one dead letter", || {
        let stats = router.stats();
        stats.delivered == 1 && stats.dead_lettered == 1
    });
    assert_eq!(
        router.dead_letters().snapshot()[0].reason,
        Unroutable::NoAdapter(irc.clone())
    );
    {
        let inbox = inbox.lock().unwrap();
        assert_eq!(
            inbox[0].reply_to.as_deref(),
            Some("m-42"),
            "reply anchor from the origin"
        );
        assert_eq!(inbox[0].chat_type, "group");
    }
    // Fix the cause, then retry the dead letters.
    router.register_adapter(irc.clone(), recorder(&inbox));
    assert_eq!(router.dead_letters().requeue_all(&queue), 1);
    wait_until("the retried delivery", || router.stats().delivered == 2);
    assert!(router.dead_letters().is_empty());
    let last = inbox.lock().unwrap()[1].clone();
    assert_eq!((last.platform, last.chat_id.as_str()), (irc, "#rust"));
    drop(router);
    assert!(queue.is_empty());
}

#[test]
fn pluggable_formatter_and_nothing_to_deliver() {
    use gateway::format_gateway_process_notification_in;
    use jiff::{tz::TimeZone, Timestamp};

    let queue = CompletionQueue::new();
    let inbox: Inbox = Arc::default();
    let router = DeliveryRouter::builder(queue.clone())
        .formatter(|event: &Event| match event {
            Event::AsyncDelegation(e) if e.goal == "silent" => None,
            _ => {
                format_gateway_process_notification_in(event, &TimeZone::UTC, Timestamp::UNIX_EPOCH)
            }
        })
        .adapter(Platform::Telegram, recorder(&inbox))
        .start()
        .unwrap();
    let mut silent = completion("agent:main:telegram:dm:1", 1);
    silent.goal = "silent".into();
    queue.put(silent);
    queue.put(completion("agent:main:telegram:dm:1", 2));
    wait_until("one delivery and one dead letter", || {
        let stats = router.stats();
        stats.delivered == 1 && stats.dead_lettered == 1
    });
    assert_eq!(
        router.dead_letters().snapshot()[0].reason,
        Unroutable::NothingToDeliver {
            event_type: "async_delegation".into()
        }
    );
    let text = inbox.lock().unwrap()[0].text.clone();
    assert!(
        text.contains("\nDispatched: 1970-01-01 00:16:40 (12s ago)\n"),
        "{text}"
    );
    router.stop();
}

/// The formatter and the origin store are user callbacks run on the router thread: a
/// panic in one must cost only its own completion (to the dead-letter store), never the
/// thread, the completions after it or those held for busy sessions.
#[test]
fn panicking_formatter_or_origin_store_costs_only_that_completion() {
    struct PanickyOrigins;
    impl gateway::OriginStore for PanickyOrigins {
        fn origin(&self, session_key: &str) -> Option<SessionSource> {
            assert!(!session_key.ends_with(":dm:2"), "origin store bug");
            None
        }
    }
    let queue = CompletionQueue::new();
    let inbox: Inbox = Arc::default();
    let router = DeliveryRouter::builder(queue.clone())
        .origins(PanickyOrigins)
        .formatter(|event: &Event| match event {
            Event::AsyncDelegation(e) if e.goal == "boom" => panic!("formatter bug"),
            _ => gateway::format_gateway_process_notification(event),
        })
        .adapter(Platform::Telegram, recorder(&inbox))
        .start()
        .unwrap();
    // Held for a busy session, so the thread's death would also cost this one.
    router.begin_turn("agent:main:telegram:dm:3");
    queue.put(completion("agent:main:telegram:dm:3", 3));
    wait_until("the held completion", || router.stats().pending == 1);
    let mut boom = completion("agent:main:telegram:dm:1", 1);
    boom.goal = "boom".into();
    queue.put(boom);
    queue.put(completion("agent:main:telegram:dm:2", 2));
    queue.put(completion("agent:main:telegram:dm:1", 4));
    wait_until("two dead letters and one delivery", || {
        let stats = router.stats();
        stats.delivered == 1 && stats.dead_lettered == 2
    });
    let reasons: Vec<String> = router
        .dead_letters()
        .snapshot()
        .iter()
        .map(|letter| letter.reason.to_string())
        .collect();
    assert_eq!(
        reasons,
        [
            "the completion formatter panicked: formatter bug",
            "the origin store panicked for session key \"agent:main:telegram:dm:2\": origin store bug",
        ]
    );
    router.end_turn("agent:main:telegram:dm:3");
    wait_until("the held completion after the turn", || {
        router.stats().delivered == 2
    });
    let delivered: Vec<String> = inbox
        .lock()
        .unwrap()
        .iter()
        .map(|d| d.delegation_id.clone())
        .collect();
    assert_eq!(delivered, ["deleg_00000004", "deleg_00000003"]);
    router.stop();
    assert!(queue.is_empty());
}

/// An adapter error's `Display` is user code: a panic in it is an adapter panic, not
/// the end of the delivery thread.
#[test]
fn adapter_error_whose_display_panics_is_dead_lettered() {
    #[derive(Debug)]
    struct BadError;
    impl std::fmt::Display for BadError {
        fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            panic!("display bug")
        }
    }
    impl std::error::Error for BadError {}
    let queue = CompletionQueue::new();
    let inbox: Inbox = Arc::default();
    let record = recorder(&inbox);
    let router = DeliveryRouter::builder(queue.clone())
        .adapter(
            Platform::Telegram,
            move |message: &InternalMessage| match &message.event {
                Event::AsyncDelegation(e)
                    if e.delegation_id.as_deref() == Some("deleg_00000001") =>
                {
                    Err(Box::new(BadError) as AdapterError)
                }
                _ => record(message),
            },
        )
        .start()
        .unwrap();
    queue.put(completion("agent:main:telegram:dm:1", 1));
    queue.put(completion("agent:main:telegram:dm:1", 2));
    wait_until("one dead letter and one delivery", || {
        let stats = router.stats();
        stats.delivered == 1 && stats.dead_lettered == 1
    });
    assert_eq!(
        router.dead_letters().snapshot()[0].reason,
        Unroutable::AdapterPanicked {
            platform: Platform::Telegram,
            message: "display bug".into()
        }
    );
    router.stop();
}

/// A platform name that lowercases to a built-in's (here with a KELVIN SIGN, which
/// lowercases to `k`) is that built-in everywhere: registering it makes no look-alike
/// custom platform, and its completions reach the built-in's adapter.
#[test]
fn a_unicode_spelling_of_a_builtin_reaches_the_builtin_adapter() {
    let kelvin_webhook = "WEBHOO\u{212A}";
    let platforms = PlatformRegistry::new();
    assert_eq!(platforms.register(kelvin_webhook), Ok(Platform::Webhook));
    let queue = CompletionQueue::new();
    let inbox: Inbox = Arc::default();
    let router = DeliveryRouter::builder(queue.clone())
        .platforms(platforms)
        .adapter(Platform::Webhook, recorder(&inbox))
        .start()
        .unwrap();
    queue.put(completion(
        &format!("agent:main:{kelvin_webhook}:dm:hook-1"),
        1,
    ));
    let mut by_event = completion("agent:main:webhook:dm:hook-2", 2);
    by_event.routing.platform = Some(format!(" {kelvin_webhook} "));
    queue.put(by_event);
    wait_until("two deliveries, or a dead letter", || {
        let stats = router.stats();
        stats.delivered + stats.dead_lettered == 2
    });
    let reasons: Vec<String> = router
        .dead_letters()
        .snapshot()
        .iter()
        .map(|letter| letter.reason.to_string())
        .collect();
    assert_eq!(reasons, Vec::<String>::new());
    assert_eq!(router.stop().delivered, 2);
    let chats: Vec<(Platform, String)> = inbox
        .lock()
        .unwrap()
        .iter()
        .map(|d| (d.platform.clone(), d.chat_id.clone()))
        .collect();
    assert_eq!(
        chats,
        [
            (Platform::Webhook, "hook-1".to_owned()),
            (Platform::Webhook, "hook-2".to_owned())
        ]
    );
}

/// A channel-backed adapter: each delivery arrives as a message, so a test waits for
/// an event instead of sleeping.
fn channel_adapter() -> (
    impl Fn(&InternalMessage) -> Result<(), AdapterError>,
    std::sync::mpsc::Receiver<InternalMessage>,
) {
    let (sender, receiver) = std::sync::mpsc::channel();
    let adapter = move |message: &InternalMessage| -> Result<(), AdapterError> {
        sender.send(message.clone())?;
        Ok(())
    };
    (adapter, receiver)
}

/// Long enough that a completion wrongly released into a running turn would have
/// arrived: the router notices a turn's end within one poll interval (20 ms).
const NOTHING_ARRIVES: Duration = Duration::from_millis(200);

/// Two overlapping turns on one session: the session stays busy until the last one
/// ends, so a completion is never delivered into the turn still running.
#[test]
fn a_completion_waits_for_the_last_of_overlapping_turns() {
    let queue = CompletionQueue::new();
    let (adapter, deliveries) = channel_adapter();
    let router = DeliveryRouter::builder(queue.clone())
        .adapter(Platform::Telegram, adapter)
        .start()
        .unwrap();
    let key = "agent:main:telegram:dm:42";
    let first = router.turn(key);
    let second = router.turn(key);
    first.end();
    assert!(router.is_busy(key), "the second turn is still open");
    queue.put(completion(key, 1));
    wait_until("the router to take the completion", || {
        let stats = router.stats();
        stats.pending as u64 + stats.delivered == 1
    });
    assert!(
        deliveries.recv_timeout(NOTHING_ARRIVES).is_err(),
        "delivered into the turn still running"
    );
    assert_eq!(router.stats().pending, 1);
    second.end();
    let message = deliveries.recv_timeout(HANG_GUARD).unwrap();
    assert_eq!(message.session_key.as_str(), key);
    assert_eq!(router.stop().delivered, 1);
}

#[test]
fn turns_are_counted_and_an_extra_end_is_a_no_op() {
    let router = DeliveryRouter::builder(CompletionQueue::new())
        .start()
        .unwrap();
    let key = "agent:main:telegram:dm:42";
    assert!(!router.is_busy(key));
    assert!(router.begin_turn(key), "idle → busy");
    assert!(!router.begin_turn(key), "already busy: a second turn opens");
    assert!(router.is_busy(key));
    assert!(router.end_turn(key), "ends one of two turns");
    assert!(router.is_busy(key), "the other turn is still open");
    assert!(router.end_turn(key), "ends the last turn");
    assert!(!router.is_busy(key));
    assert!(!router.end_turn(key), "no turn is open: a no-op");
    assert!(!router.is_busy(key));
    // The extra end did not go below zero: one begin makes the session busy, one end
    // makes it idle.
    assert!(router.begin_turn(key));
    assert!(router.end_turn(key));
    assert!(!router.is_busy(key));

    // A guard ends its own turn only, whatever other turns are open around it.
    assert!(router.begin_turn(key));
    let guard = router.turn(key);
    assert!(router.end_turn(key));
    assert!(router.is_busy(key), "the guard's turn is still open");
    drop(guard);
    assert!(!router.is_busy(key));
    assert!(!router.is_busy("agent:main:telegram:dm:43"), "per session");
    router.stop();
}

fn process_completion(session_key: Option<&str>, n: usize) -> ProcessCompletion {
    ProcessCompletion {
        session_id: Some(format!("proc_{n}")),
        session_key: session_key.map(str::to_owned),
        command: Some("cargo test".into()),
        exit_code: Some(143.into()),
        completion_reason: Some("killed".into()),
        termination_source: Some("the user".into()),
        output: Some(format!("test result: FAILED ({n})")),
        ..ProcessCompletion::default()
    }
}

/// A background process that exits carries its session key: its completion reaches
/// that chat as a new turn, rendered by the general formatter (the gateway formatter
/// renders nothing for process completions).
#[test]
fn a_process_completion_with_a_session_key_reaches_its_chat() {
    let queue = CompletionQueue::new();
    let (adapter, deliveries) = channel_adapter();
    let router = DeliveryRouter::builder(queue.clone())
        .adapter(Platform::Telegram, adapter)
        .start()
        .unwrap();
    let key = "agent:main:telegram:dm:42";
    let event = Event::from(process_completion(Some(key), 1));
    queue.put(event.clone());
    let message = deliveries.recv_timeout(HANG_GUARD).unwrap();
    assert_eq!(
        message.text,
        "[IMPORTANT: Background process proc_1 terminated by the user (exit code 143, SIGTERM).\n\
         Command: cargo test\n\
         Output:\n\
         test result: FAILED (1)]"
    );
    assert_eq!(
        Some(message.text.clone()),
        format_process_notification(&event)
    );
    assert_eq!(gateway::format_gateway_process_notification(&event), None);
    assert_eq!(
        message,
        InternalMessage {
            session_key: SessionKey::new(key),
            source: SessionSource::new(Platform::Telegram, "42"),
            text: message.text.clone(),
            reply_to_message_id: None,
            event,
        },
        "routed from the key, the event handed over unchanged"
    );
    let stats = router.stop();
    assert_eq!((stats.delivered, stats.dead_lettered), (1, 0));
    assert!(queue.is_empty());
}

#[test]
fn a_process_completion_waits_for_a_busy_session_and_comes_back_on_stop() {
    let queue = CompletionQueue::new();
    let (adapter, deliveries) = channel_adapter();
    let origins = InMemoryOriginStore::new();
    let key = "agent:main:telegram:group:chat1:user99";
    origins.record(
        key,
        SessionSource::new(Platform::Telegram, "chat1")
            .with_chat_type("group")
            .with_message_id("m-7"),
    );
    let router = DeliveryRouter::builder(queue.clone())
        .origins(origins)
        .adapter(Platform::Telegram, adapter)
        .start()
        .unwrap();
    let turn = router.turn(key);
    queue.put(process_completion(Some(key), 1));
    wait_until("the router to take the completion", || {
        let stats = router.stats();
        stats.pending as u64 + stats.delivered == 1
    });
    assert!(
        deliveries.recv_timeout(NOTHING_ARRIVES).is_err(),
        "delivered into a running turn"
    );
    assert_eq!(router.stats().pending, 1);
    turn.end();
    let message = deliveries.recv_timeout(HANG_GUARD).unwrap();
    assert_eq!(message.session_key.as_str(), key);
    assert_eq!(
        (
            message.source.chat_id.as_str(),
            message.source.chat_type.as_str()
        ),
        ("chat1", "group"),
    );
    assert_eq!(
        message.reply_to_message_id.as_deref(),
        Some("m-7"),
        "origin"
    );

    // Held when the router stops: back on the queue, unchanged.
    let _turn = router.turn(key);
    let held = Event::from(process_completion(Some(key), 2));
    queue.put(held.clone());
    wait_until("the completion held", || router.stats().pending == 1);
    let stats = router.stop();
    assert_eq!((stats.delivered, stats.requeued_on_stop), (1, 1));
    assert_eq!(queue.drain(), vec![held]);
}

#[test]
fn an_undeliverable_process_completion_is_a_dead_letter() {
    let queue = CompletionQueue::new();
    let router = DeliveryRouter::builder(queue.clone()).start().unwrap();
    let no_adapter = Event::from(process_completion(Some("agent:main:discord:dm:1"), 1));
    let unknown = Event::from(process_completion(Some("agent:main:myspace:dm:1"), 2));
    let no_route = Event::from(process_completion(Some("proc-session-7"), 3));
    for event in [&no_adapter, &unknown, &no_route] {
        queue.put(event.clone());
    }
    wait_until("three dead letters", || router.stats().dead_lettered == 3);
    let letters: Vec<(Event, Unroutable)> = router
        .dead_letters()
        .snapshot()
        .into_iter()
        .map(|letter| (letter.event, letter.reason))
        .collect();
    assert_eq!(
        letters,
        [
            (no_adapter, Unroutable::NoAdapter(Platform::Discord)),
            (
                unknown,
                Unroutable::UnknownPlatform {
                    platform: "myspace".into(),
                    session_key: "agent:main:myspace:dm:1".into()
                }
            ),
            (
                no_route,
                Unroutable::MissingPlatform {
                    session_key: "proc-session-7".into()
                }
            ),
        ]
    );
    router.stop();
    assert!(queue.is_empty());
}

/// A process completion without a session key (absent or empty) came from a CLI
/// session: the router leaves it on the queue.
#[test]
fn a_process_completion_without_a_session_key_stays_on_the_queue() {
    let queue = CompletionQueue::new();
    let absent = Event::from(process_completion(None, 1));
    let empty = Event::from(process_completion(Some(""), 2));
    queue.put(absent.clone());
    queue.put(empty.clone());
    let (adapter, deliveries) = channel_adapter();
    let router = DeliveryRouter::builder(queue.clone())
        .adapter(Platform::Telegram, adapter)
        .start()
        .unwrap();
    wait_until("both put back", || router.stats().put_back >= 2);
    let stats = router.stop();
    assert_eq!((stats.delivered, stats.dead_lettered), (0, 0));
    assert!(deliveries.try_recv().is_err());
    assert_eq!(queue.drain(), vec![absent, empty]);
}

/// A formatter set with `.formatter(...)` replaces the default for every event the
/// router owns, process completions included.
#[test]
fn a_custom_formatter_sees_process_completions_too() {
    let queue = CompletionQueue::new();
    let (adapter, deliveries) = channel_adapter();
    let router = DeliveryRouter::builder(queue.clone())
        .formatter(|event: &Event| Some(format!("custom {}", event.type_name())))
        .adapter(Platform::Telegram, adapter)
        .start()
        .unwrap();
    queue.put(process_completion(Some("agent:main:telegram:dm:42"), 1));
    queue.put(completion("agent:main:telegram:dm:42", 2));
    let texts: Vec<String> = (0..2)
        .map(|_| deliveries.recv_timeout(HANG_GUARD).unwrap().text)
        .collect();
    assert_eq!(texts, ["custom completion", "custom async_delegation"]);
    router.stop();
}
