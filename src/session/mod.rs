//! Payment sessions: the token, the record a store keeps, and the stores themselves.

mod memory;
mod record;
mod redis;
mod resp;
mod store;
mod token;

pub use memory::MemoryStore;
pub use record::{SessionRecord, SessionStatus};
pub use redis::{
    LazyClusterConnection, RedisStore, connect_redis, spawn_cluster_expiry_watcher,
    spawn_expiry_catch_up, spawn_expiry_watcher,
};
pub use store::{
    BeginPayment, ClaimId, ExpiredSender, ExpiredSession, Limited, Lockout, RateLimit,
    RateLimitHit, Revocation, SessionStore, StoreError, hit_over_limit,
};
pub use token::{MalformedToken, PaymentToken, RandomnessUnavailable, TokenDigest, TokenRef};

/// Milliseconds on a monotonic clock from its first use, plus one, so that 0 can stand
/// for "never": what the Redis connections time their silences by (a wall clock's steps
/// would retire connections that answered, or keep ones that did not).
pub(crate) fn monotonic_ms() -> u64 {
    static START: std::sync::LazyLock<std::time::Instant> =
        std::sync::LazyLock::new(std::time::Instant::now);
    u64::try_from(START.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

/// Milliseconds since the Unix epoch, UTC: the one clock sessions are timed by.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}
