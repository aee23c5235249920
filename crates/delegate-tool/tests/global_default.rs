//! `DelegateContext::with_global_engine`: background completions land on the process-wide
//! queue. Its own test binary, as it touches globals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{parse, FakeBackend, HANG_GUARD};
use delegate_tool::{delegate_task, DelegateContext, DelegationConfig, Parent};
use process_registry::Event;

#[test]
fn global_engine_context_dispatches_on_the_default_queue() {
    let ctx =
        DelegateContext::with_global_engine(DelegationConfig::default(), FakeBackend::instant());
    let parent = Parent::new(0).with_session_key("agent:main:slack:group:c1");
    let out = delegate_task(r#"{"goal": "global", "background": true}"#, &parent, &ctx);
    let id = parse(&out)["delegation_id"].as_str().unwrap().to_owned();
    let queue = process_registry::global().completion_queue();
    let Some(Event::AsyncDelegation(event)) = queue.take_timeout(HANG_GUARD) else {
        panic!("no completion on the global queue");
    };
    assert_eq!(event.delegation_id.as_deref(), Some(id.as_ref()));
    assert_eq!(event.session_key, "agent:main:slack:group:c1");
    assert_eq!(event.summary.as_deref(), Some("done: global"));
}
