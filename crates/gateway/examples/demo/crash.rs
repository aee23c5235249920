//! Part two of the demonstration: the gateway crashes and comes back.
//!
//! The gateway runs in a child process (this program, started again with
//! `--crash-child`) on a SQLite completion ledger. It dispatches work for a Telegram DM
//! and a Discord thread; the Discord session is mid-turn, so its finished completions
//! wait in the ledger; two subagents are still running. Then the child is killed with
//! SIGKILL. A new child opens the same ledger: the two delegations whose owner died are
//! recorded `unknown` (never re-run), and every completion — finished or unknown — is
//! delivered to its own chat and thread exactly once.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use async_delegation::{DelegationEngine, DelegationResult, DelegationSpec};
use gateway::{
    DeliveryRouter, InternalMessage, Platform, SessionKey, SessionKeyOptions, SessionSource,
};
use process_registry::{
    ClaimFilter, CompletionQueue, DeliveryState, Event, RowQuery, RunState, SqliteLedger,
};

use super::DemoResult;

/// The flag that makes this program the gateway child.
pub(crate) const CHILD_FLAG: &str = "--crash-child";

fn sessions() -> (String, String) {
    let options = SessionKeyOptions::default();
    let telegram = SessionSource::new(Platform::Telegram, "12345").with_thread_id("678");
    let discord = SessionSource::new(Platform::Discord, "881")
        .with_chat_type("thread")
        .with_thread_id("t-42");
    (
        SessionKey::build(&telegram, &options).into_string(),
        SessionKey::build(&discord, &options).into_string(),
    )
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The child: `serve` dispatches and delivers until it is killed; `recover` delivers
/// everything left in the ledger and exits.
pub(crate) fn child(ledger: &Path, phase: &str) -> DemoResult<()> {
    let queue = CompletionQueue::builder(SqliteLedger::open(ledger)?).open()?;
    let (telegram_key, discord_key) = sessions();
    let adapter = |message: &InternalMessage| {
        let status = match &*message.event {
            Event::AsyncDelegation(event) => event.status.as_deref().unwrap_or_default(),
            _ => "",
        };
        say(&format!(
            "DELIVERED {} {} {} {} {} {}",
            message.idempotency_key,
            message.source.platform,
            message.source.chat_id,
            message.source.thread_id.as_deref().unwrap_or("-"),
            status,
            message.possible_redelivery
        ));
        if status == "unknown" && message.source.platform == Platform::Telegram {
            // One of them in full: the text the Telegram agent's new turn starts with.
            for line in message.text.lines() {
                say(&format!("  | {line}"));
            }
        }
        Ok(())
    };
    let router = DeliveryRouter::builder(queue.clone())
        .adapter(Platform::Telegram, adapter)
        .adapter(Platform::Discord, adapter)
        .start()?;
    if phase == "recover" {
        let deadline = Instant::now() + Duration::from_secs(10);
        while queue.count(&ClaimFilter::routed().including_restored()) > 0 {
            if Instant::now() > deadline {
                return Err("the recovered completions were not all delivered".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        router.stop();
        say("IDLE");
        return Ok(());
    }
    // The Discord agent is mid-turn (its user is still typing): its completions wait.
    let discord_turn = router.turn(discord_key.as_str());
    let engine = DelegationEngine::new(queue.clone());
    let plan = [
        (
            &telegram_key,
            "telegram",
            "Summarise yesterday's CI failures",
            0_u64,
        ),
        (&telegram_key, "telegram", "List the open pull requests", 0),
        (&discord_key, "discord", "Count the TODOs in crates/", 0),
        (&discord_key, "discord", "Find the slowest test", 0),
        (&telegram_key, "telegram", "Rebuild the search index", 600),
        (&discord_key, "discord", "Bisect the flaky test", 600),
    ];
    for (key, platform, goal, seconds) in plan {
        let summary = format!("{goal}: done.");
        let id = engine.try_dispatch(
            DelegationSpec::new(goal).with_session_key(key.as_str()),
            move || {
                std::thread::sleep(Duration::from_secs(seconds));
                Ok(DelegationResult::completed(summary))
            },
            None,
            6,
        )?;
        say(&format!("DISPATCHED {id} {platform} {goal}"));
    }
    // Ready to be killed: telegram's two quick ones delivered, discord's two waiting in
    // the ledger for the turn to end, two still running.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = queue.rows(&RowQuery::default())?;
        let running = rows
            .iter()
            .filter(|r| r.run_state == Some(RunState::Running))
            .count();
        let pending = rows
            .iter()
            .filter(|r| r.delivery == Some(DeliveryState::Pending))
            .count();
        let delivered = rows
            .iter()
            .filter(|r| r.delivery == Some(DeliveryState::Delivered))
            .count();
        if running == 2 && pending == 2 && delivered == 2 {
            say(&format!(
                "READY {running} running, {pending} pending, {delivered} delivered"
            ));
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "never ready: {running} running, {pending} pending, {delivered} delivered"
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Wait to be killed (the turn never ends in this process).
    std::thread::sleep(Duration::from_secs(60));
    drop(discord_turn);
    Err("the gateway child was not killed".into())
}

struct Outcome {
    platform: String,
    chat: String,
    thread: String,
    status: String,
    goal: String,
    deliveries: usize,
}

/// Starts the child, returns its output lines as they come.
fn spawn(ledger: &Path, phase: &str) -> DemoResult<(std::process::Child, mpsc::Receiver<String>)> {
    let mut child = Command::new(std::env::current_exe()?)
        .args([CHILD_FLAG, phase])
        .arg(ledger)
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    Ok((child, received))
}

/// Part two, the parent's side.
pub(crate) fn run(demo_dir: &Path) -> DemoResult<()> {
    let ledger = demo_dir.join("crash-ledger.sqlite3");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", ledger.display()));
    }
    println!("ledger: {} (SQLite, survives kill -9)", ledger.display());
    let mut outcomes: BTreeMap<String, Outcome> = BTreeMap::new();
    fn record(line: &str, outcomes: &mut BTreeMap<String, Outcome>) -> DemoResult<()> {
        let words: Vec<&str> = line.splitn(4, ' ').collect();
        if let ["DISPATCHED", id, platform, goal] = words.as_slice() {
            outcomes.insert(
                (*id).to_owned(),
                Outcome {
                    platform: (*platform).to_owned(),
                    chat: String::new(),
                    thread: String::new(),
                    status: "running".to_owned(),
                    goal: (*goal).to_owned(),
                    deliveries: 0,
                },
            );
        }
        let words: Vec<&str> = line.split(' ').collect();
        if let ["DELIVERED", id, platform, chat, thread, status, _redelivery] = words.as_slice() {
            let outcome = outcomes
                .get_mut(*id)
                .ok_or("a delivery nobody dispatched")?;
            if outcome.platform != *platform {
                return Err(
                    format!("{id} was delivered on {platform}, not {}", outcome.platform).into(),
                );
            }
            outcome.chat = (*chat).to_owned();
            outcome.thread = (*thread).to_owned();
            outcome.status = (*status).to_owned();
            outcome.deliveries += 1;
        }
        Ok(())
    }

    println!("  starting the gateway (child process): telegram 12345/678 and discord 881/t-42;");
    println!("  the discord session is mid-turn, so its completions wait");
    let (mut child, lines) = spawn(&ledger, "serve")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .map_err(|_| "the gateway child never got ready")?;
        record(&line, &mut outcomes)?;
        println!("  child> {line}");
        if line.starts_with("READY") {
            break;
        }
    }
    child.kill()?;
    child.wait()?;
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(2)) {
        record(&line, &mut outcomes)?;
        println!("  child> {line}");
    }
    println!(
        "  ** kill -9: the gateway died with 2 subagents running and 2 completions undelivered **"
    );

    println!("  starting the gateway again on the same ledger");
    let (mut child, lines) = spawn(&ledger, "recover")?;
    let status = child.wait()?;
    let mut idle = false;
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(2)) {
        idle |= line == "IDLE";
        record(&line, &mut outcomes)?;
        println!("  child> {line}");
    }
    if !status.success() || !idle {
        return Err(format!("the restarted gateway failed ({status})").into());
    }

    println!(
        "  {:<16} {:<10} {:<18} {:<10} {:<10} goal",
        "delegation", "platform", "chat/thread", "status", "delivered"
    );
    let mut unknown = 0;
    for (id, o) in &outcomes {
        println!(
            "  {id:<16} {:<10} {:<18} {:<10} {:<10} {}",
            o.platform,
            format!("{}/{}", o.chat, o.thread),
            o.status,
            format!("{}x", o.deliveries),
            o.goal
        );
        if o.deliveries != 1 {
            return Err(format!("{id} was delivered {} times", o.deliveries).into());
        }
        let place = match o.platform.as_str() {
            "telegram" => ("12345", "678"),
            _ => ("881", "t-42"),
        };
        if (o.chat.as_str(), o.thread.as_str()) != place {
            return Err(format!("{id} reached {}/{}, not its own chat", o.chat, o.thread).into());
        }
        unknown += usize::from(o.status == "unknown");
    }
    if outcomes.len() != 6 || unknown != 2 {
        return Err(format!(
            "{} delegations, {unknown} unknown: expected 6 and 2",
            outcomes.len()
        )
        .into());
    }
    println!("  every completion reached its own chat and thread exactly once; the two that were");
    println!("  running when the gateway died are `unknown` (recorded, never re-run)");
    Ok(())
}
