//! Across every crate: a gateway session calls `delegate_task(background=true)`, the real
//! engine runs the child, and the `DeliveryRouter` brings the completion back to that
//! session's (platform, chat, thread) as a new turn — after the turn in progress, never
//! during it. CLI-origin completions stay on the queue for the CLI; what cannot be
//! delivered is kept as a dead letter, never lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{mpsc, Arc, Mutex};

use async_delegation::{DelegationEngine, DelegationResult};
use delegate_tool::{
    delegate_task, DelegateContext, DelegationConfig, Parent, ASYNC_CANCEL_REASON,
};
use gateway::{
    DeliveryRouter, InternalMessage, Platform, SessionKey, SessionKeyOptions, SessionSource,
    Unroutable,
};
use integration_tests::{wait_until, Gate, ScriptedBackend, HANG_GUARD};
use process_registry::{CompletionQueue, Event};
use serde_json::{json, Value};

/// A platform adapter that records every new turn it is handed.
#[derive(Clone)]
struct FakeAdapter {
    sent: Arc<Mutex<mpsc::Sender<InternalMessage>>>,
}

fn fake_adapter() -> (FakeAdapter, mpsc::Receiver<InternalMessage>) {
    let (tx, rx) = mpsc::channel();
    (
        FakeAdapter {
            sent: Arc::new(Mutex::new(tx)),
        },
        rx,
    )
}

impl gateway::PlatformAdapter for FakeAdapter {
    fn deliver(&self, message: &InternalMessage) -> Result<(), gateway::AdapterError> {
        self.sent.lock().unwrap().send(message.clone())?;
        Ok(())
    }
}

struct World {
    queue: CompletionQueue,
    tool: DelegateContext<ScriptedBackend>,
}

fn world(backend: ScriptedBackend) -> World {
    let queue = CompletionQueue::new();
    let tool = DelegateContext::new(
        DelegationConfig::default(),
        DelegationEngine::new(queue.clone()),
        backend,
    );
    World { queue, tool }
}

/// Children complete at once with `done: {goal}`.
fn instant_backend() -> ScriptedBackend {
    ScriptedBackend::new(|_, task| Ok(DelegationResult::completed(format!("done: {}", task.goal))))
}

fn telegram_topic() -> SessionSource {
    SessionSource::new(Platform::Telegram, "12345").with_thread_id("678")
}

fn discord_thread() -> SessionSource {
    SessionSource::new(Platform::Discord, "881")
        .with_chat_type("thread")
        .with_thread_id("t-42")
}

fn key_of(source: &SessionSource) -> String {
    SessionKey::build(source, &SessionKeyOptions::default()).into_string()
}

/// The agent serving `session_key` delegates `goal` in the background; returns its id.
fn delegate(world: &World, session_key: &str, goal: &str) -> String {
    let parent = Parent::new(0)
        .with_session_id("s")
        .with_session_key(session_key);
    let args = json!({"goal": goal, "context": "from the chat", "background": true});
    let out: Value =
        serde_json::from_str(&delegate_task(&args.to_string(), &parent, &world.tool)).unwrap();
    assert_eq!(out["status"], "dispatched", "{out}");
    out["delegation_id"].as_str().unwrap().to_owned()
}

fn delegation_id(message: &InternalMessage) -> &str {
    match &*message.event {
        Event::AsyncDelegation(event) => event.delegation_id.as_deref().unwrap_or(""),
        other => panic!("not an async completion: {other:?}"),
    }
}

#[test]
fn each_completion_returns_to_the_platform_chat_and_thread_that_dispatched_it() {
    let world = world(instant_backend());
    let (telegram, telegram_inbox) = fake_adapter();
    let (discord, discord_inbox) = fake_adapter();
    let router = DeliveryRouter::builder(world.queue.clone())
        .adapter(Platform::Telegram, telegram)
        .adapter(Platform::Discord, discord)
        .start()
        .unwrap();

    let telegram_key = key_of(&telegram_topic());
    let discord_key = key_of(&discord_thread());
    assert_eq!(telegram_key, "agent:main:telegram:dm:12345:678");
    assert_eq!(discord_key, "agent:main:discord:thread:881:t-42");
    let telegram_id = delegate(&world, &telegram_key, "summarise the logs");
    let discord_id = delegate(&world, &discord_key, "count the words");

    let message = telegram_inbox.recv_timeout(HANG_GUARD).unwrap();
    assert_eq!(delegation_id(&message), telegram_id);
    assert_eq!(message.session_key.as_str(), telegram_key);
    assert_eq!(message.source.platform, Platform::Telegram);
    assert_eq!(message.source.chat_id, "12345");
    assert_eq!(message.source.chat_type, "dm");
    assert_eq!(message.source.thread_id.as_deref(), Some("678"));
    assert!(
        message
            .text
            .starts_with(&format!("[ASYNC DELEGATION COMPLETE — {telegram_id}]")),
        "{}",
        message.text
    );
    assert!(
        message.text.contains("done: summarise the logs"),
        "{}",
        message.text
    );

    let message = discord_inbox.recv_timeout(HANG_GUARD).unwrap();
    assert_eq!(delegation_id(&message), discord_id);
    assert_eq!(message.source.platform, Platform::Discord);
    assert_eq!(message.source.chat_id, "881");
    assert_eq!(message.source.chat_type, "thread");
    assert_eq!(message.source.thread_id.as_deref(), Some("t-42"));
    assert!(
        message.text.contains("done: count the words"),
        "{}",
        message.text
    );

    let stats = router.stop();
    assert_eq!((stats.delivered, stats.dead_lettered), (2, 0));
    // Exactly one turn each, nothing crossed over.
    assert!(telegram_inbox.try_recv().is_err());
    assert!(discord_inbox.try_recv().is_err());
    assert!(world.queue.is_empty());
}

#[test]
fn a_cli_origin_completion_stays_on_the_queue_for_the_cli() {
    let world = world(instant_backend());
    let (telegram, telegram_inbox) = fake_adapter();
    let router = DeliveryRouter::builder(world.queue.clone())
        .adapter(Platform::Telegram, telegram)
        .start()
        .unwrap();

    let id = delegate(&world, "", "cli task");
    // The router never claims it: it is not the gateway's. It stays pending, untouched.
    assert!(wait_until(|| world.queue.len() == 1));
    std::thread::sleep(std::time::Duration::from_millis(100));
    let stats = router.stop();
    assert_eq!(
        (
            stats.delivered,
            stats.dead_lettered,
            stats.deferred,
            stats.released
        ),
        (0, 0, 0, 0)
    );
    assert!(telegram_inbox.try_recv().is_err());
    let rows = world
        .queue
        .rows(&process_registry::RowQuery::default())
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].attempts, 0, "never claimed by the router");

    // The CLI drain finds it, unrouted.
    let events = world.queue.drain();
    assert_eq!(events.len(), 1);
    let Event::AsyncDelegation(event) = &events[0] else {
        panic!("not an async completion: {events:?}");
    };
    assert_eq!(event.delegation_id.as_deref(), Some(id.as_ref()));
    assert_eq!(event.session_key, "");
    assert!(event.routing().is_empty());
    assert_eq!(event.summary.as_deref(), Some("done: cli task"));
}

#[test]
fn a_busy_session_gets_its_completion_only_after_its_turn_ends() {
    let world = world(instant_backend());
    let (telegram, inbox) = fake_adapter();
    let router = DeliveryRouter::builder(world.queue.clone())
        .adapter(Platform::Telegram, telegram)
        .start()
        .unwrap();
    let key = key_of(&telegram_topic());

    let turn = router.turn(key.clone());
    let id = delegate(&world, &key, "while you talk");
    // The completion is committed and waits in the ledger for the turn.
    assert!(wait_until(|| router.waiting() == 1));
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(inbox.try_recv().is_err(), "delivered into a running turn");
    assert!(router.is_busy(&key));

    turn.end();
    let message = inbox.recv_timeout(HANG_GUARD).unwrap();
    assert_eq!(delegation_id(&message), id);
    assert_eq!(message.source.thread_id.as_deref(), Some("678"));
    let waiting = router.waiting();
    let stats = router.stop();
    assert_eq!((stats.delivered, waiting), (1, 0));
}

#[test]
fn an_interrupted_session_gets_its_interrupted_completion_back() {
    let gate = Gate::new();
    let world = world(ScriptedBackend::gated(&gate));
    let (discord, inbox) = fake_adapter();
    let router = DeliveryRouter::builder(world.queue.clone())
        .adapter(Platform::Discord, discord)
        .start()
        .unwrap();
    let key = key_of(&discord_thread());
    let id = delegate(&world, &key, "watch forever");
    let other = delegate(&world, "agent:main:telegram:dm:1", "another chat's task");

    // The gateway interrupts one session's delegations, not the others'.
    assert_eq!(
        world.tool.engine.interrupt_session(&key, "user said stop"),
        1
    );
    let message = inbox.recv_timeout(HANG_GUARD).unwrap();
    assert_eq!(delegation_id(&message), id);
    let Event::AsyncDelegation(event) = &*message.event else {
        unreachable!()
    };
    assert_eq!(event.status.as_deref(), Some("interrupted"));
    assert_eq!(event.error.as_deref(), Some(ASYNC_CANCEL_REASON));
    assert!(
        message
            .text
            .contains("The subagent was interrupted before completing"),
        "{}",
        message.text
    );
    assert_eq!(world.tool.engine.active_count(), 1);
    assert!(world
        .tool
        .engine
        .list()
        .iter()
        .any(|r| r.delegation_id == other && r.is_running()));

    gate.open();
    // The telegram one has no adapter here: it waits in the ledger for one, not lost.
    assert!(wait_until(|| world.queue.len() == 1));
    assert!(router.dead_letters().is_empty());
    router.stop();
    let left = world.queue.drain();
    assert_eq!(left[0].session_key(), Some("agent:main:telegram:dm:1"));
}

#[test]
fn a_crashed_subagent_reaches_its_chat_a_platform_without_adapter_waits_and_an_unroutable_one_is_a_dead_letter(
) {
    let world = world(ScriptedBackend::new(|_, task| {
        if task.goal.contains("explode") {
            panic!("subagent exploded");
        }
        Ok(DelegationResult::completed("fine"))
    }));
    let (telegram, inbox) = fake_adapter();
    let router = DeliveryRouter::builder(world.queue.clone())
        .adapter(Platform::Telegram, telegram)
        .start()
        .unwrap();

    let crashed = delegate(&world, &key_of(&telegram_topic()), "explode please");
    let message = inbox.recv_timeout(HANG_GUARD).unwrap();
    assert_eq!(delegation_id(&message), crashed);
    let Event::AsyncDelegation(event) = &*message.event else {
        unreachable!()
    };
    assert_eq!(event.status.as_deref(), Some("error"));
    assert!(event
        .error
        .as_deref()
        .unwrap_or("")
        .contains("subagent exploded"));

    // Slack has no adapter in this gateway yet: the completion waits for it, pending.
    let slack = SessionSource::new(Platform::Slack, "C1")
        .with_chat_type("channel")
        .with_user_id("U1");
    let stranded = delegate(&world, &key_of(&slack), "no adapter for me");
    assert!(wait_until(|| router.waiting() == 1));
    assert!(router.dead_letters().is_empty());
    let (slack_adapter, slack_inbox) = fake_adapter();
    router.register_adapter(Platform::Slack, slack_adapter);
    let message = slack_inbox.recv_timeout(HANG_GUARD).unwrap();
    assert_eq!(delegation_id(&message), stranded);
    assert_eq!(message.source.chat_id, "C1");

    // A platform nobody knows is unroutable: a dead letter, with the reason.
    let nowhere = "agent:main:myspace:dm:42".to_owned();
    let lost = delegate(&world, &nowhere, "unroutable");
    assert!(wait_until(|| router.dead_letters().len() == 1));
    let letters = router.dead_letters().snapshot().unwrap();
    assert_eq!(letters[0].event.session_key(), Some(nowhere.as_str()));
    assert_eq!(
        letters[0].reason,
        Unroutable::UnknownPlatform {
            platform: "myspace".into(),
            session_key: nowhere.clone()
        }
        .to_string()
    );
    assert_eq!(letters[0].key, lost);
    router.stop();
}

#[test]
fn watch_events_and_completions_share_the_queue_without_stealing_each_others() {
    let world = world(instant_backend());
    let (telegram, inbox) = fake_adapter();
    let router = DeliveryRouter::builder(world.queue.clone())
        .adapter(Platform::Telegram, telegram)
        .start()
        .unwrap();
    let watch = Event::from_value(json!({
        "type": "watch_match", "session_id": "proc_1", "command": "pytest",
        "pattern": "READY", "output": "READY", "platform": "telegram", "chat_id": "12345",
    }))
    .unwrap();
    world.queue.put(watch.clone());
    let routed = delegate(&world, &key_of(&telegram_topic()), "routed one");
    let cli = delegate(&world, "", "cli one");

    // The gateway's watch drain gets the watch event (the router never takes it), and
    // the router delivers the routed completion.
    let mut watches = Vec::new();
    assert!(wait_until(|| {
        watches.extend(gateway::drain_gateway_watch_events(&world.queue));
        !watches.is_empty()
    }));
    assert_eq!(watches, vec![watch]);
    let message = inbox.recv_timeout(HANG_GUARD).unwrap();
    assert_eq!(delegation_id(&message), routed);

    // The CLI's completion is still there for the CLI, whichever drain saw it (once its
    // run, which nothing above waited for, has finished).
    router.stop();
    assert!(wait_until(|| !world.queue.is_empty()));
    let left = world.queue.drain();
    assert_eq!(left.len(), 1, "{left:?}");
    let Event::AsyncDelegation(event) = &left[0] else {
        panic!("{left:?}")
    };
    assert_eq!(event.delegation_id.as_deref(), Some(cli.as_ref()));
}
