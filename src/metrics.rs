//! Prometheus metrics, served at `/admin/metrics`. Labels are merchant ids, routes
//! (patterns, never paths) and outcomes: nothing secret, nothing unbounded.

use crate::domain::MerchantId;
use crate::per_thread::{Merged, PerThread};
use crate::session::{
    BeginPayment, ClaimId, Limited, Lockout, RateLimit, RateLimitHit, Revocation, SessionRecord,
    SessionStore, StoreError, TokenDigest,
};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The metrics written on every request are kept per thread ([`PerThread`]; use `local()`)
/// and exported added up.
pub struct Metrics {
    registry: Registry,
    pub lifecycle: Arc<PerThread<IntCounterVec>>,
    pub payments: IntCounterVec,
    pub active: IntGaugeVec,
    /// No labels: a vector only so that it can be absent (see `Metrics::scrape`).
    pub active_all: IntGaugeVec,
    pub store_up: IntGauge,
    /// Held from setting a scrape's store-derived gauges until they are rendered, so that
    /// two scrapes at once never mix one's counts with the other's failure.
    scrape: Mutex<()>,
    pub http_duration: Arc<PerThread<HistogramVec>>,
    pub store_duration: Arc<PerThread<HistogramVec>>,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let lifecycle = Arc::new(PerThread::new(|| {
            IntCounterVec::new(
                Opts::new(
                    "paylink_session_events_total",
                    "Lifecycle events by event (created, viewed, paid, payment_declined, revoked, expired, replay_rejected) and merchant",
                ),
                &["event", "merchant"],
            )
            .expect("valid metric")
        }));
        let payments = IntCounterVec::new(
            Opts::new(
                "paylink_payments_total",
                "Charges answered by the processor, by outcome",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let active = IntGaugeVec::new(
            Opts::new(
                "paylink_active_sessions",
                "Open (payable) sessions now, by merchant",
            ),
            &["merchant"],
        )
        .expect("valid metric");
        let active_all = IntGaugeVec::new(
            Opts::new(
                "paylink_active_sessions_all",
                "Open (payable) sessions now, all merchants",
            ),
            &[],
        )
        .expect("valid metric");
        let store_up = IntGauge::new(
            "paylink_store_up",
            "1 when the session store answered the last scrape",
        )
        .expect("valid metric");
        let http_duration = Arc::new(PerThread::new(|| {
            HistogramVec::new(
                HistogramOpts::new(
                    "paylink_http_request_duration_seconds",
                    "HTTP request latency by route",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["method", "route", "status"],
            )
            .expect("valid metric")
        }));
        let store_duration = Arc::new(PerThread::new(|| {
            HistogramVec::new(
                HistogramOpts::new(
                    "paylink_store_operation_duration_seconds",
                    "Session store latency by operation",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["operation", "outcome"],
            )
            .expect("valid metric")
        }));
        for collector in [
            Box::new(Merged(lifecycle.clone())) as Box<dyn prometheus::core::Collector>,
            Box::new(payments.clone()),
            Box::new(active.clone()),
            Box::new(active_all.clone()),
            Box::new(store_up.clone()),
            Box::new(Merged(http_duration.clone())),
            Box::new(Merged(store_duration.clone())),
        ] {
            registry
                .register(collector)
                .expect("metric registered once");
        }
        Metrics {
            registry,
            lifecycle,
            payments,
            active,
            active_all,
            store_up,
            scrape: Mutex::new(()),
            http_duration,
            store_duration,
        }
    }

    /// The exposition for a scrape: with the open sessions the store counted per merchant,
    /// or, when it could not count (`None`), without the active-session gauges (an old
    /// count would read as a current one) and with `paylink_store_up` 0.
    pub fn scrape<M: AsRef<str>>(
        &self,
        active: Option<impl IntoIterator<Item = (M, u64)>>,
    ) -> String {
        let _one_scrape = self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        match active {
            Some(counts) => self.set_active(counts),
            None => self.active_unknown(),
        }
        self.render()
    }

    fn set_active(&self, counts: impl IntoIterator<Item = (impl AsRef<str>, u64)>) {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let mut total = 0u64;
        for (merchant, count) in counts {
            self.active
                .with_label_values(&[merchant.as_ref()])
                .set(gauge(count));
            total = total.saturating_add(count);
        }
        self.active_all
            .with_label_values::<&str>(&[])
            .set(gauge(total));
        self.store_up.set(1);
    }

    fn active_unknown(&self) {
        self.active.reset();
        self.active_all.reset();
        self.store_up.set(0);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "metrics could not be encoded");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A store that times every call into `paylink_store_operation_duration_seconds`, whatever
/// the backend.
pub struct TimedStore {
    inner: Arc<dyn SessionStore>,
    metrics: Arc<Metrics>,
}

impl TimedStore {
    pub fn new(inner: Arc<dyn SessionStore>, metrics: Arc<Metrics>) -> Self {
        TimedStore { inner, metrics }
    }

    async fn time<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let start = Instant::now();
        let result = call.await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.metrics
            .store_duration
            .local()
            .with_label_values(&[operation, outcome])
            .observe(start.elapsed().as_secs_f64());
        result
    }
}

#[async_trait::async_trait]
impl SessionStore for TimedStore {
    async fn create(
        &self,
        digest: &TokenDigest,
        record: &SessionRecord,
        retention: Duration,
    ) -> Result<(), StoreError> {
        self.time("create", self.inner.create(digest, record, retention))
            .await
    }

    async fn load(&self, digest: &TokenDigest) -> Result<Option<SessionRecord>, StoreError> {
        self.time("load", self.inner.load(digest)).await
    }

    async fn begin_payment(
        &self,
        digest: &TokenDigest,
        lease: Duration,
        claim: ClaimId,
    ) -> Result<BeginPayment, StoreError> {
        self.time(
            "begin_payment",
            self.inner.begin_payment(digest, lease, claim),
        )
        .await
    }

    async fn complete_payment(
        &self,
        digest: &TokenDigest,
        merchant: &MerchantId,
        paid_at_ms: i64,
        card_last4: &str,
        retention: Duration,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let call = self
            .inner
            .complete_payment(digest, merchant, paid_at_ms, card_last4, retention);
        self.time("complete_payment", call).await
    }

    async fn abandon_payment(
        &self,
        digest: &TokenDigest,
        claim: ClaimId,
    ) -> Result<bool, StoreError> {
        self.time("abandon_payment", self.inner.abandon_payment(digest, claim))
            .await
    }

    async fn decline_payment(
        &self,
        digest: &TokenDigest,
        claim: ClaimId,
        lockout: Lockout,
    ) -> Result<Option<i64>, StoreError> {
        self.time(
            "decline_payment",
            self.inner.decline_payment(digest, claim, lockout),
        )
        .await
    }

    async fn revoke(
        &self,
        digest: &TokenDigest,
        merchant: &MerchantId,
        revoked_at_ms: i64,
        retention: Duration,
    ) -> Result<Revocation, StoreError> {
        let call = self
            .inner
            .revoke(digest, merchant, revoked_at_ms, retention);
        self.time("revoke", call).await
    }

    async fn mark_expired(
        &self,
        digest: &TokenDigest,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.time("mark_expired", self.inner.mark_expired(digest))
            .await
    }

    async fn hit_rate_limit(
        &self,
        key: &str,
        window: Duration,
    ) -> Result<RateLimitHit, StoreError> {
        self.time("rate_limit", self.inner.hit_rate_limit(key, window))
            .await
    }

    async fn hit_rate_limit_and_load(
        &self,
        key: &str,
        window: Duration,
        digest: &TokenDigest,
    ) -> Result<(Option<RateLimitHit>, Option<SessionRecord>), StoreError> {
        let call = self.inner.hit_rate_limit_and_load(key, window, digest);
        self.time("rate_limit_and_load", call).await
    }

    async fn create_limited(
        &self,
        limit: RateLimit<'_>,
        digest: &TokenDigest,
        record: &SessionRecord,
        retention: Duration,
    ) -> Result<Limited<()>, StoreError> {
        let call = self.inner.create_limited(limit, digest, record, retention);
        self.time("rate_limit_and_create", call).await
    }

    async fn begin_payment_limited(
        &self,
        limit: RateLimit<'_>,
        digest: &TokenDigest,
        lease: Duration,
        claim: ClaimId,
    ) -> Result<Limited<BeginPayment>, StoreError> {
        let call = self
            .inner
            .begin_payment_limited(limit, digest, lease, claim);
        self.time("rate_limit_and_begin_payment", call).await
    }

    async fn revoke_limited(
        &self,
        limit: RateLimit<'_>,
        digest: &TokenDigest,
        merchant: &MerchantId,
        revoked_at_ms: i64,
        retention: Duration,
    ) -> Result<Limited<Revocation>, StoreError> {
        let call = self
            .inner
            .revoke_limited(limit, digest, merchant, revoked_at_ms, retention);
        self.time("rate_limit_and_revoke", call).await
    }

    async fn active_sessions(&self, merchants: &[MerchantId]) -> Result<Vec<u64>, StoreError> {
        self.time("active_sessions", self.inner.active_sessions(merchants))
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.time("ping", self.inner.ping()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<i64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// Each scrape shows its own store answer whole: counts that add up with
    /// `paylink_store_up 1`, or no counts with `paylink_store_up 0`, even while other
    /// scrapes, some failing, run at the same time.
    #[test]
    fn concurrent_scrapes_each_render_their_own_store_answer() {
        let metrics = Arc::new(Metrics::new());
        let threads: Vec<_> = (0..4)
            .map(|thread| {
                let metrics = metrics.clone();
                std::thread::spawn(move || {
                    for round in 0..2_000u64 {
                        let counted = thread % 2 == 0;
                        let (a, b) = (round % 7, thread + 1);
                        let text = metrics.scrape(counted.then_some([("acme", a), ("globex", b)]));
                        if counted {
                            assert_eq!(value(&text, "paylink_store_up"), Some(1), "{text}");
                            let acme = value(&text, "paylink_active_sessions{merchant=\"acme\"}");
                            assert_eq!(acme, Some(a as i64), "{text}");
                            let all = value(&text, "paylink_active_sessions_all");
                            assert_eq!(all, Some((a + b) as i64), "{text}");
                        } else {
                            assert_eq!(value(&text, "paylink_store_up"), Some(0), "{text}");
                            assert!(!text.contains("paylink_active_sessions"), "{text}");
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
    }
}
