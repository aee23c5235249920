//! A fleet on one PostgreSQL ledger, as real processes: three workers that dispatch
//! delegations for sessions on three platforms, and two gateways whose routers serve all
//! three platforms as each other's standby (a lease per platform). Processes are killed
//! with SIGKILL at random and restarted under a new instance id. At the end every
//! completion was delivered by a gateway — once by idempotency key (a repeat only ever
//! flagged as a possible redelivery) — every running row of a killed worker ended
//! `unknown`, no row is left running, pending or dead, and each platform whose owner was
//! killed changed hands (its lease's epoch grew) to a live gateway.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::io::{BufRead as _, Write as _};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_delegation::{DelegationEngine, DelegationResult, DelegationSpec};
use gateway::{DeliveryRouter, InternalMessage, Platform};
use process_registry::{
    CompletionQueue, LedgerConfig, PostgresLedger, PostgresOptions, RowQuery, RunState,
};
use rand::RngExt as _;

#[path = "../../crates/process-registry/tests/pg_support/mod.rs"]
mod pg_support;

use pg_support::{params, Schema};

const ROLE: &str = "FLEET_ROLE";
const SCHEMA: &str = "FLEET_SCHEMA";
const INSTANCE: &str = "FLEET_INSTANCE";
const LOG: &str = "FLEET_LOG";
const PLATFORMS: [&str; 3] = ["telegram", "slack", "discord"];
/// Delegations each worker process dispatches before it idles.
const PER_WORKER: usize = 40;
/// Instance heartbeats and platform leases: short, so takeovers come within the test.
const LEASE: Duration = Duration::from_secs(1);
/// Only a guard against hangs.
const GUARD: Duration = Duration::from_secs(120);

fn options(schema: &str) -> PostgresOptions {
    PostgresOptions::default()
        .with_schema(schema.to_owned())
        .with_connections(3)
        .with_instance_lease(LEASE)
}

fn open_queue(schema: &str, instance: &str) -> CompletionQueue {
    let ledger = PostgresLedger::connect_with(&params(), options(schema)).unwrap();
    CompletionQueue::builder(ledger)
        .instance(instance)
        // Recovery of dead instances (their running rows become `unknown`) at each sweep.
        .config(LedgerConfig::default().with_sweep_interval(Duration::from_millis(300)))
        .open()
        .unwrap()
}

/// A worker: dispatches [`PER_WORKER`] delegations, up to 4 running at once (each runs
/// 100–400 ms), for sessions on every platform; then says so and idles until killed.
fn worker(schema: &str, instance: &str) {
    let queue = open_queue(schema, instance);
    let engine = DelegationEngine::new(queue);
    let mut rng = rand::rng();
    let mut sent = 0;
    while sent < PER_WORKER {
        let platform = PLATFORMS[rng.random_range(0..PLATFORMS.len())];
        let session = format!("agent:main:{platform}:dm:{}", rng.random_range(0..4));
        let run_for = Duration::from_millis(rng.random_range(100..400));
        let summary = format!("done by {instance}");
        let outcome = engine.dispatch(
            DelegationSpec::new("fleet task").with_session_key(session),
            move || {
                std::thread::sleep(run_for);
                Ok(DelegationResult::completed(summary))
            },
            None,
            4,
        );
        if outcome.is_dispatched() {
            sent += 1;
        } else {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    println!("worker-dispatched-all");
    std::thread::sleep(GUARD);
}

/// A gateway: a fleet router with an adapter for every platform, each delivery one line
/// (`key redelivery instance`) appended to the shared log before it is acked.
fn gateway(schema: &str, instance: &str, log: &str) {
    let queue = open_queue(schema, instance);
    let log = Arc::new(Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap(),
    ));
    let mut builder = DeliveryRouter::builder(queue).fleet(LEASE);
    for platform in PLATFORMS {
        let log = Arc::clone(&log);
        let instance = instance.to_owned();
        builder = builder.adapter(
            Platform::builtin(platform).unwrap(),
            move |message: &InternalMessage| {
                // A platform's send takes a while: kills land mid-delivery too.
                std::thread::sleep(Duration::from_millis(rand::rng().random_range(2..15)));
                let line = format!(
                    "{} {} {instance}\n",
                    message.idempotency_key,
                    u8::from(message.possible_redelivery)
                );
                // One write per line, appended: a kill never leaves half a line.
                log.lock().unwrap().write_all(line.as_bytes())?;
                Ok(())
            },
        );
    }
    let router = builder.start().unwrap();
    println!("gateway-ready");
    std::thread::sleep(GUARD);
    drop(router);
}

/// Run by the fleet test as each of its processes (never on its own).
#[test]
#[ignore = "a process of the fleet test, not a test of its own"]
fn fleet_process() {
    let var = |name| std::env::var(name).expect("run by the fleet test");
    let (schema, instance) = (var(SCHEMA), var(INSTANCE));
    match var(ROLE).as_str() {
        "worker" => worker(&schema, &instance),
        "gateway" => gateway(&schema, &instance, &var(LOG)),
        other => panic!("no role {other}"),
    }
}

/// A process of the fleet, killed however the test ends.
struct Process {
    child: Child,
    role: &'static str,
    instance: String,
    /// The worker said it dispatched everything.
    idle: Arc<std::sync::atomic::AtomicBool>,
}

impl Process {
    fn start(role: &'static str, instance: String, schema: &str, log: &str) -> Process {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "fleet_process",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE, role)
            .env(SCHEMA, schema)
            .env(INSTANCE, &instance)
            .env(LOG, log)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = if role == "gateway" {
            "gateway-ready"
        } else {
            ""
        };
        if !ready.is_empty() {
            assert!(
                lines.any(|line| line.is_ok_and(|line| line.contains(ready))),
                "{instance} never started"
            );
        }
        let idle = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let said = Arc::clone(&idle);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if line.contains("worker-dispatched-all") {
                    said.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
        });
        Process {
            child,
            role,
            instance,
            idle,
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn a_fleet_under_random_kills_delivers_every_completion_to_its_owner_once() {
    let schema = Schema::new("pgtest", "fleet");
    let log_dir = std::env::temp_dir().join(format!("fleet-{}", std::process::id()));
    std::fs::create_dir_all(&log_dir).unwrap();
    let log = log_dir.join("deliveries.log");
    let _ = std::fs::remove_file(&log);
    let log_path = log.to_str().unwrap().to_owned();
    // The ledger's schema first, so that five processes do not race to make it.
    let observer = open_queue(&schema.0, "fleet-observer");

    let mut generation = 0;
    let mut name = |role: &str, n: usize| {
        generation += 1;
        format!("{role}-{n}-g{generation}")
    };
    let mut processes: Vec<Process> = Vec::new();
    for n in 0..2 {
        processes.push(Process::start(
            "gateway",
            name("gateway", n),
            &schema.0,
            &log_path,
        ));
    }
    for n in 0..3 {
        processes.push(Process::start(
            "worker",
            name("worker", n),
            &schema.0,
            &log_path,
        ));
    }

    // Kills at random times, each followed by a restart under a new instance id: in turn
    // a random worker that still dispatches (so the kill finds delegations running) and
    // a random gateway that holds platforms (so they must change hands).
    let mut rng = rand::rng();
    let mut killed_workers: Vec<String> = Vec::new();
    let mut killed_owner = false;
    for round in 0..8 {
        std::thread::sleep(Duration::from_millis(rng.random_range(200..700)));
        let leases = observer.backend().scope_leases().unwrap();
        let holds = |instance: &str| leases.iter().any(|lease| lease.holder == instance);
        let candidates: Vec<usize> = (0..processes.len())
            .filter(|&i| {
                let process = &processes[i];
                if round % 2 == 0 {
                    process.role == "worker"
                        && !process.idle.load(std::sync::atomic::Ordering::SeqCst)
                } else {
                    process.role == "gateway" && holds(&process.instance)
                }
            })
            .collect();
        if candidates.is_empty() {
            continue;
        }
        let victim = candidates[rng.random_range(0..candidates.len())];
        let (role, old) = (processes[victim].role, processes[victim].instance.clone());
        let held: Vec<&str> = leases
            .iter()
            .filter(|lease| lease.holder == old)
            .map(|lease| lease.scope.as_str())
            .collect();
        processes[victim].kill();
        if role == "worker" {
            killed_workers.push(old);
        } else if !held.is_empty() {
            killed_owner = true;
        }
        let n = if role == "gateway" {
            victim
        } else {
            victim - 2
        };
        processes[victim] = Process::start(role, name(role, n), &schema.0, &log_path);
    }

    // Every worker dispatches all it has to, then everything drains.
    let guard = Instant::now() + GUARD;
    let all_rows = || observer.rows(&RowQuery::default()).unwrap();
    loop {
        let workers_idle = processes
            .iter()
            .filter(|p| p.role == "worker")
            .all(|p| p.idle.load(std::sync::atomic::Ordering::SeqCst));
        let rows = all_rows();
        let open = rows.iter().any(|row| {
            row.run_state == Some(RunState::Running)
                || !matches!(
                    row.delivery,
                    Some(process_registry::DeliveryState::Delivered) | None
                )
        });
        if workers_idle && !open && !rows.is_empty() {
            break;
        }
        assert!(
            Instant::now() < guard,
            "the fleet did not drain: {:?}",
            rows.iter()
                .filter(|row| row.delivery != Some(process_registry::DeliveryState::Delivered))
                .map(|row| (&row.key, &row.run_state, row.delivery, &row.owner))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let rows = all_rows();
    for mut process in processes.drain(..) {
        process.kill();
    }

    // Every completion delivered; repeats only as flagged possible redeliveries.
    let text = std::fs::read_to_string(&log).unwrap();
    let mut deliveries: HashMap<&str, Vec<bool>> = HashMap::new();
    for line in text.lines() {
        let mut parts = line.split(' ');
        let (key, redelivery) = (parts.next().unwrap(), parts.next().unwrap() == "1");
        deliveries.entry(key).or_default().push(redelivery);
    }
    let keys: HashSet<&str> = rows.iter().map(|row| row.key.as_str()).collect();
    assert_eq!(rows.len(), keys.len());
    let delivered: HashSet<&str> = deliveries.keys().copied().collect();
    assert_eq!(
        delivered, keys,
        "every recorded completion was delivered, nothing else"
    );
    for (key, attempts) in &deliveries {
        assert!(
            attempts.iter().skip(1).all(|&flagged| flagged),
            "{key} was delivered again without the possible-redelivery flag: {attempts:?}"
        );
    }
    let expected_at_least = 3 * PER_WORKER;
    assert!(rows.len() >= expected_at_least, "{} rows", rows.len());

    // The running rows of killed workers ended `unknown`; a live worker's never did.
    let unknown: Vec<&str> = rows
        .iter()
        .filter(|row| row.run_state == Some(RunState::Unknown))
        .map(|row| row.owner.as_str())
        .collect();
    for owner in &unknown {
        assert!(
            killed_workers.iter().any(|k| k == owner),
            "{owner} was never killed"
        );
    }
    if !killed_workers.is_empty() {
        assert!(
            !unknown.is_empty(),
            "killed mid-run, yet no delegation ended unknown"
        );
    }

    // Ownership moved: every platform is held by a gateway, and a killed owner's
    // platforms went to another holder (a greater epoch).
    let leases = observer.backend().scope_leases().unwrap();
    assert_eq!(leases.len(), PLATFORMS.len(), "{leases:?}");
    for lease in &leases {
        assert!(lease.holder.starts_with("gateway-"), "{lease:?}");
    }
    if killed_owner {
        assert!(leases.iter().any(|lease| lease.epoch > 1), "{leases:?}");
    }
    eprintln!(
        "fleet: {} completions, {} deliveries, {} unknown, killed workers {:?}, leases {:?}",
        rows.len(),
        text.lines().count(),
        unknown.len(),
        killed_workers,
        leases
            .iter()
            .map(|lease| (&lease.scope, &lease.holder, lease.epoch))
            .collect::<Vec<_>>()
    );
    let _ = std::fs::remove_dir_all(&log_dir);
}
