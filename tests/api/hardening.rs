//! Issue "Hardening": abuse limits, store faults, durability, and the known attacks on a
//! payment-session service, each as a named regression test.

use crate::helpers::{
    ACME_KEY, ADMIN_TOKEN, AppOptions, Backend, BinaryApp, GLOBEX_KEY, RedisServer, card,
    eventually, metric, spawn_app, spawn_app_with, valid_card,
};
use serde_json::json;
use std::time::{Duration, Instant};

fn redis_cli(port: u16, args: &[&str]) {
    let status = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("redis-cli runs");
    assert!(status.success());
}

// ---- abuse ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_declines_lock_the_links_payments_for_a_while() {
    let mut options = AppOptions::new(Backend::Redis);
    options.pay_max_declines = 3;
    options.pay_lockout_seconds = 2;
    let app = spawn_app_with(options).await;
    let created = app.create_default_session().await;
    let other = app.create_default_session().await;
    for _ in 0..3 {
        assert_eq!(
            app.pay(&created.token, &card("4000 0000 0000 0002"))
                .await
                .status,
            402
        );
    }
    // Card testing stops here: even a good card waits, and nothing reaches the processor.
    let locked = app.pay(&created.token, &valid_card()).await;
    assert_eq!(locked.status, 429);
    assert!(locked.text.contains("Too many declined payments"));
    let retry: u64 = locked.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert_eq!(app.processor.inner.declines(), 3);
    // Viewing still works, and other links are not affected.
    assert_eq!(app.get_pay_page(&created.token).await.status, 200);
    assert_eq!(app.pay(&other.token, &valid_card()).await.status, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(app.pay(&created.token, &valid_card()).await.status, 200);
    assert_eq!(app.approvals(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_locks_after_repeated_declines_too() {
    let mut options = AppOptions::new(Backend::Memory);
    options.pay_max_declines = 2;
    let app = spawn_app_with(options).await;
    let created = app.create_default_session().await;
    for _ in 0..2 {
        assert_eq!(
            app.pay(&created.token, &card("4000000000009995"))
                .await
                .status,
            402
        );
    }
    assert_eq!(app.pay(&created.token, &valid_card()).await.status, 429);
    assert_eq!(app.approvals(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
    let forwarded_views = |app: &crate::helpers::TestApp, ip: &'static str, token: String| {
        let request = app
            .client
            .get(app.url(&format!("/pay/{token}")))
            .header("x-forwarded-for", format!("6.6.6.6, {ip}"));
        async move { request.send().await.unwrap().status().as_u16() }
    };

    let mut options = AppOptions::new(Backend::Redis);
    options.pay_rate_limit = 2;
    options.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    let behind_proxy = spawn_app_with(options).await;
    let token = behind_proxy.create_default_session().await.token;
    assert_eq!(
        forwarded_views(&behind_proxy, "1.1.1.1", token.clone()).await,
        200
    );
    assert_eq!(
        forwarded_views(&behind_proxy, "1.1.1.1", token.clone()).await,
        200
    );
    assert_eq!(
        forwarded_views(&behind_proxy, "1.1.1.1", token.clone()).await,
        429
    );
    // Another client behind the same proxy has its own budget, whatever it prepends.
    assert_eq!(
        forwarded_views(&behind_proxy, "2.2.2.2", token.clone()).await,
        200
    );

    let mut options = AppOptions::new(Backend::Redis);
    options.pay_rate_limit = 2;
    let direct = spawn_app_with(options).await;
    let token = direct.create_default_session().await.token;
    assert_eq!(
        forwarded_views(&direct, "1.1.1.1", token.clone()).await,
        200
    );
    assert_eq!(
        forwarded_views(&direct, "2.2.2.2", token.clone()).await,
        200
    );
    assert_eq!(
        forwarded_views(&direct, "3.3.3.3", token).await,
        429,
        "a spoofed header changes nothing"
    );
}

// ---- store faults ----------------------------------------------------------------------

/// A Redis that refuses writes (out of memory under `noeviction`) cannot count views, but
/// can still answer reads: the payer sees the page, as a limit that cannot count lets
/// traffic through, even though the count and the read are one script call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_out_of_memory_still_serves_the_pay_page_with_rate_limits_on() {
    let mut options = AppOptions::new(Backend::Redis);
    options.pay_rate_limit = 1_000;
    let app = spawn_app_with(options).await;
    let created = app.create_default_session().await;
    assert_eq!(app.get_pay_page(&created.token).await.status, 200);
    redis_cli(
        app.redis().port,
        &["CONFIG", "SET", "maxmemory-policy", "noeviction"],
    );
    redis_cli(app.redis().port, &["CONFIG", "SET", "maxmemory", "1"]);
    let page = app.get_pay_page(&created.token).await;
    let refused = app
        .post_session(&json!({"orderId": "ord_oom", "amount": 100, "currency": "USD"}))
        .await;
    redis_cli(app.redis().port, &["CONFIG", "SET", "maxmemory", "0"]);
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("Complete your payment"));
    // Writes really were refused meanwhile.
    assert_eq!(refused.status, 503, "{}", refused.text);
}

/// A counter Redis cannot count on (here a key of the wrong type, as a stray write could
/// leave) lets the request's own step run: a create, a view and a payment, each of which
/// counts its hit in the same script call as its step, all go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_that_cannot_count_lets_creates_views_and_payments_through() {
    let mut options = AppOptions::new(Backend::Redis);
    options.pay_rate_limit = 1;
    options.api_rate_limit = 1;
    let app = spawn_app_with(options).await;
    let port = app.redis().port;
    for counter in ["pl:rl:api:acme", "pl:rl:pay:127.0.0.1"] {
        redis_cli(port, &["HSET", counter, "not", "a counter"]);
    }
    let mut links = Vec::new();
    for n in 0..3 {
        let created = app
            .post_session(&json!({"orderId": format!("ord_{n}"), "amount": 100, "currency": "USD"}))
            .await;
        assert_eq!(created.status, 201, "{}", created.text);
        links.push(created.json()["token"].as_str().unwrap().to_owned());
    }
    for token in &links {
        assert_eq!(app.get_pay_page(token).await.status, 200);
        assert_eq!(app.pay(token, &valid_card()).await.status, 200);
    }
    assert_eq!(app.approvals(), 3);
    // With the counter repaired, the limits hold again.
    redis_cli(port, &["DEL", "pl:rl:api:acme", "pl:rl:pay:127.0.0.1"]);
    assert_eq!(app.get_pay_page(&links[0]).await.status, 410);
    assert_eq!(app.get_pay_page(&links[0]).await.status, 429);
}

async fn assert_unavailable_within(app: &crate::helpers::TestApp, token: &str, limit: Duration) {
    let started = Instant::now();
    let page = app.get_pay_page(token).await;
    assert_eq!(page.status, 503, "{}", page.text);
    let api = app.get_session(token).await;
    assert_eq!(api.status, 503);
    assert_eq!(api.error_code(), "store_unavailable");
    assert_eq!(app.get("/readyz").await.status, 503);
    assert!(
        started.elapsed() < limit,
        "answered in {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_gets_503_within_the_store_timeout_and_paylink_recovers() {
    let mut options = AppOptions::new(Backend::Redis);
    options.store_timeout_ms = 300;
    let app = spawn_app_with(options).await;
    let created = app.create_default_session().await;
    redis_cli(app.redis().port, &["CLIENT", "PAUSE", "2500", "ALL"]);
    // Three requests, each bounded by the 300 ms store timeout (plus slack).
    assert_unavailable_within(&app, &created.token, Duration::from_millis(2000)).await;
    eventually(
        Duration::from_secs(5),
        "recovery after the pause",
        || async { app.get_pay_page(&created.token).await.status == 200 },
    )
    .await;
    assert_eq!(app.pay(&created.token, &valid_card()).await.status, 200);
}

/// A scrape while the store does not answer says so (`paylink_store_up 0`) and leaves the
/// active-session gauges out rather than repeating the last count as if it were current.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_while_redis_is_paused_drops_the_active_counts_and_says_the_store_is_down() {
    let mut options = AppOptions::new(Backend::Redis);
    options.store_timeout_ms = 300;
    options.admin_token = Some(ADMIN_TOKEN.into());
    let app = spawn_app_with(options).await;
    app.create_default_session().await;
    let up = app.scrape_metrics().await;
    assert_eq!(metric(&up, "paylink_store_up"), Some(1.0), "{up}");
    assert_eq!(
        metric(&up, "paylink_active_sessions_all"),
        Some(1.0),
        "{up}"
    );
    assert_eq!(
        metric(&up, "paylink_active_sessions{merchant=\"acme\"}"),
        Some(1.0),
        "{up}"
    );

    redis_cli(app.redis().port, &["CLIENT", "PAUSE", "2500", "ALL"]);
    let down = app.scrape_metrics().await;
    assert_eq!(metric(&down, "paylink_store_up"), Some(0.0), "{down}");
    assert!(
        !down.contains("paylink_active_sessions"),
        "no count while the store cannot give one: {down}"
    );

    eventually(
        Duration::from_secs(5),
        "the counts come back with the store",
        || async {
            let text = app.scrape_metrics().await;
            metric(&text, "paylink_store_up") == Some(1.0)
                && metric(&text, "paylink_active_sessions_all") == Some(1.0)
        },
    )
    .await;
}

/// With the rate limits on (the default), a request's counter is one more thing it waits
/// for (in its own store call on a cluster, or for a request refused before its step). A
/// paused Redis still costs it one store timeout, not two: the `PAYLINK_STORE_TIMEOUT_MS`
/// is the longest a request waits for the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_rate_limits_on_a_paused_redis_costs_one_store_timeout_not_two() {
    let mut options = AppOptions::new(Backend::Redis);
    options.store_timeout_ms = 1000;
    options.pay_rate_limit = 1_000;
    options.api_rate_limit = 1_000;
    let app = spawn_app_with(options).await;
    let created = app.create_default_session().await;
    redis_cli(app.redis().port, &["CLIENT", "PAUSE", "6000", "ALL"]);
    let started = Instant::now();
    let pay = app.pay(&created.token, &valid_card()).await;
    let pay_took = started.elapsed();
    let started = Instant::now();
    let create = app
        .post_session(&json!({"orderId": "o", "amount": 1, "currency": "USD"}))
        .await;
    let create_took = started.elapsed();
    assert_eq!(pay.status, 503, "{}", pay.text);
    assert_eq!(create.status, 503, "{}", create.text);
    assert_eq!(create.error_code(), "store_unavailable");
    // One timeout is 1 s; two would be 2 s.
    for (what, took) in [("POST /pay", pay_took), ("POST sessions", create_took)] {
        assert!(took < Duration::from_millis(1800), "{what} took {took:?}");
    }
    assert_eq!(app.approvals(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_redis_gets_503_within_the_store_timeout_and_paylink_recovers() {
    let mut options = AppOptions::new(Backend::Redis);
    options.store_timeout_ms = 300;
    let app = spawn_app_with(options).await;
    let created = app.create_default_session().await;
    let port = app.redis().port;
    let sleeper = std::thread::spawn(move || redis_cli(port, &["DEBUG", "SLEEP", "2"]));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_unavailable_within(&app, &created.token, Duration::from_millis(1800)).await;
    sleeper.join().unwrap();
    eventually(
        Duration::from_secs(5),
        "recovery after DEBUG SLEEP",
        || async { app.get_pay_page(&created.token).await.status == 200 },
    )
    .await;
}

/// Redis takes the claim only after paylink gave up waiting for it (the write was held up,
/// not lost): the payer got a 503 and no card was charged, yet the link now holds a claim
/// nobody will finish. paylink releases that claim (and only that one) once Redis answers,
/// so the payer's retry goes through instead of "payment in progress" until the link dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_lands_after_a_store_timeout_is_released_and_the_retry_pays() {
    let mut options = AppOptions::new(Backend::Redis);
    options.store_timeout_ms = 300;
    let app = spawn_app_with(options).await;
    // A first payment loads the scripts: a held-up script call Redis did not know yet
    // would answer NOSCRIPT to nobody and never run.
    let warm_up = app.create_default_session().await;
    assert_eq!(app.pay(&warm_up.token, &valid_card()).await.status, 200);
    let created = app.create_default_session().await;
    redis_cli(app.redis().port, &["CLIENT", "PAUSE", "1500", "WRITE"]);
    let first = app.pay(&created.token, &valid_card()).await;
    assert_eq!(first.status, 503, "{}", first.text);
    // The held-up claim runs when the pause ends; until it is released the link is busy.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut statuses = Vec::new();
    loop {
        let status = app.pay(&created.token, &valid_card()).await.status;
        statuses.push(status);
        assert!(matches!(status, 200 | 409 | 503), "{statuses:?}");
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the retry never paid: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.approvals(), 2, "each link charged once");
    assert_eq!(app.pay(&created.token, &valid_card()).await.status, 410);
}

/// The processor approves, then Redis stops taking writes before paylink can record the
/// payment. The payer gets the receipt (the money moved); the link stays closed (the lease);
/// paylink records `paid` as soon as Redis takes writes again; nothing is charged twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_payment_whose_record_failed_is_recorded_later_and_never_charged_twice() {
    let redis = RedisServer::start();
    let port = redis.port;
    let mut options = AppOptions::new(Backend::Redis);
    options.redis = Some(redis);
    options.store_timeout_ms = 300;
    options.before_charge = Some(Box::new(move || {
        redis_cli(port, &["CLIENT", "PAUSE", "1500", "WRITE"]);
    }));
    options.admin_token = Some(ADMIN_TOKEN.into());
    let app = spawn_app_with(options).await;
    let created = app.create_default_session().await;

    let receipt = app.pay(&created.token, &valid_card()).await;
    assert_eq!(receipt.status, 200, "{}", receipt.text);
    assert!(receipt.text.contains("Payment successful"));
    // While the write is pending, the link cannot be paid again.
    let again = app.pay(&created.token, &valid_card()).await;
    assert!(matches!(again.status, 409 | 410 | 503), "{}", again.status);
    eventually(
        Duration::from_secs(8),
        "the payment gets recorded",
        || async {
            let reply = app.get_session(&created.token).await;
            reply.status == 200 && reply.json()["status"] == "paid"
        },
    )
    .await;
    assert_eq!(app.pay(&created.token, &valid_card()).await.status, 410);
    assert_eq!(app.approvals(), 1, "charged once");
    // The first attempt to record really failed: this test took the failure path.
    let metrics = app.scrape_metrics().await;
    let failed_writes = metric(
        &metrics,
        "paylink_store_operation_duration_seconds_count{operation=\"complete_payment\",outcome=\"error\"}",
    )
    .unwrap_or(0.0);
    assert!(failed_writes >= 1.0, "{metrics}");
}

// ---- durability ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_aof_everysec_links_and_outcomes_survive_kill_9_of_redis() {
    let redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "everysec"]);
    let mut options = AppOptions::new(Backend::Redis);
    options.redis = Some(redis);
    let mut app = spawn_app_with(options).await;
    let open = app.create_default_session().await;
    let paid = app.create_default_session().await;
    let revoked = app.create_default_session().await;
    assert_eq!(app.pay(&paid.token, &valid_card()).await.status, 200);
    assert_eq!(app.revoke_session(&revoked.token).await.status, 200);

    app.redis_mut().kill(); // SIGKILL: no shutdown save
    app.redis_mut().restart();
    eventually(Duration::from_secs(10), "paylink reconnects", || async {
        app.get("/readyz").await.status == 200
    })
    .await;
    assert_eq!(
        app.get_pay_page(&open.token).await.status,
        200,
        "the open link is still open"
    );
    assert_eq!(app.get_session(&paid.token).await.json()["status"], "paid");
    assert_eq!(
        app.get_pay_page(&paid.token).await.status,
        410,
        "and still not payable"
    );
    assert_eq!(
        app.get_session(&revoked.token).await.json()["status"],
        "revoked"
    );
    assert_eq!(app.pay(&open.token, &valid_card()).await.status, 200);
    assert_eq!(app.approvals(), 2);
}

// ---- the known attacks -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_replay_of_a_paid_link_is_refused() {
    let app = spawn_app(Backend::Redis).await;
    let created = app.create_default_session().await;
    assert_eq!(app.pay(&created.token, &valid_card()).await.status, 200);
    for _ in 0..3 {
        assert_eq!(app.pay(&created.token, &valid_card()).await.status, 410);
        assert_eq!(
            app.pay(&created.token, &card("5555 5555 5555 4444"))
                .await
                .status,
            410
        );
    }
    assert_eq!(app.approvals(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_session_fixation_no_request_makes_the_server_adopt_a_chosen_token() {
    let app = spawn_app(Backend::Redis).await;
    let chosen = "ab".repeat(32);
    let reply = app
        .post_session(&json!({"orderId": "o", "amount": 1, "currency": "USD", "token": chosen, "url": format!("/pay/{chosen}")}))
        .await;
    assert_eq!(reply.status, 201);
    assert_ne!(reply.json()["token"], chosen.as_str());
    // Neither the pay page nor a payment brings a chosen token to life.
    assert_eq!(app.get_pay_page(&chosen).await.status, 410);
    assert_eq!(app.pay(&chosen, &valid_card()).await.status, 410);
    assert_eq!(app.get_session(&chosen).await.status, 404);
    assert_eq!(app.get_pay_page(&chosen).await.status, 410);
    assert_eq!(app.approvals(), 0);
    assert!(!app.redis().dump_everything().contains(&chosen));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_token_enumeration_a_wrong_token_looks_and_costs_the_same_as_an_expired_one() {
    let mut options = AppOptions::new(Backend::Redis);
    options.admin_token = Some(ADMIN_TOKEN.into());
    let app = spawn_app_with(options).await;
    let expired = app
        .create_session(json!({"orderId": "o", "amount": 1, "currency": "USD", "ttlSeconds": 1}))
        .await;
    let revoked = app.create_default_session().await;
    app.revoke_session(&revoked.token).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let loads = || async {
        let text = app.scrape_metrics().await;
        let name =
            "paylink_store_operation_duration_seconds_count{operation=\"load\",outcome=\"ok\"}";
        metric(&text, name).unwrap_or(0.0)
    };
    let mut pages = Vec::new();
    for token in [&"ab".repeat(32), &expired.token, &revoked.token] {
        let before = loads().await;
        let page = app.get_pay_page(token).await;
        // Same work: exactly one store read, whatever the token.
        assert_eq!(loads().await - before, 1.0);
        pages.push(page);
    }
    for page in &pages {
        assert_eq!(page.status, 410);
        assert_eq!(page.text, pages[0].text, "byte-for-byte the same page");
        assert_eq!(
            page.header("content-length"),
            pages[0].header("content-length")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_clickjacking_no_page_can_be_framed() {
    let app = spawn_app(Backend::Memory).await;
    let created = app.create_default_session().await;
    let pages = [
        app.get_pay_page(&created.token).await,
        app.pay(&created.token, &card("4000 0000 0000 0002")).await,
        app.pay(&created.token, &valid_card()).await,
        app.get_pay_page(&created.token).await,
        app.get("/nowhere").await,
    ];
    for page in &pages {
        let csp = page.header("content-security-policy").unwrap();
        assert!(
            csp.contains("frame-ancestors 'none'"),
            "{}: {csp}",
            page.status
        );
        assert_eq!(page.header("x-frame-options"), Some("DENY"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_token_leakage_through_referer_cache_or_logs_is_closed() {
    let app = BinaryApp::start(None, &[]);
    let client = reqwest::Client::new();
    let body = app
        .create_session(json!({"orderId": "o", "amount": 100, "currency": "USD"}))
        .await;
    let token = body["token"].as_str().unwrap().to_owned();
    let page = client
        .get(format!("{}/pay/{token}", app.address))
        .send()
        .await
        .unwrap();
    // Referer: neither the header nor the page lets the URL travel to another site.
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    // Cache: no shared or browser cache keeps the page.
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(html.contains("<meta name=\"referrer\" content=\"no-referrer\">"));
    assert!(!html.contains(&token), "the page does not repeat the token");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no third-party resource"
    );
    let receipt = client
        .post(format!("{}/pay/{token}", app.address))
        .form(&valid_card())
        .send()
        .await
        .unwrap();
    assert_eq!(receipt.headers()["cache-control"], "no-store");
    // Logs: no line holds the token, the card or the key (lines reach stdout in batches).
    eventually(Duration::from_secs(5), "session.paid logged", || async {
        app.log().iter().any(|l| l.contains("session.paid"))
    })
    .await;
    let log = app.log().join("\n");
    for secret in [token.as_str(), "4242424242424242", ACME_KEY] {
        assert!(!log.contains(secret));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_cross_merchant_access_reads_revokes_and_learns_nothing() {
    let app = spawn_app(Backend::Redis).await;
    let created = app.create_default_session().await;
    let unknown = app.get_session_as(GLOBEX_KEY, &"cd".repeat(32)).await;
    let read = app.get_session_as(GLOBEX_KEY, &created.token).await;
    let revoke = app.revoke_session_as(GLOBEX_KEY, &created.token).await;
    assert_eq!((read.status, revoke.status), (404, 404));
    assert_eq!(read.text, unknown.text);
    assert_eq!(revoke.text, unknown.text);
    assert_eq!(
        app.get_session(&created.token).await.json()["status"],
        "open"
    );
    // Creating "for" another merchant is refused outright.
    let spoof = app
        .post_session(
            &json!({"orderId": "o", "amount": 1, "currency": "USD", "merchantId": "globex"}),
        )
        .await;
    assert_eq!(spoof.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_bodies_never_echo_a_key_or_a_token() {
    let app = spawn_app(Backend::Memory).await;
    let created = app.create_default_session().await;
    let wrong_key = "sk_live_this_is_a_secret_key_123";
    let replies = [
        app.post_session_as(wrong_key, &json!({})).await,
        app.get_session_as(GLOBEX_KEY, &created.token).await,
        app.revoke_session_as(wrong_key, &created.token).await,
        app.get_session(&format!("{}x", created.token)).await,
    ];
    for reply in &replies {
        assert!(reply.status >= 400);
        for secret in [wrong_key, GLOBEX_KEY, ACME_KEY, created.token.as_str()] {
            assert!(!reply.text.contains(secret), "{}", reply.text);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_on_redis_hold_across_instances() {
    let redis = RedisServer::start();
    let limits = [("PAYLINK_API_RATE_LIMIT_PER_MINUTE", "4")];
    let a = BinaryApp::start(Some(redis.url()), &limits);
    let b = BinaryApp::start(Some(redis.url()), &limits);
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for base in [
        &a.address, &b.address, &a.address, &b.address, &a.address, &b.address,
    ] {
        let reply = client
            .post(format!("{base}/api/v1/sessions"))
            .bearer_auth(ACME_KEY)
            .json(&json!({"orderId": "o", "amount": 1, "currency": "USD"}))
            .send()
            .await
            .unwrap();
        statuses.push(reply.status().as_u16());
    }
    // One budget of 4 per minute for the merchant, however the requests are spread.
    assert_eq!(statuses, [201, 201, 201, 201, 429, 429]);
}

/// A client that promises a body and stalls gets 408 instead of holding the connection.
async fn stalled_upload(app: &crate::helpers::TestApp, path: &str, headers: &str) -> String {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Content-Length: 100\r\n\r\n{{}}"
    );
    app.raw_exchange(&request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_gets_408_and_does_not_hold_the_connection() {
    let app = spawn_app(Backend::Memory).await;
    let token = app.create_default_session().await.token;
    let api = stalled_upload(
        &app,
        "/api/v1/sessions",
        &format!("Authorization: Bearer {ACME_KEY}\r\nContent-Type: application/json\r\n"),
    )
    .await;
    assert!(api.starts_with("HTTP/1.1 408"), "{api}");
    assert!(api.contains("\"request_timeout\""), "{api}");
    let page = stalled_upload(
        &app,
        &format!("/pay/{token}"),
        "Content-Type: application/x-www-form-urlencoded\r\n",
    )
    .await;
    assert!(page.starts_with("HTTP/1.1 408"), "{page}");
    assert_eq!(
        app.get_pay_page(&token).await.status,
        200,
        "the link is untouched"
    );
}

/// Bytes that do not parse as HTTP are answered by the HTTP layer (README, "Messages that
/// are not HTTP"): a 400 or 431 status line, never a 5xx and never a connection closed
/// without an answer; the connection is closed after it, as the stream can't be framed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_that_are_not_http_get_a_4xx_and_a_closed_connection() {
    let app = spawn_app(Backend::Memory).await;
    let many_headers: String = (0..200).map(|i| format!("X-{i}: a\r\n")).collect();
    let cases: [(&str, String, u16); 5] = [
        ("a garbage request line", "GARBAGE\r\n\r\n".into(), 400),
        (
            "a header line without a colon",
            "GET /healthz HTTP/1.1\r\nHost: x\r\nNo Colon Here\r\n\r\n".into(),
            400,
        ),
        (
            "a Content-Length that is not a number",
            format!(
                "POST /api/v1/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ACME_KEY}\r\n\
                 Content-Type: application/json\r\nContent-Length: ten\r\n\r\n{{}}"
            ),
            400,
        ),
        (
            "a NUL byte in the request target",
            "GET /pay/\0 HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            400,
        ),
        (
            "200 header lines",
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n"),
            431,
        ),
    ];
    for (what, request, expected) in cases {
        // The connection is closed after the answer, or this waits in vain.
        let answer = app.raw_exchange(&request).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {expected} ")),
            "{what}: {answer:?}"
        );
    }
    assert_eq!(
        app.client
            .get(format!("{}/healthz", app.address))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "the server is still serving"
    );
}

/// A body whose `Content-Length` already says it is over the route's limit is refused with
/// 413 before any of it is read, not left to run into the upload timeout (408).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_length_over_the_limit_gets_413_without_sending_the_body() {
    let app = spawn_app(Backend::Memory).await;
    let token = app.create_default_session().await.token;
    for (path, headers) in [
        (
            "/api/v1/sessions".to_owned(),
            format!("Authorization: Bearer {ACME_KEY}\r\nContent-Type: application/json\r\n"),
        ),
        (
            format!("/pay/{token}"),
            "Content-Type: application/x-www-form-urlencoded\r\n".to_owned(),
        ),
    ] {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Content-Length: 99999999999\r\n\r\n"
        );
        let answer = app.raw_exchange(&request).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{path}: {answer}");
        if path.starts_with("/api/") {
            assert!(answer.contains("\"payload_too_large\""), "{answer}");
        }
    }
    assert_eq!(
        app.get_pay_page(&token).await.status,
        200,
        "the link is untouched"
    );
}
