//! Micro-benchmarks of the pure work on every payer request: the token (generate, parse,
//! digest, tokenRef), amount formatting, rendering the pay page, and the lifecycle event a
//! page view emits.
//!
//! `cargo bench --bench micro` (add `-- --quick` for a rough number in a few seconds).
//! The load harness (`bench/run`) shows how these add up under HTTP load.

use askama::Template;
use criterion::{Criterion, criterion_group, criterion_main};
use paylink::domain::{Amount, Currency, Description, MerchantId, OrderId};
use paylink::lifecycle::{Lifecycle, LifecycleEvent};
use paylink::metrics::Metrics;
use paylink::routes::{clock_time, rfc3339};
use paylink::session::{PaymentToken, SessionRecord, SessionStatus};
use paylink::telemetry::{BatchWriter, JsonLines, JsonSpanFields};
use paylink::templates::{FormField, PayPage};
use std::hint::black_box;
use std::sync::Arc;
use tracing_subscriber::EnvFilter;

const EXPIRES_AT_MS: i64 = 1_796_402_321_123;
const NOW_MS: i64 = EXPIRES_AT_MS - 900_000;

fn token(c: &mut Criterion) {
    let mut group = c.benchmark_group("token");
    group.bench_function("generate (OS CSPRNG, 32 bytes, hex)", |b| {
        b.iter(|| PaymentToken::generate().unwrap())
    });
    let token = PaymentToken::generate().unwrap();
    let text = token.expose().to_owned();
    group.bench_function("parse (64 lowercase hex)", |b| {
        b.iter(|| PaymentToken::parse(black_box(&text)).unwrap())
    });
    group.bench_function("digest (SHA-256 of the text)", |b| {
        b.iter(|| black_box(&token).digest())
    });
    let digest = token.digest();
    group.bench_function("token_ref (first 12 hex of the digest)", |b| {
        b.iter(|| black_box(&digest).token_ref())
    });
    group.bench_function("digest to_hex (store key part)", |b| {
        b.iter(|| black_box(&digest).to_hex())
    });
    group.finish();
}

fn amount(c: &mut Criterion) {
    let mut group = c.benchmark_group("amount");
    let amount = Amount::new(1999).unwrap();
    for code in ["USD", "JPY", "KWD"] {
        let currency = Currency::parse(code).unwrap();
        group.bench_function(format!("display_with {code}"), |b| {
            b.iter(|| black_box(amount).display_with(black_box(currency)))
        });
    }
    let big = Amount::new(Amount::MAX).unwrap();
    let usd = Currency::parse("USD").unwrap();
    group.bench_function("display_with USD 10^12 minor units", |b| {
        b.iter(|| black_box(big).display_with(black_box(usd)))
    });
    group.finish();
}

/// The page as `GET /pay/{token}` builds it for an open link.
fn realistic_page() -> PayPage<'static> {
    PayPage {
        merchant_name: "Acme Tickets & Co",
        order_id: "ord_20261204_000123",
        amount: Amount::new(1999)
            .unwrap()
            .display_with(Currency::parse("USD").unwrap()),
        description: Some("2 tickets, Saturday 12 December, row F"),
        expires_at_iso: rfc3339(EXPIRES_AT_MS),
        expires_at_text: clock_time(EXPIRES_AT_MS),
        expires_at_ms: EXPIRES_AT_MS,
        now_ms: NOW_MS,
        decline_reason: None,
        fields: FormField::card_form_html(&[]),
        has_errors: false,
    }
}

fn pay_page(c: &mut Criterion) {
    let mut group = c.benchmark_group("pay_page");
    let page = realistic_page();
    let html = page.render().unwrap();
    assert!(html.contains("Complete your payment"));
    group.bench_function("render (askama)", |b| {
        b.iter(|| black_box(&page).render().unwrap())
    });
    group.bench_function("build and render (times, amount, form, askama)", |b| {
        b.iter(|| black_box(realistic_page()).render().unwrap())
    });
    group.finish();
}

/// The `session.viewed` event a page view emits, as the server does it: the JSON line into
/// the log's batch writer (its thread writes to a sink here), inside a request span like the
/// server's, plus the event's metric and the dashboard's counts and recent-events ring.
/// One thread, so no contention with another worker.
fn lifecycle(c: &mut Criterion) {
    let (writer, _guard) = BatchWriter::start(std::io::sink());
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("info"))
        .with_writer(writer)
        .fmt_fields(JsonSpanFields)
        .event_format(JsonLines)
        .finish();
    let lifecycle = Lifecycle::new(Arc::new(Metrics::new()));
    let record = SessionRecord {
        merchant_id: MerchantId::parse("acme").unwrap(),
        order_id: OrderId::parse("ord_20261204_000123").unwrap(),
        amount: Amount::new(1999).unwrap(),
        currency: Currency::parse("USD").unwrap(),
        description: Some(Description::parse("2 tickets, Saturday 12 December, row F").unwrap()),
        created_at_ms: NOW_MS,
        expires_at_ms: EXPIRES_AT_MS,
        stored_status: SessionStatus::Open,
        paid_at_ms: None,
        revoked_at_ms: None,
        card_last4: None,
    };
    let digest = PaymentToken::generate().unwrap().digest();
    let mut group = c.benchmark_group("lifecycle");
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!(
            "request",
            method = "GET",
            route = "/pay/{token}",
            request_id = "0b6cf5d2-64b5-4f8a-9c1e-3d2a7f1e9b40",
        );
        let _entered = span.enter();
        group.bench_function("emit session.viewed (JSON line, metric, dashboard)", |b| {
            b.iter(|| lifecycle.emit(LifecycleEvent::Viewed, black_box(&record), &digest))
        });
    });
    group.finish();
}

criterion_group!(benches, token, amount, pay_page, lifecycle);
criterion_main!(benches);
