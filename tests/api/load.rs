//! A load test with faults: a steady mix of creates, views and payments while Redis (AOF on)
//! is killed and restarted twice. Short in CI; `PAYLINK_FAULT_LOAD_SECONDS=120` (see
//! bench/load-with-faults.sh) runs it longer.

use crate::helpers::{
    AppOptions, Backend, RedisServer, TestApp, eventually, spawn_app_with, valid_card,
};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Tally {
    answers: BTreeMap<u16, u64>,
    created: Vec<String>,
    receipts: HashMap<String, u32>,
}

impl Tally {
    fn count(&mut self, status: u16) {
        *self.answers.entry(status).or_default() += 1;
    }
}

async fn worker(app: Arc<TestApp>, tally: Arc<Mutex<Tally>>, until: Instant, id: usize) {
    let mut n = 0;
    while Instant::now() < until {
        n += 1;
        let reply = app
            .post_session(&json!({"orderId": format!("w{id}_{n}"), "amount": 100 + n, "currency": "USD", "ttlSeconds": 600}))
            .await;
        tally.lock().unwrap().count(reply.status);
        if reply.status != 201 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let token = reply.json()["token"].as_str().unwrap().to_owned();
        tally.lock().unwrap().created.push(token.clone());
        let view = app.get_pay_page(&token).await;
        tally.lock().unwrap().count(view.status);
        if n % 2 == 0 {
            let paid = app.pay(&token, &valid_card()).await;
            let mut t = tally.lock().unwrap();
            t.count(paid.status);
            if paid.status == 200 {
                *t.receipts.entry(token).or_default() += 1;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_load_survives_two_redis_restarts_without_double_charges_or_lost_links() {
    let seconds: u64 = std::env::var("PAYLINK_FAULT_LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "everysec"]);
    let port = redis.port;
    let mut options = AppOptions::new(Backend::Redis);
    options.redis = Some(redis);
    options.store_timeout_ms = 500;
    let app = Arc::new(spawn_app_with(options).await);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);

    let workers: Vec<_> = (0..4)
        .map(|id| tokio::spawn(worker(app.clone(), tally.clone(), until, id)))
        .collect();
    // Two restarts, at a third and two thirds of the run: SIGKILL, then start again.
    for fraction in [1, 2] {
        let at = started + Duration::from_secs(seconds) * fraction / 3;
        tokio::time::sleep(at.saturating_duration_since(Instant::now())).await;
        let pid = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "INFO", "server"])
            .output()
            .unwrap();
        let pid = String::from_utf8_lossy(&pid.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("process_id:").map(|p| p.trim().to_owned()))
            .expect("redis pid");
        std::process::Command::new("kill")
            .args(["-9", &pid])
            .status()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        restart_redis(&app, port);
    }
    for w in workers {
        w.await.unwrap();
    }

    eventually(Duration::from_secs(10), "Redis answers again", || async {
        app.get("/readyz").await.status == 200
    })
    .await;
    let tally = std::mem::take(&mut *tally.lock().unwrap());
    let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
    let mut lost = 0;
    // Approved payments whose record write met the outage are recorded in the background;
    // give that a moment, then every link must be accounted for.
    let deadline = Instant::now() + Duration::from_secs(15);
    let paid = loop {
        let mut paid = 0;
        for token in &tally.created {
            let reply = app.get_session(token).await;
            if reply.status == 200 && reply.json()["status"] == "paid" {
                paid += 1;
            }
        }
        if paid == app.approvals() || Instant::now() > deadline {
            break paid;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for token in &tally.created {
        let reply = app.get_session(token).await;
        if reply.status != 200 {
            lost += 1;
            continue;
        }
        *by_status
            .entry(reply.json()["status"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let double_receipts = tally.receipts.values().filter(|&&n| n > 1).count();
    let server_errors: u64 = tally
        .answers
        .iter()
        .filter(|(s, _)| **s >= 500 && **s != 503)
        .map(|(_, n)| n)
        .sum();
    let requests: u64 = tally.answers.values().sum();
    eprintln!(
        "load with faults: {seconds}s, {requests} requests, answers {:?}, {} links created, {} receipts, \
         {} approvals, sessions now {:?}, double charges {}, lost links {lost}",
        tally.answers,
        tally.created.len(),
        tally.receipts.len(),
        app.approvals(),
        by_status,
        app.approvals() - paid,
    );
    assert!(tally.created.len() >= 20, "the load really ran");
    assert_eq!(server_errors, 0, "no 5xx other than 503");
    assert_eq!(lost, 0, "no link lost (AOF on)");
    assert_eq!(double_receipts, 0);
    assert_eq!(
        app.approvals(),
        paid,
        "each approval recorded as exactly one paid session"
    );
    for token in tally.receipts.keys() {
        assert_eq!(app.get_session(token).await.json()["status"], "paid");
    }
}

fn restart_redis(app: &TestApp, port: u16) {
    // The harness owns the server; it restarts it on the same port and directory, where
    // the append-only file is.
    let server: &RedisServer = app.redis();
    assert_eq!(server.port, port);
    server.respawn_after_crash();
}
