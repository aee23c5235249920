//! Fences around the agent implementation's code.
//!
//! Everything the tool calls on a [`ChildBackend`](crate::ChildBackend),
//! [`ChildAgent`](crate::ChildAgent) or [`ParentAgent`](crate::ParentAgent), every error
//! it turns into text and every value of theirs it drops goes through this module, so a
//! panic in user code becomes a value here and never unwinds into the caller's turn.
//! [`call`] is the one fence; the rest are built on it.

use std::error::Error;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use async_delegation::{panic_message, DelegationResult};

use crate::{
    ChildAgent, ChildBackend, ChildTask, DelegationConfig, ParentAgent, ToolError, ToolTexts,
};

/// Runs `code`, turning a panic into its message ([`panic_message`] also fences the
/// payload's drop).
///
/// Unwind safety is asserted: after a panic the tool only reads its own values, and the
/// user value that panicked is either dropped or treated as failed.
pub(crate) fn call<T>(code: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(code)).map_err(panic_message)
}

/// Drops `value` inside a fence; a panicking `Drop` is logged as `what` and swallowed.
pub(crate) fn drop_quietly<T>(value: T, what: &'static str) {
    if let Err(message) = call(move || drop(value)) {
        tracing::warn!(panic = %message, "dropping {what} panicked");
    }
}

/// The text of a user error, and the error dropped, both fenced. `Err` carries the
/// message of a panic in its `Display`; a panic in its `Drop` is logged and swallowed.
pub(crate) fn error_text(error: Box<dyn Error + Send + Sync>) -> Result<String, String> {
    let text = call(|| error.to_string());
    drop_quietly(error, "an error");
    text
}

/// Owns a user value and drops it inside a fence, wherever the owner goes out of scope
/// (also inside closures handed to the engine, which may drop them on any thread).
pub(crate) struct DropFenced<T> {
    value: Option<T>,
    what: &'static str,
}

impl<T> DropFenced<T> {
    /// Wraps `value`; `what` names it in the log line of a panicking drop.
    pub(crate) fn new(value: T, what: &'static str) -> Self {
        DropFenced {
            value: Some(value),
            what,
        }
    }
}

impl<T> std::ops::Deref for DropFenced<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // `value` is `None` only inside `drop`.
        match &self.value {
            Some(value) => value,
            None => unreachable!("a DropFenced value is only taken by its drop"),
        }
    }
}

impl<T: Clone> Clone for DropFenced<T> {
    fn clone(&self) -> Self {
        DropFenced::new(T::clone(self), self.what)
    }
}

impl<T> Drop for DropFenced<T> {
    fn drop(&mut self) {
        if let Some(value) = self.value.take() {
            drop_quietly(value, self.what);
        }
    }
}

/// What a fenced call that may fail with a user error came to: the value, or the text
/// the model reads — the error's `Display`, or the text of a panic (in the call or in
/// that `Display`).
fn user_result<T>(
    outcome: Result<Result<T, Box<dyn Error + Send + Sync>>, String>,
    texts: &ToolTexts,
) -> Result<T, String> {
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error_text(error).unwrap_or_else(|m| texts.display_panicked(&m))),
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

    struct Loud;
    impl Drop for Loud {
        fn drop(&mut self) {
            panic!("drop exploded");
        }
    }

    #[derive(Debug)]
    struct Rude;
    impl std::fmt::Display for Rude {
        fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            panic!("display exploded")
        }
    }
    impl Error for Rude {}

    #[test]
    fn panics_become_values() {
        assert_eq!(call(|| 7), Ok(7));
        assert_eq!(call(|| -> u8 { panic!("boom") }), Err("boom".to_owned()));
        drop_quietly(Loud, "a loud value");
        drop(DropFenced::new(Loud, "a loud value"));
        let shared = DropFenced::new(std::sync::Arc::new(Loud), "a loud value");
        let clone = shared.clone();
        drop(shared);
        drop(clone);
        assert_eq!(
            error_text(Box::new(Rude)),
            Err("display exploded".to_owned())
        );
        assert_eq!(error_text("plain".into()), Ok("plain".to_owned()));
    }
}
