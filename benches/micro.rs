//! Micro-benchmarks of the pure work on every payer request: the token (generate, parse,
//! digest, tokenRef), amount formatting, and rendering the pay page.
//!
//! `cargo bench --bench micro` (add `-- --quick` for a rough number in a few seconds).
//! The load harness (`bench/run`) shows how these add up under HTTP load.

use askama::Template;
use criterion::{Criterion, criterion_group, criterion_main};
use paylink::domain::{Amount, Currency};
use paylink::routes::{clock_time, rfc3339};
use paylink::session::PaymentToken;
use paylink::templates::{FormField, PayPage};
use std::hint::black_box;

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
        fields: FormField::card_form(&[]),
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

criterion_group!(benches, token, amount, pay_page);
criterion_main!(benches);
