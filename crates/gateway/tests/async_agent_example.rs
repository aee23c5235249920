//! The `async_agent` example end to end, with its real HTTP path: a small local server
//! speaks the OpenAI chat-completions protocol (so CI needs no network), the example's
//! subagents call it, and their answers come back through the async adapter as new turns.
//! The scripted path (no endpoint configured) runs too. Bounded by the example's own 60 s
//! limit; nothing measures time.
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../examples/async_agent.rs"]
mod example;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves `POST /v1/chat/completions` until the test ends: checks the request and
/// answers with the request's last message echoed; records what it was asked.
async fn chat_server() -> (String, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (asked, requests) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let asked = asked.clone();
            tokio::spawn(async move {
                let mut received = Vec::new();
                let mut buffer = [0_u8; 4096];
                let (head, body_start) = loop {
                    let n = stream.read(&mut buffer).await.unwrap();
                    assert!(n > 0, "the client closed before a whole request");
                    received.extend_from_slice(&buffer[..n]);
                    if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                        break (String::from_utf8_lossy(&received[..at]).to_string(), at + 4);
                    }
                };
                let length: usize = head
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().unwrap())
                    })
                    .expect("a content-length");
                while received.len() < body_start + length {
                    let n = stream.read(&mut buffer).await.unwrap();
                    assert!(n > 0);
                    received.extend_from_slice(&buffer[..n]);
                }
                let request: Value =
                    serde_json::from_slice(&received[body_start..body_start + length]).unwrap();
                assert!(
                    head.starts_with("POST /v1/chat/completions HTTP/1.1"),
                    "{head}"
                );
                assert!(
                    head.to_ascii_lowercase()
                        .contains("authorization: bearer test-key"),
                    "{head}"
                );
                let goal = request["messages"][1]["content"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                asked.send(request).unwrap();
                let answer = json!({
                    "model": "local-test-model",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("answer to: {goal}")}}],
                })
                .to_string();
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                stream.write_all(response.as_bytes()).await.unwrap();
                stream.shutdown().await.unwrap();
            });
        }
    });
    (format!("http://{address}/v1"), requests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_calls_the_endpoint_and_delivers_its_answers() {
    let (base_url, mut requests) = chat_server().await;
    let report = example::run(Some(example::Endpoint {
        base_url,
        api_key: Some("test-key".into()),
        model: "test-model".into(),
    }))
    .await
    .unwrap();
    assert_eq!(report.tool_results.len(), 2);
    assert!(report
        .tool_results
        .iter()
        .all(|text| text.starts_with(r#"{"status":"dispatched","delegation_id":"deleg_"#)));
    let mut delivered = report.delivered.clone();
    delivered.sort();
    assert_eq!(delivered.len(), 2);
    for goal in [
        "List three ways to make a Rust test deterministic",
        "Summarise why a flaky test might pass locally but fail in CI",
    ] {
        assert!(
            delivered
                .iter()
                .any(|text| text.contains(&format!("answer to: {goal}"))
                    && text.contains(&format!("Original goal: {goal}"))),
            "{goal}: {delivered:?}"
        );
    }
    for _ in 0..2 {
        let request = requests.recv().await.unwrap();
        assert_eq!(request["model"], "test-model");
        assert_eq!(request["messages"][0]["role"], "system");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_example_runs_scripted_without_an_endpoint() {
    let report = example::run(None).await.unwrap();
    assert_eq!(report.delivered.len(), 2);
    assert!(report
        .delivered
        .iter()
        .all(|text| text.contains("(scripted subagent) looked into:")));
}
