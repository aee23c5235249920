//! A tokio agent that delegates in the background and keeps talking: its subagent is an
//! async function that calls an OpenAI-compatible chat-completions endpoint when one is
//! configured (a scripted subagent otherwise), and its completions come back as new turns
//! through an async platform adapter.
//!
//! ```sh
//! cargo run --example async_agent -p gateway --features tokio
//! ```
//!
//! Environment (all optional):
//! - `OPENAI_BASE_URL` — the API's base, e.g. `https://api.openai.com/v1`, or a local
//!   server such as `http://localhost:11434/v1`; unset: the scripted subagent runs.
//! - `OPENAI_API_KEY` — sent as a bearer token when set.
//! - `OPENAI_MODEL` — the model (default `gpt-4o-mini`).
//!
//! It exits by itself: once every completion has reached the adapter, or with an error
//! after 60 seconds.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::Duration;

use async_delegation::{Cancellation, DelegationEngine, DelegationResult, RunnerError};
use delegate_tool::{
    delegate_task_async, AsyncChildAgent, AsyncChildBackend, BackendError, CallContext, ChildBuild,
    ChildRun, ChildTask, DelegateContext, DelegationConfig, ToolOutcome,
};
use gateway::{
    AdapterError, DeliveryRouter, InternalMessage, Platform, SessionKey, SessionKeyOptions,
    SessionSource,
};
use process_registry::{CompletionQueue, Text};
use serde_json::{json, Value};

/// Where the subagent's model is, when one is configured.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// The API base (`…/v1`).
    pub(crate) base_url: String,
    /// A bearer token, when the endpoint wants one.
    pub(crate) api_key: Option<String>,
    /// The model asked for.
    pub(crate) model: String,
}

impl Endpoint {
    /// From `OPENAI_BASE_URL`, `OPENAI_API_KEY` and `OPENAI_MODEL`; `None` when no base is
    /// set.
    pub(crate) fn from_env() -> Option<Endpoint> {
        let base_url = std::env::var("OPENAI_BASE_URL")
            .ok()
            .filter(|v| !v.trim().is_empty())?;
        Some(Endpoint {
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key: std::env::var("OPENAI_API_KEY")
                .ok()
                .filter(|v| !v.is_empty()),
            model: std::env::var("OPENAI_MODEL").unwrap_or_else(|_| "gpt-4o-mini".to_owned()),
        })
    }
}

/// A subagent: one chat-completions call for its task, or a scripted answer.
struct Subagent {
    endpoint: Option<Endpoint>,
    client: reqwest::Client,
}

impl AsyncChildAgent for Subagent {
    fn run(self: Arc<Self>, task: ChildTask, cancel: Cancellation) -> ChildRun {
        Box::pin(async move {
            let work = async {
                match &self.endpoint {
                    Some(endpoint) => ask(&self.client, endpoint, &task).await,
                    None => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(DelegationResult::completed(format!(
                            "(scripted subagent) looked into: {}",
                            task.goal
                        )))
                    }
                }
            };
            tokio::select! {
                result = work => result,
                () = cancel.cancelled() => Ok(DelegationResult::interrupted(
                    cancel.reason().unwrap_or("interrupted").to_owned(),
                )),
            }
        })
    }

    fn model(&self) -> Option<String> {
        self.endpoint.as_ref().map(|e| e.model.clone())
    }
}

/// One chat-completions request for `task`; the answer is the summary.
async fn ask(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    task: &ChildTask,
) -> Result<DelegationResult, RunnerError> {
    let mut prompt = task.goal.clone();
    if let Some(context) = &task.context {
        prompt.push_str("\n\nContext:\n");
        prompt.push_str(context);
    }
    let body = json!({
        "model": endpoint.model,
        "messages": [
            {"role": "system", "content": "You are a subagent. Do the task and answer with a short summary of the result."},
            {"role": "user", "content": prompt},
        ],
    });
    let mut request = client
        .post(format!("{}/chat/completions", endpoint.base_url))
        .json(&body);
    if let Some(key) = &endpoint.api_key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await?.error_for_status()?;
    let answer: Value = response.json().await?;
    let text = answer["choices"][0]["message"]["content"]
        .as_str()
        .ok_or("the endpoint answered without choices[0].message.content")?;
    let mut result = DelegationResult::completed(text);
    result.api_calls = Some(1);
    result.model = answer["model"].as_str().map(Text::from);
    Ok(result)
}

struct Backend {
    endpoint: Option<Endpoint>,
    client: reqwest::Client,
}

impl AsyncChildBackend for Backend {
    type Credentials = ();
    type Child = Subagent;

    fn resolve_credentials(
        &self,
        _: &CallContext,
        _: &DelegationConfig,
    ) -> Result<(), BackendError> {
        Ok(())
    }

    fn build_child(&self, _: &ChildTask, _: &(), _: &CallContext) -> ChildBuild<Subagent> {
        let child = Subagent {
            endpoint: self.endpoint.clone(),
            client: self.client.clone(),
        };
        Box::pin(async move { Ok(Arc::new(child)) })
    }
}

/// What a run of the example saw: the tool results the model read, and the new turns
/// that reached the chat.
#[derive(Debug)]
pub(crate) struct Report {
    /// The `delegate_task` results, in call order.
    pub(crate) tool_results: Vec<String>,
    /// The texts the adapter delivered, in delivery order.
    pub(crate) delivered: Vec<String>,
}

/// Runs the whole loop on the current runtime.
///
/// # Errors
/// When a delegation was refused, or the completions did not all arrive within 60 s.
pub(crate) async fn run(endpoint: Option<Endpoint>) -> Result<Report, Box<dyn std::error::Error>> {
    let queue = CompletionQueue::new();
    let engine = DelegationEngine::new(queue.clone());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(50))
        .build()?;
    let tools = DelegateContext::new_async(
        DelegationConfig::default(),
        engine.clone(),
        Backend { endpoint, client },
    );

    // The chat: a Telegram DM. Its adapter "sends" each new turn (here: into a channel).
    let (inbox, mut chat) = tokio::sync::mpsc::unbounded_channel::<InternalMessage>();
    let router = DeliveryRouter::builder(queue.clone())
        .async_adapter(Platform::Telegram, move |message: InternalMessage| {
            let inbox = inbox.clone();
            async move {
                // A real adapter awaits the platform's API here; `Ok` acks the completion.
                inbox
                    .send(message)
                    .map_err(|e| AdapterError::from(e.to_string()))
            }
        })
        .start_on(&tokio::runtime::Handle::current())?;
    let source = SessionSource::new(Platform::Telegram, "12345");
    let session = SessionKey::build(&source, &SessionKeyOptions::default());

    // The agent's turn: it delegates two tasks in the background and answers at once.
    let turn = router.turn(session.as_str());
    let call = CallContext::new(session.as_str());
    let mut tool_results = Vec::new();
    for goal in [
        "Summarise why a flaky test might pass locally but fail in CI",
        "List three ways to make a Rust test deterministic",
    ] {
        let arguments = json!({"goal": goal, "background": true}).to_string();
        let out = delegate_task_async(&arguments, &call, &tools).await;
        println!("tool result: {}", out.text);
        if let ToolOutcome::Rejected(error) = &out.outcome {
            return Err(format!("the delegation was refused: {error}").into());
        }
        tool_results.push(out.text);
    }
    println!("agent: I've started two background subagents; ask me anything meanwhile.");
    // The turn ends; the completions may now come back as new turns of this chat.
    drop(turn);

    let mut delivered = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while delivered.len() < tool_results.len() {
        let message = tokio::time::timeout_at(deadline, chat.recv())
            .await
            .map_err(|_| "the completions did not all arrive within 60 s")?
            .ok_or("the adapter went away")?;
        println!(
            "new turn in {} (chat {}):\n{}\n",
            message.session_key.as_str(),
            message.source.chat_id,
            message.text
        );
        delivered.push(message.text);
    }
    let stats = router.stop_async().await;
    println!(
        "router: {} delivered, {} dead letters",
        stats.delivered, stats.dead_lettered
    );
    engine
        .shutdown_async("the example is done", Duration::from_secs(5))
        .await;
    Ok(Report {
        tool_results,
        delivered,
    })
}

// Unused where this file is a module of the example's test.
#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = Endpoint::from_env();
    match &endpoint {
        Some(e) => println!("subagents call {} (model {})", e.base_url, e.model),
        None => println!("OPENAI_BASE_URL is not set: the subagents are scripted"),
    }
    let report = run(endpoint).await?;
    println!(
        "{} delegations dispatched, {} completions delivered as new turns",
        report.tool_results.len(),
        report.delivered.len()
    );
    Ok(())
}
