//! The process-wide defaults: the global platform registry behind `str::parse`, and a
//! router on `process_registry::global()`'s queue. Its own test binary, so no other test
//! shares these globals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gateway::{DeliveryRouter, GatewayError, InternalMessage, Platform, PlatformRegistry};
use process_registry::AsyncDelegationEvent;

#[test]
fn global_platform_registry_and_router_on_the_global_queue() {
    // str::parse knows built-ins, and run-time platforms of the global registry.
    assert_eq!(" Slack ".parse::<Platform>().unwrap(), Platform::Slack);
    assert!(matches!(
        "zulip".parse::<Platform>(),
        Err(GatewayError::UnknownPlatform { .. })
    ));
    let zulip = PlatformRegistry::global().register("Zulip").unwrap();
    assert_eq!("ZULIP".parse::<Platform>().unwrap(), zulip);

    let inbox: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = Arc::clone(&inbox);
    let router = DeliveryRouter::builder_for_global_queue()
        .platforms(PlatformRegistry::global().clone())
        .adapter(zulip, move |message: &InternalMessage| {
            sink.lock().unwrap().push(message.source.chat_id.clone());
            Ok(())
        })
        .start()
        .unwrap();
    assert!(router
        .queue()
        .same_queue(process_registry::global().completion_queue()));

    process_registry::global()
        .completion_queue()
        .put(AsyncDelegationEvent {
            delegation_id: Some("deleg_00000001".into()),
            session_key: "agent:main:zulip:stream:general:u1".into(),
            ..AsyncDelegationEvent::default()
        });
    let start = Instant::now();
    while router.stats().delivered == 0 {
        assert!(start.elapsed() < Duration::from_secs(60), "hang guard");
        std::thread::sleep(Duration::from_millis(1));
    }
    router.stop();
    assert_eq!(*inbox.lock().unwrap(), vec!["general".to_owned()]);
    assert!(process_registry::global().completion_queue().is_empty());
}
