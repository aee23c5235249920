//! The operator's `/agents` view on a real engine and ledger: a running delegation with
//! its progress, a completion waiting for its chat, a dead letter with its reason — typed,
//! and rendered as a short text.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use async_delegation::{Controls, DelegationEngine, DelegationResult, DelegationSpec};
use process_registry::{ClaimFilter, CompletionQueue};

const GUARD: Duration = Duration::from_secs(20);

#[test]
fn the_view_shows_what_runs_waits_and_died() {
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    // Waiting: a completion for a Telegram chat that no router serves yet.
    let waiting = engine
        .try_dispatch(
            DelegationSpec::new("Done quickly").with_session_key("agent:main:telegram:dm:12345"),
            || Ok(DelegationResult::completed("done")),
            None,
            4,
        )
        .unwrap();
    // Dead: a CLI completion whose consumer gave up on it.
    let dead = engine
        .try_dispatch(
            DelegationSpec::new("Given up"),
            || Ok(DelegationResult::completed("unreadable")),
            None,
            4,
        )
        .unwrap();
    let claim = queue
        .claim_timeout(&ClaimFilter::cli_completions(), GUARD)
        .unwrap()
        .expect("the CLI completion");
    claim.dead("the terminal was closed").unwrap();
    // Running: a child that reports progress from inside a tool call.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let progress = engine.progress();
    progress.enter_tool();
    let running = engine
        .try_dispatch_with(
            DelegationSpec::new("Summarise the logs").with_session_key("agent:main:discord:dm:7"),
            move || {
                held.recv().ok();
                Ok(DelegationResult::completed("late"))
            },
            Controls::default().with_progress(progress),
            4,
        )
        .unwrap();
    // Until the quick one has completed (its ledger row exists from its dispatch on, so
    // waiting for the row let the view see it still running): once the engine stops
    // counting it, its completion is on the queue.
    let deadline = std::time::Instant::now() + GUARD;
    while engine.active_count() > 1 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::yield_now();
    }

    let view = gateway::agents_view(&engine, &queue).unwrap();
    assert_eq!(view.running.len(), 1);
    assert_eq!(view.running[0].delegation_id, running);
    assert_eq!(view.running[0].goal, "Summarise the logs");
    assert_eq!(view.running[0].in_tool, Some(true));
    assert!(view.running[0].seconds_since_progress.is_some());
    assert_eq!(view.waiting.len(), 1);
    assert_eq!(view.waiting[0].key, waiting);
    assert_eq!(view.waiting[0].session_key, "agent:main:telegram:dm:12345");
    assert_eq!(view.waiting[0].attempts, 0);
    assert_eq!(view.dead.len(), 1);
    assert_eq!(view.dead[0].key, dead);
    assert_eq!(
        view.dead[0].reason.as_deref(),
        Some("the terminal was closed")
    );
    assert_eq!(view.dead[0].attempts, 1);

    let text = view.render();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "Background agents: 1 running, 1 waiting, 1 dead.");
    assert!(
        lines[1].starts_with(&format!("running  {running}  ")),
        "{text}"
    );
    assert!(lines[1].ends_with(", in a tool)"), "{text}");
    assert!(
        lines[1].contains("\"Summarise the logs\" (quiet "),
        "{text}"
    );
    assert!(
        lines[2].starts_with(&format!("waiting  {waiting}  ")),
        "{text}"
    );
    assert!(
        lines[2].ends_with("for agent:main:telegram:dm:12345"),
        "{text}"
    );
    assert!(
        lines[3].starts_with(&format!("dead     {dead}  ")),
        "{text}"
    );
    assert!(
        lines[3].ends_with("for the CLI (1 attempt: the terminal was closed)"),
        "{text}"
    );
    assert_eq!(lines.len(), 4);
    release.send(()).unwrap();
}
