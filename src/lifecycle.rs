//! Lifecycle events: one structured event per step of a session, never with its token.
//! Each is logged, counted in the metrics, and kept in a short in-memory history for the
//! dashboard.

use crate::metrics::Metrics;
use crate::session::{SessionRecord, TokenDigest, now_ms};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

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
    pub token_ref: String,
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

/// Where lifecycle events go: the log, the metrics, and the dashboard's history.
pub struct Lifecycle {
    metrics: Arc<Metrics>,
    history: Mutex<History>,
}

impl Lifecycle {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Lifecycle {
            metrics,
            history: Mutex::new(History::default()),
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
            .with_label_values(&[event.short(), record.merchant_id.as_ref()])
            .inc();
        let now = now_ms();
        let minute = now / 60_000;
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
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
        if history.recent.len() == RECENT {
            history.recent.pop_front();
        }
        history.recent.push_back(RecentEvent {
            at_ms: now,
            event,
            merchant_id: record.merchant_id.to_string(),
            order_id: record.order_id.to_string(),
            token_ref,
        });
    }

    /// Counts by event: (last hour, since this instance started).
    pub fn counts(&self, event: LifecycleEvent) -> (u64, u64) {
        let minute = now_ms() / 60_000;
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let last_hour = history
            .minutes
            .iter()
            .filter(|(m, _)| *m > minute - MINUTES as i64)
            .map(|(_, counts)| counts[event.index()])
            .sum();
        (last_hour, history.since_start[event.index()])
    }

    /// The newest events first.
    pub fn recent(&self) -> Vec<RecentEvent> {
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        history.recent.iter().rev().cloned().collect()
    }
}
