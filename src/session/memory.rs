//! The embedded store: one process, same behaviour as Redis, for development and tests.

use super::store::{
    BeginPayment, ClaimId, ExpiredSender, ExpiredSession, Lockout, RateLimitHit, Revocation,
    SessionStore, StoreError,
};
use super::{SessionRecord, SessionStatus, TokenDigest, now_ms};
use crate::domain::{Amount, Currency, Description, MerchantId, OrderId};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

/// How often the sweeper looks for sessions whose time ran out and records past retention.
const SWEEP_INTERVAL: Duration = Duration::from_millis(250);

/// In-process session store. Expiry is real: a background sweeper marks sessions expired
/// (and reports them) within a quarter second of their TTL and frees records once their
/// retention ends, with no request needed, so memory stays bounded by what is live.
/// Sessions are kept compact (about 100 bytes each plus their text), so a million open
/// links fit in a few hundred megabytes.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    expired: ExpiredSender,
}

#[derive(Default)]
struct Inner {
    sessions: Sessions,
    rate_limits: HashMap<String, (i64, u64)>,
    /// Merchant ids, interned: entries hold an index into this.
    merchants: Vec<MerchantId>,
    merchant_index: HashMap<MerchantId, u32>,
    /// Live sessions per merchant index, kept as sessions start and end.
    live: Vec<u64>,
}

/// The sessions, split by the first byte of their digest (uniform: it is SHA-256) into
/// parts that each grow on their own. A map rehashes everything it holds when it grows, and
/// a heap copies itself, under the store's lock: one map and one heap of a few hundred
/// thousand sessions stalled every request for tens of milliseconds as they grew (creates'
/// p99 of 15 ms in `bench/run` and 13–45 ms in 5-second wrk runs of creates alone; 5 ms when
/// they were made large enough beforehand). Each part grows 1/16 as much at a time.
#[derive(Default)]
struct Sessions([Shard; SESSION_SHARDS]);

const SESSION_SHARDS: usize = 16;

#[derive(Default)]
struct Shard {
    entries: HashMap<TokenDigest, Box<Entry>, BuildHasherDefault<DigestHasher>>,
    /// (when, digest): the next moment an entry needs the sweeper — its expiry while it is
    /// live, the end of its retention once it has ended. Entries are not removed from here
    /// when they change; the sweeper checks the entry itself.
    deadlines: BinaryHeap<Reverse<(i64, TokenDigest)>>,
}

/// Hashes a [`TokenDigest`] by its own bytes. They are SHA-256 of a token from the OS
/// generator, already uniform, so SipHash's keyed pass over all 32 bought nothing but time
/// on every read. Nor does it guard against flooding here: only the store's own tokens are
/// inserted, and a lookup's cost depends on what is in the map, not on the digest asked for.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    /// Takes the digest's bytes 8 to 15 (the length written before them is too short to
    /// have any). Not the first eight: byte 0 picks the shard, and the map picks a bucket
    /// by the hash's low bits, so all of a shard's entries would share their lowest four.
    fn write(&mut self, bytes: &[u8]) {
        if let Some(Ok(word)) = bytes.get(8..16).map(<[u8; 8]>::try_from) {
            self.0 = u64::from_le_bytes(word);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl Sessions {
    fn index(digest: &TokenDigest) -> usize {
        usize::from(digest.as_bytes()[0]) % SESSION_SHARDS
    }

    fn shard(&self, digest: &TokenDigest) -> &Shard {
        &self.0[Self::index(digest)]
    }

    fn shard_mut(&mut self, digest: &TokenDigest) -> &mut Shard {
        &mut self.0[Self::index(digest)]
    }

    fn get(&self, digest: &TokenDigest) -> Option<&Entry> {
        self.shard(digest).entries.get(digest).map(AsRef::as_ref)
    }

    fn get_mut(&mut self, digest: &TokenDigest) -> Option<&mut Entry> {
        let entry = self.shard_mut(digest).entries.get_mut(digest);
        entry.map(AsMut::as_mut)
    }

    fn contains_key(&self, digest: &TokenDigest) -> bool {
        self.shard(digest).entries.contains_key(digest)
    }

    fn insert(&mut self, digest: TokenDigest, entry: Box<Entry>) {
        self.shard_mut(&digest).entries.insert(digest, entry);
    }

    fn remove(&mut self, digest: &TokenDigest) {
        self.shard_mut(digest).entries.remove(digest);
    }

    fn len(&self) -> usize {
        self.0.iter().map(|shard| shard.entries.len()).sum()
    }

    /// Has the sweeper look at `digest`'s entry at `when`.
    fn schedule(&mut self, when: i64, digest: TokenDigest) {
        self.shard_mut(&digest)
            .deadlines
            .push(Reverse((when, digest)));
    }

    /// The next digest of part `shard` whose moment has come by `now`, taken off its heap.
    fn next_due(&mut self, shard: usize, now: i64) -> Option<TokenDigest> {
        let deadlines = &mut self.0[shard].deadlines;
        let &Reverse((when, digest)) = deadlines.peek()?;
        (when <= now).then(|| {
            deadlines.pop();
            digest
        })
    }
}

/// One session. Times are ms since the epoch, 0 meaning "none".
struct Entry {
    order_id: OrderId,
    description: Option<Description>,
    amount: Amount,
    created_at_ms: i64,
    expires_at_ms: i64,
    /// When it was paid or revoked.
    ended_at_ms: i64,
    keep_until_ms: i64,
    payment_lease_until_ms: i64,
    /// The [`ClaimId`] that holds the payment lease, 0 for none.
    payment_claim: u64,
    payments_locked_until_ms: i64,
    merchant: u32,
    currency: Currency,
    status: SessionStatus,
    /// The live session: true until paid, revoked or expired.
    live: bool,
    declined_attempts: u8,
    card_last4: [u8; 4],
}

impl Entry {
    fn is_open(&self, now: i64) -> bool {
        self.live && now < self.expires_at_ms
    }

    fn payment_in_progress(&self, now: i64) -> bool {
        now < self.payment_lease_until_ms
    }

    /// Frees the payment lease if `claim` holds it; says whether it did.
    fn release(&mut self, claim: ClaimId) -> bool {
        if self.payment_claim != claim.get() {
            return false;
        }
        let held = self.payment_in_progress(now_ms());
        self.payment_lease_until_ms = 0;
        self.payment_claim = 0;
        held
    }
}

/// The record as the store trait hands it out.
fn record(merchants: &[MerchantId], entry: &Entry) -> SessionRecord {
    let ended = (entry.ended_at_ms != 0).then_some(entry.ended_at_ms);
    SessionRecord {
        merchant_id: merchants[entry.merchant as usize].clone(),
        order_id: entry.order_id.clone(),
        amount: entry.amount,
        currency: entry.currency,
        description: entry.description.clone(),
        created_at_ms: entry.created_at_ms,
        expires_at_ms: entry.expires_at_ms,
        stored_status: entry.status,
        paid_at_ms: ended.filter(|_| entry.status == SessionStatus::Paid),
        revoked_at_ms: ended.filter(|_| entry.status == SessionStatus::Revoked),
        card_last4: (entry.status == SessionStatus::Paid)
            .then(|| String::from_utf8_lossy(&entry.card_last4).into_owned()),
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
    fn intern(&mut self, merchant: &MerchantId) -> u32 {
        if let Some(&index) = self.merchant_index.get(merchant) {
            return index;
        }
        let index = u32::try_from(self.merchants.len()).unwrap_or(u32::MAX);
        self.merchants.push(merchant.clone());
        self.merchant_index.insert(merchant.clone(), index);
        self.live.push(0);
        index
    }

    fn record_of(&self, digest: &TokenDigest) -> Option<SessionRecord> {
        self.sessions
            .get(digest)
            .map(|e| record(&self.merchants, e))
    }

    fn sweep(&mut self, now: i64) -> Vec<ExpiredSession> {
        let mut expired = Vec::new();
        for shard in 0..SESSION_SHARDS {
            while let Some(digest) = self.sessions.next_due(shard, now) {
                self.sweep_one(digest, now, &mut expired);
            }
        }
        self.rate_limits
            .retain(|_, (window_end, _)| *window_end > now);
        expired
    }

    /// Forgets `digest`'s entry when its retention is over, or expires it when its time ran
    /// out, reporting that into `expired`.
    fn sweep_one(&mut self, digest: TokenDigest, now: i64, expired: &mut Vec<ExpiredSession>) {
        let Some(entry) = self.sessions.get(&digest) else {
            return;
        };
        if entry.keep_until_ms <= now {
            self.end_live(&digest);
            self.sessions.remove(&digest);
            return;
        }
        if let Some(record) = self.expire_if_due(&digest, now) {
            expired.push(ExpiredSession { digest, record });
        }
    }

    /// Ends the live session of an entry, keeping the per-merchant count right, and
    /// schedules the end of its retention.
    fn end_live(&mut self, digest: &TokenDigest) {
        if let Some(entry) = self.sessions.get_mut(digest)
            && entry.live
        {
            entry.live = false;
            if let Some(n) = self.live.get_mut(entry.merchant as usize) {
                *n = n.saturating_sub(1);
            }
            let keep_until = entry.keep_until_ms;
            self.sessions.schedule(keep_until, *digest);
        }
    }

    /// Marks a live session whose time has run out as expired; the record if this call
    /// made the change.
    fn expire_if_due(&mut self, digest: &TokenDigest, now: i64) -> Option<SessionRecord> {
        let entry = self.sessions.get(digest)?;
        if !entry.live || now < entry.expires_at_ms {
            return None;
        }
        self.end_live(digest);
        let entry = self.sessions.get_mut(digest)?;
        if entry.status != SessionStatus::Open {
            return None;
        }
        entry.status = SessionStatus::Expired;
        self.record_of(digest)
    }

    /// Ends a session (paid or revoked) at `ended_at_ms`, keeping its record until
    /// `keep_until_ms`.
    fn end(&mut self, digest: &TokenDigest, ended_at_ms: i64, keep_until_ms: i64) {
        if let Some(entry) = self.sessions.get_mut(digest) {
            entry.payment_lease_until_ms = 0;
            entry.payment_claim = 0;
            entry.ended_at_ms = ended_at_ms;
            entry.keep_until_ms = keep_until_ms;
        }
        if self.sessions.get(digest).is_some_and(|e| e.live) {
            self.end_live(digest);
        } else {
            self.sessions.schedule(keep_until_ms, *digest);
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
        let merchant = inner.intern(&record.merchant_id);
        inner.sessions.insert(
            *digest,
            Box::new(Entry {
                order_id: record.order_id.clone(),
                description: record.description.clone(),
                amount: record.amount,
                created_at_ms: record.created_at_ms,
                expires_at_ms: record.expires_at_ms,
                ended_at_ms: 0,
                keep_until_ms: record.expires_at_ms.saturating_add(millis(retention)),
                payment_lease_until_ms: 0,
                payment_claim: 0,
                payments_locked_until_ms: 0,
                merchant,
                currency: record.currency,
                status: SessionStatus::Open,
                live: true,
                declined_attempts: 0,
                card_last4: [0; 4],
            }),
        );
        inner.sessions.schedule(record.expires_at_ms, *digest);
        inner.live[merchant as usize] += 1;
        Ok(())
    }

    async fn load(&self, digest: &TokenDigest) -> Result<Option<SessionRecord>, StoreError> {
        let now = now_ms();
        let inner = self.lock();
        Ok(inner
            .sessions
            .get(digest)
            .filter(|e| e.keep_until_ms > now)
            .map(|e| record(&inner.merchants, e)))
    }

    async fn begin_payment(
        &self,
        digest: &TokenDigest,
        lease: Duration,
        claim: ClaimId,
    ) -> Result<BeginPayment, StoreError> {
        let now = now_ms();
        let mut inner = self.lock();
        let Inner {
            sessions,
            merchants,
            ..
        } = &mut *inner;
        let Some(entry) = sessions.get_mut(digest) else {
            return Ok(BeginPayment::NotOpen(None));
        };
        if !entry.is_open(now) {
            return Ok(BeginPayment::NotOpen(Some(record(merchants, entry))));
        }
        if entry.payment_in_progress(now) {
            return Ok(BeginPayment::InProgress(record(merchants, entry)));
        }
        if entry.payments_locked_until_ms > now {
            return Ok(BeginPayment::Locked {
                until_ms: entry.payments_locked_until_ms,
            });
        }
        // The claim never lapses while the session could still be paid: only a decline or
        // an abandon releases it, so an approval that could not be recorded keeps the link
        // closed.
        entry.payment_lease_until_ms = now.saturating_add(millis(lease)).max(entry.expires_at_ms);
        entry.payment_claim = claim.get();
        Ok(BeginPayment::Claimed(record(merchants, entry)))
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
        if matches!(entry.status, SessionStatus::Open | SessionStatus::Expired) {
            // An approved charge is recorded even if the TTL ran out while the processor
            // was working: the money moved, so the merchant must see `paid`.
            entry.status = SessionStatus::Paid;
            let mut last4 = [b'0'; 4];
            for (slot, byte) in last4.iter_mut().zip(card_last4.bytes()) {
                *slot = byte;
            }
            entry.card_last4 = last4;
            inner.end(
                digest,
                paid_at_ms,
                paid_at_ms.saturating_add(millis(retention)),
            );
        }
        Ok(inner.record_of(digest))
    }

    async fn abandon_payment(
        &self,
        digest: &TokenDigest,
        claim: ClaimId,
    ) -> Result<bool, StoreError> {
        Ok(self
            .lock()
            .sessions
            .get_mut(digest)
            .is_some_and(|entry| entry.release(claim)))
    }

    async fn decline_payment(
        &self,
        digest: &TokenDigest,
        claim: ClaimId,
        lockout: Lockout,
    ) -> Result<Option<i64>, StoreError> {
        let mut inner = self.lock();
        let Some(entry) = inner.sessions.get_mut(digest) else {
            return Ok(None);
        };
        entry.release(claim);
        if lockout.max_failures == 0 {
            return Ok(None);
        }
        entry.declined_attempts = entry.declined_attempts.saturating_add(1);
        if u32::from(entry.declined_attempts) < lockout.max_failures {
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
        let owner = inner.merchant_index.get(merchant).copied();
        let Inner {
            sessions,
            merchants,
            ..
        } = &mut *inner;
        let Some(entry) = sessions
            .get_mut(digest)
            .filter(|e| e.keep_until_ms > now && Some(e.merchant) == owner)
        else {
            return Ok(Revocation::NotFound);
        };
        if !entry.is_open(now) {
            let mut ended = record(merchants, entry);
            ended.stored_status = ended.status_at(now);
            return Ok(Revocation::NotOpen(ended));
        }
        if entry.payment_in_progress(now) {
            return Ok(Revocation::PaymentInProgress(record(merchants, entry)));
        }
        entry.status = SessionStatus::Revoked;
        inner.end(
            digest,
            revoked_at_ms,
            revoked_at_ms.saturating_add(millis(retention)),
        );
        match inner.record_of(digest) {
            Some(record) => Ok(Revocation::Revoked(record)),
            None => Ok(Revocation::NotFound),
        }
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
                .map(|m| {
                    inner
                        .merchant_index
                        .get(m)
                        .map_or(0, |&i| inner.live[i as usize])
                })
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    /// The map's hasher must see each digest's bytes: were `TokenDigest`'s `Hash` to feed
    /// them some other way, every session of a shard would land in one bucket.
    #[test]
    fn the_digest_hasher_spreads_one_shards_digests_over_the_low_bits() {
        let build = BuildHasherDefault::<DigestHasher>::default();
        let mut low_bits = std::collections::HashSet::new();
        for i in 0..1024u32 {
            let mut bytes = [0u8; 32];
            bytes[0] = 3;
            bytes[8..12].copy_from_slice(&i.wrapping_mul(0x9E37_79B9).to_le_bytes());
            low_bits.insert(build.hash_one(TokenDigest::from_bytes(bytes)) & 0x3ff);
        }
        assert!(low_bits.len() > 512, "{} distinct of 1024", low_bits.len());
    }
}
