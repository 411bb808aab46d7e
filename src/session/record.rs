use crate::domain::{Amount, Currency, Description, MerchantId, OrderId};

/// Where a session stands. `Open` is the only state in which the link can be paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionStatus {
    Open,
    Paid,
    Revoked,
    Expired,
}

impl SessionStatus {
    /// The contract's spelling: `open`, `paid`, `revoked`, `expired`.
    pub fn as_str(&self) -> &'static str {
        match self {
            SessionStatus::Open => "open",
            SessionStatus::Paid => "paid",
            SessionStatus::Revoked => "revoked",
            SessionStatus::Expired => "expired",
        }
    }

    /// One-letter form kept in the store.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            SessionStatus::Open => "o",
            SessionStatus::Paid => "p",
            SessionStatus::Revoked => "r",
            SessionStatus::Expired => "e",
        }
    }

    pub(crate) fn from_code(s: &str) -> Option<Self> {
        Some(match s {
            "o" => SessionStatus::Open,
            "p" => SessionStatus::Paid,
            "r" => SessionStatus::Revoked,
            "e" => SessionStatus::Expired,
            _ => return None,
        })
    }
}

/// What a store keeps of a session: never the token, never card data beyond the last four
/// digits. Times are milliseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub merchant_id: MerchantId,
    pub order_id: OrderId,
    pub amount: Amount,
    pub currency: Currency,
    pub description: Option<Description>,
    pub created_at_ms: i64,
    /// Absolute: fixed at creation, never extended by a read.
    pub expires_at_ms: i64,
    /// The status as last written. An `Open` record past `expires_at_ms` is expired even
    /// before the store has noticed; use [`SessionRecord::status_at`].
    pub stored_status: SessionStatus,
    pub paid_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    pub card_last4: Option<String>,
}

impl SessionRecord {
    /// The status as of `now_ms`: an open record whose time has run out is expired.
    pub fn status_at(&self, now_ms: i64) -> SessionStatus {
        match self.stored_status {
            SessionStatus::Open if now_ms >= self.expires_at_ms => SessionStatus::Expired,
            status => status,
        }
    }
}
