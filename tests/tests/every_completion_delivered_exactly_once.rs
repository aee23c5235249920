//! Never lose a completion, never deliver one twice, never to the wrong chat: many
//! background delegations from several gateway sessions and the CLI, with mixed outcomes
//! (completed, failed, crashed, interrupted) and sessions going busy and idle, all go
//! through the real tool, engine and router. Each gateway completion reaches its own
//! session's adapter exactly once; each CLI completion is left on the queue exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{mpsc, Mutex};

use async_delegation::{DelegationEngine, DelegationResult};
use delegate_tool::{delegate_task, DelegateContext, DelegationConfig, Parent};
use gateway::{DeliveryRouter, InternalMessage, Platform};
use integration_tests::{wait_until, ScriptedBackend, HANG_GUARD};
use process_registry::{CompletionQueue, Event};
use serde_json::{json, Value};

const PER_SESSION: usize = 12;

#[test]
fn every_dispatched_delegation_is_delivered_once_to_the_session_that_dispatched_it() {
    let queue = CompletionQueue::new();
    // Children act on a marker in their goal; interrupted ones wait for the interrupt.
    let backend = ScriptedBackend::new(|child, task| {
        let goal = task.goal.as_str();
        if goal.contains("crash") {
            panic!("subagent exploded on {goal}");
        } else if goal.contains("fail") {
            Err(format!("could not do {goal}").into())
        } else if goal.contains("stop") {
            assert!(wait_until(|| child.is_interrupted()), "never interrupted");
            Ok(DelegationResult::interrupted(
                child.interrupt_reasons().join(", "),
            ))
        } else {
            Ok(DelegationResult::completed(format!("done: {goal}")))
        }
    });
    let config = DelegationConfig {
        max_async_children: 4 * PER_SESSION,
        ..DelegationConfig::default()
    };
    let tool = DelegateContext::new(config, DelegationEngine::new(queue.clone()), backend);

    let (tx, inbox) = mpsc::channel::<(Platform, InternalMessage)>();
    let adapter = |platform: Platform| {
        let tx = Mutex::new(tx.clone());
        move |message: &InternalMessage| -> Result<(), gateway::AdapterError> {
            tx.lock()
                .unwrap()
                .send((platform.clone(), message.clone()))?;
            Ok(())
        }
    };
    let router = DeliveryRouter::builder(queue.clone())
        .adapter(Platform::Telegram, adapter(Platform::Telegram))
        .adapter(Platform::Discord, adapter(Platform::Discord))
        .adapter(Platform::Slack, adapter(Platform::Slack))
        .start()
        .unwrap();

    let sessions = [
        "agent:main:telegram:dm:12345:678",
        "agent:main:discord:thread:881:t-42",
        "agent:main:slack:channel:C1:U1",
        "",
    ];
    // Session key → delegation ids it dispatched.
    let mut dispatched: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let turns: Vec<_> = sessions[..2].iter().map(|key| router.turn(*key)).collect();
    for round in 0..PER_SESSION {
        for key in sessions {
            let parent = Parent::new(0).with_session_key(key);
            let outcome = ["ok", "fail", "crash", "stop"][round % 4];
            let args =
                json!({"goal": format!("{outcome} #{round} for {key:?}"), "background": true});
            let out: Value =
                serde_json::from_str(&delegate_task(&args.to_string(), &parent, &tool)).unwrap();
            assert_eq!(out["status"], "dispatched", "{out}");
            dispatched
                .entry(key)
                .or_default()
                .insert(out["delegation_id"].as_str().unwrap().to_owned());
        }
    }
    let total = sessions.len() * PER_SESSION;
    assert_eq!(dispatched.values().map(BTreeSet::len).sum::<usize>(), total);

    // Interrupt the waiting ones: per session for the gateway chats, all at once for the rest.
    // Only the ones waiting for a stop are left running once the others are done.
    let stoppers = PER_SESSION / 4;
    assert!(wait_until(
        || tool.engine.active_count() == sessions.len() * stoppers
    ));
    for key in &sessions[..3] {
        assert_eq!(
            tool.engine.interrupt_session(key, "user said stop"),
            stoppers
        );
    }
    // The interrupted chats' children end; then only the CLI's are left for interrupt_all.
    assert!(wait_until(|| tool.engine.active_count() == stoppers));
    assert_eq!(
        tool.engine.interrupt_all("shutting down the CLI's"),
        stoppers
    );
    assert!(wait_until(|| tool.engine.active_count() == 0));
    // The two busy sessions get nothing until their turns end.
    drop(turns);

    let gateway_total = 3 * PER_SESSION;
    let mut delivered: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for _ in 0..gateway_total {
        let (platform, message) = inbox.recv_timeout(HANG_GUARD).expect("a missing delivery");
        assert_eq!(
            message.source.platform, platform,
            "handed to another platform's adapter"
        );
        let Event::AsyncDelegation(event) = &*message.event else {
            panic!("{:?}", message.event)
        };
        assert_eq!(event.session_key, message.session_key.as_str());
        delivered
            .entry(event.session_key.to_string())
            .or_default()
            .push(event.delegation_id.clone().unwrap().to_string());
    }
    // The CLI's completions are never the gateway's: nothing it serves is left waiting.
    assert!(wait_until(|| router.waiting() == 0));
    let stats = router.stop();
    assert!(
        inbox.try_recv().is_err(),
        "a completion was delivered twice"
    );
    assert_eq!(
        (stats.delivered, stats.dead_lettered),
        (gateway_total as u64, 0)
    );

    for key in &sessions[..3] {
        let got = &delivered[*key];
        let unique: BTreeSet<String> = got.iter().cloned().collect();
        assert_eq!(unique.len(), got.len(), "{key}: delivered twice");
        assert_eq!(
            &unique, &dispatched[key],
            "{key}: not exactly its own delegations"
        );
    }
    // The CLI's completions are all on the queue, once each, unrouted.
    let cli: Vec<String> = queue
        .drain()
        .into_iter()
        .map(|event| match event {
            Event::AsyncDelegation(e) if e.session_key.is_empty() && e.routing().is_empty() => {
                e.delegation_id.unwrap().to_string()
            }
            other => panic!("unexpected event left on the queue: {other:?}"),
        })
        .collect();
    let cli_unique: BTreeSet<String> = cli.iter().cloned().collect();
    assert_eq!(cli_unique.len(), cli.len());
    assert_eq!(&cli_unique, &dispatched[""]);
}
