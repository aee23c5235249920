//! The agent that calls `delegate_task`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_delegation::fence;

use crate::ChildAgent;

/// The calling agent, as `delegate_task` sees it.
///
/// [`Parent`] is a ready-made implementation an agent can embed; implement this trait
/// directly when the agent already keeps this state elsewhere.
///
/// The tool fences every call it makes here; a panic never reaches its caller and
/// yields:
/// - `delegate_depth`, or `session_key` (read for a background call before the child is
///   built): the call is refused with [`ToolError::ParentFailed`](crate::ToolError::ParentFailed);
/// - `register_child`: that synchronous task fails like a build
///   (`Failed to build the subagent: panic: …`), and its child is unregistered and closed;
/// - `unregister_child`: logged after a synchronous run; for a background call the child
///   could not be detached, so the call fails like a build and the child is closed;
/// - `is_interrupted`: logged, and read as not interrupted.
pub trait ParentAgent: Send + Sync {
    /// The caller's delegation depth (0 for a top-level agent).
    fn delegate_depth(&self) -> u32;

    /// The caller's session id.
    fn session_id(&self) -> String;

    /// The gateway session key of the conversation being served now (`""` for the CLI).
    /// Read on the calling thread when a background task is dispatched.
    fn session_key(&self) -> String;

    /// `true` once the caller was asked to stop.
    fn is_interrupted(&self) -> bool;

    /// Adds `child` to the active children (under the caller's lock), so an interrupt of
    /// the caller reaches it. Must ignore a child that is already registered (the same
    /// allocation, [`Arc::ptr_eq`]).
    fn register_child(&self, child: Arc<dyn ChildAgent>);

    /// Removes every registration of `child` (under the caller's lock); `true` when it
    /// was registered.
    fn unregister_child(&self, child: &Arc<dyn ChildAgent>) -> bool;
}

/// A cloneable parent handle: depth, session id and key, an interrupt flag and the
/// active children under their own lock. Clones share the state.
///
/// ```
/// use delegate_tool::{Parent, ParentAgent};
///
/// let parent = Parent::new(0).with_session_id("sess").with_session_key("agent:main:telegram:dm:1");
/// assert_eq!(parent.session_key(), "agent:main:telegram:dm:1");
/// assert_eq!(parent.interrupt("user pressed stop"), 0); // no children yet
/// assert!(parent.is_interrupted());
/// parent.clear_interrupt();
/// assert!(!parent.is_interrupted());
/// ```
#[derive(Clone)]
pub struct Parent {
    inner: Arc<ParentInner>,
}

struct ParentInner {
    depth: u32,
    session_id: Mutex<String>,
    session_key: Mutex<String>,
    interrupted: AtomicBool,
    children: Mutex<Vec<Arc<dyn ChildAgent>>>,
}

impl std::fmt::Debug for Parent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parent")
            .field("depth", &self.inner.depth)
            .field("session_id", &self.session_id())
            .field("session_key", &self.session_key())
            .field("interrupted", &self.is_interrupted())
            .field("active_children", &self.active_child_count())
            .finish()
    }
}

impl Parent {
    /// A parent at this delegation depth, with empty session id and key (CLI origin).
    pub fn new(depth: u32) -> Self {
        Parent {
            inner: Arc::new(ParentInner {
                depth,
                session_id: Mutex::new(String::new()),
                session_key: Mutex::new(String::new()),
                interrupted: AtomicBool::new(false),
                children: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Sets the session id.
    pub fn with_session_id(self, session_id: impl Into<String>) -> Self {
        *lock(&self.inner.session_id) = session_id.into();
        self
    }

    /// Sets the session key.
    pub fn with_session_key(self, session_key: impl Into<String>) -> Self {
        self.set_session_key(session_key);
        self
    }

    /// Changes the session key (a gateway agent serving a new turn).
    pub fn set_session_key(&self, session_key: impl Into<String>) {
        *lock(&self.inner.session_key) = session_key.into();
    }

    /// Sets the interrupt flag and interrupts every active child with `reason`; returns
    /// how many children were signalled. Never panics: the children are called outside
    /// the lock and each call is fenced — a child whose `interrupt` panics is logged and
    /// not counted. The snapshot's handles are dropped fenced too: a synchronous child
    /// that the interrupt ends is unregistered meanwhile, so the snapshot may hold its
    /// last handle.
    pub fn interrupt(&self, reason: &str) -> usize {
        self.inner.interrupted.store(true, Ordering::SeqCst);
        let mut signalled = 0;
        for child in self.active_children() {
            match fence::call(|| child.interrupt(reason)) {
                Ok(()) => signalled += 1,
                Err(message) => tracing::warn!(panic = %message, "a subagent's interrupt panicked"),
            }
            fence::drop_logged(child, "a subagent");
        }
        signalled
    }

    /// Clears the interrupt flag (a new turn starts).
    pub fn clear_interrupt(&self) {
        self.inner.interrupted.store(false, Ordering::SeqCst);
    }

    /// A snapshot of the active children.
    pub fn active_children(&self) -> Vec<Arc<dyn ChildAgent>> {
        lock(&self.inner.children).clone()
    }

    /// How many children are active.
    pub fn active_child_count(&self) -> usize {
        lock(&self.inner.children).len()
    }

    /// `true` when `child` (the same allocation) is among the active children.
    pub fn has_active_child(&self, child: &Arc<dyn ChildAgent>) -> bool {
        lock(&self.inner.children)
            .iter()
            .any(|c| Arc::ptr_eq(c, child))
    }
}

impl ParentAgent for Parent {
    fn delegate_depth(&self) -> u32 {
        self.inner.depth
    }

    fn session_id(&self) -> String {
        lock(&self.inner.session_id).clone()
    }

    fn session_key(&self) -> String {
        lock(&self.inner.session_key).clone()
    }

    fn is_interrupted(&self) -> bool {
        self.inner.interrupted.load(Ordering::SeqCst)
    }

    fn register_child(&self, child: Arc<dyn ChildAgent>) {
        let mut children = lock(&self.inner.children);
        if !children.iter().any(|c| Arc::ptr_eq(c, &child)) {
            children.push(child);
        }
    }

    fn unregister_child(&self, child: &Arc<dyn ChildAgent>) -> bool {
        let removed = {
            let mut children = lock(&self.inner.children);
            let before = children.len();
            let (gone, kept): (Vec<_>, Vec<_>) =
                children.drain(..).partition(|c| Arc::ptr_eq(c, child));
            *children = kept;
            debug_assert!(children.len() + gone.len() == before);
            gone
        };
        // The removed handles are dropped outside the lock (never the last ones: the
        // caller holds `child`).
        !removed.is_empty()
    }
}

impl Drop for ParentInner {
    fn drop(&mut self) {
        // Children still registered when the last parent handle goes may hold their last
        // handle here.
        let children = std::mem::take(self.children.get_mut().unwrap_or_else(|p| p.into_inner()));
        drop_handles(children);
    }
}

/// Drops child handles one at a time, each inside a fence: a panicking `Drop` of one is
/// logged and neither escapes nor unwinds through the drop of the others.
fn drop_handles(handles: Vec<Arc<dyn ChildAgent>>) {
    for handle in handles {
        fence::drop_logged(handle, "a subagent");
    }
}

/// A poisoned lock only means another thread panicked while holding it; the data (a
/// list of handles, a string) is still consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_delegation::{DelegationResult, RunnerError};

    #[derive(Default)]
    struct Probe {
        reasons: Mutex<Vec<String>>,
        explode: bool,
    }

    impl ChildAgent for Probe {
        fn run(&self, _: &crate::ChildTask) -> Result<DelegationResult, RunnerError> {
            Ok(DelegationResult::default())
        }
        fn interrupt(&self, reason: &str) {
            assert!(!self.explode, "interrupt exploded");
            self.reasons.lock().unwrap().push(reason.to_owned());
        }
    }

    #[test]
    fn register_is_idempotent_and_unregister_removes_the_same_allocation_only() {
        let parent = Parent::new(0);
        let a: Arc<dyn ChildAgent> = Arc::new(Probe::default());
        let b: Arc<dyn ChildAgent> = Arc::new(Probe::default());
        parent.register_child(Arc::clone(&a));
        parent.register_child(Arc::clone(&a));
        parent.register_child(Arc::clone(&b));
        assert_eq!(parent.active_child_count(), 2);
        assert!(parent.unregister_child(&a));
        assert!(!parent.unregister_child(&a));
        assert!(!parent.has_active_child(&a) && parent.has_active_child(&b));
    }

    /// A child whose `Drop` panics.
    struct Bomb;
    impl ChildAgent for Bomb {
        fn run(&self, _: &crate::ChildTask) -> Result<DelegationResult, RunnerError> {
            Ok(DelegationResult::default())
        }
        fn interrupt(&self, _: &str) {}
    }
    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("child exploded on drop");
        }
    }

    #[test]
    fn children_still_registered_are_dropped_fenced_with_the_last_parent_handle() {
        let parent = Parent::new(0);
        parent.register_child(Arc::new(Bomb));
        parent.register_child(Arc::new(Bomb));
        // Two still registered when the last parent handle goes.
        let clone = parent.clone();
        drop(parent);
        assert_eq!(clone.active_child_count(), 2);
        drop(clone);
    }

    #[test]
    fn interrupt_sets_the_flag_and_reaches_children_isolating_a_panicking_one() {
        let parent = Parent::new(0).with_session_id("s").with_session_key("k");
        let good = Arc::new(Probe::default());
        let bad: Arc<dyn ChildAgent> = Arc::new(Probe {
            explode: true,
            ..Probe::default()
        });
        parent.register_child(good.clone());
        parent.register_child(bad);
        assert_eq!(parent.interrupt("stop"), 1);
        assert!(parent.is_interrupted());
        assert_eq!(*good.reasons.lock().unwrap(), ["stop"]);
        assert_eq!(
            (parent.session_id(), parent.session_key()),
            ("s".to_owned(), "k".to_owned())
        );
        // Clones share state.
        let clone = parent.clone();
        clone.clear_interrupt();
        assert!(!parent.is_interrupted());
        assert_eq!(clone.delegate_depth(), 0);
    }
}
