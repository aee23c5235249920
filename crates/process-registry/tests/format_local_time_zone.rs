//! The default `format_process_notification` path: the system local time zone and the
//! current time. Its own test binary, because it sets `TZ` for the whole process before
//! anything reads the system time zone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use jiff::tz::TimeZone;
use jiff::Timestamp;
use process_registry::{format_process_notification, format_process_notification_in, Event};
use serde_json::json;

/// New York's rules as a POSIX string, so no time zone database is needed.
const TZ: &str = "EST5EDT,M3.2.0,M11.1.0";

#[test]
fn default_formatter_uses_tz_and_the_current_time() {
    // The only test in this binary, and its first statement: nothing has looked up the
    // system time zone yet.
    std::env::set_var("TZ", TZ);

    // A completed event: the text depends on the zone only. 1700000000 is
    // 2023-11-14 22:13:20 UTC, 17:13:20 in New York (EST, UTC-5).
    let completed = Event::from_value(json!({
        "type": "async_delegation",
        "delegation_id": "deleg_1234abcd",
        "goal": "g",
        "status": "completed",
        "summary": "s",
        "dispatched_at": 1700000000.0,
        "completed_at": 1700000060.0,
    }))
    .unwrap();
    let text = format_process_notification(&completed).unwrap();
    assert!(
        text.contains("\nDispatched: 2023-11-14 17:13:20 (1m ago)\n"),
        "{text}"
    );
    let new_york = TimeZone::posix(TZ).unwrap();
    assert_eq!(
        Some(text),
        format_process_notification_in(&completed, &new_york, Timestamp::UNIX_EPOCH)
    );

    // Without completed_at the age runs to the current time: dispatched 2h0m30s ago, so
    // the age reads `2h` for the next 29 seconds of test time.
    let now = Timestamp::now();
    let dispatched_at = now.as_second() as f64 - 7230.0;
    let running = Event::from_value(json!({
        "type": "async_delegation",
        "delegation_id": "deleg_1234abcd",
        "goal": "g",
        "status": "completed",
        "summary": "s",
        "dispatched_at": dispatched_at,
    }))
    .unwrap();
    let text = format_process_notification(&running).unwrap();
    let local = new_york
        .to_datetime(Timestamp::from_second(dispatched_at as i64).unwrap())
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string();
    assert!(
        text.contains(&format!("\nDispatched: {local} (2h ago)\n")),
        "{text}"
    );
}
