//! The delivery router across many sessions and platforms: exactly-once delivery to the
//! right chat and thread, busy sessions, completions waiting in the ledger (for a turn,
//! an adapter or a backoff), retries, dead letters, CLI-origin events, shutdown.
//!
//! No timing thresholds for what must happen: tests wait for conditions (or for a
//! delivery on a channel), with a generous hang guard. Only "nothing happens" is shown
//! with a short sleep.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../process-registry/tests/support/forwarding.rs"]
mod forwarding;
use forwarding::forward_ledger;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use gateway::{
    AdapterError, DeliveryRouter, InMemoryOriginStore, InternalMessage, Platform, PlatformRegistry,
    RouterStats, SessionKey, SessionKeyOptions, SessionSource, Unroutable, DELIVERY_THREAD_NAME,
};
use process_registry::{
    format_process_notification, AsyncDelegationEvent, Candidate, CandidateQuery, ClaimFilter,
    CompletionQueue, DeliveryState, Event, LedgerBackend, LedgerConfig, LedgerError, LedgerRow,
    MemoryLedger, ProcessCompletion, Recorded, RowQuery, SettleError, WatchMatch,
};

const HANG_GUARD: Duration = Duration::from_secs(60);

/// Long enough that a completion wrongly delivered (into a running turn, to a platform
/// without an adapter, …) would have arrived: the router is woken at once by every change
/// that could make a completion deliverable, so anything it would deliver comes within
/// milliseconds.
const NOTHING_ARRIVES: Duration = Duration::from_millis(200);

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
    queue_with(
        LedgerConfig::default().with_backoff(Duration::from_millis(1), Duration::from_millis(4)),
    )
}

fn queue_with(config: LedgerConfig) -> CompletionQueue {
    CompletionQueue::builder(MemoryLedger::new())
        .config(config)
        .open()
        .unwrap()
}

/// Records `event` the way the async-delegation engine does: a running row at dispatch,
/// the completion committed on it. Its idempotency key is its
/// `delegation_id`.
fn record(queue: &CompletionQueue, event: AsyncDelegationEvent) {
    let id = event.delegation_id.clone().unwrap();
    let Recorded::Dispatch(dispatch) = queue
        .record_dispatch(&id, &event.session_key, Event::from(event.clone()))
        .unwrap()
    else {
        panic!("delegation id {id} taken");
    };
    // Dropping the commit wakes the consumers.
    drop(
        queue
            .record_completion(dispatch, &id, "completed", Arc::new(Event::from(event)))
            .unwrap(),
    );
}

/// The pending rows of the ledger, oldest first.
fn pending_rows(queue: &CompletionQueue) -> Vec<LedgerRow> {
    queue
        .rows(&RowQuery {
            delivery: Some(DeliveryState::Pending),
            ..RowQuery::default()
        })
        .unwrap()
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
    idempotency_key: String,
    possible_redelivery: bool,
}

type Inbox = Arc<Mutex<Vec<Delivery>>>;

fn recorder(inbox: &Inbox) -> impl Fn(&InternalMessage) -> Result<(), AdapterError> {
    let inbox = Arc::clone(inbox);
    move |message: &InternalMessage| {
        let Event::AsyncDelegation(event) = &*message.event else {
            return Err("not an async delegation".into());
        };
        inbox.lock().unwrap().push(Delivery {
            platform: message.source.platform.clone(),
            chat_type: message.source.chat_type.clone(),
            chat_id: message.source.chat_id.clone(),
            thread_id: message.source.thread_id.clone(),
            session_key: message.session_key.to_string(),
            delegation_id: event.delegation_id.clone().unwrap().to_string(),
            text: message.text.clone(),
            reply_to: message.reply_to_message_id.clone(),
            thread_name: std::thread::current().name().map(str::to_owned),
            idempotency_key: message.idempotency_key.clone(),
            possible_redelivery: message.possible_redelivery,
        });
        Ok(())
    }
}

fn delivered_ids(inbox: &Inbox) -> Vec<String> {
    inbox
        .lock()
        .unwrap()
        .iter()
        .map(|d| d.delegation_id.clone())
        .collect()
}

/// A channel-backed adapter: each delivery arrives as a message, so a test waits for
/// an event instead of sleeping.
fn channel_adapter() -> (
    impl Fn(&InternalMessage) -> Result<(), AdapterError>,
    mpsc::Receiver<InternalMessage>,
) {
    let (sender, receiver) = mpsc::channel();
    let adapter = move |message: &InternalMessage| -> Result<(), AdapterError> {
        sender.send(message.clone())?;
        Ok(())
    };
    (adapter, receiver)
}

fn completion(session_key: &str, n: usize) -> AsyncDelegationEvent {
    AsyncDelegationEvent {
        delegation_id: Some(format!("deleg_{n:08x}").into()),
        session_key: session_key.into(),
        goal: format!("task {n}").into(),
        status: Some("completed".into()),
        summary: Some(format!("result {n}").into()),
        dispatched_at: process_registry::WireNumber::from_f64(1000.0),
        completed_at: process_registry::WireNumber::from_f64(1012.0),
        ..AsyncDelegationEvent::default()
    }
}

fn id_of(event: &Event) -> String {
    match event {
        Event::AsyncDelegation(e) => e.delegation_id.clone().unwrap().to_string(),
        other => other.type_name().to_owned(),
    }
}

fn ids(events: &[Event]) -> Vec<String> {
    events.iter().map(id_of).collect()
}

/// A memory ledger that counts the router's looks for work: every scan for claimable
/// rows (`candidates`) and every look for the next backoff to come due (`next_due`).
/// An idle router makes none; a router that wakes up in a loop makes thousands.
///
/// It also runs a hook when a scan reads a later page of candidates (a scan that skipped
/// a full page), until the hook returns `true`: to change the router's world in the
/// middle of a look.
struct CountingLedger {
    inner: MemoryLedger,
    looks: Arc<AtomicU64>,
    on_second_page: PageHook,
}

/// Runs on a look's later page (read, not yet returned) until it returns `true`.
type PageFn = Box<dyn FnMut(&[Candidate]) -> bool + Send>;

type PageHook = Arc<Mutex<Option<PageFn>>>;

/// The worker threads of the runtime a task router runs on in these tests.
const TASK_ROUTER_WORKER: &str = "task-router-worker";

/// A page hook that runs `f` at the first later page.
fn at_second_page(f: impl FnOnce() + Send + 'static) -> PageFn {
    let mut f = Some(f);
    Box::new(move |_| {
        if let Some(f) = f.take() {
            f();
        }
        true
    })
}

impl CountingLedger {
    fn queue() -> (CompletionQueue, Arc<AtomicU64>, PageHook) {
        let looks = Arc::new(AtomicU64::new(0));
        let hook = PageHook::default();
        let ledger = CountingLedger {
            inner: MemoryLedger::new(),
            looks: Arc::clone(&looks),
            on_second_page: Arc::clone(&hook),
        };
        (
            CompletionQueue::builder(ledger).open().unwrap(),
            looks,
            hook,
        )
    }
}

impl forwarding::Forwarding for CountingLedger {
    fn inner(&self) -> &dyn LedgerBackend {
        &self.inner
    }
    fn candidates(
        &self,
        query: &CandidateQuery<'_>,
        limit: usize,
    ) -> Result<Vec<Candidate>, LedgerError> {
        self.looks.fetch_add(1, Ordering::SeqCst);
        // The router's own looks only (`waiting()` reads pages too, on the test's thread):
        // its thread's, or its tasks' on the test runtime's workers.
        let router_thread = matches!(
            std::thread::current().name(),
            Some(gateway::DELIVERY_THREAD_NAME | TASK_ROUTER_WORKER)
        );
        let page = self.inner.candidates(query, limit)?;
        if query.after_seq > 0 && router_thread {
            let hook = self.on_second_page.lock().unwrap().take();
            if let Some(mut hook) = hook {
                if !hook(&page) {
                    *self.on_second_page.lock().unwrap() = Some(hook);
                }
            }
        }
        Ok(page)
    }
    fn next_due(&self, query: &CandidateQuery<'_>) -> Result<Option<f64>, LedgerError> {
        self.looks.fetch_add(1, Ordering::SeqCst);
        self.inner.next_due(query)
    }
}
forward_ledger!(CountingLedger);

/// Waits for the router's first look at the ledger, then shows that it makes no other
/// in [`NOTHING_ARRIVES`]: it sleeps instead of waking up in a loop.
fn assert_router_sleeps(looks: &AtomicU64, what: &str) {
    wait_until("the router's first look", || {
        looks.load(Ordering::SeqCst) > 0
    });
    // Its first look ends with a look for the next backoff, then it waits.
    std::thread::sleep(Duration::from_millis(20));
    let before = looks.load(Ordering::SeqCst);
    std::thread::sleep(NOTHING_ARRIVES);
    let after = looks.load(Ordering::SeqCst);
    assert_eq!(
        after, before,
        "the router looked at the ledger {} more times in {NOTHING_ARRIVES:?} with nothing new but {what}: it spins",
        after - before
    );
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

/// 288 completions across 24 sessions on three platforms, from three producers (half
/// recorded the way the engine records them, half put on the queue), with a quarter of
/// the sessions mid-turn; beside them completions that cannot be routed, whose adapter
/// always fails or panics, whose platform has no adapter yet, and events the router does
/// not own. Every routable completion is delivered exactly once, in order, to its own
/// chat and thread, with its idempotency key — busy sessions' only after their turns end,
/// the adapterless platform's only once its adapter is registered; everything else ends
/// as a dead letter with its reason, or stays on the queue untouched.
#[test]
fn router_delivers_hundreds_of_completions_to_their_own_chats() {
    const PER_SESSION: usize = 12;
    const PER_UNROUTABLE_KIND: usize = 8;
    const CLI_EVENTS: usize = 20;
    const ATTEMPTS: u64 = 8;

    let queue = fast_retry_queue();
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

    // Three producers, one per platform family, each interleaving its sessions; every
    // other completion is recorded through the engine's ledger protocol.
    let mut expected_order: HashMap<String, Vec<String>> = HashMap::new();
    let mut recorded: HashSet<String> = HashSet::new();
    let mut n = 0;
    let mut per_producer: BTreeMap<String, Vec<(bool, AsyncDelegationEvent)>> = BTreeMap::new();
    for _round in 0..PER_SESSION {
        for session in &sessions {
            let event = completion(&session.key, n);
            let id = event.delegation_id.clone().unwrap();
            let by_engine = n % 2 == 0;
            if by_engine {
                recorded.insert(id.to_string());
            }
            n += 1;
            expected_order
                .entry(session.key.clone())
                .or_default()
                .push(id.to_string());
            per_producer
                .entry(session.platform.to_string())
                .or_default()
                .push((by_engine, event));
        }
    }
    let routable = n;
    let producers: Vec<_> = per_producer
        .into_values()
        .map(|events| {
            let queue = queue.clone();
            std::thread::spawn(move || {
                for (by_engine, event) in events {
                    if by_engine {
                        record(&queue, event);
                    } else {
                        queue.put(event);
                    }
                }
            })
        })
        .collect();

    // Completions that are dead letters in the end, one kind per reason; completions for
    // a platform without an adapter (yet); events the router does not own.
    let unroutable_keys = [
        ("agent:main:myspace:dm:1", "unknown platform"),
        ("cron:main:telegram:dm:1", "no platform"),
        ("agent:main:whatsapp:dm:4477", "adapter failed"),
        ("agent:main:signal:dm:+1555", "adapter panicked"),
    ];
    let adapterless = "agent:main:matrix:dm:!room";
    let mut adapterless_ids = Vec::new();
    let mut not_owned = Vec::new();
    for i in 0..PER_UNROUTABLE_KIND.max(CLI_EVENTS) {
        if i < PER_UNROUTABLE_KIND {
            for (key, _) in unroutable_keys {
                queue.put(completion(key, n));
                n += 1;
            }
            queue.put(completion(adapterless, n));
            adapterless_ids.push(format!("deleg_{n:08x}"));
            n += 1;
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
    let failing_total = 2 * PER_UNROUTABLE_KIND as u64;
    let dead_total = (unroutable_keys.len() * PER_UNROUTABLE_KIND) as u64;
    wait_until(
        "every idle session's completions, every retry and every dead letter",
        || {
            let stats = router.stats();
            stats.delivered == (routable - busy_total) as u64
                && stats.dead_lettered == dead_total
                && stats.released == failing_total * (ATTEMPTS - 1)
                && router.waiting() == busy_total + PER_UNROUTABLE_KIND
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
    // What waits is pending in the ledger, never claimed: the busy sessions' completions
    // and the adapterless platform's.
    let waiting = pending_rows(&queue)
        .into_iter()
        .filter(|row| !row.session_key.is_empty())
        .collect::<Vec<_>>();
    assert_eq!(waiting.len(), busy_total + PER_UNROUTABLE_KIND);
    assert!(waiting.iter().all(|row| row.attempts == 0), "{waiting:?}");
    assert!(waiting
        .iter()
        .all(|row| busy_keys.contains(row.session_key.as_str()) || row.session_key == adapterless));
    let adapterless_keys: Vec<String> = waiting
        .iter()
        .filter(|row| row.session_key == adapterless)
        .map(|row| row.key.clone())
        .collect();

    // End the turns: half by end_turn, half by dropping guards.
    for (i, session) in busy.iter().enumerate() {
        if i % 2 == 0 {
            assert!(router.end_turn(&session.key));
        }
    }
    drop(guards);
    wait_until("the busy sessions' completions", || {
        router.stats().delivered == routable as u64
    });
    assert_eq!(router.waiting(), PER_UNROUTABLE_KIND);

    // The adapterless platform's completions, once its adapter comes: in order.
    let matrix_inbox: Inbox = Arc::default();
    assert!(router
        .register_adapter(Platform::Matrix, recorder(&matrix_inbox))
        .is_none());
    wait_until("the matrix completions", || {
        router.stats().delivered == (routable + PER_UNROUTABLE_KIND) as u64
    });
    assert_eq!(router.waiting(), 0);
    {
        let matrix = matrix_inbox.lock().unwrap();
        let got: Vec<&str> = matrix.iter().map(|d| d.delegation_id.as_str()).collect();
        assert_eq!(got, adapterless_ids);
        let keys: Vec<String> = matrix.iter().map(|d| d.idempotency_key.clone()).collect();
        assert_eq!(keys, adapterless_keys, "the ledger's keys of put events");
        assert!(matrix
            .iter()
            .all(|d| d.chat_id == "!room" && !d.possible_redelivery));
    }

    // Exactly once, in order, to the session's own platform, chat and thread.
    let inbox = inbox.lock().unwrap().clone();
    assert_eq!(inbox.len(), routable);
    let by_key: HashMap<&str, &Session> = sessions.iter().map(|s| (s.key.as_str(), s)).collect();
    let mut seen_order: HashMap<String, Vec<String>> = HashMap::new();
    let mut keys = HashSet::new();
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
        if recorded.contains(&delivery.delegation_id) {
            assert_eq!(delivery.idempotency_key, delivery.delegation_id);
        } else {
            assert!(
                delivery.idempotency_key.starts_with("event-"),
                "{delivery:?}"
            );
        }
        assert!(!delivery.possible_redelivery, "{delivery:?}");
        assert!(
            keys.insert(delivery.idempotency_key.clone()),
            "{delivery:?}"
        );
        seen_order
            .entry(delivery.session_key.clone())
            .or_default()
            .push(delivery.delegation_id.clone());
    }
    assert_eq!(seen_order, expected_order);

    // Dead letters: each with its reason and the attempts it took.
    let letters = router.dead_letters().snapshot().unwrap();
    assert_eq!(letters.len() as u64, dead_total);
    let mut kinds: HashMap<&str, usize> = HashMap::new();
    for letter in &letters {
        let key = letter.event.session_key().unwrap();
        let kind = unroutable_keys.iter().find(|(k, _)| *k == key).unwrap().1;
        let (expected, attempts) = match kind {
            "unknown platform" => (
                Unroutable::UnknownPlatform {
                    platform: "myspace".into(),
                    session_key: key.into(),
                }
                .to_string(),
                1,
            ),
            "no platform" => (
                Unroutable::MissingPlatform {
                    session_key: key.into(),
                }
                .to_string(),
                1,
            ),
            "adapter failed" => (
                format!(
                    "gave up after 8 attempts: {}",
                    Unroutable::AdapterFailed {
                        platform: Platform::Whatsapp,
                        error: "rate limited".into(),
                    }
                ),
                8,
            ),
            _ => (
                format!(
                    "gave up after 8 attempts: {}",
                    Unroutable::AdapterPanicked {
                        platform: Platform::Signal,
                        message: "signal adapter exploded".into(),
                    }
                ),
                8,
            ),
        };
        assert_eq!(letter.reason, expected);
        assert_eq!(letter.attempts, attempts, "{letter:?}");
        *kinds.entry(kind).or_default() += 1;
    }
    assert_eq!(kinds.len(), unroutable_keys.len());
    assert!(kinds.values().all(|&count| count == PER_UNROUTABLE_KIND));

    // CLI-origin and watch events stay on the queue, never claimed, in their order.
    let stats = router.stop();
    assert_eq!(stats.delivered, (routable + PER_UNROUTABLE_KIND) as u64);
    assert_eq!(stats.deferred, 0, "no turn began after a claim");
    let left: Vec<LedgerRow> = pending_rows(&queue);
    assert_eq!(left.len(), not_owned.len());
    assert!(left.iter().all(|row| row.attempts == 0), "{left:?}");
    assert_eq!(queue.drain(), not_owned);
}

/// Completions for busy sessions are not held by the router: they stay pending in the
/// ledger, unclaimed and unchanged, and stopping the router loses none of them — a new
/// router on the same queue delivers them all, in order, enriched with their route.
#[test]
fn completions_for_busy_sessions_stay_in_the_ledger_and_stop_loses_none() {
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
        let event = Event::from(completion(if n % 3 == 0 { b } else { a }, n));
        put.push(event.clone());
        queue.put(event);
    }
    wait_until("all nine waiting", || router.waiting() == 9);
    std::thread::sleep(NOTHING_ARRIVES);
    assert!(inbox.lock().unwrap().is_empty(), "delivered into a turn");
    assert_eq!(router.waiting(), 9);
    let stats = router.stop();
    assert_eq!(
        stats,
        RouterStats::default(),
        "nothing claimed, nothing lost"
    );
    // In the ledger: pending, never claimed, exactly as they were put, oldest first.
    let rows = pending_rows(&queue);
    assert!(rows.iter().all(|row| row.attempts == 0), "{rows:?}");
    let in_ledger: Vec<Event> = rows.iter().map(|row| (*row.event).clone()).collect();
    assert_eq!(in_ledger, put);

    // A later router on the same queue, whose sessions are idle, delivers them in order.
    let (adapter, deliveries) = channel_adapter();
    let router = DeliveryRouter::builder(queue.clone())
        .adapter(Platform::Telegram, adapter)
        .start()
        .unwrap();
    let messages: Vec<InternalMessage> = (0..9)
        .map(|_| deliveries.recv_timeout(HANG_GUARD).unwrap())
        .collect();
    let got: Vec<Event> = messages.iter().map(|m| (*m.event).clone()).collect();
    assert_eq!(ids(&got), ids(&put), "oldest first");
    // Handed over as recorded (shared with the ledger, not copied), routed by the
    // routing enriched from its key.
    assert_eq!(got, put, "unchanged");
    assert_eq!(messages[0].source.chat_id, "2");
    assert_eq!(messages[0].source.thread_id.as_deref(), Some("55"));
    let waiting = router.waiting();
    let stats = router.stop();
    assert_eq!((stats.delivered, waiting), (9, 0));
    assert!(queue.is_empty());
    assert!(pending_rows(&queue).is_empty());
}

/// Stopping while completions stream in loses none: what the first router did not
/// deliver, a new router on the same queue delivers — each completion exactly once.
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
    let by_first = delivered_ids(&inbox);
    assert_eq!(by_first.len() as u64, stats.delivered);
    producer.join().unwrap();

    let router = DeliveryRouter::builder(queue.clone())
        .adapter(Platform::Discord, recorder(&inbox))
        .start()
        .unwrap();
    wait_until("the rest, by the second router", || {
        inbox.lock().unwrap().len() >= total
    });
    let waiting = router.waiting();
    let second = router.stop();
    assert_eq!(stats.delivered + second.delivered, total as u64);
    assert_eq!((second.dead_lettered, waiting), (0, 0));
    assert!(queue.is_empty());

    let inbox = inbox.lock().unwrap();
    let mut all: Vec<String> = inbox.iter().map(|d| d.delegation_id.clone()).collect();
    all.sort();
    let mut expected: Vec<String> = (0..total).map(|n| format!("deleg_{n:08x}")).collect();
    expected.sort();
    assert_eq!(all, expected, "every completion delivered exactly once");
    let keys: HashSet<&str> = inbox.iter().map(|d| d.idempotency_key.as_str()).collect();
    assert_eq!(keys.len(), total, "one idempotency key per completion");
    // Each session's completions in the order they were put, across the two routers.
    for session in 0..7 {
        let key = format!("agent:main:discord:dm:{session}");
        let order: Vec<&str> = inbox
            .iter()
            .filter(|d| d.session_key == key)
            .map(|d| d.delegation_id.as_str())
            .collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(order, sorted, "{key}");
    }
}

/// A CLI-origin completion (no session key), a CLI process completion and a watch event
/// are not the router's: it never claims them — they stay pending with no attempt made,
/// for the CLI loop (`take_where(Event::is_cli_completion)`) and the watch drain — and it
/// does not wake up for them: it sleeps until something it serves arrives.
#[test]
fn the_router_never_claims_cli_origin_completions_and_sleeps_beside_them() {
    let (queue, looks, _) = CountingLedger::queue();
    let cli = Event::from(completion("", 1));
    let cli_process = Event::from(process_completion(None, 2));
    let watch = Event::from(WatchMatch {
        session_id: Some("proc_3".into()),
        ..WatchMatch::default()
    });
    for event in [&cli, &cli_process, &watch] {
        queue.put(event.clone());
    }
    let (adapter, deliveries) = channel_adapter();
    let router = DeliveryRouter::builder(queue.clone())
        .adapter(Platform::Telegram, adapter)
        .start()
        .unwrap();
    assert_router_sleeps(&looks, "CLI and watch events");
    assert_eq!(router.stats(), RouterStats::default(), "no activity");
    assert!(deliveries.try_recv().is_err());
    let rows = pending_rows(&queue);
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter().all(|row| row.attempts == 0),
        "claimed by the router: {rows:?}"
    );

    // Asleep, not stuck: a completion it serves is delivered at once.
    queue.put(completion("agent:main:telegram:dm:1", 4));
    let message = deliveries.recv_timeout(HANG_GUARD).unwrap();
    assert_eq!(id_of(&message.event), "deleg_00000004");

    // The CLI loop takes its own; the rest is the watch drain's.
    assert_eq!(queue.take_where(Event::is_cli_completion), vec![cli]);
    let stats = router.stop();
    assert_eq!(
        stats,
        RouterStats {
            delivered: 1,
            ..RouterStats::default()
        }
    );
    assert_eq!(queue.drain(), vec![cli_process, watch]);
}

/// A completion for a known platform without an adapter is not a dead letter: it stays
/// pending — counted in `waiting`, visible in the ledger, never claimed, and the router
/// does not wake up in a loop over it — until `register_adapter` brings its adapter;
/// then it is delivered, in order with the others of its session.
#[test]
fn a_completion_for_a_platform_without_an_adapter_waits_for_its_adapter() {
    let (queue, looks, _) = CountingLedger::queue();
    let (telegram, telegram_deliveries) = channel_adapter();
    let router = DeliveryRouter::builder(queue.clone())
        .adapter(Platform::Telegram, telegram)
        .start()
        .unwrap();
    let discord = "agent:main:discord:dm:7";
    queue.put(completion(discord, 1));
    queue.put(completion("agent:main:telegram:dm:1", 2));
    queue.put(completion(discord, 3));
    let message = telegram_deliveries.recv_timeout(HANG_GUARD).unwrap();
    assert_eq!(id_of(&message.event), "deleg_00000002");
    wait_until("the router to settle", || router.waiting() == 2);

    assert_router_sleeps(&looks, "completions for a platform without an adapter");
    let stats = router.stats();
    assert_eq!(
        stats,
        RouterStats {
            delivered: 1,
            ..RouterStats::default()
        }
    );
    assert_eq!(router.waiting(), 2);
    assert!(router.dead_letters().is_empty(), "not a dead letter");
    let rows = pending_rows(&queue);
    let waiting: Vec<(String, u32)> = rows
        .iter()
        .map(|row| (id_of(&row.event), row.attempts))
        .collect();
    assert_eq!(
        waiting,
        [("deleg_00000001".into(), 0), ("deleg_00000003".into(), 0)],
        "pending, never claimed"
    );

    let (adapter, discord_deliveries) = channel_adapter();
    assert!(router
        .register_adapter(Platform::Discord, adapter)
        .is_none());
    let got: Vec<String> = (0..2)
        .map(|_| id_of(&discord_deliveries.recv_timeout(HANG_GUARD).unwrap().event))
        .collect();
    assert_eq!(got, ["deleg_00000001", "deleg_00000003"]);
    let waiting = router.waiting();
    let stats = router.stop();
    assert_eq!((stats.delivered, stats.dead_lettered, waiting), (3, 0, 0));
    assert!(queue.is_empty());
}

/// Every delivery carries the completion's idempotency key — the `delegation_id` of a
/// completion the engine recorded, the ledger's `event-{seq}` key of one put on the queue
/// directly — and `possible_redelivery`: `false`, unless an earlier claim of it may have
/// delivered it (a consumer that claimed it and never decided before its lease ran out);
/// then it is `true`, with the same key, and that stale claim can no longer settle it.
#[test]
fn every_delivery_carries_its_idempotency_key_and_redelivery_flag() {
    let queue = queue_with(LedgerConfig::default().with_lease(Duration::from_millis(50)));
    let key = "agent:main:telegram:dm:1";
    record(&queue, completion(key, 1));
    queue.put(completion(key, 2));
    queue.put(completion(key, 3));
    let row_keys: Vec<String> = pending_rows(&queue)
        .into_iter()
        .map(|row| row.key)
        .collect();
    assert_eq!(row_keys[0], "deleg_00000001");
    assert!(row_keys[1..].iter().all(|k| k.starts_with("event-")));
    // A consumer claims the third and then hangs (or its process dies) undecided.
    let stale = queue
        .claim(&ClaimFilter::routed().where_event(|event| id_of(event) == "deleg_00000003"))
        .unwrap()
        .unwrap();
    assert!(!stale.is_possible_redelivery());

    let (adapter, deliveries) = channel_adapter();
    let router = DeliveryRouter::builder(queue.clone())
        .adapter(Platform::Telegram, adapter)
        .start()
        .unwrap();
    let first = deliveries.recv_timeout(HANG_GUARD).unwrap();
    let second = deliveries.recv_timeout(HANG_GUARD).unwrap();
    // The stale claim's lease runs out; a lease's end is seen on the next wake-up (the
    // ledger sweep's, on a durable queue).
    let start = Instant::now();
    let third = loop {
        queue.wake_consumers();
        match deliveries.recv_timeout(Duration::from_millis(10)) {
            Ok(message) => break message,
            Err(_) => assert!(start.elapsed() < HANG_GUARD, "hang guard: the third"),
        }
    };
    let seen: Vec<(String, String, bool)> = [&first, &second, &third]
        .iter()
        .map(|m| {
            (
                id_of(&m.event),
                m.idempotency_key.clone(),
                m.possible_redelivery,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("deleg_00000001".into(), "deleg_00000001".into(), false),
            ("deleg_00000002".into(), row_keys[1].clone(), false),
            ("deleg_00000003".into(), row_keys[2].clone(), true),
        ]
    );
    assert!(matches!(stale.ack(), Err(SettleError::ClaimLost)));
    let stats = router.stop();
    assert_eq!((stats.delivered, stats.dead_lettered), (3, 0));
    assert!(queue.is_empty());
}

/// An adapter that fails is not the end of a completion: each failed attempt is
/// released, retried after the ledger's backoff (doubling, capped), and the completion
/// is delivered once the adapter recovers — with the same idempotency key every time.
#[test]
fn a_failing_adapter_is_retried_with_backoff_and_delivers_when_it_recovers() {
    let base = Duration::from_millis(20);
    let queue = queue_with(LedgerConfig::default().with_backoff(base, Duration::from_millis(40)));
    let attempts: Arc<Mutex<Vec<(Instant, String, bool)>>> = Arc::default();
    let seen = Arc::clone(&attempts);
    let (sender, deliveries) = mpsc::channel::<InternalMessage>();
    let router = DeliveryRouter::builder(queue.clone())
        .adapter(Platform::Telegram, move |message: &InternalMessage| {
            let mut seen = seen.lock().unwrap();
            seen.push((
                Instant::now(),
                message.idempotency_key.clone(),
                message.possible_redelivery,
            ));
            if seen.len() <= 3 {
                return Err(format!("outage {}", seen.len()).into());
            }
            sender.send(message.clone())?;
            Ok(())
        })
        .start()
        .unwrap();
    record(&queue, completion("agent:main:telegram:dm:1", 1));
    let message = deliveries.recv_timeout(HANG_GUARD).unwrap();
    assert_eq!(message.idempotency_key, "deleg_00000001");
    let stats = router.stop();
    assert_eq!(
        stats,
        RouterStats {
            delivered: 1,
            released: 3,
            ..RouterStats::default()
        }
    );
    let attempts = attempts.lock().unwrap();
    assert_eq!(attempts.len(), 4);
    assert!(attempts
        .iter()
        .all(|(_, key, redelivery)| key == "deleg_00000001" && !redelivery));
    // 20 ms, 40 ms, then the 40 ms cap (a little slack for the clocks' rounding).
    let gaps: Vec<Duration> = attempts
        .windows(2)
        .map(|pair| pair[1].0 - pair[0].0)
        .collect();
    for (gap, backoff) in gaps.iter().zip([base, base * 2, base * 2]) {
        assert!(
            *gap >= backoff - Duration::from_millis(2),
            "retried after {gap:?}, before its backoff of {backoff:?}: {gaps:?}"
        );
    }
    assert!(queue.is_empty());
    assert!(router_dead_letters_empty(&queue));
}

fn router_dead_letters_empty(queue: &CompletionQueue) -> bool {
    gateway::DeadLetterStore::new(queue.clone())
        .snapshot()
        .unwrap()
        .is_empty()
}

/// While a failed completion backs off it is still the router's: counted in `waiting`,
/// pending in the ledger with its attempt and the failure — and stopping loses it not.
#[test]
fn a_completion_backing_off_is_waiting_in_the_ledger() {
    let queue = queue_with(
        LedgerConfig::default().with_backoff(Duration::from_secs(600), Duration::from_secs(600)),
    );
    let router = DeliveryRouter::builder(queue.clone())
        .adapter(
            Platform::Telegram,
            |_: &InternalMessage| -> Result<(), AdapterError> { Err("down".into()) },
        )
        .start()
        .unwrap();
    queue.put(completion("agent:main:telegram:dm:1", 1));
    wait_until("the failed attempt", || router.stats().released == 1);
    let rows = pending_rows(&queue);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].attempts, 1);
    let failure = Unroutable::AdapterFailed {
        platform: Platform::Telegram,
        error: "down".into(),
    }
    .to_string();
    assert_eq!(rows[0].reason.as_deref(), Some(failure.as_str()));
    assert!(rows[0].not_before.is_some(), "backing off");
    assert_eq!(
        router.stats(),
        RouterStats {
            released: 1,
            ..RouterStats::default()
        },
    );
    assert_eq!(router.waiting(), 1, "a completion backing off is waiting");
    assert_eq!(router.waiting(), 1);
    router.stop();
    assert_eq!(pending_rows(&queue).len(), 1, "still in the ledger");
}

/// Dead letters live in the ledger; `router.dead_letters()` lists them with their
/// reasons and attempts, and once the cause is fixed `requeue_all` (or `requeue` of one)
/// puts them back: the router delivers each, with the key it had.
#[test]
fn a_requeued_dead_letter_is_delivered_once_its_cause_is_fixed() {
    let queue = fast_retry_queue();
    let broken = Arc::new(AtomicBool::new(true));
    let is_broken = Arc::clone(&broken);
    let (sender, deliveries) = mpsc::channel::<InternalMessage>();
    let sender = Mutex::new(sender);
    let forward = Arc::new(
        move |message: &InternalMessage| -> Result<(), AdapterError> {
            sender.lock().unwrap().send(message.clone())?;
            Ok(())
        },
    );
    let telegram_forward = Arc::clone(&forward);
    let router = DeliveryRouter::builder(queue.clone())
        .adapter(Platform::Telegram, move |message: &InternalMessage| {
            if is_broken.load(Ordering::SeqCst) {
                return Err("bot token revoked".into());
            }
            telegram_forward(message)
        })
        .start()
        .unwrap();
    record(&queue, completion("agent:main:telegram:dm:1", 1));
    queue.put(completion("agent:main:zulip:dm:stream1", 2));
    record(&queue, completion("agent:main:telegram:dm:3", 3));
    wait_until("three dead letters", || router.stats().dead_lettered == 3);
    let letters = router.dead_letters().snapshot().unwrap();
    let gave_up = format!(
        "gave up after 8 attempts: {}",
        Unroutable::AdapterFailed {
            platform: Platform::Telegram,
            error: "bot token revoked".into()
        }
    );
    let summary: Vec<(String, String, String, u32)> = letters
        .iter()
        .map(|l| (id_of(&l.event), l.key.clone(), l.reason.clone(), l.attempts))
        .collect();
    assert_eq!(
        summary,
        [
            (
                "deleg_00000001".into(),
                "deleg_00000001".into(),
                gave_up.clone(),
                8
            ),
            (
                "deleg_00000002".into(),
                letters[1].key.clone(),
                Unroutable::UnknownPlatform {
                    platform: "zulip".into(),
                    session_key: "agent:main:zulip:dm:stream1".into()
                }
                .to_string(),
                1
            ),
            ("deleg_00000003".into(), "deleg_00000003".into(), gave_up, 8),
        ]
    );
    assert!(letters[1].key.starts_with("event-"));
    assert_eq!(router.waiting(), 0, "dead letters are not waiting");
    std::thread::sleep(NOTHING_ARRIVES);
    assert!(deliveries.try_recv().is_err());

    // Fix the causes: the bot works again, and zulip gets an adapter.
    broken.store(false, Ordering::SeqCst);
    let zulip = PlatformRegistry::new().register("zulip").unwrap();
    let zulip_forward = Arc::clone(&forward);
    router.register_adapter(zulip.clone(), move |m: &InternalMessage| zulip_forward(m));
    // One by itself, then the rest.
    assert!(router.dead_letters().requeue(&letters[0]).unwrap());
    let first = deliveries.recv_timeout(HANG_GUARD).unwrap();
    assert_eq!(
        (id_of(&first.event), first.idempotency_key.as_str()),
        ("deleg_00000001".to_owned(), "deleg_00000001")
    );
    assert_eq!(router.dead_letters().len(), 2);
    assert_eq!(router.dead_letters().requeue_all().unwrap(), 2);
    let mut rest: Vec<(String, String, Platform)> = (0..2)
        .map(|_| {
            let m = deliveries.recv_timeout(HANG_GUARD).unwrap();
            (id_of(&m.event), m.idempotency_key, m.source.platform)
        })
        .collect();
    rest.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        rest,
        [
            ("deleg_00000002".into(), letters[1].key.clone(), zulip),
            (
                "deleg_00000003".into(),
                "deleg_00000003".into(),
                Platform::Telegram
            ),
        ]
    );
    assert!(router.dead_letters().is_empty());
    assert!(
        !router.dead_letters().requeue(&letters[0]).unwrap(),
        "no longer dead"
    );
    let stats = router.stop();
    assert_eq!((stats.delivered, stats.dead_lettered), (3, 3));
    assert!(queue.is_empty());
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

/// The origin store routes a completion (reply anchor, chat type); a completion for a
/// custom platform the router knows but has no adapter for waits, pending, until its
/// adapter is registered at run time — then it reaches its chat.
#[test]
fn origins_and_a_custom_platform_whose_adapter_comes_later() {
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
    wait_until("one delivery and one waiting", || {
        router.stats().delivered == 1 && router.waiting() == 1
    });
    {
        let inbox = inbox.lock().unwrap();
        assert_eq!(
            inbox[0].reply_to.as_deref(),
            Some("m-42"),
            "reply anchor from the origin"
        );
        assert_eq!(inbox[0].chat_type, "group");
    }
    assert!(router.dead_letters().is_empty());
    let rows = pending_rows(&queue);
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].session_key.as_str(), rows[0].attempts),
        ("agent:main:irc:dm:#rust", 0)
    );
    // Its adapter comes: it is delivered.
    router.register_adapter(irc.clone(), recorder(&inbox));
    wait_until("the irc delivery", || router.stats().delivered == 2);
    let last = inbox.lock().unwrap()[1].clone();
    assert_eq!((last.platform, last.chat_id.as_str()), (irc, "#rust"));
    let waiting = router.waiting();
    let stats = router.stop();
    assert_eq!((stats.dead_lettered, waiting), (0, 0));
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
    let letters = router.dead_letters().snapshot().unwrap();
    assert_eq!(
        letters[0].reason,
        Unroutable::NothingToDeliver {
            event_type: "async_delegation".into()
        }
        .to_string()
    );
    assert_eq!(letters[0].attempts, 1, "dead at once, not retried");
    let text = inbox.lock().unwrap()[0].text.clone();
    assert!(
        text.contains("\nDispatched: 1970-01-01 00:16:40 (12s ago)\n"),
        "{text}"
    );
    router.stop();
}

/// The formatter and the origin store are user callbacks run on the router thread: a
/// panic in one costs only its own completion (a dead letter at once), never the thread,
/// the completions after it or those waiting for busy sessions.
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
    // Waiting for a busy session, so the thread's death would keep this one from ever
    // being delivered.
    router.begin_turn("agent:main:telegram:dm:3");
    queue.put(completion("agent:main:telegram:dm:3", 3));
    wait_until("the waiting completion", || router.waiting() == 1);
    let mut boom = completion("agent:main:telegram:dm:1", 1);
    boom.goal = "boom".into();
    queue.put(boom);
    queue.put(completion("agent:main:telegram:dm:2", 2));
    queue.put(completion("agent:main:telegram:dm:1", 4));
    wait_until("two dead letters and one delivery", || {
        let stats = router.stats();
        stats.delivered == 1 && stats.dead_lettered == 2
    });
    let reasons: Vec<(String, u32)> = router
        .dead_letters()
        .snapshot()
        .unwrap()
        .iter()
        .map(|letter| (letter.reason.clone(), letter.attempts))
        .collect();
    assert_eq!(
        reasons,
        [
            ("the completion formatter panicked: formatter bug".to_owned(), 1),
            (
                "the origin store panicked for session key \"agent:main:telegram:dm:2\": origin store bug".to_owned(),
                1
            ),
        ]
    );
    router.end_turn("agent:main:telegram:dm:3");
    wait_until("the waiting completion after the turn", || {
        router.stats().delivered == 2
    });
    assert_eq!(delivered_ids(&inbox), ["deleg_00000004", "deleg_00000003"]);
    router.stop();
    assert!(queue.is_empty());
}

/// An adapter error's `Display` is user code: a panic in it is an adapter panic — a
/// failed attempt, retried like any other, and a dead letter after the last — not the
/// end of the delivery thread, which delivers the next completion.
#[test]
fn adapter_error_whose_display_panics_is_retried_then_dead_lettered() {
    #[derive(Debug)]
    struct BadError;
    impl std::fmt::Display for BadError {
        fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            panic!("display bug")
        }
    }
    impl std::error::Error for BadError {}
    let queue = fast_retry_queue();
    let inbox: Inbox = Arc::default();
    let record = recorder(&inbox);
    let router = DeliveryRouter::builder(queue.clone())
        .adapter(
            Platform::Telegram,
            move |message: &InternalMessage| match &*message.event {
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
    let letters = router.dead_letters().snapshot().unwrap();
    assert_eq!(
        letters[0].reason,
        format!(
            "gave up after 8 attempts: {}",
            Unroutable::AdapterPanicked {
                platform: Platform::Telegram,
                message: "display bug".into()
            }
        )
    );
    assert_eq!(letters[0].attempts, 8);
    assert_eq!(delivered_ids(&inbox), ["deleg_00000002"]);
    assert_eq!(router.stop().released, 7);
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
    by_event.routing_mut().platform = Some(format!(" {kelvin_webhook} "));
    queue.put(by_event);
    wait_until("two deliveries, or a dead letter", || {
        let stats = router.stats();
        stats.delivered + stats.dead_lettered == 2
    });
    let reasons: Vec<String> = router
        .dead_letters()
        .snapshot()
        .unwrap()
        .into_iter()
        .map(|letter| letter.reason)
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

/// Two overlapping turns on one session: the session stays busy until the last one
/// ends, so a completion is never delivered into the turn still running; it waits,
/// unclaimed, in the ledger.
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
    assert_eq!(router.waiting(), 1);
    assert!(
        deliveries.recv_timeout(NOTHING_ARRIVES).is_err(),
        "delivered into the turn still running"
    );
    assert_eq!(router.waiting(), 1);
    let rows = pending_rows(&queue);
    assert_eq!((rows.len(), rows[0].attempts), (1, 0), "never claimed");
    second.end();
    let message = deliveries.recv_timeout(HANG_GUARD).unwrap();
    assert_eq!(message.session_key.as_str(), key);
    let waiting = router.waiting();
    let stats = router.stop();
    assert_eq!((stats.delivered, stats.deferred, waiting), (1, 0, 0));
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
/// renders nothing for process completions), with the ledger's key of its row.
#[test]
fn a_process_completion_with_a_session_key_reaches_its_chat() {
    let queue = CompletionQueue::new();
    let key = "agent:main:telegram:dm:42";
    let event = Event::from(process_completion(Some(key), 1));
    queue.put(event.clone());
    let row_key = pending_rows(&queue)[0].key.clone();
    assert!(row_key.starts_with("event-"), "{row_key}");
    let (adapter, deliveries) = channel_adapter();
    let router = DeliveryRouter::builder(queue.clone())
        .adapter(Platform::Telegram, adapter)
        .start()
        .unwrap();
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
            event: Arc::new(event),
            idempotency_key: row_key,
            possible_redelivery: false,
        },
        "routed from the key, the event handed over unchanged"
    );
    let stats = router.stop();
    assert_eq!((stats.delivered, stats.dead_lettered), (1, 0));
    assert!(queue.is_empty());
}

/// A process completion for a busy session waits, pending, until the turn ends, then
/// goes to the chat its origin names; one that is still waiting when the router stops
/// stays in the ledger, unchanged.
#[test]
fn a_process_completion_waits_for_a_busy_session_and_stays_in_the_ledger_on_stop() {
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
    assert_eq!(router.waiting(), 1);
    assert!(
        deliveries.recv_timeout(NOTHING_ARRIVES).is_err(),
        "delivered into a running turn"
    );
    assert_eq!(router.waiting(), 1);
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

    // Still waiting when the router stops: in the ledger, unchanged.
    let _turn = router.turn(key);
    let held = Event::from(process_completion(Some(key), 2));
    queue.put(held.clone());
    assert_eq!(router.waiting(), 1);
    let waiting = router.waiting();
    let stats = router.stop();
    assert_eq!((stats.delivered, waiting), (1, 1));
    let rows = pending_rows(&queue);
    assert_eq!(rows.len(), 1);
    assert_eq!((*rows[0].event).clone(), held);
    assert_eq!(queue.drain(), vec![held]);
}

/// A process completion that cannot be routed (unknown platform, no route at all) is a
/// dead letter at once; one for a known platform without an adapter waits for its
/// adapter, and is delivered once it is registered.
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
    wait_until("two dead letters", || router.stats().dead_lettered == 2);
    let letters: Vec<(Event, String, u32)> = router
        .dead_letters()
        .snapshot()
        .unwrap()
        .into_iter()
        .map(|letter| (letter.event, letter.reason, letter.attempts))
        .collect();
    assert_eq!(
        letters,
        [
            (
                unknown,
                Unroutable::UnknownPlatform {
                    platform: "myspace".into(),
                    session_key: "agent:main:myspace:dm:1".into()
                }
                .to_string(),
                1
            ),
            (
                no_route,
                Unroutable::MissingPlatform {
                    session_key: "proc-session-7".into()
                }
                .to_string(),
                1
            ),
        ]
    );
    assert_eq!(router.waiting(), 1, "the discord one waits");
    let rows = pending_rows(&queue);
    assert_eq!(rows.len(), 1);
    assert_eq!((*rows[0].event).clone(), no_adapter);

    let (adapter, deliveries) = channel_adapter();
    router.register_adapter(Platform::Discord, adapter);
    let message = deliveries.recv_timeout(HANG_GUARD).unwrap();
    assert_eq!(*message.event, no_adapter);
    assert_eq!(message.source.chat_id, "1");
    let waiting = router.waiting();
    let stats = router.stop();
    assert_eq!((stats.delivered, stats.dead_lettered, waiting), (1, 2, 0));
    assert!(queue.is_empty());
}

/// A process completion without a session key (absent or empty) came from a CLI
/// session: the router never claims it, and it stays on the queue.
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
    assert!(deliveries.recv_timeout(NOTHING_ARRIVES).is_err());
    let rows = pending_rows(&queue);
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter().all(|row| row.attempts == 0),
        "claimed: {rows:?}"
    );
    let stats = router.stop();
    assert_eq!(stats, RouterStats::default());
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

/// A completion retried many times on short backoffs is never left behind: each backoff
/// that runs out is claimed — also one that runs out while the router is between looking
/// for work and looking up the next backoff (a race that once left the router asleep with
/// nothing to wake it).
#[test]
fn short_backoffs_never_leave_a_retried_completion_behind() {
    const FAILURES: usize = 2_000;
    let queue = queue_with(
        LedgerConfig::default()
            .with_backoff(Duration::from_micros(20), Duration::from_micros(20))
            .with_max_attempts(FAILURES as u32 + 1),
    );
    let calls = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&calls);
    let (sender, deliveries) = mpsc::channel::<InternalMessage>();
    let router = DeliveryRouter::builder(queue.clone())
        .adapter(Platform::Telegram, move |message: &InternalMessage| {
            if counted.fetch_add(1, Ordering::SeqCst) < FAILURES as u64 {
                return Err("flaky".into());
            }
            sender.send(message.clone())?;
            Ok(())
        })
        .start()
        .unwrap();
    queue.put(completion("agent:main:telegram:dm:1", 1));
    let message = deliveries.recv_timeout(HANG_GUARD);
    let stats = router.stop();
    assert!(
        message.is_ok(),
        "stalled after {} attempts: {stats:?}, rows {:?}",
        calls.load(Ordering::SeqCst),
        pending_rows(&queue)
    );
    assert_eq!((stats.delivered, stats.released), (1, FAILURES as u64));
}

/// A session's completions are delivered in order even when its turn ends while the
/// router is in the middle of a look: the router judges a whole look by the state it
/// began with, so it never skips the session's first page of completions as busy and
/// then claims a later one, from the next page, as idle.
#[test]
fn a_turn_ending_during_a_look_keeps_the_session_in_order() {
    let stats = turn_ending_during_a_look(|builder| builder.start().unwrap(), DeliveryRouter::stop);
    assert_eq!(stats.delivered, 40);
}

/// The same on a router running as tasks (each task judges a look by one view).
#[cfg(feature = "tokio")]
#[test]
fn a_turn_ending_during_a_look_keeps_the_session_in_order_on_the_task_router() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(TASK_ROUTER_WORKER)
        .build()
        .unwrap();
    let stats = turn_ending_during_a_look(
        |builder| builder.start_on(runtime.handle()).unwrap(),
        |router| runtime.block_on(router.stop_async()),
    );
    assert_eq!(stats.delivered, 40);
}

/// A busy session with 40 completions (more than a page of candidates) whose turn ends
/// while the router reads the second page of a look: every completion arrives in order
/// and none is left waiting. Returns the router's final counters.
fn turn_ending_during_a_look(
    start: impl FnOnce(gateway::DeliveryRouterBuilder) -> DeliveryRouter,
    stop: impl FnOnce(DeliveryRouter) -> gateway::RouterStats,
) -> gateway::RouterStats {
    let (queue, _, on_second_page) = CountingLedger::queue();
    let (adapter, deliveries) = channel_adapter();
    let router = start(DeliveryRouter::builder(queue.clone()).adapter(Platform::Telegram, adapter));
    let key = "agent:main:telegram:dm:1";
    let turn = router.turn(key);
    // More than a page of candidates (32), all for the busy session.
    let total = 40;
    for n in 0..total {
        queue.put(completion(key, n));
    }
    assert_eq!(router.waiting(), total);
    // The turn ends while the router reads the second page of its next look.
    *on_second_page.lock().unwrap() = Some(at_second_page(move || drop(turn)));
    queue.wake_consumers();
    let got: Vec<String> = (0..total)
        .map(|_| id_of(&deliveries.recv_timeout(HANG_GUARD).unwrap().event))
        .collect();
    let expected: Vec<String> = (0..total).map(|n| format!("deleg_{n:08x}")).collect();
    assert_eq!(got, expected);
    assert!(on_second_page.lock().unwrap().is_none(), "the hook ran");
    assert_eq!(router.waiting(), 0);
    stop(router)
}

/// Likewise when a platform's adapter is registered in the middle of a look: its
/// completions are delivered in order, the first first.
#[test]
fn an_adapter_registered_during_a_look_keeps_its_completions_in_order() {
    let (queue, _, on_second_page) = CountingLedger::queue();
    let router = Arc::new(DeliveryRouter::builder(queue.clone()).start().unwrap());
    let key = "agent:main:discord:dm:1";
    let total = 40;
    for n in 0..total {
        queue.put(completion(key, n));
    }
    assert_eq!(router.waiting(), total);
    let (adapter, deliveries) = channel_adapter();
    let registrar = Arc::clone(&router);
    *on_second_page.lock().unwrap() = Some(at_second_page(move || {
        registrar.register_adapter(Platform::Discord, adapter);
    }));
    queue.wake_consumers();
    let got: Vec<String> = (0..total)
        .map(|_| id_of(&deliveries.recv_timeout(HANG_GUARD).unwrap().event))
        .collect();
    let expected: Vec<String> = (0..total).map(|n| format!("deleg_{n:08x}")).collect();
    assert_eq!(got, expected);
    let waiting = router.waiting();
    let stats = Arc::try_unwrap(router).unwrap().stop();
    assert_eq!((stats.delivered, waiting), (total as u64, 0));
}

/// A turn that begins after the router claimed a completion but before it handed it to
/// the adapter defers the claim: the completion goes back to pending with its attempt
/// given back, is not delivered into the turn, and is delivered once the turn ends.
#[test]
fn a_turn_beginning_between_claim_and_hand_off_defers_without_spending_an_attempt() {
    let (queue, _, on_second_page) = CountingLedger::queue();
    let (adapter, deliveries) = channel_adapter();
    let router = Arc::new(
        DeliveryRouter::builder(queue.clone())
            .adapter(Platform::Telegram, adapter)
            .start()
            .unwrap(),
    );
    // A full page of a busy session's completions, so the look that finds the idle
    // session's completion reads a second page.
    let busy = "agent:main:telegram:dm:1";
    let late = "agent:main:telegram:dm:2";
    let turn = router.turn(busy);
    for n in 0..32 {
        queue.put(completion(busy, n));
    }
    // The look that will claim the idle session's completion (its view taken: the
    // session is idle) begins a turn of that session before the claim.
    let starter = Arc::clone(&router);
    // (Judged by the page read, not by a second read: the completion could be put
    // between that read and the page's.)
    *on_second_page.lock().unwrap() = Some(Box::new(move |page: &[Candidate]| {
        if !page
            .iter()
            .any(|candidate| id_of(&candidate.event) == "deleg_00000020")
        {
            return false;
        }
        assert!(starter.begin_turn(late));
        true
    }));
    queue.put(completion(late, 32));
    wait_until("the deferral", || router.stats().deferred == 1);
    assert!(
        deliveries.recv_timeout(NOTHING_ARRIVES).is_err(),
        "delivered into the turn that began"
    );
    let rows: Vec<(String, u32)> = pending_rows(&queue)
        .iter()
        .filter(|row| row.session_key == late)
        .map(|row| (id_of(&row.event), row.attempts))
        .collect();
    assert_eq!(
        rows,
        [("deleg_00000020".to_owned(), 0)],
        "attempt given back"
    );
    assert!(router.end_turn(late));
    let message = deliveries.recv_timeout(HANG_GUARD).unwrap();
    assert_eq!(id_of(&message.event), "deleg_00000020");
    assert!(!message.possible_redelivery);
    drop(turn);
    let busy_ones: Vec<String> = (0..32)
        .map(|_| id_of(&deliveries.recv_timeout(HANG_GUARD).unwrap().event))
        .collect();
    let expected: Vec<String> = (0..32).map(|n| format!("deleg_{n:08x}")).collect();
    assert_eq!(busy_ones, expected);
    let stats = Arc::try_unwrap(router).unwrap().stop();
    assert_eq!(
        stats,
        RouterStats {
            delivered: 33,
            deferred: 1,
            ..RouterStats::default()
        }
    );
}
