//! Scale-out: several paylink instances over one Redis or Redis Cluster, and a failover.

use crate::helpers::{
    ACME_KEY, AppOptions, Backend, BinaryApp, RedisCluster, RedisServer, spawn_app_with, token_ref,
    valid_card,
};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

async fn two_instances_behave_as_one(url: String) {
    let a = BinaryApp::start(Some(url.clone()), &[]);
    let b = BinaryApp::start(Some(url), &[]);
    let client = reqwest::Client::new();
    let create = |base: &str| {
        client
            .post(format!("{base}/api/v1/sessions"))
            .bearer_auth(ACME_KEY)
            .json(&json!({"orderId": "ord_scale", "amount": 2500, "currency": "EUR"}))
            .send()
    };
    let status = |r: reqwest::Response| r.status().as_u16();

    // Created through A, shown and paid through B, replayed through A.
    let body: Value = create(&a.address).await.unwrap().json().await.unwrap();
    let paid = body["token"].as_str().unwrap().to_owned();
    assert_eq!(
        status(
            client
                .get(format!("{}/pay/{paid}", b.address))
                .send()
                .await
                .unwrap()
        ),
        200
    );
    assert_eq!(
        status(
            client
                .post(format!("{}/pay/{paid}", b.address))
                .form(&valid_card())
                .send()
                .await
                .unwrap()
        ),
        200
    );
    assert_eq!(
        status(
            client
                .post(format!("{}/pay/{paid}", a.address))
                .form(&valid_card())
                .send()
                .await
                .unwrap()
        ),
        410
    );
    assert_eq!(
        status(
            client
                .get(format!("{}/pay/{paid}", a.address))
                .send()
                .await
                .unwrap()
        ),
        410
    );
    let read: Value = client
        .get(format!("{}/api/v1/sessions/{paid}", a.address))
        .bearer_auth(ACME_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["status"], "paid");

    // Revoked through B, dead at once through A.
    let body: Value = create(&a.address).await.unwrap().json().await.unwrap();
    let revoked = body["token"].as_str().unwrap().to_owned();
    assert_eq!(
        status(
            client
                .get(format!("{}/pay/{revoked}", a.address))
                .send()
                .await
                .unwrap()
        ),
        200
    );
    let revoke = client
        .delete(format!("{}/api/v1/sessions/{revoked}", b.address))
        .bearer_auth(ACME_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status().as_u16(), 200);
    assert_eq!(
        status(
            client
                .get(format!("{}/pay/{revoked}", a.address))
                .send()
                .await
                .unwrap()
        ),
        410
    );

    // A short link expires; every event of every link is logged once across both instances.
    let body = b
        .create_session(
            json!({"orderId": "ord_short", "amount": 1, "currency": "EUR", "ttlSeconds": 1}),
        )
        .await;
    let short = token_ref(body["token"].as_str().unwrap());
    let count = |tref: &str, event: &str| {
        a.events()
            .iter()
            .chain(b.events().iter())
            .filter(|e| e["tokenRef"] == tref && e["event"] == event)
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(&short, "session.expired") == 0 {
        assert!(Instant::now() < deadline, "session.expired never logged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (paid, revoked) = (token_ref(&paid), token_ref(&revoked));
    for (tref, event, times) in [
        (&paid, "session.created", 1),
        (&paid, "session.viewed", 1),
        (&paid, "session.paid", 1),
        (&paid, "session.replay_rejected", 2),
        (&revoked, "session.revoked", 1),
        (&short, "session.created", 1),
        (&short, "session.expired", 1),
    ] {
        assert_eq!(count(tref, event), times, "{event} of {tref}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_over_one_redis_behave_as_one() {
    let redis = RedisServer::start();
    two_instances_behave_as_one(redis.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_over_one_redis_cluster_behave_as_one() {
    let cluster = RedisCluster::start(3, 0);
    two_instances_behave_as_one(cluster.url()).await;
}

/// With 3 masters and 3 replicas and `PAYLINK_REDIS_WAIT_REPLICAS=1`, a master is killed
/// while payments stream in, and brought back (as a replica) a few seconds later. Payers on
/// that shard see 503 "temporarily unavailable" until a replica has taken over and has a
/// replica of its own; afterwards every charge the processor approved is recorded as paid
/// exactly once, and no link was charged twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_failover_loses_no_approved_payment_and_charges_nothing_twice() {
    let mut options = AppOptions::new(Backend::Cluster);
    options.cluster = Some(RedisCluster::start(3, 1));
    options.wait_replicas = 1;
    options.store_timeout_ms = 1000;
    let mut app = spawn_app_with(options).await;

    let mut tokens = Vec::new();
    for i in 0..40 {
        let created = app
            .create_session(json!({"orderId": format!("ord_{i}"), "amount": 100 + i, "currency": "USD", "ttlSeconds": 600}))
            .await;
        tokens.push(created.token);
    }

    let mut receipts: HashMap<String, u32> = HashMap::new();
    let mut unavailable = 0;
    // (node, when it was killed, restarted yet)
    let mut killed: Option<(usize, Instant, bool)> = None;
    for (i, token) in tokens.iter().enumerate() {
        if i == 12 {
            let master = app
                .cluster_mut()
                .nodes
                .iter()
                .position(|n| {
                    n.cli(&["CLUSTER", "NODES"])
                        .lines()
                        .any(|l| l.contains("myself,master"))
                })
                .expect("a master");
            app.cluster_mut().nodes[master].kill();
            killed = Some((master, Instant::now(), false));
        }
        // A payer retries until the link is paid (200) or answers that it is gone (410).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let reply = app.pay(token, &valid_card()).await;
            match reply.status {
                200 => {
                    *receipts.entry(token.clone()).or_default() += 1;
                    break;
                }
                410 => break,
                503 | 409 => unavailable += 1,
                other => panic!("payment {i}: unexpected {other}: {}", reply.text),
            }
            assert!(Instant::now() < deadline, "payment {i} never went through");
            // As a supervisor would, bring the dead node back; it rejoins as a replica, so
            // the promoted master has a replica to acknowledge writes again.
            if let Some((node, at, false)) = killed
                && at.elapsed() > Duration::from_secs(4)
            {
                app.cluster_mut().nodes[node].restart();
                killed = Some((node, at, true));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(
        killed.is_some_and(|(_, _, restarted)| restarted),
        "the failover happened mid-stream"
    );
    app.cluster_mut().wait_until_ok();

    let mut paid = 0;
    for token in &tokens {
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            let reply = app.get_session(token).await;
            if reply.status == 200 {
                break reply.json()["status"].as_str().unwrap().to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "session unreadable after failover: {}",
                reply.status
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        if status == "paid" {
            paid += 1;
        }
    }
    assert!(
        receipts.values().all(|&n| n == 1),
        "no link got two receipts"
    );
    assert_eq!(
        receipts.len(),
        tokens.len(),
        "every link was paid once its payer retried"
    );
    assert_eq!(paid, tokens.len(), "every approved payment is recorded");
    assert_eq!(
        app.approvals(),
        tokens.len() as u64,
        "exactly one charge per link"
    );
    eprintln!(
        "failover: {} receipts, {unavailable} answers of 503/409 while the cluster recovered",
        receipts.len()
    );
}
