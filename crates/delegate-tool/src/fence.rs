//! The tool's fences around the agent implementation's code.
//!
//! Everything the tool calls on a [`ChildBackend`](crate::ChildBackend),
//! [`ChildAgent`](crate::ChildAgent) or [`ParentAgent`](crate::ParentAgent), and every
//! error of theirs it turns into text, goes through this module. The generic fences —
//! [`call`], [`display`], [`drop_logged`], [`DropFenced`] — are the workspace's one
//! implementation in [`async_delegation::fence`]; what is here only binds them to the
//! tool's traits and to the texts ([`ToolTexts`]) a failure is told in.

use std::error::Error;
use std::sync::Arc;

use async_delegation::fence::{call, display, drop_logged, DropFenced};
use async_delegation::DelegationResult;

use crate::{
    BackgroundRun, ChildAgent, ChildBackend, ChildTask, DelegationConfig, ParentAgent, ToolError,
    ToolTexts,
};

/// What a fenced call that may fail with a user error came to: the value, or the text
/// the model reads — the error's `Display`, or the text of a panic (in the call or in
/// that `Display`).
fn user_result<T>(
    outcome: Result<Result<T, Box<dyn Error + Send + Sync>>, String>,
    texts: &ToolTexts,
) -> Result<T, String> {
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => {
            // Formatted by reference and dropped apart, so a panicking `Display` and a
            // panicking `Drop` never meet.
            let text = display(&*error).unwrap_or_else(|m| texts.display_panicked(&m));
            drop_logged(error, "an error");
            Err(text)
        }
        Err(message) => Err(texts.panicked(&message)),
    }
}

/// [`ChildBackend::resolve_credentials`], fenced; the credentials are dropped fenced too.
pub(crate) fn resolve_credentials<B: ChildBackend>(
    backend: &B,
    parent: FencedParent<'_>,
    config: &DelegationConfig,
) -> Result<DropFenced<B::Credentials>, String> {
    let resolved = user_result(
        call(|| backend.resolve_credentials(parent.agent, config)),
        parent.texts,
    )?;
    Ok(DropFenced::new(resolved, "the subagent credentials"))
}

/// [`ChildBackend::build_child`], fenced.
pub(crate) fn build_child<B: ChildBackend>(
    backend: &B,
    task: &ChildTask,
    credentials: &B::Credentials,
    parent: FencedParent<'_>,
) -> Result<FencedChild, String> {
    let child = user_result(
        call(|| backend.build_child(task, credentials, parent.agent)),
        parent.texts,
    )?;
    let child: Arc<dyn ChildAgent> = child;
    Ok(FencedChild {
        child: DropFenced::new(child, "a subagent"),
    })
}

/// A built child whose every method, and the drop of its handle, is fenced. Clones share
/// the child.
#[derive(Clone)]
pub(crate) struct FencedChild {
    child: DropFenced<Arc<dyn ChildAgent>>,
}

impl FencedChild {
    /// The child's own handle, as the parent's active children hold it.
    pub(crate) fn handle(&self) -> &Arc<dyn ChildAgent> {
        &self.child
    }

    /// [`ChildAgent::run`]; `Err` is the text the model reads (the error's text, or the
    /// text of a panic in `run` or in that error's `Display`).
    pub(crate) fn run(
        &self,
        task: &ChildTask,
        texts: &ToolTexts,
    ) -> Result<DelegationResult, String> {
        user_result(call(|| self.child.run(task)), texts)
    }

    /// [`ChildAgent::run_background`]; errors as [`run`](Self::run).
    pub(crate) fn run_background(
        &self,
        task: &ChildTask,
        run: &BackgroundRun,
        texts: &ToolTexts,
    ) -> Result<DelegationResult, String> {
        user_result(call(|| self.child.run_background(task, run)), texts)
    }

    /// [`ChildAgent::accepts_steering`]; a panic is logged and reads as `false`.
    pub(crate) fn accepts_steering(&self) -> bool {
        ask("accepts_steering", || self.child.accepts_steering())
    }

    /// [`ChildAgent::reports_progress`]; a panic is logged and reads as `false`.
    pub(crate) fn reports_progress(&self) -> bool {
        ask("reports_progress", || self.child.reports_progress())
    }

    /// [`ChildAgent::interrupt`]; a panic is logged and swallowed.
    pub(crate) fn interrupt(&self, reason: &str) {
        if let Err(message) = call(|| self.child.interrupt(reason)) {
            tracing::warn!(panic = %message, "subagent interrupt panicked");
        }
    }

    /// [`ChildAgent::close`]; a panic is logged and swallowed.
    pub(crate) fn close(&self) {
        if let Err(message) = call(|| self.child.close()) {
            tracing::warn!(panic = %message, "subagent close panicked");
        }
    }

    /// [`ChildAgent::model`]; `Err` is the panic's message.
    pub(crate) fn model(&self) -> Result<Option<String>, String> {
        call(|| self.child.model())
    }
}

/// A child's capability question (`method`), fenced: a panic is logged and reads as
/// `false`. The sync and the async tool ask through it.
pub(crate) fn ask(method: &str, question: impl FnOnce() -> bool) -> bool {
    call(question).unwrap_or_else(|message| {
        tracing::warn!(panic = %message, method, "a subagent's capability question panicked");
        false
    })
}

/// The calling agent with every method fenced, and the texts its failures are told in.
#[derive(Clone, Copy)]
pub(crate) struct FencedParent<'a> {
    agent: &'a dyn ParentAgent,
    texts: &'a ToolTexts,
}

impl<'a> FencedParent<'a> {
    pub(crate) fn new(agent: &'a dyn ParentAgent, texts: &'a ToolTexts) -> Self {
        FencedParent { agent, texts }
    }

    /// [`ParentAgent::delegate_depth`]; a panic refuses the call.
    pub(crate) fn delegate_depth(&self) -> Result<u32, ToolError> {
        call(|| self.agent.delegate_depth()).map_err(|m| self.failed("delegate_depth", &m))
    }

    /// [`ParentAgent::session_key`]; a panic refuses the call.
    pub(crate) fn session_key(&self) -> Result<String, ToolError> {
        call(|| self.agent.session_key()).map_err(|m| self.failed("session_key", &m))
    }

    /// [`ParentAgent::is_interrupted`]; a panic is logged and reads as not interrupted
    /// (the parent's own interrupt still reaches the registered child).
    pub(crate) fn is_interrupted(&self) -> bool {
        call(|| self.agent.is_interrupted()).unwrap_or_else(|message| {
            tracing::warn!(panic = %message, "the parent's is_interrupted panicked");
            false
        })
    }

    /// [`ParentAgent::register_child`]; `Err` is the text of a panic.
    pub(crate) fn register_child(&self, child: &FencedChild) -> Result<(), String> {
        let handle = Arc::clone(child.handle());
        call(|| self.agent.register_child(handle)).map_err(|m| self.texts.panicked(&m))
    }

    /// [`ParentAgent::unregister_child`]; `Err` is the text of a panic.
    pub(crate) fn unregister_child(&self, child: &FencedChild) -> Result<(), String> {
        call(|| self.agent.unregister_child(child.handle()))
            .map(|_| ())
            .map_err(|m| self.texts.panicked(&m))
    }

    fn failed(&self, method: &'static str, message: &str) -> ToolError {
        ToolError::ParentFailed {
            method,
            reason: self.texts.panicked(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Rude;
    impl std::fmt::Display for Rude {
        fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            panic!("display exploded")
        }
    }
    impl Error for Rude {}
    impl Drop for Rude {
        fn drop(&mut self) {
            panic!("drop exploded")
        }
    }

    #[test]
    fn user_results_are_told_in_the_tool_texts() {
        let texts = ToolTexts {
            panic: "<panic {reason}>".into(),
            error_display_panic: "<display {reason}>".into(),
            ..ToolTexts::default()
        };
        let ok: Result<Result<u8, Box<dyn Error + Send + Sync>>, String> = Ok(Ok(7));
        assert_eq!(user_result(ok, &texts), Ok(7));
        assert_eq!(
            user_result::<u8>(Ok(Err("plain".into())), &texts),
            Err("plain".to_owned())
        );
        assert_eq!(
            user_result::<u8>(Ok(Err(Box::new(Rude))), &texts),
            Err("<display display exploded>".to_owned())
        );
        assert_eq!(
            user_result::<u8>(call(|| panic!("boom")), &texts),
            Err("<panic boom>".to_owned())
        );
    }

    /// One implementation of each fence: this crate catches no panic itself and defines
    /// no generic fence of its own; [`async_delegation::fence`] does both.
    #[test]
    fn the_generic_fences_are_the_shared_ones() {
        let source_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
        // Spelled in pieces so this test's own source does not match.
        let forbidden = [
            concat!("catch", "_unwind"),
            concat!("fn ", "drop_quietly"),
            concat!("fn ", "error_text"),
            concat!("struct ", "DropFenced"),
            concat!("fn ", "call<"),
        ];
        let mut found = Vec::new();
        for entry in std::fs::read_dir(source_dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for needle in forbidden {
                if text.contains(needle) {
                    found.push(format!("{}: {needle}", path.display()));
                }
            }
        }
        assert!(found.is_empty(), "{found:#?}");
    }
}
