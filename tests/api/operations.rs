//! Section 4: lifecycle events in the log, metrics and the dashboard, admin access.

use crate::helpers::{
    ACME_KEY, ADMIN_TOKEN, AppOptions, Backend, BinaryApp, GLOBEX_KEY, RedisServer, Reply,
    assert_security_headers, card, eventually, metric, spawn_app, spawn_app_with, token_ref,
    valid_card,
};
use crate::on_every_backend;
use serde_json::{Value, json};
use std::time::Duration;

async fn post_json(client: &reqwest::Client, url: String, body: Value) -> (u16, String, Value) {
    let r = client
        .post(url)
        .bearer_auth(ACME_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let request_id = r
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    (status, request_id, r.json().await.unwrap())
}

fn events_for<'a>(events: &'a [Value], tref: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["tokenRef"] == tref).collect()
}

async fn every_step_logs_one_event_with_its_fields_and_no_secret(backend: Backend) {
    let redis = (backend == Backend::Redis).then(RedisServer::start);
    let app = BinaryApp::start(redis.as_ref().map(RedisServer::url), &[]);
    let client = reqwest::Client::new();
    let create = |order: &str, ttl: u64| {
        post_json(
            &client,
            format!("{}/api/v1/sessions", app.address),
            json!({"orderId": order, "amount": 1999, "currency": "USD", "ttlSeconds": ttl}),
        )
    };
    let (status, request_id, paid) = create("ord_paid", 600).await;
    assert_eq!(status, 201);
    let (_, _, revoked) = create("ord_revoked", 600).await;
    let (_, _, expiring) = create("ord_expiring", 1).await;
    let token = |v: &Value| v["token"].as_str().unwrap().to_owned();
    let (paid, revoked, expiring) = (token(&paid), token(&revoked), token(&expiring));
    let pay_url = |t: &str| format!("{}/pay/{t}", app.address);

    client.get(pay_url(&paid)).send().await.unwrap();
    let declined = client
        .post(pay_url(&paid))
        .form(&card("4000 0000 0000 0002"))
        .send()
        .await
        .unwrap();
    assert_eq!(declined.status().as_u16(), 402);
    let ok = client
        .post(pay_url(&paid))
        .form(&valid_card())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let replay = client
        .post(pay_url(&paid))
        .form(&valid_card())
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status().as_u16(), 410);
    let revoke = client
        .delete(format!("{}/api/v1/sessions/{revoked}", app.address))
        .bearer_auth(ACME_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status().as_u16(), 200);

    // session.expired arrives with no request for that link.
    let expiring_ref = token_ref(&expiring);
    eventually(Duration::from_secs(8), "session.expired logged", || async {
        events_for(&app.events(), &expiring_ref)
            .iter()
            .any(|e| e["event"] == "session.expired")
    })
    .await;

    let events = app.events();
    let names = |tref: &str| -> Vec<String> {
        events_for(&events, tref)
            .iter()
            .map(|e| e["event"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        names(&token_ref(&paid)),
        [
            "session.created",
            "session.viewed",
            "session.payment_declined",
            "session.paid",
            "session.replay_rejected"
        ]
    );
    assert_eq!(
        names(&token_ref(&revoked)),
        ["session.created", "session.revoked"]
    );
    assert_eq!(names(&expiring_ref), ["session.created", "session.expired"]);
    for event in events.iter().filter(|e| {
        e["event"]
            .as_str()
            .is_some_and(|n| n.starts_with("session."))
    }) {
        assert_eq!(event["merchantId"], "acme", "{event}");
        assert!(
            event["orderId"]
                .as_str()
                .is_some_and(|o| o.starts_with("ord_")),
            "{event}"
        );
        assert_eq!(event["tokenRef"].as_str().unwrap().len(), 12, "{event}");
    }
    // The request id of the response is the one on the request's events.
    let created = events_for(&events, &token_ref(&paid))[0];
    let request_ids: Vec<&Value> = created["spans"]
        .as_array()
        .unwrap_or_else(|| panic!("spans listed: {created}"))
        .iter()
        .filter_map(|span| span.get("request_id"))
        .collect();
    assert_eq!(request_ids, [&json!(request_id)], "{created}");

    let log = app.log().join("\n");
    let secrets = [
        paid.as_str(),
        &revoked,
        &expiring,
        ACME_KEY,
        GLOBEX_KEY,
        "4242424242424242",
        "4000000000000002",
    ];
    for secret in secrets {
        assert!(!log.contains(secret), "a secret is in the log");
    }
    assert!(!log.contains(&paid[..20]), "part of a token is in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_redis_log_each_expiry_once() {
    let redis = RedisServer::start();
    let a = BinaryApp::start(Some(redis.url()), &[]);
    let b = BinaryApp::start(Some(redis.url()), &[]);
    let client = reqwest::Client::new();
    let mut refs = Vec::new();
    for i in 0..5 {
        let (status, _, body) = post_json(
            &client,
            format!("{}/api/v1/sessions", if i % 2 == 0 { &a.address } else { &b.address }),
            json!({"orderId": format!("ord_{i}"), "amount": 100, "currency": "EUR", "ttlSeconds": 1}),
        )
        .await;
        assert_eq!(status, 201);
        refs.push(token_ref(body["token"].as_str().unwrap()));
    }
    let expired_count = |tref: &String| {
        a.events()
            .iter()
            .chain(b.events().iter())
            .filter(|e| e["event"] == "session.expired" && e["tokenRef"] == tref.as_str())
            .count()
    };
    eventually(Duration::from_secs(10), "every expiry logged", || async {
        refs.iter().all(|r| expired_count(r) >= 1)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for r in &refs {
        assert_eq!(
            expired_count(r),
            1,
            "expiry of {r} logged once across both instances"
        );
    }
}

async fn dashboard_and_metrics_count_exactly_the_open_links(backend: Backend) {
    let mut options = AppOptions::new(backend);
    options.admin_token = Some(ADMIN_TOKEN.into());
    let app = spawn_app_with(options).await;
    let mut open = Vec::new();
    for _ in 0..5 {
        open.push(app.create_default_session().await.token);
    }
    let globex = app
        .post_session_as(
            GLOBEX_KEY,
            &json!({"orderId": "g", "amount": 1, "currency": "USD"}),
        )
        .await;
    assert_eq!(globex.status, 201);
    for _ in 0..3 {
        app.create_session(
            json!({"orderId": "short", "amount": 1, "currency": "USD", "ttlSeconds": 1}),
        )
        .await;
    }
    assert_eq!(app.pay(&open[0], &valid_card()).await.status, 200);
    assert_eq!(
        app.pay(&open[1], &card("4000 0000 0000 0002")).await.status,
        402
    );
    assert_eq!(app.revoke_session(&open[2]).await.status, 200);
    // Let the three short links expire with nobody asking.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let scrape = app
        .client
        .get(app.url("/admin/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(scrape.status().as_u16(), 200);
    assert!(
        scrape.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = scrape.text().await.unwrap();
    assert_eq!(
        metric(&text, "paylink_active_sessions_all"),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "paylink_active_sessions{merchant=\"acme\"}"),
        Some(3.0)
    );
    assert_eq!(
        metric(&text, "paylink_active_sessions{merchant=\"globex\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "paylink_session_events_total{event=\"created\",merchant=\"acme\"}"
        ),
        Some(8.0)
    );
    assert_eq!(
        metric(
            &text,
            "paylink_session_events_total{event=\"paid\",merchant=\"acme\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "paylink_session_events_total{event=\"revoked\",merchant=\"acme\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "paylink_payments_total{outcome=\"approved\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "paylink_payments_total{outcome=\"declined\"}"),
        Some(1.0)
    );
    assert_eq!(metric(&text, "paylink_store_up"), Some(1.0));
    assert!(text.contains("paylink_http_request_duration_seconds_bucket{method=\"POST\",route=\"/pay/{token}\",status=\"200\""));
    assert!(
        text.contains("paylink_store_operation_duration_seconds_count{operation=\"begin_payment\"")
    );
    for token in &open {
        assert!(!text.contains(token.as_str()), "no token in a metric");
    }
    eventually(Duration::from_secs(8), "three expiries counted", || async {
        let text = app.scrape_metrics().await;
        metric(
            &text,
            "paylink_session_events_total{event=\"expired\",merchant=\"acme\"}",
        ) == Some(3.0)
    })
    .await;

    let page = app
        .client
        .get(app.url("/admin"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("frame-ancestors 'none'"));
    let html = page.text().await.unwrap();
    assert!(html.contains("data-test=\"active-total\">4<"), "{html}");
    assert!(html.contains("data-test=\"active-acme\">3<"));
    assert!(html.contains("data-test=\"active-globex\">1<"));
    assert!(html.contains("data-test=\"since-start-paid\">1<"));
    assert!(html.contains("data-test=\"last-hour-created\">9<"));
    assert!(html.contains("data-test=\"since-start-expired\">3<"));
    assert!(html.contains("session.revoked") && html.contains(&token_ref(&open[2])));
    assert!(html.contains("http-equiv=\"refresh\"") && !html.contains("<script>"));
    for token in &open {
        assert!(!html.contains(token.as_str()), "no token on the dashboard");
    }
}

/// The latency metric names each request's route pattern. The pay pages are routed by hand
/// (`pay::route`), so their edges are pinned here: one segment after `/pay/` is the page,
/// anything else under `/pay/` a malformed link, and `/pay` itself or `/payments` no page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_is_labelled_with_the_route_that_answered() {
    let mut options = AppOptions::new(Backend::Memory);
    options.admin_token = Some(ADMIN_TOKEN.into());
    let app = spawn_app_with(options).await;
    let unknown = "f".repeat(64);
    let requests = [
        ("GET", format!("/pay/{unknown}"), 410),
        ("GET", "/pay/short".to_owned(), 410),
        ("GET", format!("/pay/{unknown}/more"), 410),
        ("GET", "/pay/".to_owned(), 410),
        ("HEAD", format!("/pay/{unknown}"), 410),
        ("PUT", format!("/pay/{unknown}"), 405),
        ("GET", "/pay".to_owned(), 404),
        ("GET", "/payments".to_owned(), 404),
        ("GET", format!("/api/v1/sessions/{unknown}"), 401),
        // Any token is a method: made-up ones share one label, so they add no series.
        ("BREW", "/healthz".to_owned(), 405),
        ("X-PAYLINK-7", "/healthz".to_owned(), 405),
    ];
    for (method, path, status) in &requests {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = app
            .client
            .request(method, app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), *status, "{path}");
        if *status == 405 && path.starts_with("/pay/") {
            assert_eq!(r.headers()["allow"], "GET, HEAD, POST", "{path}");
        }
    }
    let text = app.scrape_metrics().await;
    let count = |method: &str, route: &str, status: &str| {
        metric(
            &text,
            &format!(
                "paylink_http_request_duration_seconds_count{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}}"
            ),
        )
    };
    assert_eq!(count("GET", "/pay/{token}", "410"), Some(2.0), "{text}");
    assert_eq!(count("GET", "/pay/{tail:.*}", "410"), Some(2.0), "{text}");
    assert_eq!(count("HEAD", "/pay/{token}", "410"), Some(1.0), "{text}");
    assert_eq!(count("PUT", "/pay/{token}", "405"), Some(1.0), "{text}");
    assert_eq!(count("GET", "unmatched", "404"), Some(2.0), "{text}");
    assert_eq!(
        count("GET", "/api/v1/sessions/{token}", "401"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(count("OTHER", "/healthz", "405"), Some(2.0), "{text}");
    assert!(
        !text.contains("BREW") && !text.contains("X-PAYLINK-7"),
        "{text}"
    );
    assert!(!text.contains(&unknown), "no token in a metric");
}

async fn admin_is_off_without_a_token_and_guarded_with_one(backend: Backend) {
    let off = spawn_app(backend).await;
    for path in ["/admin", "/admin/metrics"] {
        let r = off
            .client
            .get(off.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404, "{path} is off");
    }

    let mut options = AppOptions::new(backend);
    options.admin_token = Some(ADMIN_TOKEN.into());
    let app = spawn_app_with(options).await;
    let get = |path: &'static str, auth: Option<&'static str>, cookie: Option<String>| {
        let mut req = app.client.get(app.url(path));
        if let Some(token) = auth {
            req = req.bearer_auth(token);
        }
        if let Some(cookie) = cookie {
            req = req.header("cookie", cookie);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get("/admin", None, None).await, 401);
    assert_eq!(get("/admin/metrics", None, None).await, 401);
    assert_eq!(
        get("/admin", Some("wrong-token-wrong-token"), None).await,
        401
    );
    assert_eq!(get("/admin/metrics", Some(ACME_KEY), None).await, 401);
    assert_eq!(get("/admin", Some(ADMIN_TOKEN), None).await, 200);
    assert_eq!(get("/admin/metrics", Some(ADMIN_TOKEN), None).await, 200);
    assert_eq!(
        get("/admin", None, Some("paylink_admin=forged".into())).await,
        401
    );

    let login_page = app.get("/admin").await;
    assert!(login_page.text.contains("name=\"token\""));
    let refused = app
        .client
        .post(app.url("/admin/login"))
        .form(&[("token", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    assert!(refused.headers().get("set-cookie").is_none());

    let login = app
        .client
        .post(app.url("/admin/login"))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status().as_u16(), 303);
    let set_cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/admin"] {
        assert!(
            set_cookie.contains(attribute),
            "{attribute} in {set_cookie}"
        );
    }
    assert!(
        !set_cookie.contains(ADMIN_TOKEN),
        "the cookie is not the token"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    assert_eq!(get("/admin", None, Some(cookie.clone())).await, 200);
    assert_eq!(get("/admin/metrics", None, Some(cookie)).await, 200);
}

on_every_backend!(
    every_step_logs_one_event_with_its_fields_and_no_secret,
    dashboard_and_metrics_count_exactly_the_open_links,
    admin_is_off_without_a_token_and_guarded_with_one,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiries_whose_keyspace_events_were_lost_are_still_logged_once() {
    let redis = RedisServer::start();
    let app = BinaryApp::start(Some(redis.url()), &[]);
    // More than two of the catch-up's concurrent batches.
    let mut trefs = Vec::new();
    for n in 0..70 {
        let body = app
            .create_session(
                json!({"orderId": format!("ord_lost_{n}"), "amount": 100, "currency": "USD", "ttlSeconds": 2}),
            )
            .await;
        trefs.push(token_ref(body["token"].as_str().unwrap()));
    }
    // Cut paylink's subscription again and again around the expiries, so the events are lost.
    let until = std::time::Instant::now() + Duration::from_millis(3500);
    while std::time::Instant::now() < until {
        redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let expired = || {
        let events = app.events();
        trefs
            .iter()
            .map(|tref| {
                events
                    .iter()
                    .filter(|e| e["event"] == "session.expired" && e["tokenRef"] == tref.as_str())
                    .count()
            })
            .collect::<Vec<_>>()
    };
    eventually(
        Duration::from_secs(12),
        "the expiries caught up",
        || async { expired().iter().all(|n| *n == 1) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        expired().iter().all(|n| *n == 1),
        "logged once each: {:?}",
        expired()
    );
    assert_eq!(
        redis.cli(&["ZCARD", "pl:active:{acme}"]).trim(),
        "(integer) 0",
        "index pruned"
    );
}

/// What is only read (health, readiness, the admin pages, the OpenAPI document, the favicon)
/// answers HEAD as GET without a body, as load balancers probe health that way; any other
/// method gets 405 naming GET and HEAD, in JSON under /api/, a page with the security
/// headers elsewhere. HEAD is guarded like GET. The admin's login and logout take POST only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_endpoints_answer_head_and_refuse_other_methods_with_405() {
    let mut options = AppOptions::new(Backend::Memory);
    options.admin_token = Some(ADMIN_TOKEN.into());
    let app = spawn_app_with(options).await;
    let send = |method: reqwest::Method, path: &str, admin: bool| {
        let mut req = app.client.request(method, app.url(path));
        if admin {
            req = req.bearer_auth(ADMIN_TOKEN);
        }
        async move { Reply::read(req.send().await.unwrap()).await }
    };
    for (path, status, admin) in [
        ("/healthz", 200, false),
        ("/readyz", 200, false),
        ("/favicon.ico", 204, false),
        ("/api/v1/openapi.json", 200, false),
        ("/admin", 200, true),
        ("/admin/metrics", 200, true),
    ] {
        let get = send(reqwest::Method::GET, path, admin).await;
        assert_eq!(get.status, status, "GET {path}");
        // Read off the socket: an HTTP client never reads a body after HEAD.
        let auth = if admin {
            format!("Authorization: Bearer {ADMIN_TOKEN}\r\n")
        } else {
            String::new()
        };
        let head = app
            .raw_exchange(&format!(
                "HEAD {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n"
            ))
            .await;
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "HEAD {path}: {head}"
        );
        assert!(
            head.ends_with("\r\n\r\n"),
            "HEAD {path} has no body: {head}"
        );
        if let Some(content_type) = get.header("content-type") {
            assert!(
                head.contains(&format!("content-type: {content_type}\r\n")),
                "HEAD {path}: {head}"
            );
        }
        for method in [
            reqwest::Method::POST,
            reqwest::Method::PUT,
            reqwest::Method::DELETE,
        ] {
            let refused = send(method.clone(), path, admin).await;
            assert_eq!(refused.status, 405, "{method} {path}");
            assert_eq!(
                refused.header("allow"),
                Some("GET, HEAD"),
                "{method} {path}"
            );
            if path.starts_with("/api/") {
                assert_eq!(
                    refused.error_code(),
                    "method_not_allowed",
                    "{method} {path}"
                );
            } else {
                assert_security_headers(&refused, &format!("{method} {path}"));
            }
        }
    }
    for path in ["/admin", "/admin/metrics"] {
        let head = send(reqwest::Method::HEAD, path, false).await;
        assert_eq!(head.status, 401, "HEAD {path} without the token");
    }
    for path in ["/admin/login", "/admin/logout"] {
        let get = send(reqwest::Method::GET, path, true).await;
        assert_eq!(get.status, 405, "GET {path}");
        assert_eq!(get.header("allow"), Some("POST"), "GET {path}");
        assert_security_headers(&get, &format!("GET {path}"));
    }
}
