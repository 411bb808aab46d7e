//! The payer's pages of the contract, section 3, and the headers on every HTML response.

use crate::helpers::{
    ACME_NAME, AppOptions, Backend, assert_security_headers, card, spawn_app, spawn_app_with,
    valid_card,
};
use crate::on_every_backend;
use serde_json::json;
use std::time::Duration;

async fn an_open_link_shows_complete_your_payment_with_everything_the_payer_needs(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let created = app
        .create_session(json!({"orderId": "ord_<42>", "amount": 1999, "currency": "USD", "description": "2 <b>tickets</b>"}))
        .await;
    let page = app.get_pay_page(&created.token).await;
    assert_eq!(page.status, 200);
    assert_security_headers(&page, "pay page");
    let html = &page.text;
    assert!(html.contains("Complete your payment"));
    assert!(html.contains("USD 19.99"));
    // Merchant text is escaped, never raw markup.
    assert!(
        html.contains("Acme &#60;Tickets&#62; &#38; &#34;Co&#34;"),
        "{html}"
    );
    assert!(!html.contains(ACME_NAME));
    assert!(html.contains("ord_&#60;42&#62;") && !html.contains("ord_<42>"));
    assert!(html.contains("2 &#60;b&#62;tickets&#60;/b&#62;") && !html.contains("<b>tickets"));
    // The expiry time without JavaScript, and the countdown script from static/.
    let expires = created.body["expiresAt"].as_str().unwrap();
    assert!(html.contains(&format!("datetime=\"{expires}\"")));
    assert!(
        html.contains(&expires[11..19]),
        "clock time {} shown",
        &expires[11..19]
    );
    assert!(html.contains("src=\"/static/countdown.js?v="));
    // A card form whose inputs have labels and autocomplete attributes.
    for (name, autocomplete) in [
        ("cardholderName", "cc-name"),
        ("cardNumber", "cc-number"),
        ("expiry", "cc-exp"),
        ("cvc", "cc-csc"),
    ] {
        assert!(
            html.contains(&format!("<label for=\"{name}\">")),
            "{name} label"
        );
        assert!(html.contains(&format!("name=\"{name}\"")), "{name} input");
        assert!(
            html.contains(&format!("autocomplete=\"{autocomplete}\"")),
            "{name} autocomplete"
        );
    }
    assert!(
        !html.contains(&created.token),
        "the page does not repeat the token"
    );
}

async fn amounts_are_shown_with_the_currency_exponent(backend: Backend) {
    let app = spawn_app(backend).await;
    for (currency, shown) in [
        ("USD", "USD 19.99"),
        ("JPY", "JPY 1999"),
        ("KWD", "KWD 1.999"),
        ("eur", "EUR 19.99"),
    ] {
        let created = app
            .create_session(json!({"orderId": "o", "amount": 1999, "currency": currency}))
            .await;
        let page = app.get_pay_page(&created.token).await;
        assert!(page.text.contains(shown), "{currency} → {shown}");
    }
}

async fn unknown_and_malformed_tokens_are_410_link_expired(backend: Backend) {
    let app = spawn_app(backend).await;
    let unknown = app.get_pay_page(&"ab".repeat(32)).await;
    for token in [
        "abc",
        &"AB".repeat(32),
        &"ab".repeat(33),
        "%00",
        "..%2f..%2fetc",
        &"g".repeat(64),
        "",
        &format!("{}/", "ab".repeat(32)),
        &format!("{}/extra", "ab".repeat(32)),
    ] {
        let page = app.get_pay_page(token).await;
        assert_eq!(page.status, 410, "{token}");
        assert!(page.text.contains("Link Expired"), "{token}");
        assert_security_headers(&page, token);
        assert_eq!(
            page.text, unknown.text,
            "a malformed token looks like an unknown one"
        );
    }
    assert_eq!(unknown.status, 410);
}

async fn a_paid_link_is_410_and_may_say_it_was_used(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = app.create_default_session().await;
    let receipt = app.pay(&created.token, &valid_card()).await;
    assert_eq!(receipt.status, 200);
    assert_security_headers(&receipt, "receipt");
    for text in [
        "Payment successful",
        "USD 19.99",
        "ord_1",
        "4242",
        "Acme &#60;Tickets&#62;",
    ] {
        assert!(receipt.text.contains(text), "receipt shows {text}");
    }
    assert!(
        !receipt.text.contains("4242 4242 4242 4242") && !receipt.text.contains("4242424242424242")
    );
    let again = app.get_pay_page(&created.token).await;
    assert_eq!(again.status, 410);
    assert!(again.text.contains("Link Expired") && again.text.contains("already been used"));
    let replay = app.pay(&created.token, &valid_card()).await;
    assert_eq!(replay.status, 410);
    assert!(replay.text.contains("Link Expired"));
    assert_eq!(app.approvals(), 1);
}

async fn the_ttl_really_runs_out_and_the_link_then_answers_410(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = app
        .create_session(json!({"orderId": "o", "amount": 100, "currency": "USD", "ttlSeconds": 1}))
        .await;
    assert_eq!(app.get_pay_page(&created.token).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let page = app.get_pay_page(&created.token).await;
    assert_eq!(page.status, 410);
    assert!(page.text.contains("Link Expired") && !page.text.contains("already been used"));
    assert_eq!(app.pay(&created.token, &valid_card()).await.status, 410);
    assert_eq!(app.approvals(), 0);
}

async fn reads_never_extend_the_ttl(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = app
        .create_session(json!({"orderId": "o", "amount": 100, "currency": "USD", "ttlSeconds": 2}))
        .await;
    let start = std::time::Instant::now();
    // Keep reading through the whole lifetime: a sliding TTL would keep it open.
    while start.elapsed() < Duration::from_millis(1800) {
        assert_eq!(app.get_pay_page(&created.token).await.status, 200);
        assert_eq!(app.get_session(&created.token).await.status, 200);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(app.get_pay_page(&created.token).await.status, 410);
    assert_eq!(
        app.get_session(&created.token).await.json()["expiresAt"],
        created.body["expiresAt"]
    );
}

async fn a_decline_shows_the_reason_with_402_and_keeps_the_link_open(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = app.create_default_session().await;
    for (number, reason) in [
        ("4000 0000 0000 0002", "Your card was declined."),
        ("4000000000009995", "Insufficient funds."),
    ] {
        let page = app.pay(&created.token, &card(number)).await;
        assert_eq!(page.status, 402, "{number}");
        assert_security_headers(&page, "decline");
        assert!(page.text.contains(reason), "{reason}");
        assert!(page.text.contains("Complete your payment"));
        assert!(
            !page.text.contains(&number.replace(' ', "")),
            "card number not echoed"
        );
    }
    assert_eq!(app.get_pay_page(&created.token).await.status, 200);
    assert_eq!(
        app.get_session(&created.token).await.json()["status"],
        "open"
    );
    assert_eq!(app.pay(&created.token, &valid_card()).await.status, 200);
    assert_eq!(app.approvals(), 1);
}

async fn an_invalid_form_is_422_with_the_field_marked(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = app.create_default_session().await;
    let good = valid_card();
    let with = |field: &str, value: &str| {
        good.iter()
            .map(|(k, v)| {
                (
                    *k,
                    if *k == field {
                        value.to_owned()
                    } else {
                        v.clone()
                    },
                )
            })
            .collect::<Vec<_>>()
    };
    let without = |field: &str| {
        good.iter()
            .filter(|(k, _)| *k != field)
            .cloned()
            .collect::<Vec<_>>()
    };
    let cases = [
        (
            "bad Luhn",
            with("cardNumber", "4242 4242 4242 4241"),
            "cardNumber",
        ),
        (
            "letters",
            with("cardNumber", "4242 abcd 4242 4242"),
            "cardNumber",
        ),
        ("too short", with("cardNumber", "4242"), "cardNumber"),
        ("past expiry", with("expiry", "01/20"), "expiry"),
        ("month 13", with("expiry", "13/39"), "expiry"),
        ("expiry not MM/YY", with("expiry", "2039-12"), "expiry"),
        ("short cvc", with("cvc", "1"), "cvc"),
        ("missing name", without("cardholderName"), "cardholderName"),
        ("missing number", without("cardNumber"), "cardNumber"),
        ("missing expiry", without("expiry"), "expiry"),
        ("missing cvc", without("cvc"), "cvc"),
    ];
    for (why, form, field) in cases {
        let page = app.pay(&created.token, &form).await;
        assert_eq!(page.status, 422, "{why}");
        assert_security_headers(&page, why);
        assert!(
            page.text.contains(&format!("data-test=\"error-{field}\"")),
            "{why}: {field} marked"
        );
        assert!(
            page.text
                .contains(&format!("aria-describedby=\"{field}-error\"")),
            "{why}"
        );
        assert!(
            !page.text.contains("4242 4242 4242 4241"),
            "{why}: input not echoed"
        );
    }
    assert_eq!(app.approvals(), 0);
    assert_eq!(app.get_pay_page(&created.token).await.status, 200);
    // An invalid form on a dead link is still just a dead link.
    app.revoke_session(&created.token).await;
    assert_eq!(app.pay(&created.token, &with("cvc", "1")).await.status, 410);
}

async fn the_pay_rate_limit_answers_429_with_retry_after(backend: Backend) {
    let mut options = AppOptions::new(backend);
    options.pay_rate_limit = 3;
    let app = spawn_app_with(options).await;
    let created = app.create_default_session().await;
    let too_big = || {
        app.client
            .post(app.url(&format!("/pay/{}", created.token)))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(vec![b'a'; 20 * 1024])
            .send()
    };
    assert_eq!(app.get_pay_page(&created.token).await.status, 200);
    // Payment attempts refused for their body or their card count like views.
    assert_eq!(too_big().await.unwrap().status().as_u16(), 413);
    assert_eq!(app.pay(&created.token, &card("4242")).await.status, 422);
    let limited = app.get_pay_page(&created.token).await;
    assert_eq!(too_big().await.unwrap().status().as_u16(), 429);
    assert_eq!(limited.status, 429);
    assert!(limited.header("retry-after").is_some());
    assert_security_headers(&limited, "429 page");
    // One budget for views and payment attempts: the attempt is refused too.
    assert_eq!(app.pay(&created.token, &valid_card()).await.status, 429);
    assert_eq!(app.get_pay_page(&"f".repeat(64)).await.status, 429);
    assert_eq!(app.approvals(), 0);
    // A malformed link never consults the store, its counter included: always 410.
    assert_eq!(app.get_pay_page("not-a-token").await.status, 410);
    assert_eq!(app.get("/pay/a/b").await.status, 410);

    let fresh = spawn_app_with({
        let mut options = AppOptions::new(backend);
        options.pay_rate_limit = 3;
        options
    })
    .await;
    let created = fresh.create_default_session().await;
    assert_eq!(fresh.get_pay_page(&"f".repeat(64)).await.status, 410);
    assert_eq!(fresh.get_pay_page(&"e".repeat(64)).await.status, 410);
    assert_eq!(fresh.pay(&created.token, &valid_card()).await.status, 200);
    assert_eq!(fresh.get_pay_page(&created.token).await.status, 429);
}

async fn every_html_error_page_carries_the_security_headers(backend: Backend) {
    let app = spawn_app(backend).await;
    let not_found = app.get("/nowhere").await;
    assert_eq!(not_found.status, 404);
    assert_security_headers(&not_found, "404");
    let put = app
        .client
        .put(app.url(&format!("/pay/{}", "a".repeat(64))))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 405);
    let too_big = app
        .client
        .post(app.url(&format!("/pay/{}", "a".repeat(64))))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(vec![b'a'; 20 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status().as_u16(), 413);
    assert_eq!(
        too_big.headers().get("referrer-policy").unwrap(),
        "no-referrer"
    );
}

async fn health_and_readiness_answer(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_eq!(app.get("/healthz").await.status, 200);
    assert_eq!(app.get("/readyz").await.status, 200);
    let css = app.get("/static/paylink.css").await;
    assert_eq!(css.status, 200);
    assert!(css.header("content-type").unwrap().starts_with("text/css"));
}

on_every_backend!(
    an_open_link_shows_complete_your_payment_with_everything_the_payer_needs,
    amounts_are_shown_with_the_currency_exponent,
    unknown_and_malformed_tokens_are_410_link_expired,
    a_paid_link_is_410_and_may_say_it_was_used,
    the_ttl_really_runs_out_and_the_link_then_answers_410,
    reads_never_extend_the_ttl,
    a_decline_shows_the_reason_with_402_and_keeps_the_link_open,
    an_invalid_form_is_422_with_the_field_marked,
    the_pay_rate_limit_answers_429_with_retry_after,
    every_html_error_page_carries_the_security_headers,
    health_and_readiness_answer,
);

/// The stylesheet and script every pay page loads, answered from the binary (the bytes of
/// `static/` at build time) with a validator that lets a browser keep them, and only them:
/// a 404 under `/static/` is a page like any other. Pages link them by a URL that names
/// their version, which a browser may keep for a year; any other URL of theirs only briefly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_assets_are_served_from_the_binary_and_revalidated_by_etag() {
    let app = spawn_app(Backend::Memory).await;
    let token = app.create_default_session().await.token;
    let page = app.get_pay_page(&token).await.text;
    for (path, file, content_type) in [
        ("/static/paylink.css", "static/paylink.css", "text/css"),
        (
            "/static/countdown.js",
            "static/countdown.js",
            "text/javascript",
        ),
    ] {
        let asset = app.get(path).await;
        assert_eq!(asset.status, 200, "{path}");
        assert_eq!(asset.text, std::fs::read_to_string(file).unwrap(), "{path}");
        assert!(
            asset
                .header("content-type")
                .unwrap()
                .starts_with(content_type),
            "{path}: {:?}",
            asset.header("content-type")
        );
        assert_eq!(
            asset.header("cache-control"),
            Some("public, max-age=300"),
            "{path}"
        );
        assert_eq!(asset.header("x-content-type-options"), Some("nosniff"));
        let etag = asset.header("etag").expect("an ETag").to_owned();
        assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");

        // The page links the asset by its current version, and that URL is immutable.
        let versioned = format!("{path}?v={}", etag.trim_matches('"'));
        assert!(
            page.contains(&format!("=\"{versioned}\"")),
            "the pay page links {versioned}: {page}"
        );
        // A version that is not the current one (a page from an older release, say) gets
        // the current bytes, and only for a short while.
        const BRIEFLY: &str = "public, max-age=300";
        for (url, cache_control) in [
            (versioned.clone(), "public, max-age=31536000, immutable"),
            (
                format!("{path}?v=0123456789abcdef0123456789abcdef"),
                BRIEFLY,
            ),
            (format!("{versioned}&x=1"), BRIEFLY),
            (format!("{path}?v="), BRIEFLY),
        ] {
            let reply = app.get(&url).await;
            assert_eq!(reply.status, 200, "{url}");
            assert_eq!(reply.text, asset.text, "{url}");
            assert_eq!(reply.header("cache-control"), Some(cache_control), "{url}");
        }

        let again = app
            .client
            .get(app.url(path))
            .header("If-None-Match", format!("\"stale\", {etag}"))
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
        assert_eq!(again.headers()["etag"], etag.as_str());
        assert_eq!(again.text().await.unwrap(), "");

        let changed = app
            .client
            .get(app.url(path))
            .header("If-None-Match", "\"stale\"")
            .send()
            .await
            .unwrap();
        assert_eq!(changed.status(), 200, "{path}");

        let head = app.client.head(app.url(path)).send().await.unwrap();
        assert_eq!(head.status(), 200, "{path}");
        assert_eq!(head.headers()["etag"], etag.as_str());

        let post = app.client.post(app.url(path)).send().await.unwrap();
        assert_eq!(post.status(), 405, "{path}");
        assert_eq!(post.headers()["allow"], "GET, HEAD");
    }
    let css = app
        .get("/static/paylink.css")
        .await
        .header("etag")
        .map(str::to_owned);
    let js = app
        .get("/static/countdown.js")
        .await
        .header("etag")
        .map(str::to_owned);
    assert_ne!(css, js);

    for missing in [
        "/static/",
        "/static",
        "/static/nope.css",
        "/static/paylink.css.map",
        "/static/..%2fCargo.toml",
    ] {
        let reply = app.get(missing).await;
        assert_eq!(reply.status, 404, "{missing}");
        assert!(reply.text.contains("<html"), "{missing}: {}", reply.text);
        assert_security_headers(&reply, missing);
    }
}
