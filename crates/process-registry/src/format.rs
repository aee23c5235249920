//! The notification formatter: the exact text that re-enters a conversation.
//!
//! Every literal here is part of the contract: an LLM reads it (prompts are tuned on these
//! exact bytes), and the Python harness this workspace reimplements produces the same
//! text. Texts are built into one `String` with `push_str`/`write!` because formatting runs
//! for every completion a parent sees.

use std::fmt::Write as _;

use crate::number::push_u64;
use crate::{
    AsyncDelegationEvent, BatchTaskResult, Event, ProcessCompletion, Text, WatchMatch, WireNumber,
};
use jiff::tz::TimeZone;
use jiff::Timestamp;

const SINGLE_INTRO: &str = "A background subagent you dispatched earlier has finished. You may have moved on since dispatching it; the full task source is below so you can act on the result or re-dispatch if things have changed.";
const TRUNCATED_STATUS: &str = " [TRUNCATED: hit max_iterations — work may be incomplete]";
const TRUNCATED_SUMMARY: &str = "[TRUNCATED — subagent hit its iteration cap; the summary below may be incomplete. Verify before relying on it, or re-dispatch the unfinished part.]";
const TRUNCATED_TASK: &str = ", TRUNCATED: hit max_iterations — work may be incomplete";
const DISPATCHED_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// Renders the text that re-enters the conversation for `event`, or `None` for an event
/// that produces none (an unknown `"type"`).
///
/// The `Dispatched:` line of an `async_delegation` block is shown in the system's local
/// time zone (`TZ`, else `/etc/localtime`), and the age of a delegation without a
/// `completed_at` is measured against the current time. Use
/// [`format_process_notification_in`] to choose both, for deterministic output.
///
/// ```
/// use process_registry::{format_process_notification, Event};
///
/// let event: Event = serde_json::from_str(
///     r#"{"type":"watch_overflow_tripped","message":"Watch output is arriving too fast."}"#,
/// )?;
/// assert_eq!(
///     format_process_notification(&event).as_deref(),
///     Some("[IMPORTANT: Watch output is arriving too fast.]"),
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn format_process_notification(event: &Event) -> Option<String> {
    render(event, || (TimeZone::system(), Timestamp::now()))
}

/// [`format_process_notification`] with an explicit time zone and an explicit "now".
///
/// `time_zone` is used for the `Dispatched:` line; `now` stands in for the current time
/// when an `async_delegation` event has no `completed_at` (its age is then
/// `now − dispatched_at`). With both fixed, the output is a pure function of its
/// arguments, which is what tests and embedders with their own clock want.
///
/// ```
/// use jiff::{tz::TimeZone, Timestamp};
/// use process_registry::{format_process_notification_in, AsyncDelegationEvent, Event};
///
/// let event = Event::AsyncDelegation(AsyncDelegationEvent {
///     delegation_id: Some("deleg_0badcafe".into()),
///     goal: "Summarise the report".into(),
///     status: Some("completed".into()),
///     summary: Some("Three findings.".into()),
///     dispatched_at: Some(1_700_000_000.into()),
///     completed_at: Some(1_700_000_045.into()),
///     ..Default::default()
/// });
/// let text = format_process_notification_in(&event, &TimeZone::UTC, Timestamp::UNIX_EPOCH)
///     .ok_or("no text")?;
/// assert!(text.contains("Dispatched: 2023-11-14 22:13:20 (45s ago)\n"));
/// assert!(text.ends_with("--- RESULT ---\nThree findings."));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn format_process_notification_in(
    event: &Event,
    time_zone: &TimeZone,
    now: Timestamp,
) -> Option<String> {
    render(event, || (time_zone.clone(), now))
}

/// Renders `event`; `clock` is asked for the time zone and "now" only when the text
/// needs them, so the system time zone is never looked up for watch or process events.
fn render(event: &Event, clock: impl FnOnce() -> (TimeZone, Timestamp)) -> Option<String> {
    match event {
        Event::WatchDisabled(e) => Some(important_message(e.message.as_deref())),
        Event::WatchOverflowTripped(e) | Event::WatchOverflowReleased(e) => {
            Some(important_message(e.message.as_deref()))
        }
        Event::WatchMatch(e) => Some(watch_match(e)),
        Event::Completion(e) => Some(process_completion(e)),
        Event::AsyncDelegation(e) => {
            let mut out = String::with_capacity(estimate_len(e));
            let dispatched = DispatchedLine::new(e, clock);
            if e.renders_as_batch() {
                batch_block(&mut out, e, dispatched.as_ref());
            } else {
                single_block(&mut out, e, dispatched.as_ref());
            }
            Some(out)
        }
        Event::Other(_) => None,
    }
}

/// `[IMPORTANT: {message}]`.
fn important_message(message: Option<&str>) -> String {
    let message = message.unwrap_or("");
    let mut out = String::with_capacity(message.len() + 13);
    out.push_str("[IMPORTANT: ");
    out.push_str(message);
    out.push(']');
    out
}

fn watch_match(e: &WatchMatch) -> String {
    let session_id = e.session_id.as_deref().unwrap_or("unknown");
    let command = e.command.as_deref().unwrap_or("unknown");
    let pattern = e.pattern.as_deref().unwrap_or("?");
    let output = e.output.as_deref().unwrap_or("");
    let mut out = String::with_capacity(
        120 + session_id.len() + command.len() + pattern.len() + output.len(),
    );
    out.push_str("[IMPORTANT: Background process ");
    out.push_str(session_id);
    out.push_str(" matched watch pattern \"");
    out.push_str(pattern);
    out.push_str("\".\nCommand: ");
    out.push_str(command);
    out.push_str("\nMatched output:\n");
    out.push_str(output);
    if let Some(suppressed) = e.suppressed.as_ref().filter(|n| n.is_positive()) {
        let _ = write!(
            out,
            "\n({suppressed} earlier matches were suppressed by rate limit)"
        );
    }
    out.push(']');
    out
}

fn process_completion(e: &ProcessCompletion) -> String {
    let session_id = e.session_id.as_deref().unwrap_or("unknown");
    let command = e.command.as_deref().unwrap_or("unknown");
    let output = e.output.as_deref().unwrap_or("");
    let exit_code = e.exit_code.as_ref();
    let exit_value = exit_code.map(WireNumber::as_f64);
    let mut out = String::with_capacity(140 + session_id.len() + command.len() + output.len());
    out.push_str("[IMPORTANT: Background process ");
    out.push_str(session_id);
    out.push(' ');
    match e.completion_reason.as_deref() {
        Some("killed") => {
            out.push_str("terminated by ");
            out.push_str(or_default(e.termination_source.as_deref(), "the agent"));
        }
        Some("lost") => out.push_str("marked lost because the process backend disappeared"),
        Some("failed_start") => out.push_str("failed to start"),
        _ if exit_value == Some(0.0) => out.push_str("completed normally"),
        _ => out.push_str("exited"),
    }
    out.push_str(" (exit code ");
    match exit_code {
        Some(code) => write_number(&mut out, code),
        None => out.push('?'),
    }
    if matches!(exit_value, Some(code) if code == -15.0 || code == 143.0) {
        out.push_str(", SIGTERM");
    }
    out.push_str(").\nCommand: ");
    out.push_str(command);
    out.push_str("\nOutput:\n");
    out.push_str(output);
    out.push(']');
    out
}

/// The `Dispatched: … (… ago)` line's parts, computed once per event.
struct DispatchedLine {
    local: jiff::civil::DateTime,
    /// Never negative; `i64::MAX` at most (the float's cast saturates there).
    age_seconds: u64,
}

impl DispatchedLine {
    /// `None` when the event has no usable `dispatched_at` (absent, `0`, not finite, or
    /// outside the range of representable times): the line is then left out.
    fn new(
        e: &AsyncDelegationEvent,
        clock: impl FnOnce() -> (TimeZone, Timestamp),
    ) -> Option<DispatchedLine> {
        let dispatched_at = usable_time(e.dispatched_at.as_ref())?;
        let second = whole_second(dispatched_at)?;
        let timestamp = Timestamp::from_second(second).ok()?;
        let (time_zone, now) = clock();
        let end = match usable_time(e.completed_at.as_ref()) {
            Some(completed_at) => completed_at,
            None => now.as_second() as f64 + f64::from(now.subsec_nanosecond()) / 1e9,
        };
        // `int(end - start)` in the Python harness: truncation toward zero. A completion that
        // appears to precede its dispatch (clock skew) reads `0s`, never a negative age.
        let age_seconds = ((end - dispatched_at).max(0.0) as i64).unsigned_abs();
        Some(DispatchedLine {
            local: time_zone.to_datetime(timestamp),
            age_seconds,
        })
    }

    fn write(&self, out: &mut String) {
        out.push_str("Dispatched: ");
        write_local_time(out, self.local);
        out.push_str(" (");
        write_age(out, self.age_seconds);
        out.push_str(" ago)\n");
    }
}

/// `time` as `strftime("%Y-%m-%d %H:%M:%S")` writes it. The years 0 to 9999 (four digits,
/// zero-padded, like every field) are written digit by digit, without the `strftime`
/// machinery; a negative year goes through `strftime` itself, for its sign rules.
fn write_local_time(out: &mut String, time: jiff::civil::DateTime) {
    let Ok(year) = u16::try_from(time.year()) else {
        let _ = write!(out, "{}", time.strftime(DISPATCHED_FORMAT));
        return;
    };
    let [y0, y1] = two_digits(year / 100);
    let [y2, y3] = two_digits(year % 100);
    let [mo0, mo1] = two_digits(field(time.month()));
    let [d0, d1] = two_digits(field(time.day()));
    let [h0, h1] = two_digits(field(time.hour()));
    let [mi0, mi1] = two_digits(field(time.minute()));
    let [s0, s1] = two_digits(field(time.second()));
    let text = [
        y0, y1, y2, y3, b'-', mo0, mo1, b'-', d0, d1, b' ', h0, h1, b':', mi0, mi1, b':', s0, s1,
    ];
    // ASCII digits and separators only: always valid UTF-8.
    out.push_str(std::str::from_utf8(&text).unwrap_or_default());
}

/// A civil field (month, day, hour, minute, second: never negative) as a `u16`.
fn field(value: i8) -> u16 {
    u16::from(value.unsigned_abs())
}

/// The two ASCII digits of `n % 100`.
fn two_digits(n: u16) -> [u8; 2] {
    let n = n % 100;
    [b'0' + (n / 10) as u8, b'0' + (n % 10) as u8]
}

/// The whole second a Unix time in float seconds falls in, as Python's
/// `datetime.fromtimestamp` sees it: the fraction is first rounded (half to even) to
/// microseconds, so `41.9999996` is second 42.
fn whole_second(unix_seconds: f64) -> Option<i64> {
    let floor = unix_seconds.floor();
    let micros = ((unix_seconds - floor) * 1e6).round_ties_even();
    let second = if micros >= 1e6 { floor + 1.0 } else { floor };
    // Range check before the cast (which would saturate); jiff checks the exact range.
    (second.abs() < 1e15).then_some(second as i64)
}

/// `45s`; `18m` / `18m5s`; `2h` / `2h3m`.
fn write_age(out: &mut String, seconds: u64) {
    if seconds < 60 {
        push_u64(out, seconds);
        out.push('s');
    } else if seconds < 3600 {
        let (minutes, rest) = (seconds / 60, seconds % 60);
        push_u64(out, minutes);
        out.push('m');
        if rest != 0 {
            push_u64(out, rest);
            out.push('s');
        }
    } else {
        let (hours, minutes) = (seconds / 3600, seconds % 3600 / 60);
        push_u64(out, hours);
        out.push('h');
        if minutes != 0 {
            push_u64(out, minutes);
            out.push('m');
        }
    }
}

/// `Dispatched:` (when known), then `Original goal:` (single blocks only), `Context you
/// provided:` and `Toolsets:` (when non-empty).
fn write_source_lines(
    out: &mut String,
    e: &AsyncDelegationEvent,
    dispatched: Option<&DispatchedLine>,
    with_goal: bool,
) {
    if let Some(line) = dispatched {
        line.write(out);
    }
    if with_goal {
        out.push_str("Original goal: ");
        out.push_str(&e.goal);
        out.push('\n');
    }
    if let Some(context) = non_empty(e.context.as_deref()) {
        out.push_str("Context you provided: ");
        out.push_str(context);
        out.push('\n');
    }
    if let Some(toolsets) = e.toolsets.as_deref().filter(|t| !t.is_empty()) {
        out.push_str("Toolsets: ");
        for (i, toolset) in toolsets.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(toolset);
        }
        out.push('\n');
    }
}

fn write_role_model(out: &mut String, e: &AsyncDelegationEvent) {
    out.push_str("Role: ");
    out.push_str(or_default(e.role.as_deref(), "leaf"));
    out.push_str("   Model: ");
    out.push_str(or_default(e.model.as_deref(), "?"));
}

fn single_block(out: &mut String, e: &AsyncDelegationEvent, dispatched: Option<&DispatchedLine>) {
    let status = or_default(e.status.as_deref(), "completed");
    let truncated = is_truncated(e.exit_reason.as_deref(), e.truncated);
    let summary = non_empty(e.summary.as_deref());
    let error = non_empty(e.error.as_deref());

    out.push_str("[ASYNC DELEGATION COMPLETE — ");
    out.push_str(delegation_id(e));
    out.push_str("]\n");
    out.push_str(SINGLE_INTRO);
    out.push_str("\n\n");
    write_source_lines(out, e, dispatched, true);
    write_role_model(out, e);
    out.push_str("\nStatus: ");
    out.push_str(status);
    out.push_str("   API calls: ");
    match &e.api_calls {
        Some(n) => write_number(out, n),
        None => out.push('0'),
    }
    out.push_str("   Duration: ");
    write_number_or_unknown(out, e.duration_seconds.as_ref());
    out.push('s');
    if truncated {
        out.push_str(TRUNCATED_STATUS);
    }
    out.push_str("\n--- RESULT ---\n");

    match summary {
        Some(summary) if is_success(status) => write_success_body(out, summary, truncated),
        _ => {
            if status == "interrupted" {
                out.push_str("The subagent was interrupted before completing");
                match error {
                    Some(error) => {
                        out.push_str(": ");
                        out.push_str(error);
                    }
                    None => out.push('.'),
                }
            } else {
                out.push_str("The subagent did not complete successfully (status=");
                out.push_str(status);
                out.push_str(").");
                if let Some(error) = error {
                    out.push('\n');
                    out.push_str(error);
                }
            }
            if let Some(summary) = summary {
                out.push_str("\nPartial output:\n");
                out.push_str(summary);
            }
        }
    }
}

fn batch_block(out: &mut String, e: &AsyncDelegationEvent, dispatched: Option<&DispatchedLine>) {
    let goals = e.goals.as_deref().unwrap_or(&[]);
    let results = e.results.as_deref().unwrap_or(&[]);
    let n = if results.is_empty() {
        goals.len()
    } else {
        results.len()
    };

    out.push_str("[ASYNC DELEGATION BATCH COMPLETE — ");
    out.push_str(delegation_id(e));
    out.push_str("]\nA background fan-out of ");
    push_u64(out, n as u64);
    out.push_str(" subagent(s) you dispatched earlier has finished. All ran in parallel and waited on each other; their consolidated results are below. You may have moved on since dispatching — act on these or re-dispatch if things have changed.\n\n");
    write_source_lines(out, e, dispatched, false);
    write_role_model(out, e);
    out.push_str("   Total duration: ");
    write_number_or_unknown(
        out,
        e.total_duration_seconds
            .as_ref()
            .or(e.duration_seconds.as_ref()),
    );
    out.push('s');

    if results.is_empty() {
        if let Some(error) = non_empty(e.error.as_deref()) {
            out.push_str("\n--- ERROR ---\nThe batch did not complete successfully: ");
            out.push_str(error);
        }
        return;
    }

    if results.len() <= ORDERED_ON_STACK {
        let mut on_stack = [&results[0]; ORDERED_ON_STACK];
        let ordered = &mut on_stack[..results.len()];
        for (slot, result) in ordered.iter_mut().zip(results) {
            *slot = result;
        }
        batch_tasks(out, ordered, goals, n);
    } else {
        batch_tasks(out, &mut results.iter().collect::<Vec<_>>(), goals, n);
    }
}

/// A batch of up to this many results is put in task order on the stack, without
/// allocating.
const ORDERED_ON_STACK: usize = 16;

/// The tasks' sections, in task order (stable: equal indices keep wire order).
fn batch_tasks(out: &mut String, results: &mut [&BatchTaskResult], goals: &[Text], n: usize) {
    results.sort_by(|a, b| a.task_index.cmp_value(&b.task_index));
    for result in results {
        batch_task(out, result, goals, n);
    }
}

fn batch_task(out: &mut String, r: &BatchTaskResult, goals: &[Text], n: usize) {
    let status = or_default(r.status.as_deref(), "?");
    let truncated = is_truncated(r.exit_reason.as_deref(), r.truncated);
    let summary = non_empty(r.summary.as_deref());
    let error = non_empty(r.error.as_deref());
    let goal = r
        .task_index
        .as_u64()
        .and_then(|i| usize::try_from(i).ok())
        .and_then(|i| goals.get(i))
        .map(Text::as_str)
        .filter(|g| !g.is_empty())
        .or_else(|| non_empty(r.goal.as_deref()));
    let icon = if truncated {
        '⚠'
    } else if is_success(status) {
        '✓'
    } else {
        '✗'
    };

    out.push_str("\n\n--- ");
    out.push(icon);
    out.push_str(" TASK ");
    r.task_index.plus_one().push_to(out);
    out.push('/');
    push_u64(out, n as u64);
    if let Some(goal) = goal {
        out.push_str(": ");
        out.push_str(goal);
    }
    out.push_str("  (status=");
    out.push_str(status);
    if let Some(api_calls) = r.api_calls.as_ref().filter(|k| !k.is_zero()) {
        out.push_str(", api_calls=");
        write_number(out, api_calls);
    }
    if let Some(duration) = &r.duration_seconds {
        out.push_str(", ");
        write_number(out, duration);
        out.push('s');
    }
    if truncated {
        out.push_str(TRUNCATED_TASK);
    }
    out.push_str(") ---\n");

    match summary {
        Some(summary) if is_success(status) => write_success_body(out, summary, truncated),
        Some(summary) => {
            if let Some(error) = error {
                out.push('(');
                out.push_str(status);
                out.push_str(": ");
                out.push_str(error);
                out.push_str(")\n");
            }
            out.push_str("Partial output:\n");
            out.push_str(summary);
        }
        None => {
            out.push_str("(no summary — status=");
            out.push_str(status);
            if let Some(error) = error {
                out.push_str(": ");
                out.push_str(error);
            }
            out.push(')');
        }
    }
}

/// A rough upper bound of the block's length, so the text is built without regrowing.
fn estimate_len(e: &AsyncDelegationEvent) -> usize {
    let len = |s: &Option<Text>| s.as_deref().map_or(0, str::len);
    let results: usize = e.results.as_deref().map_or(0, |results| {
        results
            .iter()
            .map(|r| 160 + len(&r.summary) + len(&r.error) + len(&r.goal))
            .sum()
    });
    let goals: usize = e
        .goals
        .as_deref()
        .map_or(0, |g| g.iter().map(|goal| goal.len()).sum());
    let toolsets: usize = e
        .toolsets
        .as_deref()
        .map_or(0, |t| t.iter().map(|s| s.len() + 2).sum());
    640 + delegation_id(e).len()
        + e.goal.len()
        + len(&e.context)
        + len(&e.summary)
        + len(&e.error)
        + toolsets
        + goals
        + results
}

fn is_success(status: &str) -> bool {
    matches!(status, "completed" | "success")
}

fn is_truncated(exit_reason: Option<&str>, truncated: Option<bool>) -> bool {
    exit_reason == Some("max_iterations") || truncated == Some(true)
}

/// `{x or D}`: `D` when `x` is absent, null or empty.
fn or_default<'a>(value: Option<&'a str>, default: &'a str) -> &'a str {
    non_empty(value).unwrap_or(default)
}

fn non_empty(value: Option<&str>) -> Option<&str> {
    value.filter(|s| !s.is_empty())
}

fn write_number_or_unknown(out: &mut String, number: Option<&WireNumber>) {
    match number {
        Some(n) => write_number(out, n),
        None => out.push('?'),
    }
}

/// Writes a wire number as it came: an integer as its digits, a float as Python's
/// `repr` prints it (see [`WireNumber`]'s `Display`).
fn write_number(out: &mut String, number: &WireNumber) {
    number.push_to(out);
}

/// The title's id: `unknown` when the producer sent none, else the id as it is (even
/// empty).
fn delegation_id(e: &AsyncDelegationEvent) -> &str {
    e.delegation_id.as_deref().unwrap_or("unknown")
}

/// A time the `Dispatched:` line can use: present, non-zero and finite (the Python
/// harness tests `if dispatched_at:`, so `0` counts as unknown).
fn usable_time(time: Option<&WireNumber>) -> Option<f64> {
    time.map(WireNumber::as_f64)
        .filter(|t| *t != 0.0 && t.is_finite())
}

/// The body of a successful task: its summary, after the TRUNCATED warning when the
/// subagent hit its iteration cap (single and batch blocks alike).
fn write_success_body(out: &mut String, summary: &str, truncated: bool) {
    if truncated {
        out.push_str(TRUNCATED_SUMMARY);
        out.push('\n');
    }
    out.push_str(summary);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The age as it was written before `write_age` appended digits itself.
    fn age_with_write_macro(seconds: u64) -> String {
        if seconds < 60 {
            format!("{seconds}s")
        } else if seconds < 3600 {
            let (minutes, rest) = (seconds / 60, seconds % 60);
            if rest == 0 {
                format!("{minutes}m")
            } else {
                format!("{minutes}m{rest}s")
            }
        } else {
            let (hours, minutes) = (seconds / 3600, seconds % 3600 / 60);
            if minutes == 0 {
                format!("{hours}h")
            } else {
                format!("{hours}h{minutes}m")
            }
        }
    }

    /// A civil time anywhere in jiff's range, in a time zone of any offset it allows.
    fn any_local_time() -> impl Strategy<Value = jiff::civil::DateTime> {
        let seconds = Timestamp::MIN.as_second()..=Timestamp::MAX.as_second();
        let offsets = -93_599_i32..=93_599;
        (seconds, offsets).prop_map(|(second, offset)| {
            let offset = jiff::tz::Offset::from_seconds(offset).unwrap();
            TimeZone::fixed(offset).to_datetime(Timestamp::from_second(second).unwrap())
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        #[test]
        fn local_times_are_written_as_strftime_writes_them(time in any_local_time()) {
            let mut out = String::from("x");
            write_local_time(&mut out, time);
            prop_assert_eq!(out, format!("x{}", time.strftime(DISPATCHED_FORMAT)));
        }

        #[test]
        fn ages_are_written_as_the_write_macro_wrote_them(
            seconds in prop_oneof![0_u64..100_000, 0_u64..=i64::MAX as u64],
        ) {
            let mut out = String::new();
            write_age(&mut out, seconds);
            prop_assert_eq!(out, age_with_write_macro(seconds));
        }
    }

    #[test]
    fn local_times_at_the_edges_of_the_four_digit_years() {
        use jiff::civil::date;
        for time in [
            date(-9999, 1, 1).at(0, 0, 0, 0),
            date(-1, 12, 31).at(23, 59, 59, 0),
            date(0, 1, 1).at(0, 0, 0, 0),
            date(9, 2, 3).at(4, 5, 6, 0),
            date(9999, 12, 31).at(23, 59, 59, 0),
        ] {
            let mut out = String::new();
            write_local_time(&mut out, time);
            assert_eq!(out, time.strftime(DISPATCHED_FORMAT).to_string(), "{time}");
        }
        let mut out = String::new();
        write_local_time(&mut out, date(9, 2, 3).at(4, 5, 6, 0));
        assert_eq!(out, "0009-02-03 04:05:06");
    }

    #[test]
    fn ages_follow_the_three_ranges() {
        let cases = [
            (0, "0s"),
            (45, "45s"),
            (59, "59s"),
            (60, "1m"),
            (1080, "18m"),
            (1085, "18m5s"),
            (3599, "59m59s"),
            (3600, "1h"),
            (7200, "2h"),
            (7380, "2h3m"),
            (7385, "2h3m"),
            (90000, "25h"),
        ];
        for (seconds, expected) in cases {
            let mut out = String::new();
            write_age(&mut out, seconds);
            assert_eq!(out, expected, "{seconds}");
        }
    }

    #[test]
    fn whole_second_rounds_to_microseconds_first() {
        assert_eq!(whole_second(1000.0), Some(1000));
        assert_eq!(whole_second(1000.999999), Some(1000));
        assert_eq!(whole_second(1000.9999996), Some(1001));
        assert_eq!(whole_second(-0.5), Some(-1));
        assert_eq!(whole_second(1e300), None);
    }
}
