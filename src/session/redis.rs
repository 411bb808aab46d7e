//! The Redis store. Every verb is one round trip: a single command or one Lua script, so
//! the one-time claim is atomic in Redis itself.
//!
//! On a standalone server reached over plain TCP or a Unix socket, `load` (the pay page's
//! read) goes over paylink's own pipelined connection ([`super::resp`]); everything else,
//! and every read on a cluster or over TLS, goes through redis-rs.
//!
//! Keys, all of one session in one hash slot (`{digest}` is the hash tag), so Redis Cluster
//! needs no redesign:
//! - `pl:{D}` — hash: the record (no token, no card data but the last four digits);
//!   expires `retention` after the session ends.
//! - `pl:{D}:live` — the live session, expiring at the session's absolute expiry. It exists
//!   exactly while the link is payable; paying or revoking deletes it in the same script
//!   that writes the outcome.
//! - `pl:{D}:lock` — a short lease held while one payment is with the processor.
//! - `pl:rl:{name}` — fixed-window rate-limit counters.
//! - `pl:active:{merchant}` — sorted set of the merchant's open sessions (the digest's
//!   32 bytes, scored by expiry), so counting open links is one `ZCOUNT` from now on: exact
//!   even for links that expired unseen, and never a SCAN. On a standalone server it is
//!   updated inside the session scripts; on a cluster (another slot) right after them.

use super::resp::{Endpoint, LeanReader};
use super::store::{
    BeginPayment, ClaimId, ExpiredSender, ExpiredSession, Limited, Lockout, RateLimit,
    RateLimitHit, Revocation, SessionStore, StoreError, count_then,
};
use super::{SessionRecord, SessionStatus, TokenDigest, monotonic_ms};
use crate::domain::{Amount, Currency, Description, MerchantId, OrderId};
use futures_util::StreamExt;
use futures_util::future::join_all;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};
use std::any::Any;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// A connection paylink can run its store over: a standalone server's connection manager
/// or a cluster connection. The one thing they do differently is `WAIT`, which must reach
/// the master that holds the key.
pub trait RedisConnection: ConnectionLike + Clone + Send + Sync + 'static {
    /// Waits until `replicas` replicas have acknowledged every write this connection sent
    /// to the master holding `key`; returns how many did within `timeout`.
    fn wait_for_replicas(
        &self,
        key: &str,
        replicas: u32,
        timeout: Duration,
    ) -> impl Future<Output = redis::RedisResult<i64>> + Send;
}

fn wait_command(replicas: u32, timeout: Duration) -> redis::Cmd {
    let mut cmd = redis::cmd("WAIT");
    cmd.arg(replicas).arg(millis(timeout));
    cmd
}

impl RedisConnection for ConnectionManager {
    async fn wait_for_replicas(
        &self,
        _key: &str,
        replicas: u32,
        timeout: Duration,
    ) -> redis::RedisResult<i64> {
        wait_command(replicas, timeout)
            .query_async(&mut self.clone())
            .await
    }
}

impl RedisConnection for redis::cluster_async::ClusterConnection {
    async fn wait_for_replicas(
        &self,
        key: &str,
        replicas: u32,
        timeout: Duration,
    ) -> redis::RedisResult<i64> {
        use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
        let route = Route::with_key(key, SlotAddr::Master);
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
        let reply = self
            .clone()
            .route_command(wait_command(replicas, timeout), routing)
            .await?;
        redis::from_redis_value(reply).map_err(Into::into)
    }
}

/// A Redis Cluster connection that need not exist when paylink starts. [`Self::connect`]
/// tries once (as long as the client's own timeouts let it); if the cluster cannot be
/// reached, paylink starts all the same and one background task keeps trying, backing off,
/// while every command fails at once (503, and `/readyz` says not ready). No request ever
/// waits on a connect attempt. Once open, the connection repairs itself.
#[derive(Clone)]
pub struct LazyClusterConnection {
    conn: Arc<tokio::sync::OnceCell<redis::cluster_async::ClusterConnection>>,
}

impl LazyClusterConnection {
    pub async fn connect(client: redis::cluster::ClusterClient) -> Self {
        let lazy = LazyClusterConnection {
            conn: Arc::new(tokio::sync::OnceCell::new()),
        };
        if let Err(e) = lazy.try_connect(&client).await {
            tracing::warn!(
                error = %e,
                "Redis Cluster not reachable; answering 503 until it is, connecting in the background"
            );
            let background = lazy.clone();
            tokio::spawn(async move {
                let mut wait = Duration::from_millis(250);
                loop {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                    if background.try_connect(&client).await.is_ok() {
                        tracing::info!("connected to Redis Cluster");
                        return;
                    }
                }
            });
        }
        lazy
    }

    async fn try_connect(&self, client: &redis::cluster::ClusterClient) -> redis::RedisResult<()> {
        let conn = client.get_async_connection().await?;
        let _ = self.conn.set(conn);
        Ok(())
    }

    fn connection(&self) -> redis::RedisResult<redis::cluster_async::ClusterConnection> {
        self.conn.get().cloned().ok_or_else(|| {
            redis::RedisError::from((
                redis::ErrorKind::ClusterConnectionNotFound,
                "not connected to Redis Cluster yet",
            ))
        })
    }
}

impl ConnectionLike for LazyClusterConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        Box::pin(async move { self.connection()?.req_packed_command(cmd).await })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let mut conn = self.connection()?;
            conn.req_packed_commands(pipeline, offset, count).await
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}

impl RedisConnection for LazyClusterConnection {
    async fn wait_for_replicas(
        &self,
        key: &str,
        replicas: u32,
        timeout: Duration,
    ) -> redis::RedisResult<i64> {
        let conn = self.connection()?;
        conn.wait_for_replicas(key, replicas, timeout).await
    }
}

/// Redis-backed sessions over any async connection: a connection manager for a standalone
/// server, a cluster connection for Redis Cluster.
#[derive(Clone)]
pub struct RedisStore<C> {
    conn: C,
    /// When set, each thread opens a connection of its own on first use instead of `conn`.
    per_thread: Option<PerThread<C>>,
    /// When set, `load` reads through this lean client first (see [`resp`](super::resp)).
    lean: Option<LeanReader>,
    timeout: Duration,
    /// Replicas that must acknowledge each state change before it counts (0 = none).
    wait_replicas: u32,
    /// Redis Cluster: keys of different slots cannot meet in one script.
    cluster: bool,
}

/// Opens one connection per thread, so that a request's command is written and its reply
/// read by the thread serving the request (each HTTP worker runs its own event loop).
/// Shared, a connection's I/O task lives on one thread and every request on another
/// thread hops to it and back: two thread wake-ups per command.
#[derive(Clone)]
struct PerThread<C> {
    open: Arc<dyn Fn() -> redis::RedisResult<C> + Send + Sync>,
    /// Identifies this store's connections among a thread's; the thread drops them once
    /// the store is gone.
    owner: Arc<()>,
}

/// A connection a thread opened, with its owning store's [`PerThread::owner`].
struct ThreadConnection {
    owner: Weak<()>,
    conn: Box<dyn Any>,
    heard: Heard,
}

/// When a connection last answered ([`monotonic_ms`]; 0 for never), shared with the steps
/// using it.
type Heard = Arc<AtomicU64>;

thread_local! {
    /// The connections this thread opened.
    static THREAD_CONNECTIONS: RefCell<Vec<ThreadConnection>> = const { RefCell::new(Vec::new()) };
}

impl<C: Clone + 'static> PerThread<C> {
    /// This thread's connection, opened now if it has none; `shared` if it cannot be opened.
    #[cfg(test)]
    fn get(&self, shared: &C) -> C {
        self.checkout(shared).0
    }

    /// This thread's connection and when it last answered, opened now if the thread has
    /// none; `shared` (and no record of answers) if it cannot be opened.
    fn checkout(&self, shared: &C) -> (C, Option<Heard>) {
        THREAD_CONNECTIONS.with_borrow_mut(|conns| {
            let owner = Arc::as_ptr(&self.owner);
            let found = conns
                .iter()
                .filter(|held| held.owner.as_ptr() == owner)
                .find_map(|held| Some((held.conn.downcast_ref::<C>()?, &held.heard)));
            if let Some((conn, heard)) = found {
                return (conn.clone(), Some(heard.clone()));
            }
            let Ok(conn) = (self.open)() else {
                return (shared.clone(), None);
            };
            // Never answered yet: silent from the start.
            let heard = Heard::new(AtomicU64::new(0));
            conns.retain(|held| held.owner.strong_count() > 0);
            conns.push(ThreadConnection {
                owner: Arc::downgrade(&self.owner),
                conn: Box::new(conn.clone()),
                heard: heard.clone(),
            });
            (conn, Some(heard))
        })
    }

    /// Drops this thread's connection if it is the one `heard` belongs to, so that the
    /// thread's next command opens a new one.
    fn retire(&self, heard: &Heard) {
        THREAD_CONNECTIONS.with_borrow_mut(|conns| {
            conns.retain(|held| !Arc::ptr_eq(&held.heard, heard));
        });
    }
}

/// Keeps `session.expired` flowing without requests: subscribes to Redis's expired-key
/// events and marks each live session whose key expired as expired. The mark is one
/// atomic script, so with several paylink instances on one Redis exactly one of them
/// reports each expiry. Reconnects on its own when Redis goes away.
pub fn spawn_expiry_watcher<C>(url: &str, store: RedisStore<C>, expired: ExpiredSender)
where
    C: RedisConnection,
{
    match redis::Client::open(url) {
        Ok(client) => {
            tokio::spawn(watch_node(client, store, expired, None));
        }
        Err(e) => tracing::error!(error = %e, "cannot watch Redis expiries"),
    }
}

/// The cluster form of [`spawn_expiry_watcher`]: keyspace events are per node, so every
/// master is watched, and the masters are looked up again every few seconds so that a
/// replica promoted by a failover is watched too.
pub fn spawn_cluster_expiry_watcher<C>(
    seeds: Vec<String>,
    store: RedisStore<C>,
    expired: ExpiredSender,
) where
    C: RedisConnection,
{
    tokio::spawn(async move {
        let watched = Arc::new(Mutex::new(HashSet::<String>::new()));
        while !expired.is_closed() {
            match cluster_masters(&seeds).await {
                Ok(masters) => {
                    for address in masters {
                        let fresh = watched
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(address.clone());
                        let Ok(client) = redis::Client::open(format!("redis://{address}")) else {
                            continue;
                        };
                        if fresh {
                            let (store, expired, watched) =
                                (store.clone(), expired.clone(), watched.clone());
                            tokio::spawn(async move {
                                watch_node(client, store, expired, Some(5)).await;
                                watched
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .remove(&address);
                            });
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cluster masters could not be listed"),
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
}

/// The masters (`ip:port`) that serve slots, as any reachable seed node reports them.
async fn cluster_masters(seeds: &[String]) -> redis::RedisResult<Vec<String>> {
    let mut last_error = None;
    for seed in seeds {
        let attempt = async {
            let client = redis::Client::open(seed.as_str())?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("CLUSTER")
                .arg("NODES")
                .query_async::<String>(&mut conn)
                .await
        };
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(nodes)) => {
                return Ok(nodes
                    .lines()
                    .filter_map(|line| {
                        let fields: Vec<&str> = line.split_whitespace().collect();
                        let flags = fields.get(2)?;
                        let serves_slots = fields.len() > 8;
                        (flags.contains("master") && !flags.contains("fail") && serves_slots)
                            .then(|| fields[1].split('@').next().unwrap_or("").to_owned())
                    })
                    .filter(|a| !a.is_empty())
                    .collect());
            }
            Ok(Err(e)) => last_error = Some(e),
            Err(_) => {}
        }
    }
    Err(last_error.unwrap_or_else(|| {
        redis::RedisError::from((redis::ErrorKind::Io, "no cluster seed answered"))
    }))
}

/// Watches one node's expired-key events, reconnecting after failures. With
/// `give_up_after`, stops after that many failures in a row (a node gone for good).
async fn watch_node<C>(
    client: redis::Client,
    store: RedisStore<C>,
    expired: ExpiredSender,
    give_up_after: Option<u32>,
) where
    C: RedisConnection,
{
    let mut announced = false;
    let mut failures = 0u32;
    while !expired.is_closed() {
        let started = std::time::Instant::now();
        // It only returns when the subscription could not be made or has ended.
        let ended = watch_expiries(&client, &store, &expired, &mut announced).await;
        if started.elapsed() > Duration::from_secs(10) {
            failures = 0; // it was subscribed for a while: a fresh outage
        }
        if let Err(e) = ended {
            if failures == 0 {
                tracing::warn!(error = %e, "Redis expiry watcher lost its connection; retrying");
            }
            failures += 1;
            if give_up_after.is_some_and(|limit| failures >= limit) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// How often the index is searched for expiries that no keyspace event reported.
const CATCH_UP_INTERVAL: Duration = Duration::from_secs(5);

/// Keyspace events are delivered at most once: one sent while paylink was reconnecting is
/// gone. So every few seconds this looks in each merchant's index for sessions past their
/// expiry, marks them expired (reported once, by whichever instance's script changes the
/// record; usually the event got there first and there is nothing left to do), and then
/// drops them from the index.
pub fn spawn_expiry_catch_up<C>(
    store: RedisStore<C>,
    merchants: Vec<MerchantId>,
    expired: ExpiredSender,
) where
    C: RedisConnection,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CATCH_UP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !expired.is_closed() {
            tick.tick().await;
            for merchant in &merchants {
                if let Err(e) = store.catch_up_expiries(merchant, &expired).await {
                    tracing::debug!(error = %e, "expiry catch-up failed; will retry");
                }
            }
        }
    });
}

/// How many sessions one expiry catch-up marks at once.
const CATCH_UP_CONCURRENCY: usize = 32;

impl<C: RedisConnection> RedisStore<C> {
    async fn catch_up_expiries(
        &self,
        merchant: &MerchantId,
        expired: &ExpiredSender,
    ) -> Result<(), StoreError> {
        let key = index_key(merchant);
        let now = super::now_ms();
        loop {
            let key_for_read = key.clone();
            let due: Vec<Vec<u8>> = self
                .run(|mut conn| async move {
                    redis::cmd("ZRANGEBYSCORE")
                        .arg(&key_for_read)
                        .arg("-inf")
                        .arg(now)
                        .arg("LIMIT")
                        .arg(0)
                        .arg(500)
                        .query_async(&mut conn)
                        .await
                })
                .await?;
            if due.is_empty() {
                return Ok(());
            }
            // Up to CATCH_UP_CONCURRENCY marks in flight at once: after an outage there may be
            // thousands to catch up, and one at a time each would wait its round trip.
            let digests: Vec<TokenDigest> = due
                .iter()
                .filter_map(|m| <[u8; 32]>::try_from(m.as_slice()).ok())
                .map(TokenDigest::from_bytes)
                .collect();
            let mut marks = Vec::with_capacity(digests.len());
            for batch in digests.chunks(CATCH_UP_CONCURRENCY) {
                let batch_marks = batch.iter().map(|digest| self.mark_expired(digest));
                marks.extend(batch.iter().zip(join_all(batch_marks).await));
            }
            let mut failed = None;
            for (digest, mark) in marks {
                match mark {
                    // Each mark is atomic and happens once: its event is sent whatever the
                    // others did.
                    Ok(Some(record)) => {
                        let digest = *digest;
                        let _ = expired.send(ExpiredSession { digest, record });
                    }
                    Ok(None) => {}
                    Err(e) => failed = failed.or(Some(e)),
                }
            }
            if let Some(e) = failed {
                // The index keeps them all; the next catch-up tries the rest again.
                return Err(e);
            }
            let (key_for_rem, members) = (key.clone(), due.clone());
            self.run(|mut conn| async move {
                redis::cmd("ZREM")
                    .arg(&key_for_rem)
                    .arg(members)
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await?;
            if due.len() < 500 {
                return Ok(());
            }
        }
    }
}

/// Turns on expired-key events (`notify-keyspace-events` with `E` and `x`), keeping any
/// flags already set. Managed Redis services may forbid `CONFIG SET`; then the operator
/// must enable them, and paylink says so.
async fn enable_expired_events(client: &redis::Client) -> redis::RedisResult<bool> {
    let mut conn = client.get_multiplexed_async_connection().await?;
    let current: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    let mut flags = current.get(1).cloned().unwrap_or_default();
    let has_expired = flags.contains('x') || flags.contains('A');
    let has_keyevent = flags.contains('E');
    if has_expired && has_keyevent {
        return Ok(true);
    }
    if !has_expired {
        flags.push('x');
    }
    if !has_keyevent {
        flags.push('E');
    }
    let set: redis::RedisResult<()> = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg(&flags)
        .query_async(&mut conn)
        .await;
    Ok(set.is_ok())
}

async fn watch_expiries<C>(
    client: &redis::Client,
    store: &RedisStore<C>,
    expired: &ExpiredSender,
    announced: &mut bool,
) -> redis::RedisResult<()>
where
    C: RedisConnection,
{
    let enabled = enable_expired_events(client).await?;
    if !*announced {
        if enabled {
            tracing::info!(
                "Redis expired-key events on: session.expired is logged as links expire"
            );
        } else {
            tracing::warn!(
                "Redis refused CONFIG SET notify-keyspace-events; set it to include \"Ex\" \
                 on the server, or session.expired is only noticed when a link is next used"
            );
        }
        *announced = true;
    }
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.psubscribe("__keyevent@*__:expired").await?;
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        let Ok(key) = message.get_payload::<String>() else {
            continue;
        };
        let Some(digest) = digest_of_live_key(&key) else {
            continue;
        };
        match store.mark_expired(&digest).await {
            Ok(Some(record)) => {
                let _ = expired.send(ExpiredSession { digest, record });
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not mark a session expired"),
        }
    }
    // The subscription ended: the connection is gone, and events sent meanwhile are lost.
    Err(redis::RedisError::from((
        redis::ErrorKind::Io,
        "keyspace notification subscription ended",
    )))
}

/// Connects (lazily: paylink starts and answers 503 while Redis is away) to a standalone
/// Redis at `url`. Every command waits at most `timeout`.
pub fn connect_redis(
    url: &str,
    timeout: Duration,
) -> Result<RedisStore<ConnectionManager>, redis::RedisError> {
    let client = redis::Client::open(url)?;
    // No response timeout of redis-rs's own: `RedisStore::run` bounds every call with the
    // same `timeout`, and a second timer per command costs the hot read 2-3 % of its
    // instructions. Either way a timeout fails the call without a reconnect.
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(None)
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    let conn = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
    let lean = Endpoint::of(client.get_connection_info()).map(|e| LeanReader::new(e, timeout));
    let open = move || ConnectionManager::new_lazy_with_config(client.clone(), config.clone());
    let mut store = RedisStore::new(conn, timeout).with_connection_per_thread(open);
    store.lean = lean;
    Ok(store)
}

pub(crate) fn record_key(digest: &TokenDigest) -> String {
    session_key(digest, "")
}

fn live_key(digest: &TokenDigest) -> String {
    session_key(digest, ":live")
}

fn lock_key(digest: &TokenDigest) -> String {
    session_key(digest, ":lock")
}

/// `pl:{<digest>}` and `suffix`, built in one allocation (the view's key, on every view).
fn session_key(digest: &TokenDigest, suffix: &str) -> String {
    let mut key = String::with_capacity(4 + 64 + 1 + suffix.len());
    key.push_str("pl:{");
    digest.push_hex(&mut key);
    key.push('}');
    key.push_str(suffix);
    key
}

/// The digest in a live key, as keyspace notifications name it.
pub(crate) fn digest_of_live_key(key: &str) -> Option<TokenDigest> {
    let hex = key.strip_prefix("pl:{")?.strip_suffix("}:live")?;
    TokenDigest::from_hex(hex)
}

fn index_key(merchant: &MerchantId) -> String {
    format!("pl:active:{{{merchant}}}")
}

/// A rate-limit counter's key.
fn rate_key(name: &str) -> String {
    format!("pl:rl:{name}")
}

fn index_member(digest: &TokenDigest) -> Vec<u8> {
    digest.as_bytes().to_vec()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

// KEYS: record, live, [index]. ARGV: expiresAt ms, keep-until ms, index member, then
// field/value pairs.
const CREATE_STEP: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], '1', 'PXAT', ARGV[1])
if KEYS[3] then redis.call('ZADD', KEYS[3], ARGV[1], ARGV[3]) end
return 1
";
static CREATE: LazyLock<Script> = LazyLock::new(|| Script::new(CREATE_STEP));
static CREATE_LIMITED: LazyLock<Script> = LazyLock::new(|| under_limit(CREATE_STEP));

// KEYS: record, live, lock. ARGV: lease ms, now ms, claim id (the lock's value).
// Returns {0, record} not open, {1, record} in progress, {2, record} claimed,
// {3, record} payments locked (the record's `lu` says until when).
const BEGIN_PAYMENT_STEP: &str = r"
if redis.call('EXISTS', KEYS[2]) == 0 then
  return {0, redis.call('HGETALL', KEYS[1])}
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {1, redis.call('HGETALL', KEYS[1])}
end
if tonumber(redis.call('HGET', KEYS[1], 'lu') or '0') > tonumber(ARGV[2]) then
  return {3, redis.call('HGETALL', KEYS[1])}
end
-- The claim never lapses while the session could still be paid: only a decline or an
-- abandon releases it, so an approval that could not be recorded keeps the link closed.
local ea = tonumber(redis.call('HGET', KEYS[1], 'ea') or '0')
local until_ms = math.max(tonumber(ARGV[2]) + tonumber(ARGV[1]), ea)
redis.call('SET', KEYS[3], ARGV[3], 'PXAT', string.format('%.0f', until_ms))
return {2, redis.call('HGETALL', KEYS[1])}
";
static BEGIN_PAYMENT: LazyLock<Script> = LazyLock::new(|| Script::new(BEGIN_PAYMENT_STEP));
static BEGIN_PAYMENT_LIMITED: LazyLock<Script> = LazyLock::new(|| under_limit(BEGIN_PAYMENT_STEP));

// KEYS: record, live, lock, [index]. ARGV: paidAt ms, last4, retention ms, index member.
// Open or just-expired records become paid; the live session goes in the same step.
static COMPLETE_PAYMENT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local st = redis.call('HGET', KEYS[1], 'st')
if not st then return {} end
redis.call('DEL', KEYS[2], KEYS[3])
if KEYS[4] then redis.call('ZREM', KEYS[4], ARGV[4]) end
if st == 'o' or st == 'e' then
  redis.call('HSET', KEYS[1], 'st', 'p', 'pa', ARGV[1], 'l4', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return redis.call('HGETALL', KEYS[1])
",
    )
});

// KEYS: record, live, lock, [index]. ARGV: merchant, revokedAt ms, retention ms, member.
// Returns {0, {}} not found, {1, record} not open, {2, record} in progress, {3, record} revoked.
const REVOKE_STEP: &str = r"
if redis.call('HGET', KEYS[1], 'm') ~= ARGV[1] then return {0, {}} end
if redis.call('EXISTS', KEYS[2]) == 0 then return {1, redis.call('HGETALL', KEYS[1])} end
if redis.call('EXISTS', KEYS[3]) == 1 then return {2, redis.call('HGETALL', KEYS[1])} end
redis.call('DEL', KEYS[2])
if KEYS[4] then redis.call('ZREM', KEYS[4], ARGV[4]) end
redis.call('HSET', KEYS[1], 'st', 'r', 'ra', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {3, redis.call('HGETALL', KEYS[1])}
";
static REVOKE: LazyLock<Script> = LazyLock::new(|| Script::new(REVOKE_STEP));
static REVOKE_LIMITED: LazyLock<Script> = LazyLock::new(|| under_limit(REVOKE_STEP));

// KEYS: lock. ARGV: claim id. Deletes the lock only if this claim holds it; returns 1 if so.
static RELEASE_CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
",
    )
});

// KEYS: record, lock. ARGV: max failures (0 = no lock), lock ms, now ms, claim id.
// Releases the lease if this claim holds it and counts the decline either way; returns the
// lock's end when this decline set it.
static DECLINE_PAYMENT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[2]) == ARGV[4] then redis.call('DEL', KEYS[2]) end
local max = tonumber(ARGV[1])
if max == 0 or redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HINCRBY', KEYS[1], 'fa', 1) < max then return 0 end
local until_ms = tonumber(ARGV[3]) + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'fa', 0, 'lu', until_ms)
return until_ms
",
    )
});

// KEYS: record, live. Marks an open record whose live key is gone as expired, once.
static MARK_EXPIRED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[2]) == 1 then return {} end
if redis.call('HGET', KEYS[1], 'st') ~= 'o' then return {} end
redis.call('HSET', KEYS[1], 'st', 'e')
return redis.call('HGETALL', KEYS[1])
",
    )
});

// Counts one hit on the fixed-window counter KEYS[1] (window ARGV[1] ms) into `n` and the
// window's time left into `left`; the start of both rate-limit scripts.
const COUNT_HIT: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); left = tonumber(ARGV[1]) end
";

// KEYS: counter. ARGV: window ms. Returns {count, ms left}.
static RATE_LIMIT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{COUNT_HIT}return {{n, left}}\n")));

// KEYS: counter, record. ARGV: window ms. Reads the record's RECORD_FIELDS, as `load` does.
// Returns {count, ms left, then the fields' values} (one flat array, which paylink's own
// reader reads), count 0 when the counter could not be
// written (Redis out of memory, a read-only replica): a limit that cannot count lets the
// view through, and the read still answers.
static RATE_LIMIT_AND_LOAD_CODE: LazyLock<String> = LazyLock::new(|| {
    let names = RECORD_FIELDS.map(|f| format!("'{f}'")).join(", ");
    format!(
        r"
local fields = redis.call('HMGET', KEYS[2], {names})
local counted, hit = pcall(function()
{COUNT_HIT}
  return {{n, left}}
end)
if not counted then hit = {{0, 0}} end
return {{hit[1], hit[2], unpack(fields)}}
"
    )
});
static RATE_LIMIT_AND_LOAD: LazyLock<Script> =
    LazyLock::new(|| Script::new(&RATE_LIMIT_AND_LOAD_CODE));

// The script `step` (a step's script) preceded by a rate-limit hit, so that a rate-limited
// request costs one round trip. KEYS: counter, then the step's keys. ARGV: window ms, the
// most hits allowed, then the step's arguments. Returns {count, ms left} without running
// the step when the hit is over the limit, else {count, ms left, the step's reply}; count 0
// when the counter could not be written (out of memory, a read-only replica): a limit that
// cannot count lets the step run. The step sees its own KEYS and ARGV, shifted down.
fn under_limit(step: &str) -> Script {
    Script::new(&format!(
        r"
local function step(KEYS, ARGV)
{step}
end
local counted, hit = pcall(function()
{COUNT_HIT}
  return {{n, left}}
end)
if not counted then hit = {{0, 0}} end
if hit[1] > tonumber(ARGV[2]) then return hit end
return {{hit[1], hit[2], step({{unpack(KEYS, 2)}}, {{unpack(ARGV, 3)}})}}
"
    ))
}

impl<C> RedisStore<C>
where
    C: RedisConnection,
{
    /// A store over a standalone server's connection.
    pub fn new(conn: C, timeout: Duration) -> Self {
        RedisStore {
            conn,
            per_thread: None,
            lean: None,
            timeout,
            wait_replicas: 0,
            cluster: false,
        }
    }

    /// A store over a Redis Cluster connection.
    pub fn new_cluster(conn: C, timeout: Duration) -> Self {
        RedisStore {
            conn,
            per_thread: None,
            lean: None,
            timeout,
            wait_replicas: 0,
            cluster: true,
        }
    }

    /// Gives each thread that uses the store a connection of its own, made by `open` on
    /// the thread's first command (see `PerThread`); `conn` serves a thread that cannot open one.
    pub fn with_connection_per_thread(
        mut self,
        open: impl Fn() -> redis::RedisResult<C> + Send + Sync + 'static,
    ) -> Self {
        self.per_thread = Some(PerThread {
            open: Arc::new(open),
            owner: Arc::new(()),
        });
        self
    }

    /// Makes every state change (create, claim, pay, revoke) wait until `replicas` replicas
    /// have it, so a failover cannot lose it: no lost link, no payable paid link, no second
    /// claim of a link being charged. Costs one round trip per change.
    pub fn with_wait_replicas(mut self, replicas: u32) -> Self {
        self.wait_replicas = replicas;
        self
    }

    /// With `wait_replicas`, waits for the replicas of `key`'s master; an unacknowledged
    /// change is reported as the store being unavailable.
    async fn replicate(&self, key: &str) -> Result<(), StoreError> {
        if self.wait_replicas == 0 {
            return Ok(());
        }
        // Redis gives up waiting a quarter of the store timeout before paylink would: the
        // answer (how many replicas have the change) comes back in time, and neither this
        // step nor one queued behind it on the connection times out waiting for it. Never
        // under 1 ms: `WAIT` with 0 waits for ever.
        let (key, wanted) = (key.to_owned(), self.wait_replicas);
        let timeout = (self.timeout * 3 / 4).max(Duration::from_millis(1));
        let acked = self
            .run(|conn| async move { conn.wait_for_replicas(&key, wanted, timeout).await })
            .await?;
        if acked >= i64::from(wanted) {
            Ok(())
        } else {
            Err(StoreError::Unavailable(
                format!("only {acked} of {wanted} replicas acknowledged").into(),
            ))
        }
    }

    /// The session's keys, plus the merchant's index key where one script may touch it.
    fn keys(&self, digest: &TokenDigest, merchant: &MerchantId, with_lock: bool) -> Vec<String> {
        let mut keys = vec![record_key(digest), live_key(digest)];
        if with_lock {
            keys.push(lock_key(digest));
        }
        if !self.cluster {
            keys.push(index_key(merchant));
        }
        keys
    }

    /// On a cluster the index lives in another slot: update it after the session step.
    /// Best effort: a stale entry only counts until its expiry score passes.
    async fn update_index_apart(
        &self,
        command: &str,
        merchant: &MerchantId,
        digest: &TokenDigest,
        score: i64,
    ) {
        if !self.cluster {
            return;
        }
        let (key, member) = (index_key(merchant), index_member(digest));
        let command = command.to_owned();
        let result: Result<(), StoreError> = self
            .run(|mut conn| async move {
                let mut cmd = redis::cmd(&command);
                cmd.arg(&key);
                if command == "ZADD" {
                    cmd.arg(score);
                }
                cmd.arg(&member).query_async::<()>(&mut conn).await
            })
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not update the active-session index");
        }
    }

    /// Runs one Redis step within the store timeout; a slow or absent Redis is
    /// `Unavailable`/`Timeout`, never "not found".
    ///
    /// A thread's own connection that times out without having answered anything since the
    /// step began is dropped, and the thread's next command opens a new one: redis-rs
    /// reconnects when a connection fails, not when it falls silent, and a Redis host that
    /// vanished without a word (a crash, a failover that moved its address) would leave
    /// every create and payment on it timing out until the kernel gave up on the socket,
    /// many minutes later. A connection that answered other commands meanwhile is only
    /// slow, and kept.
    async fn run<T, F>(&self, step: impl FnOnce(C) -> F) -> Result<T, StoreError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let (conn, heard) = match &self.per_thread {
            Some(per_thread) => per_thread.checkout(&self.conn),
            None => (self.conn.clone(), None),
        };
        let began = monotonic_ms();
        let outcome = tokio::time::timeout(self.timeout, step(conn)).await;
        if let (Some(heard), Some(per_thread)) = (&heard, &self.per_thread) {
            // An error reply is an answer too; a failed connection is not, but redis-rs
            // reconnects that one itself.
            let (answered, timed_out) = match &outcome {
                Ok(Ok(_)) => (true, false),
                Ok(Err(e)) => (!e.is_timeout() && !e.is_io_error(), e.is_timeout()),
                Err(_) => (false, true),
            };
            if answered {
                heard.fetch_max(monotonic_ms(), Ordering::Relaxed);
            } else if timed_out && heard.load(Ordering::Relaxed) < began {
                per_thread.retire(heard);
            }
        }
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) if e.is_timeout() => Err(StoreError::Timeout),
            Ok(Err(e)) => Err(StoreError::Unavailable(Box::new(e))),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    /// The keys and arguments of [`CREATE`].
    fn create_call(
        &self,
        digest: &TokenDigest,
        record: &SessionRecord,
        retention: Duration,
    ) -> (Vec<String>, Vec<Vec<u8>>) {
        let keep_until = record
            .expires_at_ms
            .saturating_add(millis(retention) as i64);
        let mut args = vec![
            arg(record.expires_at_ms),
            arg(keep_until),
            index_member(digest),
        ];
        args.extend(record_fields(record));
        (self.keys(digest, &record.merchant_id, false), args)
    }

    /// What follows [`CREATE`]'s reply `created`.
    async fn created(
        &self,
        created: i64,
        keys: &[String],
        digest: &TokenDigest,
        record: &SessionRecord,
    ) -> Result<(), StoreError> {
        if created != 1 {
            return Err(StoreError::Conflict);
        }
        self.update_index_apart("ZADD", &record.merchant_id, digest, record.expires_at_ms)
            .await;
        self.replicate(&keys[0]).await
    }

    /// What follows [`BEGIN_PAYMENT`]'s reply.
    async fn begun(
        &self,
        reply: (i64, HashMap<String, String>),
        keys: &[String],
        digest: &TokenDigest,
        claim: ClaimId,
    ) -> Result<BeginPayment, StoreError> {
        if reply.0 == 3 {
            let until_ms = reply.1.get("lu").and_then(|v| v.parse().ok()).unwrap_or(0);
            return Ok(BeginPayment::Locked { until_ms });
        }
        Ok(match coded_record(reply)? {
            (2, record) => {
                // A claim a failover could forget would let a second charge in.
                if let Err(e) = self.replicate(&keys[0]).await {
                    let _ = self.abandon_payment(digest, claim).await;
                    return Err(e);
                }
                BeginPayment::Claimed(must_exist(record)?)
            }
            (1, record) => BeginPayment::InProgress(must_exist(record)?),
            (_, record) => BeginPayment::NotOpen(record),
        })
    }

    /// The keys and arguments of [`REVOKE`].
    fn revoke_call(
        &self,
        digest: &TokenDigest,
        merchant: &MerchantId,
        revoked_at_ms: i64,
        retention: Duration,
    ) -> (Vec<String>, Vec<Vec<u8>>) {
        let args = vec![
            arg(merchant),
            arg(revoked_at_ms),
            arg(millis(retention)),
            index_member(digest),
        ];
        (self.keys(digest, merchant, true), args)
    }

    /// What follows [`REVOKE`]'s reply.
    async fn revoked(
        &self,
        reply: (i64, HashMap<String, String>),
        keys: &[String],
        digest: &TokenDigest,
        merchant: &MerchantId,
    ) -> Result<Revocation, StoreError> {
        Ok(match coded_record(reply)? {
            (3, record) => {
                self.update_index_apart("ZREM", merchant, digest, 0).await;
                self.replicate(&keys[0]).await?;
                Revocation::Revoked(must_exist(record)?)
            }
            (2, record) => Revocation::PaymentInProgress(must_exist(record)?),
            (1, record) => Revocation::NotOpen(must_exist(record)?),
            _ => Revocation::NotFound,
        })
    }

    /// Runs a step's script made by [`under_limit`], with the step's `keys` and `args`, and
    /// `then` on the step's reply when the step ran.
    async fn limited<R: redis::FromRedisValue + Send, T>(
        &self,
        script: &'static Script,
        limit: RateLimit<'_>,
        keys: &[String],
        args: Vec<Vec<u8>>,
        then: impl AsyncFnOnce(R) -> Result<T, StoreError>,
    ) -> Result<Limited<T>, StoreError> {
        let keys = [&[rate_key(limit.key)], keys].concat();
        let args = [vec![arg(millis(limit.window)), arg(limit.max)], args].concat();
        let reply: Vec<Value> = self.script(script, &keys, args).await?;
        let corrupt = |e: redis::ParsingError| StoreError::Corrupt(e.to_string());
        match <[Value; 3]>::try_from(reply) {
            Ok([_, _, step]) => {
                let reply = R::from_redis_value(step).map_err(corrupt)?;
                Ok(Limited::Ran(then(reply).await?))
            }
            Err(hit) => {
                let (count, left): (u64, u64) =
                    redis::from_redis_value(Value::Array(hit)).map_err(corrupt)?;
                if count <= limit.max {
                    return Err(StoreError::Corrupt(format!(
                        "a rate-limited step's reply without the step's, at {count} of {}",
                        limit.max
                    )));
                }
                Ok(Limited::Over(RateLimitHit {
                    count,
                    resets_in: Duration::from_millis(left),
                }))
            }
        }
    }

    async fn script<T: redis::FromRedisValue + Send>(
        &self,
        script: &'static Script,
        keys: &[String],
        args: Vec<Vec<u8>>,
    ) -> Result<T, StoreError> {
        let keys = keys.to_vec();
        self.run(|mut conn| async move {
            let mut call = script.prepare_invoke();
            for k in &keys {
                call.key(k);
            }
            for a in &args {
                call.arg(a.as_slice());
            }
            call.invoke_async(&mut conn).await
        })
        .await
    }
}

/// The keys and arguments of [`BEGIN_PAYMENT`].
fn begin_payment_call(
    digest: &TokenDigest,
    lease: Duration,
    claim: ClaimId,
) -> (Vec<String>, Vec<Vec<u8>>) {
    let keys = vec![record_key(digest), live_key(digest), lock_key(digest)];
    let args = vec![arg(millis(lease)), arg(super::now_ms()), arg(claim.get())];
    (keys, args)
}

fn arg(v: impl ToString) -> Vec<u8> {
    v.to_string().into_bytes()
}

fn record_fields(record: &SessionRecord) -> Vec<Vec<u8>> {
    let mut fields = vec![
        arg("m"),
        arg(&record.merchant_id),
        arg("o"),
        arg(&record.order_id),
        arg("a"),
        arg(record.amount.minor_units()),
        arg("c"),
        arg(record.currency),
        arg("ca"),
        arg(record.created_at_ms),
        arg("ea"),
        arg(record.expires_at_ms),
        arg("st"),
        arg(record.stored_status.code()),
    ];
    if let Some(d) = &record.description {
        fields.extend([arg("d"), arg(d.as_ref())]);
    }
    fields
}

/// A record from `HGETALL` (or a script's copy of it): `None` when there is no record.
fn parse_record(fields: HashMap<String, String>) -> Result<Option<SessionRecord>, StoreError> {
    if fields.is_empty() {
        return Ok(None);
    }
    record_from(|k| fields.get(k).map(String::as_str)).map(Some)
}

/// Every field a record may have, in the order `load` asks `HMGET` for them.
const RECORD_FIELDS: [&str; 11] = ["m", "o", "a", "c", "d", "ca", "ea", "st", "pa", "ra", "l4"];

/// A record from `HMGET key` [`RECORD_FIELDS`], read in place from the reply (no map and
/// no string per field): `None` when the record has none of the fields.
fn parse_record_fields(reply: &Value) -> Result<Option<SessionRecord>, StoreError> {
    let corrupt = || StoreError::Corrupt("session record reply".to_owned());
    let Value::Array(values) = reply else {
        return Err(corrupt());
    };
    let mut fields: [Option<&[u8]>; RECORD_FIELDS.len()] = [None; RECORD_FIELDS.len()];
    if values.len() != fields.len() {
        return Err(corrupt());
    }
    for (field, value) in fields.iter_mut().zip(values) {
        *field = match value {
            Value::Nil => None,
            Value::BulkString(bytes) => Some(bytes),
            _ => return Err(corrupt()),
        };
    }
    record_of_values(&fields)
}

/// A record from the values of [`RECORD_FIELDS`], in that order: `None` when the record
/// has none of them.
fn record_of_values(values: &[Option<&[u8]>]) -> Result<Option<SessionRecord>, StoreError> {
    let corrupt = || StoreError::Corrupt("session record reply".to_owned());
    if values.len() != RECORD_FIELDS.len() {
        return Err(corrupt());
    }
    let mut fields: [Option<&str>; RECORD_FIELDS.len()] = [None; RECORD_FIELDS.len()];
    for (field, value) in fields.iter_mut().zip(values) {
        *field = value
            .map(|bytes| std::str::from_utf8(bytes).map_err(|_| corrupt()))
            .transpose()?;
    }
    if fields.iter().all(Option::is_none) {
        return Ok(None);
    }
    record_from(|k| {
        let i = RECORD_FIELDS.iter().position(|f| *f == k)?;
        fields[i]
    })
    .map(Some)
}

/// A record from its fields, `opt` giving each field's value if the record has it.
fn record_from<'a>(opt: impl Fn(&str) -> Option<&'a str>) -> Result<SessionRecord, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("session record field {what}"));
    let opt_int = |k: &str| opt(k).map(|v| v.parse::<i64>().map_err(|_| corrupt(k)));
    let get = |k: &str| opt(k).ok_or_else(|| corrupt(k));
    let int = |k: &str| get(k)?.parse::<i64>().map_err(|_| corrupt(k));
    Ok(SessionRecord {
        merchant_id: MerchantId::parse(get("m")?).map_err(|_| corrupt("m"))?,
        order_id: OrderId::parse(get("o")?).map_err(|_| corrupt("o"))?,
        amount: get("a")?
            .parse::<u64>()
            .ok()
            .and_then(|a| Amount::new(a).ok())
            .ok_or_else(|| corrupt("a"))?,
        currency: Currency::parse(get("c")?).map_err(|_| corrupt("c"))?,
        description: opt("d")
            .map(|d| Description::parse(d).map_err(|_| corrupt("d")))
            .transpose()?,
        created_at_ms: int("ca")?,
        expires_at_ms: int("ea")?,
        stored_status: SessionStatus::from_code(get("st")?).ok_or_else(|| corrupt("st"))?,
        paid_at_ms: opt_int("pa").transpose()?,
        revoked_at_ms: opt_int("ra").transpose()?,
        card_last4: opt("l4").map(str::to_owned),
    })
}

/// What a failed call over paylink's own connection means to the routes.
fn lean_error(e: std::io::Error) -> StoreError {
    if e.kind() == std::io::ErrorKind::TimedOut {
        StoreError::Timeout
    } else {
        StoreError::Unavailable(Box::new(e))
    }
}

/// Reads the reply of [`RATE_LIMIT_AND_LOAD`]: the count, the window's time left, then the
/// values of [`RECORD_FIELDS`].
fn hit_and_record(
    values: &[Option<&[u8]>],
) -> Result<(Option<RateLimitHit>, Option<SessionRecord>), StoreError> {
    let corrupt = || StoreError::Corrupt("rate limit reply".to_owned());
    let [count, left, fields @ ..] = values else {
        return Err(corrupt());
    };
    let number = |v: &Option<&[u8]>| {
        let text = std::str::from_utf8(v.ok_or_else(corrupt)?).map_err(|_| corrupt())?;
        text.parse::<u64>().map_err(|_| corrupt())
    };
    let (count, left) = (number(count)?, number(left)?);
    let hit = (count > 0).then(|| RateLimitHit {
        count,
        resets_in: Duration::from_millis(left),
    });
    Ok((hit, record_of_values(fields)?))
}

/// Reads a `{code, {field, value, …}}` script reply.
fn coded_record(
    reply: (i64, HashMap<String, String>),
) -> Result<(i64, Option<SessionRecord>), StoreError> {
    Ok((reply.0, parse_record(reply.1)?))
}

fn must_exist(record: Option<SessionRecord>) -> Result<SessionRecord, StoreError> {
    record.ok_or_else(|| StoreError::Corrupt("live session without a record".into()))
}

#[async_trait::async_trait]
impl<C> SessionStore for RedisStore<C>
where
    C: RedisConnection,
{
    async fn create(
        &self,
        digest: &TokenDigest,
        record: &SessionRecord,
        retention: Duration,
    ) -> Result<(), StoreError> {
        let (keys, args) = self.create_call(digest, record, retention);
        let created: i64 = self.script(&CREATE, &keys, args).await?;
        self.created(created, &keys, digest, record).await
    }

    async fn create_limited(
        &self,
        limit: RateLimit<'_>,
        digest: &TokenDigest,
        record: &SessionRecord,
        retention: Duration,
    ) -> Result<Limited<()>, StoreError> {
        if self.cluster {
            // The counter and the session live in different slots: no one script for both.
            return count_then(self, limit, self.create(digest, record, retention)).await;
        }
        let (keys, args) = self.create_call(digest, record, retention);
        let then = async |created| self.created(created, &keys, digest, record).await;
        self.limited(&CREATE_LIMITED, limit, &keys, args, then)
            .await
    }

    async fn load(&self, digest: &TokenDigest) -> Result<Option<SessionRecord>, StoreError> {
        let key = record_key(digest);
        if let Some(lean) = &self.lean {
            let mut args: [&[u8]; 2 + RECORD_FIELDS.len()] = [b"HMGET"; 2 + RECORD_FIELDS.len()];
            args[1] = key.as_bytes();
            for (arg, field) in args[2..].iter_mut().zip(RECORD_FIELDS) {
                *arg = field.as_bytes();
            }
            // Bounded by the store timeout within.
            let read = lean.query_array(&args, record_of_values).await;
            return read.map_err(lean_error)?;
        }
        let reply: Value = self
            .run(|mut conn| async move {
                redis::cmd("HMGET")
                    .arg(&key)
                    .arg(&RECORD_FIELDS[..])
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        parse_record_fields(&reply)
    }

    async fn begin_payment(
        &self,
        digest: &TokenDigest,
        lease: Duration,
        claim: ClaimId,
    ) -> Result<BeginPayment, StoreError> {
        let (keys, args) = begin_payment_call(digest, lease, claim);
        let reply = self.script(&BEGIN_PAYMENT, &keys, args).await?;
        self.begun(reply, &keys, digest, claim).await
    }

    async fn begin_payment_limited(
        &self,
        limit: RateLimit<'_>,
        digest: &TokenDigest,
        lease: Duration,
        claim: ClaimId,
    ) -> Result<Limited<BeginPayment>, StoreError> {
        if self.cluster {
            // The counter and the session live in different slots: no one script for both.
            return count_then(self, limit, self.begin_payment(digest, lease, claim)).await;
        }
        let (keys, args) = begin_payment_call(digest, lease, claim);
        let then = async |reply| self.begun(reply, &keys, digest, claim).await;
        self.limited(&BEGIN_PAYMENT_LIMITED, limit, &keys, args, then)
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
        let keys = self.keys(digest, merchant, true);
        let args = vec![
            arg(paid_at_ms),
            arg(card_last4),
            arg(millis(retention)),
            index_member(digest),
        ];
        let fields = self.script(&COMPLETE_PAYMENT, &keys, args).await?;
        self.update_index_apart("ZREM", merchant, digest, 0).await;
        self.replicate(&keys[0]).await?;
        parse_record(fields)
    }

    async fn abandon_payment(
        &self,
        digest: &TokenDigest,
        claim: ClaimId,
    ) -> Result<bool, StoreError> {
        let released: i64 = self
            .script(&RELEASE_CLAIM, &[lock_key(digest)], vec![arg(claim.get())])
            .await?;
        Ok(released == 1)
    }

    async fn decline_payment(
        &self,
        digest: &TokenDigest,
        claim: ClaimId,
        lockout: Lockout,
    ) -> Result<Option<i64>, StoreError> {
        let keys = [record_key(digest), lock_key(digest)];
        let args = vec![
            arg(lockout.max_failures),
            arg(millis(lockout.duration)),
            arg(super::now_ms()),
            arg(claim.get()),
        ];
        let until_ms: i64 = self.script(&DECLINE_PAYMENT, &keys, args).await?;
        Ok((until_ms > 0).then_some(until_ms))
    }

    async fn revoke(
        &self,
        digest: &TokenDigest,
        merchant: &MerchantId,
        revoked_at_ms: i64,
        retention: Duration,
    ) -> Result<Revocation, StoreError> {
        let (keys, args) = self.revoke_call(digest, merchant, revoked_at_ms, retention);
        let reply = self.script(&REVOKE, &keys, args).await?;
        self.revoked(reply, &keys, digest, merchant).await
    }

    async fn revoke_limited(
        &self,
        limit: RateLimit<'_>,
        digest: &TokenDigest,
        merchant: &MerchantId,
        revoked_at_ms: i64,
        retention: Duration,
    ) -> Result<Limited<Revocation>, StoreError> {
        if self.cluster {
            // The counter and the session live in different slots: no one script for both.
            let revoke = self.revoke(digest, merchant, revoked_at_ms, retention);
            return count_then(self, limit, revoke).await;
        }
        let (keys, args) = self.revoke_call(digest, merchant, revoked_at_ms, retention);
        let then = async |reply| self.revoked(reply, &keys, digest, merchant).await;
        self.limited(&REVOKE_LIMITED, limit, &keys, args, then)
            .await
    }

    async fn mark_expired(
        &self,
        digest: &TokenDigest,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let keys = [record_key(digest), live_key(digest)];
        let fields = self.script(&MARK_EXPIRED, &keys, vec![]).await?;
        parse_record(fields)
    }

    async fn hit_rate_limit(
        &self,
        key: &str,
        window: Duration,
    ) -> Result<RateLimitHit, StoreError> {
        let (count, left): (u64, u64) = self
            .script(&RATE_LIMIT, &[rate_key(key)], vec![arg(millis(window))])
            .await?;
        Ok(RateLimitHit {
            count,
            resets_in: Duration::from_millis(left),
        })
    }

    async fn hit_rate_limit_and_load(
        &self,
        key: &str,
        window: Duration,
        digest: &TokenDigest,
    ) -> Result<(Option<RateLimitHit>, Option<SessionRecord>), StoreError> {
        if self.cluster {
            // The counter and the record live in different slots: no one script for both.
            let (hit, record) = tokio::join!(self.hit_rate_limit(key, window), self.load(digest));
            return Ok((hit.ok(), record?));
        }
        let keys = [rate_key(key), record_key(digest)];
        let window = arg(millis(window));
        if let Some(lean) = &self.lean {
            let script = (
                RATE_LIMIT_AND_LOAD.get_hash(),
                RATE_LIMIT_AND_LOAD_CODE.as_str(),
            );
            let keys = [keys[0].as_bytes(), keys[1].as_bytes()];
            // Bounded by the store timeout within.
            let args = [window.as_slice()];
            let call = lean.eval_array(script, &keys, &args, hit_and_record);
            return call.await.map_err(lean_error)?;
        }
        let reply: Value = self
            .script(&RATE_LIMIT_AND_LOAD, &keys, vec![window])
            .await?;
        let Value::Array(values) = &reply else {
            return Err(StoreError::Corrupt("rate limit reply".to_owned()));
        };
        // As text, the way paylink's own reader hands them over.
        let texts = values
            .iter()
            .map(|value| match value {
                Value::Int(n) => Ok(Some(n.to_string().into_bytes())),
                Value::BulkString(bytes) => Ok(Some(bytes.clone())),
                Value::Nil => Ok(None),
                _ => Err(StoreError::Corrupt("rate limit reply".to_owned())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let texts: Vec<Option<&[u8]>> = texts.iter().map(Option::as_deref).collect();
        hit_and_record(&texts)
    }

    async fn active_sessions(&self, merchants: &[MerchantId]) -> Result<Vec<u64>, StoreError> {
        if merchants.is_empty() {
            return Ok(Vec::new());
        }
        let now = super::now_ms();
        // One small pipeline per merchant (one slot each, as Redis Cluster requires), all
        // in flight at once over the multiplexed connection.
        let counts = merchants.iter().map(|merchant| {
            let key = index_key(merchant);
            // Entries past their expiry are left for `catch_up_expiries`, which reports
            // and then removes them; counting from now on is exact either way.
            self.run(move |mut conn| async move {
                redis::cmd("ZCOUNT")
                    .arg(&key)
                    .arg(format!("({now}"))
                    .arg("+inf")
                    .query_async::<u64>(&mut conn)
                    .await
            })
        });
        futures_util::future::try_join_all(counts).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let pong: Value = self
            .run(|mut conn| async move { redis::cmd("PING").query_async(&mut conn).await })
            .await?;
        match pong {
            Value::SimpleString(_) | Value::BulkString(_) | Value::Okay => Ok(()),
            other => Err(StoreError::Corrupt(format!(
                "unexpected PING reply {other:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_one_session_shares_one_hash_tag() {
        let digest = crate::session::PaymentToken::generate().unwrap().digest();
        let tag = format!("{{{}}}", digest.to_hex());
        for key in [record_key(&digest), live_key(&digest), lock_key(&digest)] {
            assert!(key.contains(&tag), "{key}");
        }
        assert_eq!(digest_of_live_key(&live_key(&digest)), Some(digest));
        assert_eq!(digest_of_live_key(&record_key(&digest)), None);
    }

    /// The reply `HMGET key` [`RECORD_FIELDS`] gives for a hash holding `pairs`.
    fn hmget_reply(pairs: &[(&str, &str)]) -> Value {
        Value::Array(
            RECORD_FIELDS
                .iter()
                .map(|f| match pairs.iter().find(|(k, _)| k == f) {
                    Some((_, v)) => Value::BulkString(v.as_bytes().to_vec()),
                    None => Value::Nil,
                })
                .collect(),
        )
    }

    #[test]
    fn a_record_read_by_hmget_is_the_record_written_and_then_paid() {
        let record = SessionRecord {
            merchant_id: MerchantId::parse("acme").unwrap(),
            order_id: OrderId::parse("ord_1").unwrap(),
            amount: Amount::new(1999).unwrap(),
            currency: Currency::parse("EUR").unwrap(),
            description: Some(Description::parse("2 tickets, \"row\" F · ü").unwrap()),
            created_at_ms: 1_000,
            expires_at_ms: 901_000,
            stored_status: SessionStatus::Paid,
            paid_at_ms: Some(2_000),
            revoked_at_ms: None,
            card_last4: Some("4242".to_owned()),
        };
        // What `create` writes, then what the payment script adds (`st` overwritten).
        let written: Vec<String> = record_fields(&record)
            .into_iter()
            .map(|b| String::from_utf8(b).unwrap())
            .collect();
        let mut pairs: Vec<(&str, &str)> = written
            .chunks(2)
            .map(|kv| (kv[0].as_str(), kv[1].as_str()))
            .collect();
        for (k, _) in &pairs {
            assert!(RECORD_FIELDS.contains(k), "load does not read field {k}");
        }
        pairs.retain(|(k, _)| *k != "st");
        pairs.extend([("st", "p"), ("pa", "2000"), ("l4", "4242")]);
        let read = parse_record_fields(&hmget_reply(&pairs)).unwrap();
        assert_eq!(read, Some(record));
    }

    #[test]
    fn hmget_of_no_record_is_none_and_of_a_damaged_one_is_corrupt() {
        assert!(matches!(parse_record_fields(&hmget_reply(&[])), Ok(None)));
        let missing_amount = hmget_reply(&[("m", "acme"), ("o", "ord_1"), ("st", "o")]);
        assert!(matches!(
            parse_record_fields(&missing_amount),
            Err(StoreError::Corrupt(_))
        ));
        for reply in [
            Value::Nil,
            Value::Array(vec![Value::Nil]),
            Value::Array(vec![Value::BulkString(vec![0xff]); RECORD_FIELDS.len()]),
        ] {
            assert!(
                matches!(parse_record_fields(&reply), Err(StoreError::Corrupt(_))),
                "{reply:?}"
            );
        }
    }

    /// A stand-in connection: which thread opened it, and the opening's number.
    type Opened = Arc<(std::thread::ThreadId, usize)>;

    fn counting_opener() -> (PerThread<Opened>, Arc<std::sync::atomic::AtomicUsize>) {
        let opened = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = opened.clone();
        let per_thread = PerThread {
            open: Arc::new(move || {
                let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(Arc::new((std::thread::current().id(), n)))
            }),
            owner: Arc::new(()),
        };
        (per_thread, opened)
    }

    #[test]
    fn each_thread_opens_one_connection_per_store_and_keeps_using_it() {
        let shared: Opened = Arc::new((std::thread::current().id(), usize::MAX));
        let (store_a, opened_a) = counting_opener();
        let (store_b, opened_b) = counting_opener();
        let first = store_a.get(&shared);
        assert_eq!(first.0, std::thread::current().id());
        assert!(
            Arc::ptr_eq(&first, &store_a.get(&shared)),
            "reused on this thread"
        );
        assert!(
            !Arc::ptr_eq(&first, &store_b.get(&shared)),
            "another store's own"
        );
        let other = std::thread::scope(|s| s.spawn(|| store_a.get(&shared)).join().unwrap());
        assert_ne!(other.0, first.0, "another thread opens its own");
        assert_eq!(opened_a.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(opened_b.load(std::sync::atomic::Ordering::SeqCst), 1);
        // A store that is gone leaves nothing behind once this thread opens another.
        drop(store_b);
        let (store_c, _) = counting_opener();
        store_c.get(&shared);
        let kept = THREAD_CONNECTIONS.with_borrow(|conns| conns.len());
        assert_eq!(kept, 2, "store_a's and store_c's; store_b's dropped");
    }

    #[test]
    fn a_retired_connection_is_replaced_and_a_stale_retirement_drops_nothing() {
        let shared: Opened = Arc::new((std::thread::current().id(), usize::MAX));
        let (store, opened) = counting_opener();
        let (first, first_heard) = store.checkout(&shared);
        let first_heard = first_heard.expect("a connection of the thread's own");
        assert_eq!(first_heard.load(Ordering::Relaxed), 0, "never answered yet");
        store.retire(&first_heard);
        let (second, second_heard) = store.checkout(&shared);
        assert!(
            !Arc::ptr_eq(&first, &second),
            "a new connection after retiring"
        );
        // A step still holding the first connection's record retires nothing now.
        store.retire(&first_heard);
        assert!(Arc::ptr_eq(&second, &store.get(&shared)));
        assert!(Arc::ptr_eq(
            &second_heard.unwrap(),
            &store.checkout(&shared).1.unwrap()
        ));
        assert_eq!(opened.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn a_thread_that_cannot_open_a_connection_uses_the_shared_one() {
        let shared: Opened = Arc::new((std::thread::current().id(), usize::MAX));
        let failing: PerThread<Opened> = PerThread {
            open: Arc::new(|| Err((redis::ErrorKind::Io, "no").into())),
            owner: Arc::new(()),
        };
        assert!(Arc::ptr_eq(&failing.get(&shared), &shared));
    }
}
