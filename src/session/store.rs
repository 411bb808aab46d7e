use super::{RandomnessUnavailable, SessionRecord, TokenDigest};
use crate::domain::MerchantId;
use rand::TryRng;
use std::num::NonZeroU64;
use std::time::Duration;

/// What can go wrong in a store, as the routes need to tell it apart: an unreachable or
/// slow store is a 503, never a 410.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the session store cannot be reached")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the session store did not answer in time")]
    Timeout,
    #[error("the session store holds a record it cannot read")]
    Corrupt(String),
    #[error("a session with this digest exists already")]
    Conflict,
}

/// Names one payment attempt's claim on a link: a fresh random number per attempt, so
/// that releasing a claim can only ever free the claim it was made for, never a later
/// attempt's (say, after a store timeout left the first one's outcome unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClaimId(NonZeroU64);

impl ClaimId {
    /// A new claim id from the OS generator; never 0.
    pub fn generate() -> Result<Self, RandomnessUnavailable> {
        loop {
            let drawn = rand::rngs::SysRng
                .try_next_u64()
                .map_err(|_| RandomnessUnavailable)?;
            if let Some(id) = NonZeroU64::new(drawn) {
                return Ok(ClaimId(id));
            }
        }
    }

    pub fn get(self) -> u64 {
        self.0.get()
    }
}

/// The answer to [`SessionStore::begin_payment`].
#[derive(Debug)]
pub enum BeginPayment {
    /// This caller alone may now charge the card; it must end with `complete_payment`,
    /// `decline_payment` or `abandon_payment`.
    Claimed(SessionRecord),
    /// Another payment of this link is being processed right now.
    InProgress(SessionRecord),
    /// Too many declined attempts: payments of this link are refused until `until_ms`.
    Locked { until_ms: i64 },
    /// The link is not payable (paid, revoked, expired); the record if one is still kept.
    NotOpen(Option<SessionRecord>),
}

/// The answer to [`SessionStore::revoke`].
#[derive(Debug)]
pub enum Revocation {
    Revoked(SessionRecord),
    /// A payment holds the link; it can no longer be revoked.
    PaymentInProgress(SessionRecord),
    /// The session has already ended.
    NotOpen(SessionRecord),
    /// No such session for this merchant (unknown, gone, or another merchant's).
    NotFound,
}

/// How many declined attempts lock a link's payments, and for how long. `max_failures`
/// 0 turns the lock off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lockout {
    pub max_failures: u32,
    pub duration: Duration,
}

/// One rate-limit counter after a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitHit {
    /// Hits in the current window, this one included.
    pub count: u64,
    /// Time until the window ends.
    pub resets_in: Duration,
}

/// A fixed-window rate limit that a store step counts its request against: at most `max`
/// hits per `window` on the counter named `key`.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit<'a> {
    pub key: &'a str,
    pub window: Duration,
    pub max: u64,
}

/// What a store step run under a [`RateLimit`] did.
#[derive(Debug)]
pub enum Limited<T> {
    /// The hit was within the limit, or could not be counted, and the step ran.
    Ran(T),
    /// The hit went over the limit, and the step did not run.
    Over(RateLimitHit),
    /// The counter did not answer in time, and the step did not run (the request has
    /// waited its store timeout already).
    CounterTimedOut,
}

/// Counts one hit on `limit`'s counter: the hit when it went over the limit, `None` when
/// it did not or could not be counted (a store that answers but cannot count does not block
/// traffic), `Timeout` when the counter did not answer in time.
pub async fn hit_over_limit<S: SessionStore + ?Sized>(
    store: &S,
    limit: RateLimit<'_>,
) -> Result<Option<RateLimitHit>, StoreError> {
    match store.hit_rate_limit(limit.key, limit.window).await {
        Ok(hit) if hit.count > limit.max => Ok(Some(hit)),
        Err(StoreError::Timeout) => Err(StoreError::Timeout),
        _ => Ok(None),
    }
}

/// Counts `limit`'s hit first and then runs `step` (a future: it does nothing until awaited)
/// unless the hit went over the limit or timed out: how a backend without one call for both
/// runs a step under a limit, in two round trips.
pub async fn count_then<S, T>(
    store: &S,
    limit: RateLimit<'_>,
    step: impl Future<Output = Result<T, StoreError>>,
) -> Result<Limited<T>, StoreError>
where
    S: SessionStore + ?Sized,
{
    match hit_over_limit(store, limit).await {
        Ok(None) => step.await.map(Limited::Ran),
        Ok(Some(hit)) => Ok(Limited::Over(hit)),
        Err(StoreError::Timeout) => Ok(Limited::CounterTimedOut),
        Err(e) => Err(e),
    }
}

/// A session whose TTL ran out with nobody paying, reported once by whichever instance
/// marked it expired.
#[derive(Debug, Clone)]
pub struct ExpiredSession {
    pub digest: TokenDigest,
    pub record: SessionRecord,
}

/// Where stores send the sessions they marked expired on their own.
pub type ExpiredSender = tokio::sync::mpsc::UnboundedSender<ExpiredSession>;

/// The session store: a few verbs with meaning in our domain. Each is one atomic step in
/// the backend, so two callers racing on one link can never both win.
///
/// A session is *open* from `create` until it is paid, revoked, or its absolute expiry
/// passes. After that its record stays, unpayable, for the retention period.
#[async_trait::async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Stores a new open session that dies at `record.expires_at_ms`; its record is kept
    /// until `retention` after that. `Conflict` if the digest is taken.
    async fn create(
        &self,
        digest: &TokenDigest,
        record: &SessionRecord,
        retention: Duration,
    ) -> Result<(), StoreError>;

    /// The record, open or ended, while the store keeps it. Never extends any TTL.
    async fn load(&self, digest: &TokenDigest) -> Result<Option<SessionRecord>, StoreError>;

    /// Atomically takes the link for one payment attempt, as `claim`. Exactly one of any
    /// number of concurrent callers gets `Claimed`. The claim holds for `lease` and in any
    /// case until the session's expiry: it is released only by `abandon_payment` or
    /// `decline_payment` with the same `claim`, or by `complete_payment`, never by time
    /// while the link could still be paid. After an error the claim may or may not have
    /// been taken; `abandon_payment` with the same `claim` is then always safe.
    async fn begin_payment(
        &self,
        digest: &TokenDigest,
        lease: Duration,
        claim: ClaimId,
    ) -> Result<BeginPayment, StoreError>;

    /// The processor approved the claimed payment: in one step the live session is deleted
    /// and the record becomes `paid`, kept for `retention` from now. Returns the paid
    /// record, or `None` when the record is gone.
    async fn complete_payment(
        &self,
        digest: &TokenDigest,
        merchant: &MerchantId,
        paid_at_ms: i64,
        card_last4: &str,
        retention: Duration,
    ) -> Result<Option<SessionRecord>, StoreError>;

    /// The claimed payment did not go through (the processor failed, or the claim's own
    /// outcome is unknown): if `claim` still holds the link, it is payable again. Another
    /// claim is left alone. Returns whether `claim` was held and is now released.
    async fn abandon_payment(
        &self,
        digest: &TokenDigest,
        claim: ClaimId,
    ) -> Result<bool, StoreError>;

    /// The processor declined the claimed payment: releases the link like
    /// `abandon_payment` (only if `claim` holds it) and, in the same step, counts the
    /// failure either way. The `lockout.max_failures`-th decline locks the link's payments
    /// for `lockout.duration` (card testing defence); returns the end of that lock when
    /// this decline set it.
    async fn decline_payment(
        &self,
        digest: &TokenDigest,
        claim: ClaimId,
        lockout: Lockout,
    ) -> Result<Option<i64>, StoreError>;

    /// Revokes `merchant`'s open session in one step. Another merchant's session answers
    /// `NotFound`, exactly like an unknown one.
    async fn revoke(
        &self,
        digest: &TokenDigest,
        merchant: &MerchantId,
        revoked_at_ms: i64,
        retention: Duration,
    ) -> Result<Revocation, StoreError>;

    /// Marks an open session whose time ran out as `expired`. Returns the record to the one
    /// caller that made the change and `None` to everyone else, so an expiry is reported
    /// once however many instances notice it.
    async fn mark_expired(&self, digest: &TokenDigest)
    -> Result<Option<SessionRecord>, StoreError>;

    /// Counts one hit on a fixed-window counter named `key`.
    async fn hit_rate_limit(&self, key: &str, window: Duration)
    -> Result<RateLimitHit, StoreError>;

    /// `hit_rate_limit` and then `load`, in one round trip where the backend can: a rate
    /// limited page view then costs the store no more than an unlimited one. The hit is
    /// `None` when only the counting failed (a limit that cannot count lets traffic through).
    async fn hit_rate_limit_and_load(
        &self,
        key: &str,
        window: Duration,
        digest: &TokenDigest,
    ) -> Result<(Option<RateLimitHit>, Option<SessionRecord>), StoreError> {
        let hit = self.hit_rate_limit(key, window).await.ok();
        Ok((hit, self.load(digest).await?))
    }

    /// `create`, counted against `limit` in the same round trip where the backend can:
    /// over the limit nothing is created. The count follows [`hit_over_limit`].
    async fn create_limited(
        &self,
        limit: RateLimit<'_>,
        digest: &TokenDigest,
        record: &SessionRecord,
        retention: Duration,
    ) -> Result<Limited<()>, StoreError> {
        count_then(self, limit, self.create(digest, record, retention)).await
    }

    /// `begin_payment`, counted against `limit` in the same round trip where the backend
    /// can: over the limit the link is not claimed. The count follows [`hit_over_limit`].
    async fn begin_payment_limited(
        &self,
        limit: RateLimit<'_>,
        digest: &TokenDigest,
        lease: Duration,
        claim: ClaimId,
    ) -> Result<Limited<BeginPayment>, StoreError> {
        count_then(self, limit, self.begin_payment(digest, lease, claim)).await
    }

    /// `revoke`, counted against `limit` in the same round trip where the backend can:
    /// over the limit nothing is revoked. The count follows [`hit_over_limit`].
    async fn revoke_limited(
        &self,
        limit: RateLimit<'_>,
        digest: &TokenDigest,
        merchant: &MerchantId,
        revoked_at_ms: i64,
        retention: Duration,
    ) -> Result<Limited<Revocation>, StoreError> {
        let revoke = self.revoke(digest, merchant, revoked_at_ms, retention);
        count_then(self, limit, revoke).await
    }

    /// How many sessions are open (payable) now for each of `merchants`, in that order.
    /// Exact even for sessions that expired with nobody asking; never scans the keyspace.
    async fn active_sessions(&self, merchants: &[MerchantId]) -> Result<Vec<u64>, StoreError>;

    /// Succeeds when the store answers.
    async fn ping(&self) -> Result<(), StoreError>;
}
