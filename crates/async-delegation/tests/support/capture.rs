//! A `tracing` layer that keeps every span it sees — name, parent, `follows_from` links,
//! fields as text — installed once per test binary as the global default (workers and
//! tasks run on other threads). Tests find their own spans by a field value.
#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// One span as it was seen.
#[derive(Debug, Clone)]
pub struct Seen {
    pub id: u64,
    pub name: &'static str,
    pub parent: Option<u64>,
    pub follows_from: Vec<u64>,
    pub fields: BTreeMap<String, String>,
    /// In the order spans were created, over the whole binary.
    pub order: usize,
}

impl Seen {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// Every span (and event) seen by the binary.
#[derive(Default)]
pub struct Spans {
    seen: Mutex<Vec<Seen>>,
    events: Mutex<Vec<BTreeMap<String, String>>>,
}

struct Capture(&'static Spans);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let parent = ctx
            .span(id)
            .and_then(|span| span.parent())
            .map(|parent| parent.id().into_u64());
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let mut seen = self.0.seen.lock().unwrap();
        let order = seen.len();
        seen.push(Seen {
            id: id.into_u64(),
            name: attrs.metadata().name(),
            parent,
            follows_from: Vec::new(),
            fields,
            order,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut seen = self.0.seen.lock().unwrap();
        if let Some(span) = seen.iter_mut().rev().find(|span| span.id == id.into_u64()) {
            values.record(&mut Fields(&mut span.fields));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        self.0.events.lock().unwrap().push(fields);
    }

    fn on_follows_from(&self, id: &Id, follows: &Id, _: Context<'_, S>) {
        let mut seen = self.0.seen.lock().unwrap();
        if let Some(span) = seen.iter_mut().rev().find(|span| span.id == id.into_u64()) {
            span.follows_from.push(follows.into_u64());
        }
    }
}

static SPANS: OnceLock<&'static Spans> = OnceLock::new();

/// Installs the capture (once) and returns every span seen so far.
pub fn spans() -> Vec<Seen> {
    install().seen.lock().unwrap().clone()
}

/// Installs the capture as the global default, once.
pub fn install() -> &'static Spans {
    SPANS.get_or_init(|| {
        let spans: &'static Spans = Box::leak(Box::default());
        let subscriber = tracing_subscriber::registry().with(Capture(spans));
        tracing::subscriber::set_global_default(subscriber).unwrap();
        spans
    })
}

/// The spans whose `field` is `value`, in creation order.
pub fn with_field(field: &str, value: &str) -> Vec<Seen> {
    let mut found: Vec<Seen> = spans()
        .into_iter()
        .filter(|span| span.field(field) == Some(value))
        .collect();
    found.sort_by_key(|span| span.order);
    found
}

/// The events (log lines) whose `field` is `value`, as their fields.
pub fn events_with(field: &str, value: &str) -> Vec<BTreeMap<String, String>> {
    install()
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|fields| fields.get(field).map(String::as_str) == Some(value))
        .cloned()
        .collect()
}

/// The span with this id.
pub fn by_id(id: u64) -> Option<Seen> {
    spans().into_iter().rev().find(|span| span.id == id)
}
