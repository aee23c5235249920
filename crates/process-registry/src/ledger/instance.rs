//! Who writes to a ledger, and whether that process is still alive.
//!
//! On one machine an instance is its pid, the process's start time and the machine's
//! boot id: a pid reused by a later process, or the same pid after a reboot, never looks
//! like the instance that wrote a row.

use std::sync::OnceLock;

/// Tells whether the instance that wrote a row is still alive.
///
/// [`CompletionQueue`](crate::CompletionQueue) asks it when it opens a ledger and on
/// every sweep, for each instance that owns running rows or claims. The default,
/// [`ProcessLiveness`], checks the processes of this machine.
pub trait Liveness: Send + Sync + 'static {
    /// `true` while `instance` may still be running. When in doubt, answer `true`: a live
    /// instance judged dead would have its running delegations reported `unknown`.
    fn is_alive(&self, instance: &str) -> bool;
}

/// Liveness of processes on this machine, from `/proc` (Linux): an instance
/// (`proc:{pid}:{start time}:{boot id}`) is alive when the machine has not rebooted since
/// (same boot id) and a process with that pid and that start time exists.
///
/// Elsewhere, and for instance ids it cannot read, it answers "alive": nothing is
/// recovered automatically rather than something alive being recovered.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessLiveness;

impl Liveness for ProcessLiveness {
    fn is_alive(&self, instance: &str) -> bool {
        let Some((pid, start, boot)) = parse(instance) else {
            return true;
        };
        let Some(this_boot) = boot_id() else {
            return true;
        };
        if boot != this_boot {
            return false;
        }
        match process_start(pid) {
            Some(actual) => actual == start,
            None => !cfg!(target_os = "linux"),
        }
    }
}

/// The instance id of this process: `proc:{pid}:{start time}:{boot id}`.
pub fn current_instance() -> &'static str {
    static CURRENT: OnceLock<String> = OnceLock::new();
    CURRENT.get_or_init(|| {
        let pid = std::process::id();
        let start = process_start(pid).unwrap_or(0);
        let boot = boot_id().unwrap_or_else(|| "unknown".to_owned());
        format!("proc:{pid}:{start}:{boot}")
    })
}

fn parse(instance: &str) -> Option<(u32, u64, &str)> {
    let rest = instance.strip_prefix("proc:")?;
    let mut parts = rest.splitn(3, ':');
    let pid = parts.next()?.parse().ok()?;
    let start = parts.next()?.parse().ok()?;
    let boot = parts.next()?;
    (boot != "unknown").then_some((pid, start, boot))
}

fn boot_id() -> Option<String> {
    static BOOT: OnceLock<Option<String>> = OnceLock::new();
    BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|id| id.trim().to_owned())
            .filter(|id| !id.is_empty())
    })
    .clone()
}

/// The process's start time in clock ticks since boot (field 22 of `/proc/{pid}/stat`).
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or parentheses:
    // the fields after it start after the last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Field 3 is the first after the name; the start time is field 22.
    after_name.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_other_incarnations_are_not() {
        let me = current_instance();
        assert!(ProcessLiveness.is_alive(me), "{me}");
        if cfg!(target_os = "linux") {
            let (pid, start, boot) = parse(me).unwrap();
            assert!(!ProcessLiveness.is_alive(&format!("proc:{pid}:{}:{boot}", start + 1)));
            assert!(!ProcessLiveness.is_alive(&format!("proc:{pid}:{start}:another-boot")));
            // A pid that cannot exist (above the kernel's maximum).
            assert!(!ProcessLiveness.is_alive(&format!("proc:4294967295:{start}:{boot}")));
        }
        assert!(
            ProcessLiveness.is_alive("someone else's id"),
            "unreadable: alive"
        );
    }
}
