//! Dispatch-to-claim latency across processes on the PostgreSQL ledger: a dispatcher
//! process (this binary, re-run as a child) dispatches a delegation whose runner returns
//! at once each time the parent asks on its stdin; the parent, a consumer already
//! waiting in `claim_timeout` on its own handle, times from the ask to holding the claim
//! (the child's two commits, the server's notification, the parent's listener waking its
//! consumer, the claim's statement). Beside it, measured in the same run: the floors — a
//! ping through the child's pipes, and one commit of a one-row insert from the parent.
//!
//! `cargo bench -p async-delegation --bench fleet_latency` (optionally `-- ROUNDS`,
//! default 300; the server: `LEDGER_TEST_POSTGRES`, else the local test server). Prints
//! p50/p90/p99/max. Not criterion: criterion cannot time across processes.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use async_delegation::{DelegationEngine, DelegationResult, DelegationSpec};
use common::report;
use process_registry::{ClaimFilter, CompletionQueue, PostgresLedger, PostgresOptions};

const CHILD: &str = "FLEET_LATENCY_SCHEMA";

fn server() -> String {
    std::env::var("LEDGER_TEST_POSTGRES")
        .unwrap_or_else(|_| "host=127.0.0.1 user=postgres dbname=test".to_owned())
}

fn queue(schema: &str, instance: &str) -> CompletionQueue {
    let options = PostgresOptions::default().with_schema(schema.to_owned());
    let ledger = PostgresLedger::connect_with(&server(), options).unwrap();
    CompletionQueue::builder(ledger)
        .instance(instance)
        .open()
        .unwrap()
}

/// The child: one dispatch per `go`, an answer per `ping`.
fn dispatcher(schema: &str) {
    let engine = DelegationEngine::new(queue(schema, "bench-dispatcher"));
    println!("ready");
    for line in std::io::stdin().lock().lines().map_while(Result::ok) {
        match line.as_str() {
            "go" => {
                let outcome = engine.dispatch(
                    DelegationSpec::new("latency").with_session_key("agent:main:telegram:dm:1"),
                    || Ok(DelegationResult::completed("done")),
                    None,
                    usize::MAX,
                );
                assert!(outcome.is_dispatched());
            }
            "ping" => println!("pong"),
            _ => return,
        }
    }
}

fn main() {
    if let Ok(schema) = std::env::var(CHILD) {
        return dispatcher(&schema);
    }
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(300);
    let schema = format!("bench_fleet_latency_{}", std::process::id());
    let consumer = queue(&schema, "bench-consumer");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD, &schema)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ask = child.stdin.take().unwrap();
    let mut answers = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(answers.next().unwrap().unwrap(), "ready");
    let mut client = postgres::Client::connect(&server(), postgres::NoTls).unwrap();
    client
        .batch_execute(&format!("CREATE TABLE {schema}.floor (n bigint)"))
        .unwrap();
    let filter = ClaimFilter::routed();
    let (mut latency, mut pipe, mut commit) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0..rounds + 20 {
        let started = Instant::now();
        writeln!(ask, "go").unwrap();
        let claim = consumer
            .claim_timeout(&filter, Duration::from_secs(10))
            .unwrap()
            .expect("the completion");
        let spent = started.elapsed();
        claim.ack().unwrap();

        let started = Instant::now();
        writeln!(ask, "ping").unwrap();
        assert_eq!(answers.next().unwrap().unwrap(), "pong");
        let piped = started.elapsed();

        let started = Instant::now();
        client
            .execute(
                &format!("INSERT INTO {schema}.floor VALUES ($1)"),
                &[&(n as i64)],
            )
            .unwrap();
        let committed = started.elapsed();
        // The first rounds warm the connections and statement caches up.
        if n >= 20 {
            latency.push(spent.as_secs_f64() * 1e6);
            pipe.push(piped.as_secs_f64() * 1e6);
            commit.push(committed.as_secs_f64() * 1e6);
        }
    }
    drop(ask);
    let _ = child.wait();
    report("dispatch -> claim, across processes", latency);
    report("floor: ping through the pipes", pipe);
    report("floor: one insert committed", commit);
    drop(consumer);
    let _ = client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"));
}
