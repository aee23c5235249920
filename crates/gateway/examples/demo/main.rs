//! The whole loop, end to end, on this machine.
//!
//! A small gateway (a [`DeliveryRouter`] whose adapters print to this terminal) serves a
//! Telegram DM topic, a Discord thread and a CLI session. Their agents — scripted fake
//! parents, no model, no network — call the real `delegate_task` tool with
//! `background=true`. The subagents are real code in this file: they read and summarise
//! files of this repository. One of them crashes, one dispatch is refused at capacity,
//! an agent lists its running subagents and stops one (`action=list`, `action=stop`),
//! one wedges inside a tool call and is finalized `stalled` by the engine's stall monitor
//! (thresholds of milliseconds here), and every completion comes back as a new turn in the chat and
//! thread that dispatched it (the CLI's is drained from the queue by a CLI loop; the
//! gateway leaves it alone). A completion for a session that is mid-turn waits for the
//! turn to end.
//!
//! Part two shows a crash: the gateway runs in a child process on a SQLite completion
//! ledger, is killed with SIGKILL while subagents are still running and completions are
//! still undelivered, and starts again on the same ledger; every completion — `unknown`
//! for the ones that were running — reaches its own chat and thread exactly once.
//!
//! It ends with what part one recorded: the metrics (through an in-process recorder of the
//! example's — the libraries install none) and one delegation's trace as a tree, from its
//! dispatch to its delivered turn; an operator's `/agents` view is shown while two
//! completions wait for a busy chat.
//!
//! Both parts run on SQLite ledgers in `target/demo/` of the workspace (fresh each run).
//! Run it with `cargo run --release --example demo -p gateway`. It exits by itself
//! within a few seconds, and fails loudly if anything it shows does not happen.

mod crash;
mod observe;

use std::collections::BTreeMap;
use std::error::Error;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_delegation::{DelegationEngine, DelegationResult, RunnerError, StallPolicy};
use delegate_tool::{
    delegate_task, BackendError, BackgroundRun, ChildAgent, ChildBackend, ChildTask,
    DelegateContext, DelegationConfig, Parent, ParentAgent,
};
use gateway::{
    AdapterError, DeliveryRouter, InMemoryOriginStore, InternalMessage, Platform, PlatformAdapter,
    SessionKey, SessionKeyOptions, SessionSource,
};
use process_registry::{
    format_process_notification, ClaimFilter, CompletionQueue, Event, SqliteLedger,
};
use serde_json::{json, Value};

type DemoResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// Ceiling on every wait of the demo: only reached if something is broken.
const HANG_GUARD: Duration = Duration::from_secs(10);

fn main() -> DemoResult<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(crash::CHILD_FLAG) {
        let (phase, ledger) = (
            args.get(2).ok_or("no phase")?,
            args.get(3).ok_or("no ledger")?,
        );
        return crash::child(Path::new(ledger), phase);
    }
    let started = Instant::now();
    // The example's own metrics recorder and span capture (the libraries install none).
    let metrics = observe::install();
    let root = workspace_root()?;
    install_quiet_panic_hook();
    let demo_dir = root.join("target").join("demo");
    fs::create_dir_all(&demo_dir)?;
    let ledger_path = demo_dir.join("ledger.sqlite3");
    for suffix in ["", "-wal", "-shm"] {
        let _ = fs::remove_file(format!("{}{suffix}", ledger_path.display()));
    }

    println!("== Background delegation, end to end ==");
    println!("workspace: {}", root.display());
    println!("ledger:    {} (SQLite)", ledger_path.display());

    // ---- The shared pieces: one completion queue, one engine, one delegate_task tool.
    // The completion queue on a durable ledger: every dispatch and completion is a row in
    // this SQLite file before anyone sees it.
    let queue = CompletionQueue::builder(SqliteLedger::open(&ledger_path)?).open()?;
    // The stall monitor's thresholds, in milliseconds for the demo (450 s / 1200 s in a
    // tool / 120 s grace by default).
    let stalls = StallPolicy::default()
        .with_idle(Duration::from_millis(300))
        .with_in_tool(Duration::from_millis(400))
        .with_grace(Duration::from_millis(300));
    let engine = DelegationEngine::builder(queue.clone())
        .stall_policy(stalls)
        .build();
    let config = DelegationConfig::default();
    let start_line = Arc::new(StartLine::default());
    let watch_passes = Arc::new(AtomicUsize::new(0));
    let tool = DelegateContext::new(
        config,
        engine.clone(),
        RepoBackend {
            root: root.clone(),
            start_line: Arc::clone(&start_line),
            watch_passes: Arc::clone(&watch_passes),
        },
    );

    // ---- The chats this gateway serves.
    let options = SessionKeyOptions::default();
    let telegram = SessionSource::new(Platform::Telegram, "12345")
        .with_thread_id("678")
        .with_user_id("1001")
        .with_user_name("ada")
        .with_message_id("501");
    let discord = SessionSource::new(Platform::Discord, "881")
        .with_chat_type("thread")
        .with_thread_id("t-42")
        .with_user_id("2002")
        .with_user_name("bob")
        .with_message_id("9001");
    let telegram_key = SessionKey::build(&telegram, &options);
    let discord_key = SessionKey::build(&discord, &options);
    let origins = InMemoryOriginStore::new();
    origins.record(telegram_key.as_str(), telegram.clone());
    origins.record(discord_key.as_str(), discord.clone());

    // ---- The gateway: a delivery router with one terminal adapter per platform.
    let (delivered_tx, delivered) = mpsc::channel();
    let router = DeliveryRouter::builder(queue.clone())
        .origins(origins)
        .adapter(
            Platform::Telegram,
            TerminalAdapter::new(delivered_tx.clone()),
        )
        .adapter(Platform::Discord, TerminalAdapter::new(delivered_tx))
        .start()?;
    println!(
        "gateway: delivery router running on thread `{}`; adapters: telegram, discord (they print here)",
        gateway::DELIVERY_THREAD_NAME
    );
    println!("chats:   telegram DM 12345, topic 678   -> session {telegram_key}");
    println!("         discord thread t-42 in 881     -> session {discord_key}");
    println!("         CLI session                    -> session \"\" (CLI origin: unrouted)");
    println!(
        "engine:  at most {} background subagents at once",
        config.max_async_children
    );

    let telegram_agent = Agent::new("telegram", telegram_key.as_str());
    let discord_agent = Agent::new("discord", discord_key.as_str());
    let cli_agent = Agent::new("cli", "");
    let mut tally = Tally::default();

    // ---- Telegram: ada asks two things; the agent delegates both and keeps talking.
    step("telegram · ada: \"How big is the async engine? And index our docs while you're at it.\"");
    // The agent is mid-turn until it has answered ada: completions must wait for it.
    let telegram_turn = router.turn(telegram_key.as_str());
    let sources = telegram_agent.delegate(
        &tool,
        json!({
            "goal": "Summarise the Rust sources of crates/async-delegation/src",
            "context": "path: crates/async-delegation/src. Ada wants sizes, items and TODOs.",
            "toolsets": ["file"],
            "background": true,
        }),
    )?;
    tally.dispatched(&sources, "telegram 12345/678");
    let docs_index = telegram_agent.delegate(
        &tool,
        json!({
            "goal": "Index the headings of docs/*.md",
            "context": "path: docs. This subagent is the demo's crash: it panics after reading.",
            "toolsets": ["file"],
            "background": true,
        }),
    )?;
    tally.dispatched(&docs_index, "telegram 12345/678");

    // ---- Discord: bob wants a TODO watch while he refactors.
    step("discord · bob: \"Watch the repo for TODOs while I refactor, and count the words in our docs.\"");
    let watcher = discord_agent.delegate(
        &tool,
        json!({
            "goal": "Watch the repository for TODO and FIXME markers until told to stop",
            "context": "paths: crates, docs, tests",
            "toolsets": ["file", "terminal"],
            "background": true,
        }),
    )?;
    tally.dispatched(&watcher, "discord 881/t-42");
    let word_count_args = json!({
        "goal": "Count the words of every docs/*.md file",
        "context": "path: docs",
        "toolsets": ["file"],
        "background": true,
    });
    let refused = discord_agent.delegate(&tool, word_count_args.clone())?;
    let refusal = refused
        .error
        .clone()
        .ok_or("the engine accepted a fourth subagent at capacity 3")?;
    println!(
        "  the engine is full ({} running): the call is refused, not queued. Exact text:",
        engine.active_count()
    );
    println!("  > {refusal}");
    tally.dispatched(&refused, "discord 881/t-42");

    // ---- The Telegram subagents run; ada's turn is still going.
    step("telegram's subagents run while its agent is still answering ada");
    start_line.open();
    if !wait_until(|| router.waiting() == 2) {
        return Err("the telegram completions did not reach the gateway".into());
    }
    println!(
        "  {} completions for telegram are held by the gateway: nothing is spliced into the running turn",
        router.waiting()
    );
    println!("  an operator types /agents; the gateway answers from the engine and the ledger:");
    print_block(&gateway::agents_view(&engine, &queue)?.render());
    println!("  agent -> ada: \"On it: two background subagents are reading the repo. Ask me anything meanwhile.\"");
    println!("  (ada's turn ends)");
    telegram_turn.end();
    for mut delivery in expect_deliveries(&delivered, 2)? {
        delivery.place.push_str(" (after the turn)");
        tally.delivered(delivery);
    }

    // ---- Discord: bob says stop; the model lists its subagents and stops the watcher.
    step("discord · bob: \"Done refactoring, stop watching.\"");
    if !wait_until(|| watch_passes.load(Ordering::SeqCst) >= 1) {
        return Err("the watcher never ran".into());
    }
    let listed = discord_agent.control(&tool, json!({"action": "list"}))?;
    if listed["count"] != 1 || listed["subagents"][0]["subagent_id"] != json!(watcher.delegation_id)
    {
        return Err(format!("the discord agent's list is not its one watcher: {listed}").into());
    }
    let stop = json!({"action": "stop", "subagent_id": watcher.delegation_id});
    let stopped = discord_agent.control(&tool, stop)?;
    if stopped["status"] != "interrupt_requested" {
        return Err(format!("the stop was not accepted: {stopped}").into());
    }
    let stopped = expect_deliveries(&delivered, 1)?;
    expect_status(&stopped, "interrupted")?;
    stopped
        .into_iter()
        .for_each(|delivery| tally.delivered(delivery));
    step("discord · the agent retries the refused word count now that a slot is free");
    let word_count = discord_agent.delegate(&tool, word_count_args)?;
    tally.dispatched(&word_count, "discord 881/t-42");
    for delivery in expect_deliveries(&delivered, 1)? {
        tally.delivered(delivery);
    }

    // ---- Telegram: a subagent wedges inside a tool call; the engine gives up on it.
    step("telegram · ada: \"Fetch the upstream changelog too.\" (its subagent wedges in a tool call)");
    let changelog = telegram_agent.delegate(
        &tool,
        json!({
            "goal": "Fetch the upstream changelog",
            "context": "This subagent reports progress, enters a tool call and never comes back.",
            "background": true,
        }),
    )?;
    tally.dispatched(&changelog, "telegram 12345/678");
    println!("  engine: no progress for 400 ms inside a tool -> interrupt; still running 300 ms later -> finalized `stalled` by the engine");
    let stalled = expect_deliveries(&delivered, 1)?;
    expect_status(&stalled, "stalled")?;
    stalled
        .into_iter()
        .for_each(|delivery| tally.delivered(delivery));

    // ---- CLI: the same tool, no session key; the CLI loop drains its own completion.
    step("cli · user: \"Summarise the workspace manifest and the README.\"");
    let manifest = cli_agent.delegate(
        &tool,
        json!({
            "goal": "Summarise the workspace manifest and the README",
            "context": "files: Cargo.toml, README.md",
            "background": true,
        }),
    )?;
    tally.dispatched(&manifest, "cli");
    // The gateway never claims it: the CLI's completion is not its.
    println!("  gateway: never claims a CLI-origin completion; it waits for the CLI loop");
    let cli_event = cli_drain(&queue)?;
    if let Event::AsyncDelegation(event) = &cli_event {
        tally.delivered(Delivery {
            delegation_id: event.delegation_id.clone().unwrap_or_default().to_string(),
            status: event.status.as_deref().unwrap_or_default().to_owned(),
            place: "CLI drain (unrouted)".to_owned(),
        });
    }
    let text = format_process_notification(&cli_event).unwrap_or_default();
    println!("  cli loop took its completion off the queue; new CLI turn:");
    print_block(&text);

    // ---- Done: stop the gateway and show what happened.
    let stats = router.stop();
    step("summary");
    tally.print();
    println!(
        "router: delivered {}, dead letters {}, deferred {}, retried {}",
        stats.delivered, stats.dead_lettered, stats.deferred, stats.released
    );
    println!(
        "queue left: {} event(s); engine running: {}",
        queue.len(),
        engine.active_count()
    );

    // ---- Part two: the gateway dies and comes back.
    step("part two: kill -9 the gateway, start it again on the same ledger");
    crash::run(&demo_dir)?;

    // ---- What part one recorded: metrics, and one delegation's trace.
    step("metrics part one recorded (an in-process recorder of the example's)");
    observe::print_metrics(&metrics);
    if let Some(id) = &sources.delegation_id {
        step(&format!(
            "the trace of {id}, from dispatch to delivered turn"
        ));
        observe::print_trace(id)?;
    }

    println!("done in {:.2?}", started.elapsed());
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The parents: scripted agents that call the real tool.

/// A fake parent agent: it has no model; it calls `delegate_task` with the arguments a
/// model would have produced, as the gateway session it serves.
struct Agent {
    chat: &'static str,
    parent: Parent,
}

/// What a `delegate_task` call answered.
struct Dispatch {
    delegation_id: Option<String>,
    error: Option<String>,
}

impl Agent {
    fn new(chat: &'static str, session_key: &str) -> Agent {
        let parent = Parent::new(0)
            .with_session_id(format!("{chat}-session"))
            .with_session_key(session_key);
        Agent { chat, parent }
    }

    /// A control action (`list`, `stop`, …): the tool's answer, parsed.
    fn control(&self, tool: &DelegateContext<RepoBackend>, args: Value) -> DemoResult<Value> {
        println!("  {} agent -> delegate_task {args}", self.chat);
        let out = delegate_task(&args.to_string(), &self.parent, tool);
        println!("  tool -> {out}");
        Ok(serde_json::from_str(&out)?)
    }

    fn delegate(&self, tool: &DelegateContext<RepoBackend>, args: Value) -> DemoResult<Dispatch> {
        println!("  {} agent -> delegate_task {args}", self.chat);
        let out = delegate_task(&args.to_string(), &self.parent, tool);
        println!("  tool -> {out}");
        let parsed: Value = serde_json::from_str(&out)?;
        Ok(Dispatch {
            delegation_id: parsed["delegation_id"].as_str().map(str::to_owned),
            error: parsed["error"].as_str().map(str::to_owned),
        })
    }
}

// ---------------------------------------------------------------------------------------
// The gateway side: a terminal adapter and the CLI drain.

/// Where a completion ended up.
struct Delivery {
    delegation_id: String,
    status: String,
    place: String,
}

/// Prints each completion it is handed as a new turn of its chat.
struct TerminalAdapter {
    delivered: Mutex<Sender<Delivery>>,
}

impl TerminalAdapter {
    fn new(delivered: Sender<Delivery>) -> TerminalAdapter {
        TerminalAdapter {
            delivered: Mutex::new(delivered),
        }
    }
}

impl PlatformAdapter for TerminalAdapter {
    fn deliver(&self, message: &InternalMessage) -> Result<(), AdapterError> {
        let source = &message.source;
        let thread = source.thread_id.as_deref().unwrap_or("-");
        let place = format!(
            "{} chat {} thread {}",
            source.platform, source.chat_id, thread
        );
        {
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "  >> new turn -> {place} ({} {}), reply to message {}, session {}",
                source.chat_type,
                source.user_name.as_deref().unwrap_or("?"),
                message.reply_to_message_id.as_deref().unwrap_or("-"),
                message.session_key
            )?;
            for line in message.text.lines() {
                writeln!(out, "     | {line}")?;
            }
        }
        let (delegation_id, status) = match &*message.event {
            Event::AsyncDelegation(event) => (
                event
                    .delegation_id
                    .as_deref()
                    .unwrap_or_default()
                    .to_owned(),
                event.status.as_deref().unwrap_or_default().to_owned(),
            ),
            other => (other.type_name().to_owned(), String::new()),
        };
        self.delivered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(Delivery {
                delegation_id,
                status,
                place,
            })?;
        Ok(())
    }
}

/// The CLI loop: while its parent is idle it takes the CLI-origin completions off the
/// shared queue and leaves every other event for its owner (the gateway).
fn cli_drain(queue: &CompletionQueue) -> DemoResult<Event> {
    // Claims only what is its own; woken by the completion itself, no polling.
    let claim = queue
        .claim_timeout(&ClaimFilter::cli_completions(), HANG_GUARD)?
        .ok_or("the CLI completion never arrived")?;
    // Acknowledged once the new turn has its text: delivered.
    Ok(Arc::unwrap_or_clone(claim.ack()?))
}

/// Fails unless every delivery has `status`.
fn expect_status(deliveries: &[Delivery], status: &str) -> DemoResult<()> {
    match deliveries.iter().find(|delivery| delivery.status != status) {
        Some(other) => {
            Err(format!("expected a `{status}` completion, got `{}`", other.status).into())
        }
        None => Ok(()),
    }
}

fn expect_deliveries(delivered: &Receiver<Delivery>, n: usize) -> DemoResult<Vec<Delivery>> {
    (0..n)
        .map(|_| {
            delivered
                .recv_timeout(HANG_GUARD)
                .map_err(|_| "a completion was not delivered".into())
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The subagents: real work on this repository.

/// Lets the first subagents start together, so the capacity moment is reproducible.
#[derive(Default)]
struct StartLine {
    open: Mutex<bool>,
    opened: Condvar,
}

impl StartLine {
    fn open(&self) {
        *self.open.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.opened.notify_all();
    }

    fn wait(&self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let deadline = Instant::now() + HANG_GUARD;
        while !*open {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return;
            };
            open = self
                .opened
                .wait_timeout(open, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// Builds subagents that know a few jobs on the repository at `root`.
struct RepoBackend {
    root: PathBuf,
    start_line: Arc<StartLine>,
    watch_passes: Arc<AtomicUsize>,
}

#[derive(Clone, Copy)]
enum Job {
    RustSummary,
    IndexDocsThenCrash,
    WatchTodos,
    WordCount,
    Manifest,
    WedgedFetch,
}

impl Job {
    fn for_goal(goal: &str) -> Option<Job> {
        let jobs = [
            ("Summarise the Rust sources", Job::RustSummary),
            ("Index the headings", Job::IndexDocsThenCrash),
            ("Watch the repository", Job::WatchTodos),
            ("Count the words", Job::WordCount),
            ("Summarise the workspace manifest", Job::Manifest),
            ("Fetch the upstream changelog", Job::WedgedFetch),
        ];
        jobs.iter()
            .find(|(prefix, _)| goal.starts_with(prefix))
            .map(|(_, job)| *job)
    }
}

struct RepoChild {
    job: Job,
    root: PathBuf,
    start_line: Arc<StartLine>,
    watch_passes: Arc<AtomicUsize>,
    interrupted: AtomicBool,
    reason: Mutex<String>,
}

impl ChildBackend for RepoBackend {
    type Credentials = ();
    type Child = RepoChild;

    fn resolve_credentials(
        &self,
        _: &dyn ParentAgent,
        _: &DelegationConfig,
    ) -> Result<(), BackendError> {
        Ok(())
    }

    fn build_child(
        &self,
        task: &ChildTask,
        _: &(),
        _: &dyn ParentAgent,
    ) -> Result<Arc<RepoChild>, BackendError> {
        let job =
            Job::for_goal(&task.goal).ok_or("this demo backend has no subagent for that goal")?;
        Ok(Arc::new(RepoChild {
            job,
            root: self.root.clone(),
            start_line: Arc::clone(&self.start_line),
            watch_passes: Arc::clone(&self.watch_passes),
            interrupted: AtomicBool::new(false),
            reason: Mutex::new(String::new()),
        }))
    }
}

impl ChildAgent for RepoChild {
    fn run(&self, task: &ChildTask) -> Result<DelegationResult, RunnerError> {
        self.start_line.wait();
        let started = Instant::now();
        let mut result = match self.job {
            Job::RustSummary => {
                let dir = task_path(task).unwrap_or("crates");
                DelegationResult::completed(rust_summary(&self.root, dir)?)
            }
            Job::IndexDocsThenCrash => {
                let dir = self.root.join(task_path(task).unwrap_or("docs"));
                let headings = markdown_files(&dir)?
                    .iter()
                    .map(|file| {
                        Ok(fs::read_to_string(file)?
                            .lines()
                            .filter(|l| l.starts_with('#'))
                            .count())
                    })
                    .sum::<Result<usize, std::io::Error>>()?;
                panic!("subagent exploded after indexing {headings} headings (the demo's deliberate crash)");
            }
            Job::WatchTodos => self.watch_todos()?,
            Job::WordCount => {
                let dir = task_path(task).unwrap_or("docs");
                DelegationResult::completed(word_counts(&self.root, dir)?)
            }
            Job::Manifest => DelegationResult::completed(manifest_summary(&self.root)?),
            Job::WedgedFetch => return Err("the wedged fetch runs only in the background".into()),
        };
        result.api_calls = Some(0);
        result.duration_seconds =
            Some((started.elapsed().as_secs_f64() * 10_000.0).round() / 10_000.0);
        Ok(result)
    }

    fn model(&self) -> Option<String> {
        Some("repo-reader".to_owned())
    }

    fn reports_progress(&self) -> bool {
        matches!(self.job, Job::WedgedFetch)
    }

    fn run_background(
        &self,
        task: &ChildTask,
        run: &BackgroundRun,
    ) -> Result<DelegationResult, RunnerError> {
        let (Job::WedgedFetch, Some(progress)) = (self.job, run.progress()) else {
            return self.run(task);
        };
        // One model call, then a tool call that never returns — and it ignores its
        // interrupt. Its result, should it ever come, would be discarded.
        progress.touch();
        progress.enter_tool();
        std::thread::sleep(HANG_GUARD);
        Ok(DelegationResult::completed("fetched, far too late"))
    }

    fn interrupt(&self, reason: &str) {
        *self.reason.lock().unwrap_or_else(PoisonError::into_inner) = reason.to_owned();
        self.interrupted.store(true, Ordering::SeqCst);
    }
}

impl RepoChild {
    /// Re-scans the repository for markers until interrupted (or the hang guard).
    fn watch_todos(&self) -> Result<DelegationResult, RunnerError> {
        let deadline = Instant::now() + HANG_GUARD;
        let mut last = BTreeMap::new();
        let mut passes = 0;
        while !self.interrupted.load(Ordering::SeqCst) && Instant::now() < deadline {
            last = BTreeMap::new();
            for dir in ["crates", "docs", "tests"] {
                for file in source_files(&self.root.join(dir))? {
                    let text = fs::read_to_string(&file)?;
                    for marker in ["TODO", "FIXME"] {
                        let n = text.matches(marker).count();
                        if n > 0 {
                            *last.entry(marker).or_insert(0) += n;
                        }
                    }
                }
            }
            passes += 1;
            self.watch_passes.store(passes, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(5));
        }
        let seen = if last.is_empty() {
            "no TODO or FIXME markers".to_owned()
        } else {
            last.iter()
                .map(|(m, n)| format!("{n} {m}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let summary = format!(
            "watched crates/, docs/ and tests/ for {passes} pass(es); last pass saw {seen}"
        );
        if self.interrupted.load(Ordering::SeqCst) {
            let reason = self
                .reason
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            Ok(DelegationResult {
                summary: Some(summary.into()),
                ..DelegationResult::interrupted(reason)
            })
        } else {
            Ok(DelegationResult::completed(summary))
        }
    }
}

/// Files, lines, words, top-level items and TODOs of the `.rs` files under `dir`.
fn rust_summary(root: &Path, dir: &str) -> DemoResult<String> {
    let files = source_files(&root.join(dir))?;
    let mut items: BTreeMap<&str, usize> = BTreeMap::new();
    let (mut lines, mut words, mut todos) = (0, 0, 0);
    let mut largest = (String::new(), 0);
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "rs"))
    {
        let text = fs::read_to_string(file)?;
        let count = text.lines().count();
        lines += count;
        words += text.split_whitespace().count();
        todos += text.matches("TODO").count();
        if count > largest.1 {
            largest = (file_name(file), count);
        }
        for line in text.lines() {
            let line = line.strip_prefix("pub ").unwrap_or(line);
            for kind in [
                "fn", "struct", "enum", "trait", "impl", "mod", "const", "type", "use",
            ] {
                if line.starts_with(kind) && line[kind.len()..].starts_with([' ', '<']) {
                    *items.entry(kind).or_insert(0) += 1;
                }
            }
        }
    }
    let item_list = items
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(format!(
        "{dir}: {} Rust files, {lines} lines, {words} words.\nTop-level items: {item_list}.\nLargest file: {} ({} lines). TODO markers: {todos}.",
        files.len(),
        largest.0,
        largest.1
    ))
}

/// The repository-relative directory a task names in its context (`path: DIR.`): never
/// absolute and never climbing out of the repository.
fn task_path(task: &ChildTask) -> Option<&str> {
    let rest = task.context.as_deref()?.strip_prefix("path: ")?;
    let dir = rest.split(['.', ' ']).next()?;
    let inside = !dir.is_empty()
        && Path::new(dir)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    inside.then_some(dir)
}

/// Lines and words of every Markdown file in `dir`.
fn word_counts(root: &Path, dir: &str) -> DemoResult<String> {
    let mut report = Vec::new();
    let mut total = 0;
    for file in markdown_files(&root.join(dir))? {
        let text = fs::read_to_string(&file)?;
        let words = text.split_whitespace().count();
        total += words;
        report.push(format!(
            "{dir}/{}: {} lines, {words} words",
            file_name(&file),
            text.lines().count()
        ));
    }
    report.push(format!("total: {total} words in {} files", report.len()));
    Ok(report.join("\n"))
}

/// Members and dependencies of the workspace manifest, and the README's size.
fn manifest_summary(root: &Path) -> DemoResult<String> {
    let manifest = fs::read_to_string(root.join("Cargo.toml"))?;
    let mut section = "";
    let (mut members, mut deps) = (Vec::new(), Vec::new());
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if line.starts_with('"') && line.ends_with("\",") {
            members.push(line.trim_matches(|c| c == '"' || c == ','));
        } else if section == "[workspace.dependencies]" {
            if let Some((name, _)) = line.split_once(" = ") {
                deps.push(name);
            }
        }
    }
    let readme = fs::read_to_string(root.join("README.md"))?;
    Ok(format!(
        "Cargo.toml: {} members ({}); {} workspace dependencies ({}).\nREADME.md: {} lines, {} words.",
        members.len(),
        members.join(", "),
        deps.len(),
        deps.join(", "),
        readme.lines().count(),
        readme.split_whitespace().count()
    ))
}

fn markdown_files(dir: &Path) -> DemoResult<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|f| f.extension().is_some_and(|e| e == "md"));
    files.sort();
    Ok(files)
}

/// `.rs` and `.md` files under `dir`, recursively, skipping build output.
fn source_files(dir: &Path) -> Result<Vec<PathBuf>, std::io::Error> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "target") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs" || e == "md") {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Output and plumbing.

/// What the summary table shows, in dispatch order.
#[derive(Default)]
struct Tally {
    rows: Vec<(String, String, String, String)>,
}

impl Tally {
    fn dispatched(&mut self, dispatch: &Dispatch, chat: &str) {
        let (id, status, place) = match &dispatch.delegation_id {
            Some(id) => (id.clone(), "running".to_owned(), "-".to_owned()),
            None => (
                "(refused)".to_owned(),
                "rejected".to_owned(),
                "refusal returned to the agent".to_owned(),
            ),
        };
        self.rows.push((id, chat.to_owned(), status, place));
    }

    fn delivered(&mut self, delivery: Delivery) {
        if let Some(row) = self
            .rows
            .iter_mut()
            .find(|row| row.0 == delivery.delegation_id)
        {
            row.2 = delivery.status;
            row.3 = delivery.place;
        }
    }

    fn print(&self) {
        println!(
            "  {:<16} {:<20} {:<12} delivered where",
            "delegation", "chat", "status"
        );
        for (id, chat, status, place) in &self.rows {
            println!("  {id:<16} {chat:<20} {status:<12} {place}");
        }
    }
}

fn step(title: &str) {
    println!("\n-- {title}");
}

fn print_block(text: &str) {
    for line in text.lines() {
        println!("     | {line}");
    }
}

fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + HANG_GUARD;
    while !condition() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// The workspace root: two levels above this crate's manifest.
fn workspace_root() -> DemoResult<PathBuf> {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = crate_dir
        .ancestors()
        .find(|dir| {
            fs::read_to_string(dir.join("Cargo.toml"))
                .is_ok_and(|text| text.contains("[workspace]"))
        })
        .ok_or("no workspace Cargo.toml above the gateway crate")?;
    Ok(root.to_path_buf())
}

/// A subagent's panic is caught by the engine and becomes its completion; print one line
/// instead of the default backtrace hint.
fn install_quiet_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        eprintln!(
            "  (thread `{}` panicked: {message})",
            thread.name().unwrap_or("unnamed")
        );
    }));
}
