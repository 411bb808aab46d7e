//! The merchant API of the contract, section 2.

use crate::helpers::{
    ACME_KEY, ADMIN_TOKEN, AppOptions, Backend, GLOBEX_KEY, metric, spawn_app, spawn_app_with,
    valid_card,
};
use crate::on_every_backend;
use serde_json::{Value, json};

fn is_rfc3339_utc(s: &str) -> bool {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
        && s.ends_with('Z')
}

async fn create_returns_201_with_location_and_every_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let reply = app
        .post_session(&json!({
            "orderId": "ord_123", "amount": 1999, "currency": "usd",
            "ttlSeconds": 600, "description": "2 tickets", "merchantId": "acme"
        }))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let body = reply.json();
    let token = body["token"].as_str().unwrap();
    assert_eq!(token.len(), 64);
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert_eq!(
        reply.header("location"),
        Some(format!("/api/v1/sessions/{token}").as_str())
    );
    assert_eq!(body["url"], format!("http://localhost:3000/pay/{token}"));
    assert_eq!(body["status"], "open");
    assert_eq!(body["orderId"], "ord_123");
    assert_eq!(body["amount"], 1999);
    assert_eq!(body["currency"], "USD", "currency is stored upper-case");
    assert_eq!(body["merchantId"], "acme");
    assert_eq!(body["description"], "2 tickets");
    let created = body["createdAt"].as_str().unwrap();
    let expires = body["expiresAt"].as_str().unwrap();
    assert!(
        is_rfc3339_utc(created) && is_rfc3339_utc(expires),
        "{created} {expires}"
    );
    let parse =
        |s| time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap();
    assert_eq!((parse(expires) - parse(created)).whole_seconds(), 600);
}

async fn default_ttl_is_900_seconds_and_whole_floats_are_integers(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = app
        .create_session(
            json!({"orderId": "o", "amount": 1999.0, "currency": "JPY", "ttlSeconds": null}),
        )
        .await
        .body;
    assert_eq!(body["amount"], 1999);
    let parse = |v: &Value| {
        time::OffsetDateTime::parse(
            v.as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    assert_eq!(
        (parse(&body["expiresAt"]) - parse(&body["createdAt"])).whole_seconds(),
        900
    );
    let body = app
        .create_session(
            json!({"orderId": "o", "amount": 5, "currency": "KWD", "ttlSeconds": 1200.0}),
        )
        .await
        .body;
    assert_eq!(
        (parse(&body["expiresAt"]) - parse(&body["createdAt"])).whole_seconds(),
        1200
    );
    // Every field the contract lists is there, `description` as null when none was given.
    assert_eq!(body.get("description"), Some(&Value::Null), "{body}");
    let token = body["token"].as_str().unwrap();
    let read = app.get_session(token).await.json();
    assert_eq!(read.get("description"), Some(&Value::Null), "{read}");
}

async fn bad_inputs_get_a_422_naming_the_field_or_the_right_error(backend: Backend) {
    let app = spawn_app(backend).await;
    let long = |n: usize| "x".repeat(n);
    let ok = json!({"orderId": "ord_1", "amount": 1999, "currency": "USD"});
    let with = |field: &str, value: Value| {
        let mut body = ok.clone();
        body[field] = value;
        body
    };
    let without = |field: &str| {
        let mut body = ok.clone();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    let cases: Vec<(&str, Value, u16, &str, Option<&str>)> = vec![
        (
            "amount is a fraction",
            with("amount", json!(19.99)),
            422,
            "invalid_field",
            Some("amount"),
        ),
        (
            "amount is a string",
            with("amount", json!("1999")),
            422,
            "invalid_field",
            Some("amount"),
        ),
        (
            "amount is zero",
            with("amount", json!(0)),
            422,
            "invalid_field",
            Some("amount"),
        ),
        (
            "amount is negative",
            with("amount", json!(-100)),
            422,
            "invalid_field",
            Some("amount"),
        ),
        (
            "amount over 10^12",
            with("amount", json!(1_000_000_000_001u64)),
            422,
            "invalid_field",
            Some("amount"),
        ),
        (
            "amount is huge",
            with("amount", json!(1e300)),
            422,
            "invalid_field",
            Some("amount"),
        ),
        (
            "amount is a bool",
            with("amount", json!(true)),
            422,
            "invalid_field",
            Some("amount"),
        ),
        (
            "amount is missing",
            without("amount"),
            422,
            "invalid_field",
            Some("amount"),
        ),
        (
            "amount is an array",
            with("amount", json!([1999])),
            422,
            "invalid_field",
            Some("amount"),
        ),
        (
            "orderId is empty",
            with("orderId", json!("")),
            422,
            "invalid_field",
            Some("orderId"),
        ),
        (
            "orderId is 129 chars",
            with("orderId", json!(long(129))),
            422,
            "invalid_field",
            Some("orderId"),
        ),
        (
            "orderId has a newline",
            with("orderId", json!("a\nb")),
            422,
            "invalid_field",
            Some("orderId"),
        ),
        (
            "orderId has a NUL",
            with("orderId", json!("a\u{0}b")),
            422,
            "invalid_field",
            Some("orderId"),
        ),
        (
            "orderId is a number",
            with("orderId", json!(123)),
            422,
            "invalid_field",
            Some("orderId"),
        ),
        (
            "orderId is missing",
            without("orderId"),
            422,
            "invalid_field",
            Some("orderId"),
        ),
        (
            "currency is unknown",
            with("currency", json!("ABC")),
            422,
            "invalid_field",
            Some("currency"),
        ),
        (
            "currency is two letters",
            with("currency", json!("US")),
            422,
            "invalid_field",
            Some("currency"),
        ),
        (
            "currency is a number",
            with("currency", json!(840)),
            422,
            "invalid_field",
            Some("currency"),
        ),
        (
            "currency is missing",
            without("currency"),
            422,
            "invalid_field",
            Some("currency"),
        ),
        (
            "currency is a metal",
            with("currency", json!("XAU")),
            422,
            "invalid_field",
            Some("currency"),
        ),
        (
            "ttl below the minimum",
            with("ttlSeconds", json!(0)),
            422,
            "invalid_field",
            Some("ttlSeconds"),
        ),
        (
            "ttl above 1200",
            with("ttlSeconds", json!(1201)),
            422,
            "invalid_field",
            Some("ttlSeconds"),
        ),
        (
            "ttl a fraction",
            with("ttlSeconds", json!(60.5)),
            422,
            "invalid_field",
            Some("ttlSeconds"),
        ),
        (
            "ttl a string",
            with("ttlSeconds", json!("60")),
            422,
            "invalid_field",
            Some("ttlSeconds"),
        ),
        (
            "ttl negative",
            with("ttlSeconds", json!(-60)),
            422,
            "invalid_field",
            Some("ttlSeconds"),
        ),
        (
            "description 201 chars",
            with("description", json!(long(201))),
            422,
            "invalid_field",
            Some("description"),
        ),
        (
            "description has a tab",
            with("description", json!("a\tb")),
            422,
            "invalid_field",
            Some("description"),
        ),
        (
            "description is an object",
            with("description", json!({})),
            422,
            "invalid_field",
            Some("description"),
        ),
        (
            "merchantId of another merchant",
            with("merchantId", json!("globex")),
            403,
            "merchant_mismatch",
            None,
        ),
        (
            "merchantId unknown",
            with("merchantId", json!("nobody")),
            403,
            "merchant_mismatch",
            None,
        ),
        (
            "merchantId a number",
            with("merchantId", json!(5)),
            403,
            "merchant_mismatch",
            None,
        ),
        (
            "body is an array",
            json!([ok.clone()]),
            400,
            "malformed_json",
            None,
        ),
        (
            "body is a string",
            json!("hello"),
            400,
            "malformed_json",
            None,
        ),
        ("body is null", json!(null), 400, "malformed_json", None),
    ];
    assert!(cases.len() >= 25);
    for (why, body, status, code, field) in cases {
        let reply = app.post_session(&body).await;
        assert_eq!(reply.status, status, "{why}: {}", reply.text);
        let json = reply.json();
        assert_eq!(json["error"]["code"], code, "{why}");
        assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{why}"
        );
        match field {
            Some(f) => assert_eq!(json["error"]["field"], f, "{why}"),
            None => assert!(json["error"].get("field").is_none(), "{why}"),
        }
    }
}

/// (why, body, content type, expected status, expected code)
type BodyCase = (
    &'static str,
    Vec<u8>,
    Option<&'static str>,
    u16,
    &'static str,
);

async fn malformed_bodies_media_types_and_sizes_are_refused_clearly(backend: Backend) {
    let app = spawn_app(backend).await;
    let post = |body: Vec<u8>, content_type: Option<&'static str>| {
        let mut req = app
            .client
            .post(app.url("/api/v1/sessions"))
            .bearer_auth(ACME_KEY)
            .body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            (
                status,
                body["error"]["code"].as_str().unwrap_or("").to_owned(),
            )
        }
    };
    let valid = br#"{"orderId":"o","amount":1,"currency":"USD"}"#.to_vec();
    let cases: Vec<BodyCase> = vec![
        (
            "not JSON",
            b"{orderId: 1".to_vec(),
            Some("application/json"),
            400,
            "malformed_json",
        ),
        (
            "empty body",
            vec![],
            Some("application/json"),
            400,
            "malformed_json",
        ),
        (
            "invalid UTF-8",
            vec![0xff, 0xfe, b'{'],
            Some("application/json"),
            400,
            "malformed_json",
        ),
        (
            "trailing garbage",
            b"{} {}".to_vec(),
            Some("application/json"),
            400,
            "malformed_json",
        ),
        (
            "text/plain",
            valid.clone(),
            Some("text/plain"),
            415,
            "unsupported_media_type",
        ),
        (
            "form encoded",
            valid.clone(),
            Some("application/x-www-form-urlencoded"),
            415,
            "unsupported_media_type",
        ),
        (
            "no content type",
            valid.clone(),
            None,
            415,
            "unsupported_media_type",
        ),
        (
            "over 16 KiB",
            {
                let mut b = br#"{"orderId":"o","amount":1,"currency":"USD","pad":""#.to_vec();
                b.extend(std::iter::repeat_n(b'x', 17 * 1024));
                b.extend(br#""}"#);
                b
            },
            Some("application/json"),
            413,
            "payload_too_large",
        ),
        (
            "charset parameter is fine",
            valid.clone(),
            Some("application/json; charset=utf-8"),
            201,
            "",
        ),
    ];
    for (why, body, ct, status, code) in cases {
        let (got_status, got_code) = post(body, ct).await;
        assert_eq!(got_status, status, "{why}");
        assert_eq!(got_code, code, "{why}");
    }
}

async fn missing_or_unknown_keys_get_401_with_www_authenticate(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = app.create_default_session().await;
    let requests = [
        (
            "no header",
            app.client
                .post(app.url("/api/v1/sessions"))
                .json(&json!({})),
        ),
        (
            "unknown key",
            app.client
                .post(app.url("/api/v1/sessions"))
                .bearer_auth("nope")
                .json(&json!({})),
        ),
        (
            "basic scheme",
            app.client
                .post(app.url("/api/v1/sessions"))
                .basic_auth("acme", Some(ACME_KEY))
                .json(&json!({})),
        ),
        (
            "empty bearer",
            app.client
                .post(app.url("/api/v1/sessions"))
                .header("authorization", "Bearer ")
                .json(&json!({})),
        ),
        (
            "read without key",
            app.client
                .get(app.url(&format!("/api/v1/sessions/{}", created.token))),
        ),
        (
            "revoke with a wrong key",
            app.client
                .delete(app.url(&format!("/api/v1/sessions/{}", created.token)))
                .bearer_auth("sk_wrong"),
        ),
    ];
    for (why, request) in requests {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401, "{why}");
        assert_eq!(
            response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer"),
            "{why}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{why}");
    }
    assert_eq!(
        app.get_session(&created.token).await.json()["status"],
        "open"
    );
}

async fn read_shows_an_open_session_with_its_token_and_url(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = app
        .create_session(
            json!({"orderId": "ord_9", "amount": 500, "currency": "EUR", "description": "Tea"}),
        )
        .await;
    let reply = app.get_session(&created.token).await;
    assert_eq!(reply.status, 200);
    let body = reply.json();
    for field in [
        "token",
        "url",
        "status",
        "orderId",
        "amount",
        "currency",
        "merchantId",
        "description",
        "createdAt",
        "expiresAt",
    ] {
        assert_eq!(body[field], created.body[field], "{field}");
    }
    assert!(body.get("paidAt").is_none() && body.get("revokedAt").is_none());
}

async fn read_after_payment_shows_paid_without_token_or_url(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = app.create_default_session().await;
    assert_eq!(app.pay(&created.token, &valid_card()).await.status, 200);
    let body = app.get_session(&created.token).await.json();
    assert_eq!(body["status"], "paid");
    assert!(
        body.get("token").is_none() && body.get("url").is_none(),
        "{body}"
    );
    assert!(is_rfc3339_utc(body["paidAt"].as_str().unwrap()));
    assert_eq!(body["cardLast4"], "4242");
    assert_eq!(body["orderId"], "ord_1");
    assert!(!body.to_string().contains("4242424242424242"));
}

async fn another_merchants_session_is_answered_exactly_like_an_unknown_one(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = app.create_default_session().await;
    let unknown = "0".repeat(64);
    let read_other = app.get_session_as(GLOBEX_KEY, &created.token).await;
    let read_unknown = app.get_session_as(GLOBEX_KEY, &unknown).await;
    let read_malformed = app.get_session_as(GLOBEX_KEY, "not-a-token").await;
    let revoke_other = app.revoke_session_as(GLOBEX_KEY, &created.token).await;
    let revoke_unknown = app.revoke_session_as(GLOBEX_KEY, &unknown).await;
    for reply in [
        &read_other,
        &read_unknown,
        &read_malformed,
        &revoke_other,
        &revoke_unknown,
    ] {
        assert_eq!(reply.status, 404);
        assert_eq!(reply.error_code(), "not_found");
        assert_eq!(reply.text, read_unknown.text, "byte-for-byte the same body");
        assert_eq!(
            reply.header("content-type"),
            read_unknown.header("content-type")
        );
        assert_eq!(
            reply.header("content-length"),
            read_unknown.header("content-length")
        );
    }
    // The session is untouched and still payable by its payer.
    assert_eq!(
        app.get_session(&created.token).await.json()["status"],
        "open"
    );
    assert_eq!(app.get_pay_page(&created.token).await.status, 200);
}

async fn a_forgotten_outcome_record_is_answered_like_an_unknown_token(backend: Backend) {
    let mut options = AppOptions::new(backend);
    options.retention_seconds = 1;
    let app = spawn_app_with(options).await;
    let created = app.create_default_session().await;
    assert_eq!(app.pay(&created.token, &valid_card()).await.status, 200);
    assert_eq!(
        app.get_session(&created.token).await.json()["status"],
        "paid"
    );
    let unknown = app.get_session(&"0".repeat(64)).await;
    crate::helpers::eventually(
        std::time::Duration::from_secs(5),
        "record forgotten",
        || async { app.get_session(&created.token).await.text == unknown.text },
    )
    .await;
    assert_eq!(app.get_pay_page(&created.token).await.status, 410);
}

async fn revoke_ends_an_open_session_at_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = app.create_default_session().await;
    let reply = app.revoke_session(&created.token).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = reply.json();
    assert_eq!(body["status"], "revoked");
    assert!(is_rfc3339_utc(body["revokedAt"].as_str().unwrap()));
    let page = app.get_pay_page(&created.token).await;
    assert_eq!(page.status, 410);
    assert!(page.text.contains("Link Expired"));
    assert_eq!(app.pay(&created.token, &valid_card()).await.status, 410);
    assert_eq!(app.approvals(), 0);
    assert_eq!(
        app.get_session(&created.token).await.json()["status"],
        "revoked"
    );
}

async fn revoking_an_ended_session_is_409_not_open_with_its_status(backend: Backend) {
    let app = spawn_app(backend).await;
    let revoked = app.create_default_session().await;
    app.revoke_session(&revoked.token).await;
    let paid = app.create_default_session().await;
    app.pay(&paid.token, &valid_card()).await;
    let expired = app
        .create_session(json!({"orderId": "o", "amount": 1, "currency": "USD", "ttlSeconds": 1}))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    for (token, status) in [
        (&revoked.token, "revoked"),
        (&paid.token, "paid"),
        (&expired.token, "expired"),
    ] {
        let reply = app.revoke_session(token).await;
        assert_eq!(reply.status, 409, "{status}: {}", reply.text);
        let body = reply.json();
        assert_eq!(body["error"]["code"], "not_open");
        assert_eq!(body["error"]["status"], status);
        assert_eq!(body["status"], status);
    }
}

async fn an_expired_session_reads_as_expired(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = app
        .create_session(json!({"orderId": "o", "amount": 1, "currency": "USD", "ttlSeconds": 1}))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let body = app.get_session(&created.token).await.json();
    assert_eq!(body["status"], "expired");
    assert!(body.get("token").is_none() && body.get("url").is_none());
}

async fn the_api_rate_limit_answers_429_with_retry_after(backend: Backend) {
    let mut options = AppOptions::new(backend);
    options.api_rate_limit = 3;
    options.admin_token = Some(ADMIN_TOKEN.into());
    let app = spawn_app_with(options).await;
    // A request refused for its body counts as much as one that creates a session.
    assert_eq!(app.post_session(&json!(null)).await.status, 400);
    let mut tokens = Vec::new();
    for _ in 0..2 {
        tokens.push(app.create_default_session().await.token);
    }
    let reply = app
        .post_session(&json!({"orderId": "o", "amount": 1, "currency": "USD"}))
        .await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.error_code(), "rate_limited");
    let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Over the limit, whatever the request: 429, and no session was made.
    assert_eq!(app.post_session(&json!(null)).await.status, 429);
    let metrics = app.scrape_metrics().await;
    let active = metric(&metrics, "paylink_active_sessions{merchant=\"acme\"}");
    assert_eq!(active, Some(2.0), "sessions in the store");
    // Reads and revokes share the budget, known token or not; over it nothing is revoked.
    assert_eq!(app.get_session(&tokens[0]).await.status, 429);
    assert_eq!(app.get_session("not-a-token").await.status, 429);
    assert_eq!(app.revoke_session(&tokens[0]).await.status, 429);
    assert_eq!(app.revoke_session("not-a-token").await.status, 429);
    let metrics = app.scrape_metrics().await;
    let active = metric(&metrics, "paylink_active_sessions{merchant=\"acme\"}");
    assert_eq!(active, Some(2.0), "sessions still open");
    // Limits are per merchant: globex is unaffected.
    let other = app
        .post_session_as(
            GLOBEX_KEY,
            &json!({"orderId": "o", "amount": 1, "currency": "USD"}),
        )
        .await;
    assert_eq!(other.status, 201);
}

async fn unknown_api_paths_and_methods_answer_json(backend: Backend) {
    let app = spawn_app(backend).await;
    let reply = app.get("/api/v1/nothing").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.error_code(), "not_found");
    let put = app
        .client
        .put(app.url("/api/v1/sessions"))
        .bearer_auth(ACME_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 405);
    let body: Value = put.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
}

on_every_backend!(
    create_returns_201_with_location_and_every_field,
    default_ttl_is_900_seconds_and_whole_floats_are_integers,
    bad_inputs_get_a_422_naming_the_field_or_the_right_error,
    malformed_bodies_media_types_and_sizes_are_refused_clearly,
    missing_or_unknown_keys_get_401_with_www_authenticate,
    read_shows_an_open_session_with_its_token_and_url,
    read_after_payment_shows_paid_without_token_or_url,
    another_merchants_session_is_answered_exactly_like_an_unknown_one,
    a_forgotten_outcome_record_is_answered_like_an_unknown_token,
    revoke_ends_an_open_session_at_once,
    revoking_an_ended_session_is_409_not_open_with_its_status,
    an_expired_session_reads_as_expired,
    the_api_rate_limit_answers_429_with_retry_after,
    unknown_api_paths_and_methods_answer_json,
);
