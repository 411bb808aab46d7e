//! The embedded store: one process, same behaviour as Redis, for development and tests.

use super::store::{
    BeginPayment, ExpiredSender, ExpiredSession, Lockout, RateLimitHit, Revocation, SessionStore,
    StoreError,
};
use super::{SessionRecord, SessionStatus, TokenDigest, now_ms};
use crate::domain::MerchantId;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

/// How often the sweeper looks for sessions whose time ran out and records past retention.
const SWEEP_INTERVAL: Duration = Duration::from_millis(250);

/// In-process session store. Expiry is real: a background sweeper marks sessions expired
/// (and reports them) within a quarter second of their TTL and frees records once their
/// retention ends, with no request needed, so memory stays bounded by what is live.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    expired: ExpiredSender,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<TokenDigest, Entry>,
    /// (when, digest): the next moment an entry may need the sweeper. Entries are not
    /// removed from here when they change; the sweeper checks the entry itself.
    deadlines: BinaryHeap<Reverse<(i64, TokenDigest)>>,
    rate_limits: HashMap<String, (i64, u64)>,
    /// Live sessions per merchant, kept as sessions start and end.
    live: HashMap<MerchantId, u64>,
}

struct Entry {
    record: SessionRecord,
    /// The live session: true until paid, revoked or expired.
    live: bool,
    payment_lease_until_ms: Option<i64>,
    keep_until_ms: i64,
    declined_attempts: u32,
    payments_locked_until_ms: i64,
}

impl Entry {
    fn is_open(&self, now: i64) -> bool {
        self.live && now < self.record.expires_at_ms
    }

    fn payment_in_progress(&self, now: i64) -> bool {
        self.payment_lease_until_ms.is_some_and(|until| now < until)
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl MemoryStore {
    /// Creates the store and starts its sweeper on the current Tokio runtime. Sessions it
    /// finds expired are sent to `expired`. The sweeper stops when the store is dropped.
    pub fn start(expired: ExpiredSender) -> Self {
        let store = MemoryStore {
            inner: Arc::new(Mutex::new(Inner::default())),
            expired: expired.clone(),
        };
        let weak = Arc::downgrade(&store.inner);
        tokio::spawn(sweep_forever(weak, expired));
        store
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave an entry half-written (each verb
        // mutates after all checks), so a poisoned lock is still safe to use.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many sessions (open or kept as records) the store holds now.
    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

async fn sweep_forever(inner: Weak<Mutex<Inner>>, expired: ExpiredSender) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let found = {
            let mut guard = inner.lock().unwrap_or_else(|e| e.into_inner());
            guard.sweep(now_ms())
        };
        for session in found {
            // A closed receiver only means nobody listens for expiries any more.
            let _ = expired.send(session);
        }
    }
}

impl Inner {
    fn sweep(&mut self, now: i64) -> Vec<ExpiredSession> {
        let mut expired = Vec::new();
        while let Some(&Reverse((when, digest))) = self.deadlines.peek() {
            if when > now {
                break;
            }
            self.deadlines.pop();
            let Some(entry) = self.sessions.get(&digest) else {
                continue;
            };
            if entry.keep_until_ms <= now {
                self.end_live(&digest);
                self.sessions.remove(&digest);
                continue;
            }
            if let Some(record) = self.expire_if_due(&digest, now) {
                expired.push(ExpiredSession { digest, record });
            }
        }
        self.rate_limits
            .retain(|_, (window_end, _)| *window_end > now);
        expired
    }

    /// Ends the live session of an entry, keeping the per-merchant count right.
    fn end_live(&mut self, digest: &TokenDigest) {
        if let Some(entry) = self.sessions.get_mut(digest)
            && entry.live
        {
            entry.live = false;
            if let Some(n) = self.live.get_mut(&entry.record.merchant_id) {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// Marks a live session whose time has run out as expired; the record if this call
    /// made the change.
    fn expire_if_due(&mut self, digest: &TokenDigest, now: i64) -> Option<SessionRecord> {
        let entry = self.sessions.get(digest)?;
        if !entry.live || now < entry.record.expires_at_ms {
            return None;
        }
        self.end_live(digest);
        let entry = self.sessions.get_mut(digest)?;
        (entry.record.stored_status == SessionStatus::Open).then(|| {
            entry.record.stored_status = SessionStatus::Expired;
            entry.record.clone()
        })
    }

    fn end(&mut self, digest: TokenDigest, keep_until_ms: i64) {
        self.end_live(&digest);
        if let Some(entry) = self.sessions.get_mut(&digest) {
            entry.payment_lease_until_ms = None;
            entry.keep_until_ms = keep_until_ms;
            self.deadlines.push(Reverse((keep_until_ms, digest)));
        }
    }
}

#[async_trait::async_trait]
impl SessionStore for MemoryStore {
    async fn create(
        &self,
        digest: &TokenDigest,
        record: &SessionRecord,
        retention: Duration,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.sessions.contains_key(digest) {
            return Err(StoreError::Conflict);
        }
        let keep_until_ms = record.expires_at_ms.saturating_add(millis(retention));
        inner.sessions.insert(
            *digest,
            Entry {
                record: record.clone(),
                live: true,
                payment_lease_until_ms: None,
                keep_until_ms,
                declined_attempts: 0,
                payments_locked_until_ms: 0,
            },
        );
        inner
            .deadlines
            .push(Reverse((record.expires_at_ms, *digest)));
        inner.deadlines.push(Reverse((keep_until_ms, *digest)));
        *inner.live.entry(record.merchant_id.clone()).or_default() += 1;
        Ok(())
    }

    async fn load(&self, digest: &TokenDigest) -> Result<Option<SessionRecord>, StoreError> {
        let now = now_ms();
        let inner = self.lock();
        Ok(inner
            .sessions
            .get(digest)
            .filter(|e| e.keep_until_ms > now)
            .map(|e| e.record.clone()))
    }

    async fn begin_payment(
        &self,
        digest: &TokenDigest,
        lease: Duration,
    ) -> Result<BeginPayment, StoreError> {
        let now = now_ms();
        let mut inner = self.lock();
        let Some(entry) = inner.sessions.get_mut(digest) else {
            return Ok(BeginPayment::NotOpen(None));
        };
        if !entry.is_open(now) {
            return Ok(BeginPayment::NotOpen(Some(entry.record.clone())));
        }
        if entry.payment_in_progress(now) {
            return Ok(BeginPayment::InProgress(entry.record.clone()));
        }
        if entry.payments_locked_until_ms > now {
            return Ok(BeginPayment::Locked {
                until_ms: entry.payments_locked_until_ms,
            });
        }
        entry.payment_lease_until_ms = Some(now.saturating_add(millis(lease)));
        Ok(BeginPayment::Claimed(entry.record.clone()))
    }

    async fn complete_payment(
        &self,
        digest: &TokenDigest,
        _merchant: &MerchantId,
        paid_at_ms: i64,
        card_last4: &str,
        retention: Duration,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let mut inner = self.lock();
        let Some(entry) = inner.sessions.get_mut(digest) else {
            return Ok(None);
        };
        if matches!(
            entry.record.stored_status,
            SessionStatus::Open | SessionStatus::Expired
        ) {
            // An approved charge is recorded even if the TTL ran out while the processor
            // was working: the money moved, so the merchant must see `paid`.
            entry.record.stored_status = SessionStatus::Paid;
            entry.record.paid_at_ms = Some(paid_at_ms);
            entry.record.card_last4 = Some(card_last4.to_owned());
        }
        let record = entry.record.clone();
        inner.end(*digest, paid_at_ms.saturating_add(millis(retention)));
        Ok(Some(record))
    }

    async fn abandon_payment(&self, digest: &TokenDigest) -> Result<(), StoreError> {
        if let Some(entry) = self.lock().sessions.get_mut(digest) {
            entry.payment_lease_until_ms = None;
        }
        Ok(())
    }

    async fn decline_payment(
        &self,
        digest: &TokenDigest,
        lockout: Lockout,
    ) -> Result<Option<i64>, StoreError> {
        let mut inner = self.lock();
        let Some(entry) = inner.sessions.get_mut(digest) else {
            return Ok(None);
        };
        entry.payment_lease_until_ms = None;
        if lockout.max_failures == 0 {
            return Ok(None);
        }
        entry.declined_attempts += 1;
        if entry.declined_attempts < lockout.max_failures {
            return Ok(None);
        }
        entry.declined_attempts = 0;
        entry.payments_locked_until_ms = now_ms().saturating_add(millis(lockout.duration));
        Ok(Some(entry.payments_locked_until_ms))
    }

    async fn revoke(
        &self,
        digest: &TokenDigest,
        merchant: &MerchantId,
        revoked_at_ms: i64,
        retention: Duration,
    ) -> Result<Revocation, StoreError> {
        let now = now_ms();
        let mut inner = self.lock();
        let Some(entry) = inner
            .sessions
            .get_mut(digest)
            .filter(|e| e.keep_until_ms > now && &e.record.merchant_id == merchant)
        else {
            return Ok(Revocation::NotFound);
        };
        if !entry.is_open(now) {
            let mut record = entry.record.clone();
            record.stored_status = record.status_at(now);
            return Ok(Revocation::NotOpen(record));
        }
        if entry.payment_in_progress(now) {
            return Ok(Revocation::PaymentInProgress(entry.record.clone()));
        }
        entry.record.stored_status = SessionStatus::Revoked;
        entry.record.revoked_at_ms = Some(revoked_at_ms);
        let record = entry.record.clone();
        inner.end(*digest, revoked_at_ms.saturating_add(millis(retention)));
        Ok(Revocation::Revoked(record))
    }

    async fn mark_expired(
        &self,
        digest: &TokenDigest,
    ) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.lock().expire_if_due(digest, now_ms()))
    }

    async fn hit_rate_limit(
        &self,
        key: &str,
        window: Duration,
    ) -> Result<RateLimitHit, StoreError> {
        let now = now_ms();
        let mut inner = self.lock();
        let slot = inner
            .rate_limits
            .entry(key.to_owned())
            .or_insert((now + millis(window), 0));
        if slot.0 <= now {
            *slot = (now + millis(window), 0);
        }
        slot.1 += 1;
        Ok(RateLimitHit {
            count: slot.1,
            resets_in: Duration::from_millis(u64::try_from(slot.0 - now).unwrap_or(0)),
        })
    }

    async fn active_sessions(&self, merchants: &[MerchantId]) -> Result<Vec<u64>, StoreError> {
        // Sweep first so that sessions whose time ran out a moment ago are not counted.
        let (found, counts) = {
            let mut inner = self.lock();
            let found = inner.sweep(now_ms());
            let counts = merchants
                .iter()
                .map(|m| inner.live.get(m).copied().unwrap_or(0))
                .collect();
            (found, counts)
        };
        for session in found {
            let _ = self.expired.send(session);
        }
        Ok(counts)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
