//! A gateway delivery loop in miniature: three chat platforms, a busy session, a
//! CLI-origin completion and an unroutable one.
//!
//! `cargo run --example gateway_router -p gateway`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::mpsc;
use std::time::Duration;

use gateway::{
    AdapterError, DeliveryRouter, InternalMessage, Platform, SessionKey, SessionKeyOptions,
    SessionSource,
};
use process_registry::{AsyncDelegationEvent, CompletionQueue, Event};

fn completion(id: u32, session_key: &str, goal: &str, summary: &str) -> AsyncDelegationEvent {
    AsyncDelegationEvent {
        delegation_id: Some(format!("deleg_{id:08x}").into()),
        session_key: session_key.into(),
        goal: goal.into(),
        status: Some("completed".into()),
        summary: Some(summary.into()),
        api_calls: Some(3.into()),
        duration_seconds: process_registry::WireNumber::from_f64(74.5),
        dispatched_at: process_registry::WireNumber::from_f64(1_700_000_000.0),
        completed_at: process_registry::WireNumber::from_f64(1_700_000_075.0),
        ..AsyncDelegationEvent::default()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = SessionKeyOptions::default();
    let telegram_topic = SessionKey::build(
        &SessionSource::new(Platform::Telegram, "12345").with_thread_id("678"),
        &options,
    );
    let discord_thread = SessionKey::build(
        &SessionSource::new(Platform::Discord, "guild-chan")
            .with_chat_type("thread")
            .with_thread_id("t-42"),
        &options,
    );
    let slack_channel = SessionKey::build(
        &SessionSource::new(Platform::Slack, "C024BE91L")
            .with_chat_type("channel")
            .with_user_id("U1"),
        &options,
    );

    // Each adapter forwards the new turn to this channel, as a real one would post it.
    let (sent, received) = mpsc::channel::<(Platform, InternalMessage)>();
    let adapter = |platform: Platform| {
        let sent = std::sync::Mutex::new(sent.clone());
        move |message: &InternalMessage| -> Result<(), AdapterError> {
            sent.lock()
                .map_err(|_| "poisoned")?
                .send((platform.clone(), message.clone()))?;
            Ok(())
        }
    };
    let queue = CompletionQueue::new();
    let router = DeliveryRouter::builder(queue.clone())
        .adapter(Platform::Telegram, adapter(Platform::Telegram))
        .adapter(Platform::Discord, adapter(Platform::Discord))
        .adapter(Platform::Slack, adapter(Platform::Slack))
        .start()?;

    // The Discord thread is mid-turn when its subagent finishes.
    let discord_turn = router.turn(discord_thread.as_str());

    queue.put(completion(
        1,
        telegram_topic.as_str(),
        "Investigate flaky test",
        "Found the bug in test_foo.",
    ));
    queue.put(completion(
        2,
        discord_thread.as_str(),
        "Summarise the design doc",
        "Three key decisions.",
    ));
    queue.put(completion(
        3,
        slack_channel.as_str(),
        "Check the release notes",
        "Two typos fixed.",
    ));
    queue.put(completion(4, "", "A CLI task", "Stays for the CLI drain."));
    queue.put(completion(
        5,
        "agent:main:myspace:dm:1",
        "Lost cause",
        "Nobody to tell.",
    ));

    for _ in 0..2 {
        let (platform, message) = received.recv_timeout(Duration::from_secs(30))?;
        print_turn(&platform, &message);
    }
    println!(
        "(discord thread busy; its completion waits: waiting = {})\n",
        router.waiting()
    );
    discord_turn.end();
    let (platform, message) = received.recv_timeout(Duration::from_secs(30))?;
    print_turn(&platform, &message);

    let dead_letters = router.dead_letters().clone();
    let stats = router.stop();
    println!("stats: {stats:?}");
    for letter in dead_letters.snapshot()? {
        println!("dead letter: {}", letter.reason);
    }
    for event in left_for_cli(&queue) {
        println!("still on the queue for the CLI: {event}");
    }
    Ok(())
}

fn print_turn(platform: &Platform, message: &InternalMessage) {
    println!(
        "== new turn on {platform} chat {} thread {:?} ==\n{}\n",
        message.source.chat_id, message.source.thread_id, message.text
    );
}

fn left_for_cli(queue: &CompletionQueue) -> Vec<String> {
    queue
        .drain()
        .into_iter()
        .map(|event| match event {
            Event::AsyncDelegation(e) => format!(
                "{} ({:?})",
                e.delegation_id.as_deref().unwrap_or("unknown"),
                e.goal
            ),
            other => other.type_name().to_owned(),
        })
        .collect()
}
