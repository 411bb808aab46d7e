//! How much memory the embedded store needs per open session: fills a `MemoryStore` with
//! open sessions (1,000,000 unless a count is given) through the store trait, exactly as
//! `POST /api/v1/sessions` stores them, and prints the process RSS from /proc/self/status.
//!
//! `cargo run --release --example memory_store_rss [-- COUNT]`
//!
//! Budget: 1,000,000 open sessions in at most 400 MB RSS (the whole process).

use paylink::domain::{Amount, Currency, Description, MerchantId, OrderId};
use paylink::session::{MemoryStore, PaymentToken, SessionRecord, SessionStatus, SessionStore};
use std::time::{Duration, Instant};

/// The server's allocator (`src/main.rs`): the RSS it needs is what this measures.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BUDGET_MB: f64 = 400.0;
const RETENTION: Duration = Duration::from_secs(86_400);

/// `VmRSS` and `VmHWM` (peak RSS) in bytes.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1_000_000.0
}

/// A typical session: a short merchant id, an order reference, a short description.
fn record(n: u64, now: i64) -> SessionRecord {
    SessionRecord {
        merchant_id: MerchantId::parse(["acme", "globex", "initech"][(n % 3) as usize]).unwrap(),
        order_id: OrderId::parse(&format!("ord_{n:010}")).unwrap(),
        amount: Amount::new(1999 + n % 10_000).unwrap(),
        currency: Currency::parse("USD").unwrap(),
        description: Some(Description::parse("2 tickets, Saturday, row F").unwrap()),
        created_at_ms: now,
        expires_at_ms: now + 1_200_000,
        stored_status: SessionStatus::Open,
        paid_at_ms: None,
        revoked_at_ms: None,
        card_last4: None,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let count: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("COUNT is a whole number"))
        .unwrap_or(1_000_000);
    // Nobody listens for expiries: none happen in the 20 minutes a session lives.
    let (expired_tx, _expired_rx) = tokio::sync::mpsc::unbounded_channel();
    let store = MemoryStore::start(expired_tx);

    let (before, _) = rss();
    let start = Instant::now();
    let now = paylink::session::now_ms();
    for n in 0..count {
        let digest = PaymentToken::generate().unwrap().digest();
        store
            .create(&digest, &record(n, now), RETENTION)
            .await
            .unwrap();
    }
    let elapsed = start.elapsed();
    assert_eq!(store.len() as u64, count);
    let (after, peak) = rss();

    let per_session = after.saturating_sub(before) as f64 / count as f64;
    println!("embedded store: {count} open sessions created in {elapsed:.2?}");
    println!(
        "RSS before {:.1} MB, after {:.1} MB (peak {:.1} MB); {:.0} bytes per session",
        mb(before),
        mb(after),
        mb(peak),
        per_session
    );
    if count == 1_000_000 {
        let verdict = if mb(after) <= BUDGET_MB {
            "PASS"
        } else {
            "MISS"
        };
        println!(
            "budget: 1,000,000 open sessions in <= {BUDGET_MB:.0} MB RSS: {verdict} ({:.1} MB, {:+.1} MB)",
            mb(after),
            mb(after) - BUDGET_MB
        );
    }
}
