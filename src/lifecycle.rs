//! Lifecycle events: one structured event per step of a session, never with its token.

use crate::session::{SessionRecord, TokenDigest};

/// The steps of a session's life that operators see in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

/// Logs `event` for a session with `merchantId`, `orderId` and `tokenRef` as fields.
pub fn emit(event: LifecycleEvent, record: &SessionRecord, digest: &TokenDigest) {
    tracing::info!(
        target: "paylink::lifecycle",
        event = event.name(),
        merchantId = %record.merchant_id,
        orderId = %record.order_id,
        tokenRef = %digest.token_ref(),
        "{}",
        event.name()
    );
}
