//! A fleet on the local PostgreSQL server, as four processes: two gateways and two
//! workers on one completion ledger. Both gateways can serve Telegram and Slack; the
//! first to start holds both platforms' leases and the other stands by. The workers
//! dispatch delegations for chats on both platforms. Midway the owning gateway is killed
//! (SIGKILL); the standby takes its chats over once the leases run out, and the
//! completions the dead one never acknowledged are offered to it. The example prints who
//! delivered what, checks that every completion reached a chat, and exits by itself.
//!
//! ```text
//! cargo run -p gateway --example fleet
//! FLEET_POSTGRES="host=db.internal user=fleet dbname=agents" cargo run -p gateway --example fleet
//! ```
//!
//! (The server: `FLEET_POSTGRES`, else `host=127.0.0.1 user=postgres dbname=test`. The
//! example makes a schema of its own and drops it at the end.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use async_delegation::{DelegationEngine, DelegationResult, DelegationSpec};
use gateway::{DeliveryRouter, InternalMessage, Platform};
use process_registry::{
    CompletionQueue, DeliveryState, LedgerConfig, PostgresLedger, PostgresOptions, RowQuery,
};

/// Instance heartbeats and platform leases: short, so the takeover shows within seconds.
const LEASE: Duration = Duration::from_secs(2);
const PER_WORKER: usize = 8;
const GUARD: Duration = Duration::from_secs(90);

fn server() -> String {
    std::env::var("FLEET_POSTGRES")
        .unwrap_or_else(|_| "host=127.0.0.1 user=postgres dbname=test".to_owned())
}

fn open(schema: &str, instance: &str) -> CompletionQueue {
    let options = PostgresOptions::default()
        .with_schema(schema.to_owned())
        .with_connections(2)
        .with_instance_lease(LEASE);
    let ledger = PostgresLedger::connect_with(&server(), options)
        .unwrap_or_else(|error| panic!("the PostgreSQL ledger ({}): {error}", server()));
    CompletionQueue::builder(ledger)
        .instance(instance)
        .config(LedgerConfig::default().with_sweep_interval(Duration::from_millis(500)))
        .open()
        .unwrap()
}

/// A gateway process: a fleet router that "sends" each completion by printing it.
fn gateway(schema: &str, name: &str) {
    let queue = open(schema, name);
    let mut router = DeliveryRouter::builder(queue).fleet(LEASE);
    for platform in [Platform::Telegram, Platform::Slack] {
        let name = name.to_owned();
        router = router.adapter(platform, move |message: &InternalMessage| {
            std::thread::sleep(Duration::from_millis(150)); // the platform's API call
            println!(
                "delivered {} to {} chat {} by {name}{}",
                message.idempotency_key,
                message.source.platform,
                message.source.chat_id,
                if message.possible_redelivery {
                    " (possible redelivery)"
                } else {
                    ""
                }
            );
            Ok(())
        });
    }
    let router = router.start().unwrap();
    // One round of taking leases, so that "ready" says what this gateway holds.
    let ownership = router.ownership().expect("a fleet router");
    ownership.renew_now().unwrap();
    println!("ready, holding {:?}", ownership.held());
    std::thread::sleep(GUARD);
}

/// A worker process: runs subagents for chats on both platforms.
fn worker(schema: &str, name: &str) {
    let engine = DelegationEngine::new(open(schema, name));
    for n in 0..PER_WORKER {
        let platform = if n % 2 == 0 { "telegram" } else { "slack" };
        let spec = DelegationSpec::new(format!("task {n} of {name}"))
            .with_session_key(format!("agent:main:{platform}:dm:{}", 100 + n % 3));
        let summary = format!("{name} finished task {n}");
        let outcome = engine.dispatch(
            spec,
            move || {
                std::thread::sleep(Duration::from_millis(300 + 150 * (n as u64 % 4)));
                Ok(DelegationResult::completed(summary))
            },
            None,
            PER_WORKER,
        );
        assert!(outcome.is_dispatched());
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(GUARD);
}

/// One of the fleet's processes; its stdout lines go to `lines`, tagged with its name.
struct Process {
    name: &'static str,
    child: Child,
}

impl Process {
    fn start(
        role: &str,
        name: &'static str,
        schema: &str,
        lines: &mpsc::Sender<(&'static str, String)>,
    ) -> Process {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([role, name, schema])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let _ = lines.send((name, line));
            }
        });
        Process { name, child }
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

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["gateway", name, schema] => return gateway(schema, name),
        ["worker", name, schema] => return worker(schema, name),
        _ => {}
    }
    let schema = format!("fleet_example_{}", std::process::id());
    let observer = open(&schema, "fleet-observer");
    let (send, lines) = mpsc::channel::<(&'static str, String)>();
    let wait_for = |who: &str, what: &str| {
        let guard = Instant::now() + GUARD;
        loop {
            let left = guard.saturating_duration_since(Instant::now());
            let (from, line) = lines.recv_timeout(left).expect("the fleet went quiet");
            if line.starts_with("delivered") || line.starts_with("ready") {
                println!("  {from}: {line}");
            }
            if from == who && line.contains(what) {
                return;
            }
        }
    };

    let mut gateway_a = Process::start("gateway", "gateway-a", &schema, &send);
    wait_for("gateway-a", "ready");
    let gateway_b = Process::start("gateway", "gateway-b", &schema, &send);
    wait_for("gateway-b", "ready");
    println!("gateway-a took the leases first; gateway-b stands by for the same platforms");
    let workers = [
        Process::start("worker", "worker-1", &schema, &send),
        Process::start("worker", "worker-2", &schema, &send),
    ];
    println!(
        "{} and {} dispatch {PER_WORKER} delegations each",
        workers[0].name, workers[1].name
    );

    // A few deliveries, then the owner dies.
    for _ in 0..3 {
        wait_for("gateway-a", "delivered");
    }
    gateway_a.kill();
    println!("killed gateway-a (SIGKILL); gateway-b takes its chats over within {LEASE:?}");

    // Every completion of both workers reaches a chat.
    let expected = 2 * PER_WORKER;
    let guard = Instant::now() + GUARD;
    let delivered = || {
        observer
            .rows(&RowQuery {
                delivery: Some(DeliveryState::Delivered),
                ..RowQuery::default()
            })
            .unwrap()
            .len()
    };
    while delivered() < expected {
        assert!(
            Instant::now() < guard,
            "only {} of {expected} delivered",
            delivered()
        );
        while let Ok((_, line)) = lines.recv_timeout(Duration::from_millis(100)) {
            if line.starts_with("delivered") {
                println!("  {line}");
            }
        }
    }
    let leases = observer.backend().scope_leases().unwrap();
    for lease in &leases {
        println!(
            "{} is held by {} (epoch {})",
            lease.scope, lease.holder, lease.epoch
        );
        assert_eq!(
            lease.holder, "gateway-b",
            "the standby took every platform over"
        );
    }
    println!(
        "all {expected} completions delivered; every chat now served by {}",
        gateway_b.name
    );
    drop(workers);
    drop(gateway_b);
    drop(observer);
    if let Ok(mut client) = postgres::Client::connect(&server(), postgres::NoTls) {
        let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
    }
}
