//! Criterion benchmarks of the event store: append (with eviction), replay
//! from a cursor, snapshot, get-by-id, and the JSON of a 100-event page.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use eventfeed::backend::memory::EventBus;
use eventfeed::feed::NewEvent;
use eventfeed::feed::event::page_json;

const MESSAGE: &str = "User admin_a logged in from 10.0.0.7 using the web console";

fn filled(capacity: usize, tenants: usize) -> EventBus {
    let bus = EventBus::new(capacity);
    for t in 0..tenants {
        for _ in 0..capacity {
            bus.append(&format!("tenant_{t}"), NewEvent::new(MESSAGE.into(), "admin_a".into()), |_, _| {});
        }
    }
    bus
}

fn store(c: &mut Criterion) {
    let bus = filled(500, 10);
    c.bench_function("store/append (full buffer, evicting)", |b| {
        b.iter(|| bus.append(black_box("tenant_3"), NewEvent::new(MESSAGE.into(), "admin_a".into()), |_, _| {}))
    });
    let page = bus.latest("tenant_3", 500);
    let cursor = page.events[300].id();
    c.bench_function("store/replay 100 after a cursor", |b| {
        b.iter(|| black_box(bus.after(black_box("tenant_3"), &cursor, 100)))
    });
    c.bench_function("store/snapshot (latest 100)", |b| b.iter(|| black_box(bus.latest(black_box("tenant_3"), 100))));
    let id = page.events[250].id();
    c.bench_function("store/get by id", |b| b.iter(|| black_box(bus.get(black_box("tenant_3"), &id))));
    let hundred = bus.latest("tenant_3", 100);
    c.bench_function("store/page JSON of 100 events", |b| {
        b.iter(|| black_box(page_json(&hundred.events, hundred.has_more, hundred.gap)))
    });
}

criterion_group!(benches, store);
criterion_main!(benches);
