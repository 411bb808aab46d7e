//! Lifecycle events: one structured event per step of a session, never with its token.
//! Each is logged, counted in the metrics, and kept in a short in-memory history for the
//! dashboard.

use crate::metrics::Metrics;
use crate::per_thread::PerThread;
use crate::session::{SessionRecord, TokenDigest, TokenRef, now_ms};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

/// The steps of a session's life that operators see in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LifecycleEvent {
    Created,
    Viewed,
    Paid,
    PaymentDeclined,
    Revoked,
    Expired,
    ReplayRejected,
}

impl LifecycleEvent {
    pub const ALL: [LifecycleEvent; 7] = [
        LifecycleEvent::Created,
        LifecycleEvent::Viewed,
        LifecycleEvent::Paid,
        LifecycleEvent::PaymentDeclined,
        LifecycleEvent::Revoked,
        LifecycleEvent::Expired,
        LifecycleEvent::ReplayRejected,
    ];

    /// The value of the `event` field, e.g. `session.paid`.
    pub fn name(&self) -> &'static str {
        match self {
            LifecycleEvent::Created => "session.created",
            LifecycleEvent::Viewed => "session.viewed",
            LifecycleEvent::Paid => "session.paid",
            LifecycleEvent::PaymentDeclined => "session.payment_declined",
            LifecycleEvent::Revoked => "session.revoked",
            LifecycleEvent::Expired => "session.expired",
            LifecycleEvent::ReplayRejected => "session.replay_rejected",
        }
    }

    /// The name without the `session.` prefix, for metric labels.
    pub fn short(&self) -> &'static str {
        &self.name()["session.".len()..]
    }

    fn index(&self) -> usize {
        Self::ALL.iter().position(|e| e == self).unwrap_or(0)
    }
}

/// One event as the dashboard lists it.
#[derive(Debug, Clone)]
pub struct RecentEvent {
    pub at_ms: i64,
    pub event: LifecycleEvent,
    pub merchant_id: String,
    pub order_id: String,
    pub token_ref: TokenRef,
}

const RECENT: usize = 50;
const MINUTES: usize = 60;

#[derive(Default)]
struct History {
    recent: VecDeque<RecentEvent>,
    /// Per-minute counts for the last hour: (minute number, counts by event).
    minutes: VecDeque<(i64, [u64; 7])>,
    since_start: [u64; 7],
}

/// Where lifecycle events go: the log, the metrics, and the dashboard's history (kept per
/// thread: a pay view must not wait on, or pull in, a lock another worker just held).
pub struct Lifecycle {
    metrics: Arc<Metrics>,
    history: PerThread<Mutex<History>>,
}

impl Lifecycle {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Lifecycle {
            metrics,
            history: PerThread::default(),
        }
    }

    /// Logs `event` with `event`, `merchantId`, `orderId` and `tokenRef` fields (and the
    /// request id from the current span), counts it, and remembers it.
    pub fn emit(&self, event: LifecycleEvent, record: &SessionRecord, digest: &TokenDigest) {
        let token_ref = digest.token_ref();
        // Every value a plain `&str`: written as it is, without a trip through `fmt`.
        tracing::info!(
            target: "paylink::lifecycle",
            event = event.name(),
            merchantId = record.merchant_id.as_ref(),
            orderId = record.order_id.as_ref(),
            tokenRef = token_ref.as_str(),
            message = event.name(),
        );
        self.metrics
            .lifecycle
            .local()
            .with_label_values(&[event.short(), record.merchant_id.as_ref()])
            .inc();
        let now = now_ms();
        let minute = now / 60_000;
        let mut history = lock(self.history.local());
        history.since_start[event.index()] += 1;
        match history.minutes.back_mut() {
            Some((m, counts)) if *m == minute => counts[event.index()] += 1,
            _ => {
                let mut counts = [0; 7];
                counts[event.index()] = 1;
                history.minutes.push_back((minute, counts));
            }
        }
        while history
            .minutes
            .front()
            .is_some_and(|(m, _)| *m <= minute - MINUTES as i64)
        {
            history.minutes.pop_front();
        }
        // A full history hands its oldest event's strings to the newest: no allocation.
        let oldest = (history.recent.len() == RECENT)
            .then(|| history.recent.pop_front())
            .flatten();
        let (mut merchant_id, mut order_id) =
            oldest.map_or_else(Default::default, |e| (e.merchant_id, e.order_id));
        merchant_id.clear();
        merchant_id.push_str(record.merchant_id.as_ref());
        order_id.clear();
        order_id.push_str(record.order_id.as_ref());
        history.recent.push_back(RecentEvent {
            at_ms: now,
            event,
            merchant_id,
            order_id,
            token_ref,
        });
    }

    /// Counts by event: (last hour, since this instance started).
    pub fn counts(&self, event: LifecycleEvent) -> (u64, u64) {
        let minute = now_ms() / 60_000;
        let (mut last_hour, mut since_start) = (0, 0);
        for history in self.history.all() {
            let history = lock(history);
            last_hour += history
                .minutes
                .iter()
                .filter(|(m, _)| *m > minute - MINUTES as i64)
                .map(|(_, counts)| counts[event.index()])
                .sum::<u64>();
            since_start += history.since_start[event.index()];
        }
        (last_hour, since_start)
    }

    /// The newest events first, at most `RECENT` of them.
    pub fn recent(&self) -> Vec<RecentEvent> {
        let mut recent: Vec<RecentEvent> = Vec::new();
        for history in self.history.all() {
            recent.extend(lock(history).recent.iter().rev().cloned());
        }
        // Stable: events of one thread in the same millisecond keep their order.
        recent.sort_by_key(|e| std::cmp::Reverse(e.at_ms));
        recent.truncate(RECENT);
        recent
    }
}

fn lock(history: &Mutex<History>) -> MutexGuard<'_, History> {
    history.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Amount, Currency, MerchantId, OrderId};
    use crate::session::SessionStatus;

    fn record(order: &str) -> SessionRecord {
        SessionRecord {
            merchant_id: MerchantId::parse("acme").unwrap(),
            order_id: OrderId::parse(order).unwrap(),
            amount: Amount::new(1999).unwrap(),
            currency: Currency::parse("EUR").unwrap(),
            description: None,
            created_at_ms: 1_000,
            expires_at_ms: 901_000,
            stored_status: SessionStatus::Open,
            paid_at_ms: None,
            revoked_at_ms: None,
            card_last4: None,
        }
    }

    /// Each thread keeps its own history; the dashboard's view is all of them together.
    #[test]
    fn events_from_many_threads_are_counted_and_listed_together() {
        let lifecycle = Arc::new(Lifecycle::new(Arc::new(Metrics::new())));
        let threads: Vec<_> = (0..10)
            .map(|t| {
                let lifecycle = lifecycle.clone();
                std::thread::spawn(move || {
                    for i in 0..20 {
                        let digest = TokenDigest::from_bytes([t; 32]);
                        let record = record(&format!("ord_{t}_{i}"));
                        lifecycle.emit(LifecycleEvent::Viewed, &record, &digest);
                    }
                    let last = record(&format!("ord_{t}_last"));
                    lifecycle.emit(
                        LifecycleEvent::Paid,
                        &last,
                        &TokenDigest::from_bytes([t; 32]),
                    );
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(lifecycle.counts(LifecycleEvent::Viewed), (200, 200));
        assert_eq!(lifecycle.counts(LifecycleEvent::Paid), (10, 10));
        assert_eq!(lifecycle.counts(LifecycleEvent::Revoked), (0, 0));
        let recent = lifecycle.recent();
        assert_eq!(recent.len(), RECENT);
        assert!(
            recent.windows(2).all(|w| w[0].at_ms >= w[1].at_ms),
            "newest first"
        );
        // The newest events include a thread's last one, a payment.
        let paid = recent
            .iter()
            .filter(|e| e.event == LifecycleEvent::Paid)
            .count();
        assert!(paid >= 1, "the newest events include a payment");
        let text = lifecycle.metrics.render();
        assert!(
            text.contains("paylink_session_events_total{event=\"viewed\",merchant=\"acme\"} 200"),
            "{text}"
        );
    }
}
