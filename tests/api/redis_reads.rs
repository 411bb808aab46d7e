//! The Redis store's hot read (`load`, the pay page's one round trip) goes over paylink's
//! own pipelined RESP connection, one per thread, not through redis-rs. These tests hold
//! what that connection must do against a private `redis-server`: answer each request
//! with its own record under concurrency and after timeouts, log in and pick the database
//! the URL names, reach Redis over a Unix socket, and come back after Redis dropped it.
//! The redis-rs connections that carry everything else are replaced when they fall silent
//! too.

use crate::helpers::RedisServer;
use crate::store_conformance::{self, digest};
use futures_util::future::join_all;
use paylink::domain::OrderId;
use paylink::session::{
    RedisStore, SessionRecord, SessionStore, StoreError, TokenDigest, connect_redis,
};
use redis::aio::ConnectionManager;
use std::time::Duration;

const RETENTION: Duration = Duration::from_secs(3600);

/// An open session's record, for order `order`.
fn record(order: &str) -> SessionRecord {
    let mut record = store_conformance::record(Duration::from_secs(600));
    record.order_id = OrderId::parse(order).unwrap();
    record
}

fn store(url: &str) -> RedisStore<ConnectionManager> {
    connect_redis(url, Duration::from_secs(2)).unwrap()
}

/// `n` sessions, created through the store.
async fn sessions(store: &impl SessionStore, n: usize) -> Vec<(TokenDigest, SessionRecord)> {
    let mut made = Vec::new();
    for i in 0..n {
        let (d, r) = (digest(), record(&format!("ord_{i}")));
        store.create(&d, &r, RETENTION).await.unwrap();
        made.push((d, r));
    }
    made
}

/// The `CLIENT LIST` lines of connections whose last command was `HMGET`.
fn hmget_clients(server: &RedisServer) -> Vec<String> {
    server
        .cli(&["--raw", "CLIENT", "LIST"])
        .lines()
        .filter(|l| l.contains(" cmd=hmget "))
        .map(str::to_owned)
        .collect()
}

/// The `id=` of each connection whose last command was `HMGET`.
fn hmget_client_ids(server: &RedisServer) -> Vec<String> {
    client_ids(server, "hmget")
}

/// The `id=` of each connection whose last command was `cmd` (lower case).
fn client_ids(server: &RedisServer, cmd: &str) -> Vec<String> {
    server
        .cli(&["--raw", "CLIENT", "LIST"])
        .lines()
        .filter(|l| l.contains(&format!(" cmd={cmd} ")))
        .filter_map(|l| {
            l.split(' ')
                .find(|f| f.starts_with("id="))
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test]
async fn a_read_goes_over_paylinks_own_connection_not_redis_rs() {
    let server = RedisServer::start();
    let store = store(&server.url());
    let made = sessions(&store, 1).await;
    assert_eq!(
        store.load(&made[0].0).await.unwrap(),
        Some(made[0].1.clone())
    );
    // The create went through redis-rs (a script); the read came on another connection.
    let clients = server.cli(&["--raw", "CLIENT", "LIST"]);
    let last_commands: Vec<&str> = clients
        .lines()
        .filter_map(|l| l.split(' ').find(|f| f.starts_with("cmd=")))
        .collect();
    assert!(last_commands.contains(&"cmd=evalsha"), "{clients}");
    assert_eq!(hmget_clients(&server).len(), 1, "{clients}");
}

#[tokio::test]
async fn concurrent_reads_on_one_connection_each_get_their_own_record() {
    let server = RedisServer::start();
    let store = store(&server.url());
    let made = sessions(&store, 25).await;
    assert!(store.load(&made[0].0).await.unwrap().is_some());
    let before = hmget_client_ids(&server);
    let unknown = digest();
    // Eight rounds over every session and an unknown digest, all queued at once.
    let reads = (0..8).flat_map(|_| {
        made.iter()
            .map(|(d, r)| (d, Some(r)))
            .chain([(&unknown, None)])
    });
    let reads: Vec<_> = reads.collect();
    let answers = join_all(reads.iter().map(|(d, _)| store.load(d))).await;
    for ((_, want), got) in reads.iter().zip(answers) {
        assert_eq!(got.unwrap().as_ref(), *want);
    }
    // One thread asked: one connection carried every read.
    assert_eq!(hmget_client_ids(&server), before);
}

#[tokio::test]
async fn a_read_given_up_leaves_the_connection_in_step() {
    let server = RedisServer::start();
    let store = store(&server.url());
    let made = sessions(&store, 2).await;
    assert!(store.load(&made[0].0).await.unwrap().is_some());
    let before = hmget_client_ids(&server);
    server.cli(&["CLIENT", "PAUSE", "500", "ALL"]);
    // The payer went away: the first read is dropped after its command was sent.
    tokio::select! {
        read = store.load(&made[0].0) => panic!("Redis answered while paused: {read:?}"),
        () = tokio::time::sleep(Duration::from_millis(100)) => {}
    }
    // Its reply comes first, and is not this read's.
    let next = store.load(&made[1].0).await.unwrap();
    assert_eq!(next, Some(made[1].1.clone()));
    assert_eq!(
        hmget_client_ids(&server),
        before,
        "the connection was replaced"
    );
}

#[tokio::test]
async fn a_connection_silent_for_the_whole_timeout_is_replaced() {
    let server = RedisServer::start();
    let store = connect_redis(&server.url(), Duration::from_millis(300)).unwrap();
    let made = sessions(&store, 2).await;
    assert!(store.load(&made[0].0).await.unwrap().is_some());
    let before = hmget_client_ids(&server);
    server.cli(&["CLIENT", "PAUSE", "1000", "ALL"]);
    let late = store.load(&made[0].0).await;
    assert!(matches!(late, Err(StoreError::Timeout)), "{late:?}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        store.load(&made[1].0).await.unwrap(),
        Some(made[1].1.clone())
    );
    let after = hmget_client_ids(&server);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(after, before, "the silent connection was kept");
}

/// Creates and payments go over redis-rs, which reconnects when a connection fails but not
/// when it falls silent (a host gone without a word): the thread's connection that timed
/// out without answering anything is dropped, and the next command opens another.
#[tokio::test]
async fn a_redis_rs_connection_silent_for_the_whole_timeout_is_replaced() {
    let server = RedisServer::start();
    let store = connect_redis(&server.url(), Duration::from_millis(300)).unwrap();
    sessions(&store, 1).await;
    let before = client_ids(&server, "evalsha");
    assert_eq!(before.len(), 1, "{before:?}");
    server.cli(&["CLIENT", "PAUSE", "1000", "ALL"]);
    let late = store
        .create(&digest(), &record("ord_late"), RETENTION)
        .await;
    assert!(matches!(late, Err(StoreError::Timeout)), "{late:?}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let made = sessions(&store, 1).await;
    assert_eq!(
        store.load(&made[0].0).await.unwrap(),
        Some(made[0].1.clone())
    );
    let after = client_ids(&server, "evalsha");
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(after, before, "the silent connection was kept");
}

#[tokio::test]
async fn an_error_reply_fails_that_read_only() {
    let server = RedisServer::start();
    let store = store(&server.url());
    let made = sessions(&store, 1).await;
    let wrong = digest();
    // A string where a record hash belongs: Redis answers HMGET with WRONGTYPE.
    server.cli(&["SET", &format!("pl:{{{}}}", wrong.to_hex()), "x"]);
    let failed = store.load(&wrong).await;
    let Err(StoreError::Unavailable(why)) = failed else {
        panic!("WRONGTYPE read as {failed:?}");
    };
    assert!(why.to_string().contains("WRONGTYPE"), "{why}");
    // The error was one whole reply: the connection goes on.
    let before = hmget_client_ids(&server);
    assert_eq!(
        store.load(&made[0].0).await.unwrap(),
        Some(made[0].1.clone())
    );
    assert_eq!(hmget_client_ids(&server), before);
}

#[tokio::test]
async fn reads_come_back_at_once_after_redis_dropped_every_connection() {
    let server = RedisServer::start();
    let store = store(&server.url());
    let made = sessions(&store, 1).await;
    assert!(store.load(&made[0].0).await.unwrap().is_some());
    let killed = server.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    assert!(killed.contains('1') || killed.contains('2'), "{killed}");
    for _ in 0..3 {
        assert_eq!(
            store.load(&made[0].0).await.unwrap(),
            Some(made[0].1.clone())
        );
    }
}

#[tokio::test]
async fn a_read_logs_in_and_selects_the_database_the_url_names() {
    let server = RedisServer::start();
    server.cli(&["CONFIG", "SET", "requirepass", "s3cret-pw"]);
    let port = server.port;
    let on_db_3 = store(&format!("redis://default:s3cret-pw@127.0.0.1:{port}/3"));
    let made = sessions(&on_db_3, 1).await;
    assert_eq!(
        on_db_3.load(&made[0].0).await.unwrap(),
        Some(made[0].1.clone())
    );
    // The record is in database 3 only.
    let on_db_0 = store(&format!("redis://:s3cret-pw@127.0.0.1:{port}/0"));
    assert_eq!(on_db_0.load(&made[0].0).await.unwrap(), None);
    // A wrong password is an unavailable store, and the error does not repeat it.
    let wrong = store(&format!("redis://default:not-it@127.0.0.1:{port}/3"));
    let refused = wrong.load(&made[0].0).await;
    let Err(StoreError::Unavailable(why)) = refused else {
        panic!("a wrong password read as {refused:?}");
    };
    assert!(!format!("{why} {why:?}").contains("not-it"), "{why:?}");
}

#[tokio::test]
async fn a_read_reaches_redis_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("redis.sock");
    let socket = socket.to_str().unwrap();
    let server = RedisServer::start_with(&["--unixsocket", socket, "--unixsocketperm", "700"]);
    let store = store(&format!("redis+unix://{socket}"));
    let made = sessions(&store, 1).await;
    assert_eq!(
        store.load(&made[0].0).await.unwrap(),
        Some(made[0].1.clone())
    );
    assert!(
        hmget_clients(&server).iter().any(|c| c.contains("addr=/")),
        "no read over the socket"
    );
}

#[tokio::test]
async fn a_store_dropped_closes_its_read_connection() {
    let server = RedisServer::start();
    let store = store(&server.url());
    let made = sessions(&store, 1).await;
    assert!(store.load(&made[0].0).await.unwrap().is_some());
    assert_eq!(hmget_clients(&server).len(), 1);
    drop(store);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !hmget_clients(&server).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the read connection stayed open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_counted_read_runs_its_script_by_digest_once_redis_knows_it() {
    let server = RedisServer::start();
    let store = store(&server.url());
    let made = sessions(&store, 1).await;
    let window = Duration::from_secs(60);
    let calls = |name: &str| {
        let stats = server.cli(&["--raw", "INFO", "commandstats"]);
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
            .map_or(0, |rest| {
                rest.split(',').next().unwrap().parse::<u64>().unwrap()
            })
    };
    // Redis forgot every script (a restart, a failover): the first call sends the text.
    server.cli(&["SCRIPT", "FLUSH"]);
    let (evals, evalshas) = (calls("eval"), calls("evalsha"));
    for n in 1..=3 {
        let (hit, record) = store
            .hit_rate_limit_and_load("view:x", window, &made[0].0)
            .await
            .unwrap();
        assert_eq!(hit.map(|h| h.count), Some(n));
        assert_eq!(record, Some(made[0].1.clone()));
    }
    assert_eq!(calls("eval") - evals, 1, "the script's text is sent once");
    assert_eq!(
        calls("evalsha") - evalshas,
        3,
        "every call tries the digest first"
    );
    // Over paylink's own connection, as the plain read: the create's script went over
    // redis-rs's, so two connections last ran EVALSHA.
    let clients = server.cli(&["--raw", "CLIENT", "LIST"]);
    let evalsha = clients
        .lines()
        .filter(|l| l.contains(" cmd=evalsha "))
        .count();
    assert_eq!(evalsha, 2, "{clients}");
}
