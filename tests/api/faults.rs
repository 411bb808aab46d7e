//! Redis going away and coming back, and what a dump of Redis shows.

use crate::helpers::{
    AppOptions, Backend, RedisCluster, RedisServer, card, eventually, spawn_app, spawn_app_with,
    valid_card,
};
use serde_json::json;
use sha2::Digest;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_503_never_410_or_500_and_paylink_recovers_when_it_returns() {
    let mut options = AppOptions::new(Backend::Redis);
    options.store_timeout_ms = 500;
    let mut app = spawn_app_with(options).await;
    let created = app.create_default_session().await;
    app.redis_mut().kill();

    let page = app.get_pay_page(&created.token).await;
    assert_eq!(page.status, 503, "{}", page.text);
    assert!(page.text.contains("Temporarily unavailable") && !page.text.contains("Link Expired"));
    assert_eq!(page.header("cache-control"), Some("no-store"));
    let pay = app.pay(&created.token, &valid_card()).await;
    assert_eq!(pay.status, 503);
    let api = app.get_session(&created.token).await;
    assert_eq!(api.status, 503);
    assert_eq!(api.error_code(), "store_unavailable");
    let create = app
        .post_session(&json!({"orderId": "o", "amount": 1, "currency": "USD"}))
        .await;
    assert_eq!(create.status, 503);
    assert_eq!(app.revoke_session(&created.token).await.status, 503);
    assert_eq!(app.get("/readyz").await.status, 503);
    assert_eq!(app.get("/healthz").await.status, 200);
    // A malformed token never needs the store.
    assert_eq!(app.get_pay_page("nope").await.status, 410);
    assert_eq!(app.approvals(), 0);

    app.redis_mut().restart();
    eventually(Duration::from_secs(10), "readyz recovers", || async {
        app.get("/readyz").await.status == 200
    })
    .await;
    // The restarted server kept nothing (no persistence here): the old link is gone, new ones
    // work. Each worker thread's connection comes back on its own, so allow it a moment.
    eventually(Duration::from_secs(10), "creating works again", || async {
        app.post_session(&json!({"orderId": "o2", "amount": 1, "currency": "USD"}))
            .await
            .status
            == 201
    })
    .await;
    let fresh = app.create_default_session().await;
    assert_eq!(app.get_pay_page(&fresh.token).await.status, 200);
    assert_eq!(app.pay(&fresh.token, &valid_card()).await.status, 200);
    assert_eq!(app.approvals(), 1);
}

/// paylink started while its Redis Cluster is down starts all the same, answers 503 (and
/// not ready) meanwhile, and serves as soon as the cluster is back, with no restart: no
/// start-up order for an operator to get right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paylink_starts_before_its_redis_cluster_and_serves_once_the_cluster_is_up() {
    let cluster = RedisCluster::start(3, 0);
    for node in &cluster.nodes {
        node.kill();
    }
    let mut options = AppOptions::new(Backend::Cluster);
    options.cluster = Some(cluster);
    options.store_timeout_ms = 5000;
    let mut app = spawn_app_with(options).await;
    assert_eq!(app.get("/healthz").await.status, 200);
    // No request waits on a connect attempt (that is the background task's job): the 503
    // comes at once, not after the 5 s store timeout.
    let started = std::time::Instant::now();
    assert_eq!(app.get("/readyz").await.status, 503);
    let create = app
        .post_session(&json!({"orderId": "o", "amount": 1, "currency": "USD"}))
        .await;
    assert_eq!(create.status, 503, "{}", create.text);
    assert_eq!(create.error_code(), "store_unavailable");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "503s took {:?}",
        started.elapsed()
    );

    for node in &app.cluster_mut().nodes {
        node.restart();
    }
    app.cluster_mut().wait_until_ok();
    eventually(
        Duration::from_secs(15),
        "readyz once the cluster is up",
        || async { app.get("/readyz").await.status == 200 },
    )
    .await;
    let created = app.create_default_session().await;
    assert_eq!(app.get_pay_page(&created.token).await.status, 200);
    assert_eq!(app.pay(&created.token, &valid_card()).await.status, 200);
    assert_eq!(app.get_pay_page(&created.token).await.status, 410);
}

/// The cluster node that holds `key`: the one that answers for it without a redirect.
fn node_of<'a>(cluster: &'a RedisCluster, key: &str) -> &'a RedisServer {
    cluster
        .nodes
        .iter()
        .find(|n| !n.cli(&["EXISTS", key]).contains("MOVED"))
        .expect("a node holds every slot")
}

/// Script calls a node has run, from `INFO commandstats`.
fn evalsha_calls(node: &RedisServer) -> u64 {
    let stats = node.cli(&["INFO", "commandstats"]);
    stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// On a cluster a payment attempt counts its hit before it claims the link: the counter
/// and the link live in different slots. When the counter's node does not answer, the
/// attempt gets its 503 after one store timeout and has claimed nothing, so nothing is
/// left to release either: no release is ever sent to the link's node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_payment_whose_counter_times_out_claims_and_releases_nothing() {
    let mut options = AppOptions::new(Backend::Cluster);
    options.store_timeout_ms = 500;
    options.pay_rate_limit = 1_000;
    let app = spawn_app_with(options).await;
    let cluster = app.cluster.as_ref().expect("a cluster");
    let counter = node_of(cluster, "pl:rl:pay:127.0.0.1");
    let (token, node) = loop {
        let token = app.create_default_session().await.token;
        let record_key = format!("pl:{{{}}}", hex::encode(sha2::Sha256::digest(&token)));
        let node = node_of(cluster, &record_key);
        if node.port != counter.port {
            break (token, node);
        }
    };
    let scripts_before = evalsha_calls(node);
    counter.cli(&["CLIENT", "PAUSE", "2500", "ALL"]);
    let started = Instant::now();
    let pay = app.pay(&token, &valid_card()).await;
    assert_eq!(pay.status, 503, "{}", pay.text);
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
    // A release retried in the background would have reached the link's node by now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        evalsha_calls(node),
        scripts_before,
        "scripts run on the link's node"
    );
    assert_eq!(app.approvals(), 0);
    eventually(
        Duration::from_secs(10),
        "the payment once the pause ends",
        || async { app.pay(&token, &valid_card()).await.status == 200 },
    )
    .await;
}

/// One seed address that accepts connections and never answers (a host that hangs, a
/// half-open firewall) must not keep paylink from the rest of the cluster: the connect at
/// start waits out that seed once, not on every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_seed_does_not_keep_paylink_from_a_healthy_cluster() {
    // Connections complete in the kernel's backlog; nothing ever reads or answers them.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cluster = RedisCluster::start(3, 0);
    let seeds = cluster.url().replace(
        "redis+cluster://",
        &format!("redis+cluster://{},", silent.local_addr().unwrap()),
    );
    let mut options = AppOptions::new(Backend::Cluster);
    options.cluster = Some(cluster);
    options.redis_url = Some(seeds);
    options.store_timeout_ms = 1000;
    let app = spawn_app_with(options).await;
    assert_eq!(app.get("/readyz").await.status, 200);
    let created = app.create_default_session().await;
    assert_eq!(app.pay(&created.token, &valid_card()).await.status, 200);
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_of_every_redis_key_and_value_holds_no_token_and_no_card_number() {
    dump_holds_no_secret(Backend::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_of_every_cluster_node_holds_no_token_and_no_card_number() {
    dump_holds_no_secret(Backend::Cluster).await;
}

async fn dump_holds_no_secret(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut tokens = Vec::new();
    for i in 0..6 {
        let created = app
            .create_session(json!({"orderId": format!("ord_{i}"), "amount": 1000 + i, "currency": "USD", "description": "desc"}))
            .await;
        tokens.push(created.token);
    }
    app.pay(&tokens[0], &valid_card()).await;
    app.pay(&tokens[1], &card("4000 0000 0000 0002")).await;
    app.revoke_session(&tokens[2]).await;
    app.get_pay_page(&tokens[3]).await;
    let dump = app.dump_store();
    assert!(
        dump.contains("ord_0"),
        "the dump really holds the sessions: {dump}"
    );
    for token in &tokens {
        assert!(!dump.contains(token.as_str()), "token found in Redis");
        assert!(!dump.contains(&token[..32]), "half a token found in Redis");
    }
    for number in [
        "4242424242424242",
        "4000000000000002",
        "4242 4242 4242 4242",
    ] {
        assert!(!dump.contains(number), "card number found in Redis");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_redis_cannot_read_is_a_500_that_says_nothing_of_why() {
    let app = spawn_app(Backend::Redis).await;
    let created = app.create_default_session().await;
    let digest = paylink::session::PaymentToken::parse(&created.token)
        .unwrap()
        .digest();
    let key = format!("pl:{{{}}}", digest.to_hex());
    app.redis().cli(&["HSET", &key, "a", "not-a-number"]);
    let api = app.get_session(&created.token).await;
    assert_eq!(api.status, 500);
    assert_eq!(api.error_code(), "internal_error");
    assert!(
        !api.text.contains("record") && !api.text.contains("field") && !api.text.contains("redis"),
        "{}",
        api.text
    );
    let page = app.get_pay_page(&created.token).await;
    assert_eq!(page.status, 500);
    assert!(!page.text.contains("not-a-number") && !page.text.contains("Link Expired"));
}

#[tokio::test]
async fn redis_server_is_really_there() {
    // Guards the harness itself: a missing redis-server must fail loudly, not skip.
    let server = RedisServer::start();
    assert_eq!(server.cli(&["PING"]).trim(), "PONG");
}
