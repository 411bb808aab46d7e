//! Performance budgets that a test can hold exactly, against a private redis-server: Redis
//! round trips per request and Redis memory per open session. Throughput and latency need
//! a release build and a quiet machine: `bench/run` measures those.
//!
//! Counting round trips. `INFO commandstats` (and `total_commands_processed`) count a
//! command both when a client sends it and when a Lua script runs it with `redis.call`, so
//! they overcount what crossed the network: one `EVALSHA` of the claim script shows up as
//! `evalsha` plus every command inside it. These tests count the commands that *clients
//! sent*: with `slowlog-log-slower-than 0` Redis logs every command with the address of the
//! client that sent it, and logs what a script runs under the script's own pseudo-client
//! (`?:0`); those, and this test's own connection, are left out. A pipelined batch would
//! count once per command, so the count is an upper bound on round trips (paylink
//! pipelines nothing on these paths). commandstats is read too, as a cross-check: every
//! script call in the slowlog is one `evalsha`/`eval` call there.
//!
//! Rate limiting is off in these apps (the test default); with it on (the server's
//! default) each request counts its hit in its own step's script call, and
//! `with_rate_limits_on_no_request_costs_more_round_trips` holds the
//! same budgets.

use crate::helpers::{AppOptions, Backend, TestApp, spawn_app, spawn_app_with, valid_card};
use futures_util::future::join_all;
use redis::Value;
use redis::aio::MultiplexedConnection;
use serde_json::{Value as Json, json};
use sha2::Digest;
use std::collections::{BTreeMap, HashSet};

/// A typical session: an order reference, a short description.
fn order(n: usize) -> Json {
    json!({
        "orderId": format!("ord_2026120400{n:05}"),
        "amount": 1999,
        "currency": "USD",
        "description": "2 tickets, Saturday, row F",
    })
}

fn text(value: &Value) -> String {
    match value {
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

/// A connection of the test's own that watches what paylink sends to Redis.
struct RedisProbe {
    conn: MultiplexedConnection,
    /// This connection's address, so its own commands are never counted.
    own_addr: String,
}

/// What one request cost in Redis.
struct Measured {
    what: &'static str,
    /// Commands paylink sent, oldest first, by name (`EVALSHA`, `HGETALL`…).
    sent: Vec<String>,
    /// commandstats calls that grew during the request, script-internal commands included.
    commandstats: BTreeMap<String, u64>,
}

impl Measured {
    fn round_trips(&self) -> usize {
        self.sent.len()
    }

    fn describe(&self) -> String {
        format!(
            "{}: {} round trip(s) {:?}; commandstats, script-internal commands included: {:?}",
            self.what,
            self.round_trips(),
            self.sent,
            self.commandstats
        )
    }

    fn assert_at_most(&self, budget: usize) {
        println!("{}", self.describe());
        assert!(
            self.round_trips() <= budget,
            "over the budget of {budget}: {}",
            self.describe()
        );
    }
}

impl RedisProbe {
    async fn connect(app: &TestApp) -> Self {
        let client = redis::Client::open(app.redis().url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let info: String = redis::cmd("CLIENT")
            .arg("INFO")
            .query_async(&mut conn)
            .await
            .unwrap();
        let own_addr = info
            .split_whitespace()
            .find_map(|field| field.strip_prefix("addr="))
            .expect("CLIENT INFO names the address")
            .to_owned();
        RedisProbe { conn, own_addr }
    }

    /// Makes the slowlog keep every command. (It holds their arguments: not while
    /// measuring memory.)
    async fn log_every_command(&mut self) {
        let _: () = self
            .query(&["CONFIG", "SET", "slowlog-log-slower-than", "0"])
            .await;
        let _: () = self
            .query(&["CONFIG", "SET", "slowlog-max-len", "10000"])
            .await;
    }

    async fn query<T: redis::FromRedisValue>(&mut self, args: &[&str]) -> T {
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query_async(&mut self.conn).await.unwrap()
    }

    /// Calls per command since the server started, as `INFO commandstats` has them.
    async fn commandstats(&mut self) -> BTreeMap<String, u64> {
        let info: String = self.query(&["INFO", "commandstats"]).await;
        info.lines()
            .filter_map(|line| {
                let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = stats.split(',').find_map(|s| s.strip_prefix("calls="))?;
                Some((name.to_owned(), calls.parse().ok()?))
            })
            .collect()
    }

    /// Commands other clients sent since the last `SLOWLOG RESET`, oldest first.
    async fn commands_sent(&mut self) -> Vec<String> {
        let entries: Vec<Value> = self.query(&["SLOWLOG", "GET", "-1"]).await;
        let mut sent: Vec<String> = entries
            .iter()
            .filter_map(|entry| {
                let Value::Array(fields) = entry else {
                    return None;
                };
                let Some(Value::Array(args)) = fields.get(3) else {
                    return None;
                };
                let client = fields.get(4).map(text).unwrap_or_default();
                // `?:0` is the pseudo-client that runs a script's redis.call()s.
                let by_a_client = client.contains(':') && client != "?:0";
                (by_a_client && client != self.own_addr)
                    .then(|| args.first().map(text).unwrap_or_default().to_uppercase())
            })
            .collect();
        sent.reverse();
        sent
    }

    /// Runs one request and returns what it sent to Redis.
    async fn measure(&mut self, what: &'static str, request: impl Future<Output = ()>) -> Measured {
        let before = self.commandstats().await;
        let _: () = self.query(&["SLOWLOG", "RESET"]).await;
        request.await;
        let sent = self.commands_sent().await;
        let after = self.commandstats().await;
        let commandstats: BTreeMap<String, u64> = after
            .into_iter()
            .filter(|(name, _)| {
                !["info", "slowlog", "config", "client"]
                    .iter()
                    .any(|own| name.starts_with(own))
            })
            .filter_map(|(name, calls)| {
                let grown = calls - before.get(&name).copied().unwrap_or(0);
                (grown > 0).then_some((name, grown))
            })
            .collect();
        let scripts_sent = sent
            .iter()
            .filter(|c| *c == "EVALSHA" || *c == "EVAL")
            .count() as u64;
        let scripts_counted = commandstats.get("evalsha").copied().unwrap_or(0)
            + commandstats.get("eval").copied().unwrap_or(0);
        assert_eq!(
            scripts_sent, scripts_counted,
            "the slowlog and commandstats disagree on script calls: {sent:?} vs {commandstats:?}"
        );
        Measured {
            what,
            sent,
            commandstats,
        }
    }
}

/// An app on a private Redis with every script loaded and every connection up: the first
/// call of each script costs a NOSCRIPT answer and a SCRIPT LOAD, once per server.
async fn warmed_up(app: TestApp) -> (TestApp, RedisProbe) {
    let warm = app.create_session(order(0)).await;
    assert_eq!(app.get_pay_page(&warm.token).await.status, 200);
    assert_eq!(app.pay(&warm.token, &valid_card()).await.status, 200);
    let mut probe = RedisProbe::connect(&app).await;
    probe.log_every_command().await;
    (app, probe)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewing_an_open_link_costs_one_redis_round_trip() {
    let (app, mut probe) = warmed_up(spawn_app(Backend::Redis).await).await;
    let link = app.create_session(order(1)).await;
    let measured = probe
        .measure("GET /pay open link", async {
            assert_eq!(app.get_pay_page(&link.token).await.status, 200);
        })
        .await;
    measured.assert_at_most(1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewing_an_unknown_link_costs_one_redis_round_trip() {
    let (app, mut probe) = warmed_up(spawn_app(Backend::Redis).await).await;
    let unknown = "f".repeat(64);
    let measured = probe
        .measure("GET /pay unknown token", async {
            assert_eq!(app.get_pay_page(&unknown).await.status, 410);
        })
        .await;
    measured.assert_at_most(1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_session_costs_one_redis_round_trip() {
    let (app, mut probe) = warmed_up(spawn_app(Backend::Redis).await).await;
    let measured = probe
        .measure("POST /api/v1/sessions", async {
            app.create_session(order(1)).await;
        })
        .await;
    measured.assert_at_most(1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paying_a_link_costs_at_most_two_redis_round_trips() {
    let (app, mut probe) = warmed_up(spawn_app(Backend::Redis).await).await;
    let link = app.create_session(order(1)).await;
    let measured = probe
        .measure("POST /pay approved", async {
            assert_eq!(app.pay(&link.token, &valid_card()).await.status, 200);
        })
        .await;
    measured.assert_at_most(2);
}

/// With rate limiting on (the default), each request counts its hit in the same script
/// call as its own step: a view counts and reads, a create counts and creates, a payment
/// counts and claims. The budgets hold as they do without a limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_rate_limits_on_no_request_costs_more_round_trips() {
    let mut options = AppOptions::new(Backend::Redis);
    options.pay_rate_limit = 1_000;
    options.api_rate_limit = 1_000;
    let (app, mut probe) = warmed_up(spawn_app_with(options).await).await;
    let mut link = None;
    let create = probe
        .measure("POST /api/v1/sessions, rate limit on", async {
            link = Some(app.create_session(order(1)).await);
        })
        .await;
    println!("{}", create.describe());
    assert_eq!(create.round_trips(), 1, "{}", create.describe());
    let link = link.expect("created");
    let read = probe
        .measure("GET /api/v1/sessions/{token}, rate limit on", async {
            assert_eq!(app.get_session(&link.token).await.status, 200);
        })
        .await;
    assert_eq!(read.round_trips(), 1, "{}", read.describe());
    // The first revoke loads its script (not counted: the warm-up has no revoke).
    let warm = app.create_session(order(2)).await;
    assert_eq!(app.revoke_session(&warm.token).await.status, 200);
    let doomed = app.create_session(order(3)).await;
    let revoke = probe
        .measure("DELETE /api/v1/sessions/{token}, rate limit on", async {
            assert_eq!(app.revoke_session(&doomed.token).await.status, 200);
        })
        .await;
    assert_eq!(revoke.round_trips(), 1, "{}", revoke.describe());
    let view = probe
        .measure("GET /pay open link, rate limit on", async {
            assert_eq!(app.get_pay_page(&link.token).await.status, 200);
        })
        .await;
    println!("{}", view.describe());
    assert_eq!(view.round_trips(), 1, "{}", view.describe());
    let unknown = "f".repeat(64);
    let gone = probe
        .measure("GET /pay unknown token, rate limit on", async {
            assert_eq!(app.get_pay_page(&unknown).await.status, 410);
        })
        .await;
    assert_eq!(gone.round_trips(), 1, "{}", gone.describe());
    // The contract: the store is not consulted for a malformed token, rate limit or not.
    let malformed = probe
        .measure("GET /pay malformed token, rate limit on", async {
            assert_eq!(app.get_pay_page("not-a-token").await.status, 410);
            assert_eq!(app.get("/pay/a/b").await.status, 410);
        })
        .await;
    assert_eq!(malformed.round_trips(), 0, "{}", malformed.describe());
    let pay = probe
        .measure("POST /pay approved, rate limit on", async {
            assert_eq!(app.pay(&link.token, &valid_card()).await.status, 200);
        })
        .await;
    println!("{}", pay.describe());
    assert_eq!(pay.round_trips(), 2, "{}", pay.describe());
}

/// Bytes per open session and where they go.
struct SessionMemory {
    /// MEMORY USAGE of each key named after the session, by its name with `D` for the
    /// digest (`pl:{D}`, `pl:{D}:live`), averaged over sessions.
    own_keys: BTreeMap<String, f64>,
    /// MEMORY USAGE of each key sessions share (the per-merchant index), per session.
    shared_keys: BTreeMap<String, f64>,
    /// Growth of `used_memory` per session: everything, the expiry table included.
    used_memory: f64,
}

impl SessionMemory {
    fn total(&self) -> f64 {
        self.own_keys.values().sum::<f64>() + self.shared_keys.values().sum::<f64>()
    }
}

fn digest_hex(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// Creates `sessions` open sessions through the API and measures what Redis holds for them.
async fn redis_memory_per_open_session(app: &TestApp, sessions: usize) -> SessionMemory {
    let mut probe = RedisProbe::connect(app).await;
    // The first session loads the script and creates the merchant's index.
    let first = digest_hex(&app.create_session(order(0)).await.token);
    let before = used_memory(&mut probe).await;
    let mut digests = HashSet::new();
    for batch in (1..=sessions).collect::<Vec<_>>().chunks(50) {
        let created = join_all(batch.iter().map(|&n| app.create_session(order(n)))).await;
        digests.extend(created.iter().map(|c| digest_hex(&c.token)));
    }
    let after = used_memory(&mut probe).await;

    let mut own_keys = BTreeMap::new();
    let mut shared_keys = BTreeMap::new();
    let keys: Vec<String> = probe.query(&["KEYS", "*"]).await;
    for key in &keys {
        if key.contains(&first) {
            continue;
        }
        let bytes: u64 = probe.query(&["MEMORY", "USAGE", key, "SAMPLES", "0"]).await;
        let bytes = bytes as f64;
        match digests.iter().find(|d| key.contains(d.as_str())) {
            Some(digest) => {
                *own_keys
                    .entry(key.replace(digest.as_str(), "D"))
                    .or_default() += bytes / sessions as f64;
            }
            // The shared keys hold the first session too.
            None => *shared_keys.entry(key.clone()).or_default() += bytes / (sessions + 1) as f64,
        }
    }
    SessionMemory {
        own_keys,
        shared_keys,
        used_memory: (after - before) / sessions as f64,
    }
}

async fn used_memory(probe: &mut RedisProbe) -> f64 {
    let info: String = probe.query(&["INFO", "memory"]).await;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("INFO memory has used_memory")
}

/// Σ MEMORY USAGE of the keys named after one session.
async fn bytes_of_session_keys(probe: &mut RedisProbe, token: &str) -> (u64, Vec<String>) {
    let digest = digest_hex(token);
    let keys: Vec<String> = probe.query(&["KEYS", &format!("*{digest}*")]).await;
    let mut total = 0;
    for key in &keys {
        let bytes: u64 = probe.query(&["MEMORY", "USAGE", key, "SAMPLES", "0"]).await;
        total += bytes;
    }
    let names = keys.iter().map(|k| k.replace(&digest, "D")).collect();
    (total, names)
}

/// Budget: everything an open session costs in Redis, its share of the per-merchant index
/// included, is at most 512 bytes by `MEMORY USAGE`. 2,000 sessions make the index a
/// skiplist, its shape at scale, so its size per member is what a large merchant pays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_session_takes_at_most_512_bytes_of_redis_memory() {
    const SESSIONS: usize = 2_000;
    const BUDGET: f64 = 512.0;
    let app = spawn_app(Backend::Redis).await;
    let m = redis_memory_per_open_session(&app, SESSIONS).await;

    // After the payment only the outcome record stays, for the retention period.
    let mut probe = RedisProbe::connect(&app).await;
    let paid = app.create_session(order(SESSIONS + 1)).await;
    assert_eq!(app.pay(&paid.token, &valid_card()).await.status, 200);
    let (record_bytes, record_keys) = bytes_of_session_keys(&mut probe, &paid.token).await;

    let report = format!(
        "Redis memory per open session ({SESSIONS} sessions, MEMORY USAGE ... SAMPLES 0): \
         {:.0} bytes: its own keys {:.0?} + its share of {:.1?}; used_memory grew {:.0} \
         bytes per session (the expiry table and the keyspace's growth included); after \
         payment the outcome record {record_keys:?} holds {record_bytes} bytes",
        m.total(),
        m.own_keys,
        m.shared_keys,
        m.used_memory,
    );
    println!("{report}");
    assert!(
        m.total() <= BUDGET,
        "over the budget of {BUDGET} bytes by {:.0}: {report}",
        m.total() - BUDGET
    );
}
