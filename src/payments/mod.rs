//! Charging a card, behind a trait so a real provider can replace the test processor.

use crate::domain::{Amount, CardDetails, Currency};
use crate::session::TokenDigest;
use std::sync::atomic::{AtomicU64, Ordering};

/// One charge: what to take and from which card. `idempotency_key` is the session digest,
/// so a provider can refuse a second charge of one session.
#[derive(Debug)]
pub struct ChargeRequest<'a> {
    pub amount: Amount,
    pub currency: Currency,
    pub card: &'a CardDetails,
    pub idempotency_key: TokenDigest,
}

/// The processor's answer to a charge it received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    Approved,
    /// Declined, with a reason fit to show the payer.
    Declined(String),
}

#[derive(Debug, thiserror::Error)]
#[error("the payment processor could not be reached")]
pub struct ProcessorError;

#[async_trait::async_trait]
pub trait PaymentProcessor: Send + Sync + 'static {
    async fn charge(&self, request: ChargeRequest<'_>) -> Result<ChargeOutcome, ProcessorError>;
}

/// The built-in test processor of the contract: `4000 0000 0000 0002` is declined,
/// `4000 0000 0000 9995` has insufficient funds, any other valid card is approved.
/// It counts what it was asked, so tests can prove a link was charged once.
#[derive(Debug, Default)]
pub struct TestProcessor {
    approved: AtomicU64,
    declined: AtomicU64,
}

impl TestProcessor {
    pub fn approvals(&self) -> u64 {
        self.approved.load(Ordering::SeqCst)
    }

    pub fn declines(&self) -> u64 {
        self.declined.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl PaymentProcessor for TestProcessor {
    async fn charge(&self, request: ChargeRequest<'_>) -> Result<ChargeOutcome, ProcessorError> {
        let outcome = match request.card.number.digits() {
            "4000000000000002" => ChargeOutcome::Declined("Your card was declined.".into()),
            "4000000000009995" => ChargeOutcome::Declined("Insufficient funds.".into()),
            _ => ChargeOutcome::Approved,
        };
        let counter = match outcome {
            ChargeOutcome::Approved => &self.approved,
            ChargeOutcome::Declined(_) => &self.declined,
        };
        counter.fetch_add(1, Ordering::SeqCst);
        Ok(outcome)
    }
}
