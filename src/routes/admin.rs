//! The operator's side: `/admin` (dashboard), `/admin/metrics` (Prometheus), and a login
//! form that trades the admin token for a Secure, HttpOnly, SameSite=Strict cookie.
//! Registered only when `PAYLINK_ADMIN_TOKEN` is set; otherwise every path here is 404.

use super::{clock_time, read_body};
use crate::lifecycle::LifecycleEvent;
use crate::startup::AppState;
use crate::templates::{AdminLoginPage, AdminPage, EventCount, EventRow, MerchantRow, render};
use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::Instant;
use subtle::ConstantTimeEq;

const COOKIE: &str = "paylink_admin";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(crate::startup::readable("/admin", dashboard))
        .service(crate::startup::readable("/admin/metrics", metrics))
        .service(
            web::resource("/admin/login")
                .route(web::post().to(login))
                .default_service(web::to(only_post)),
        )
        .service(
            web::resource("/admin/logout")
                .route(web::post().to(logout))
                .default_service(web::to(only_post)),
        );
}

async fn only_post(req: HttpRequest) -> HttpResponse {
    crate::startup::method_not_allowed(&req, "POST")
}

/// The cookie holds a digest of the admin token, not the token: a leaked cookie is not the
/// bearer token, and changing the token logs every browser out.
fn cookie_value(admin_token: &str) -> String {
    hex::encode(Sha256::digest(
        format!("paylink-admin-cookie\0{admin_token}").as_bytes(),
    ))
}

fn equal(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

fn authorized(req: &HttpRequest, state: &AppState) -> bool {
    let Some(admin_token) = state.settings.admin_token.as_deref() else {
        return false;
    };
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .is_some_and(|(_, token)| equal(token.trim(), admin_token));
    let cookie = req
        .cookie(COOKIE)
        .is_some_and(|c| equal(c.value(), &cookie_value(admin_token)));
    bearer || cookie
}

fn login_page(status: StatusCode, failed: bool) -> HttpResponse {
    let mut response = render(status, &AdminLoginPage { failed });
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// `GET /admin`
pub async fn dashboard(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if !authorized(&req, &state) {
        return login_page(StatusCode::UNAUTHORIZED, false);
    }
    let merchants = state.merchants.all();
    let ids: Vec<_> = merchants.iter().map(|m| m.id.clone()).collect();
    let started = Instant::now();
    let active = state.store.active_sessions(&ids).await;
    let store_ms = started.elapsed().as_secs_f64() * 1000.0;
    let store_ok = active.is_ok();
    let counts = active.unwrap_or_default();
    let rows = merchants
        .iter()
        .enumerate()
        .map(|(i, m)| MerchantRow {
            id: m.id.to_string(),
            name: m.name.clone(),
            active: counts.get(i).copied(),
        })
        .collect();
    let totals = [
        LifecycleEvent::Created,
        LifecycleEvent::Paid,
        LifecycleEvent::Revoked,
        LifecycleEvent::Expired,
        LifecycleEvent::ReplayRejected,
    ]
    .into_iter()
    .map(|event| {
        let (last_hour, since_start) = state.lifecycle.counts(event);
        EventCount {
            name: event.short(),
            last_hour,
            since_start,
        }
    })
    .collect();
    let events = state
        .lifecycle
        .recent()
        .into_iter()
        .map(|e| EventRow {
            at: clock_time(e.at_ms),
            event: e.event.name(),
            merchant_id: e.merchant_id,
            order_id: e.order_id,
            token_ref: e.token_ref.to_string(),
        })
        .collect();
    render(
        StatusCode::OK,
        &AdminPage {
            active_total: store_ok.then(|| counts.iter().sum()),
            merchants: rows,
            totals,
            store_ok,
            store_ms: format!("{store_ms:.1}"),
            backend: if state.settings.redis_url.is_some() {
                "Redis"
            } else {
                "embedded"
            },
            events,
        },
    )
}

/// `GET /admin/metrics`: the active-session gauges are read from the store at scrape time.
pub async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if !authorized(&req, &state) {
        return HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
            .content_type("text/plain; charset=utf-8")
            .body("unauthorized\n");
    }
    let merchants = state.merchants.all();
    let ids: Vec<_> = merchants.iter().map(|m| m.id.clone()).collect();
    let counted = match state.store.active_sessions(&ids).await {
        Ok(counts) => Some(ids.iter().zip(counts)),
        Err(e) => {
            tracing::warn!(error = %e, "active sessions could not be counted");
            None
        }
    };
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.scrape(counted))
}

/// `POST /admin/login`: the token once, from a form; a cookie from then on.
pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> HttpResponse {
    let Some(admin_token) = state.settings.admin_token.as_deref() else {
        return HttpResponse::NotFound().finish();
    };
    let body = read_body(&req, payload, 4096).await.unwrap_or_default();
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let given = form.get("token").map(String::as_str).unwrap_or("");
    if !equal(given.trim(), admin_token) {
        tracing::warn!("admin login refused");
        return login_page(StatusCode::UNAUTHORIZED, true);
    }
    let cookie = Cookie::build(COOKIE, cookie_value(admin_token))
        .path("/admin")
        .secure(true)
        .http_only(true)
        .same_site(SameSite::Strict)
        .max_age(CookieDuration::hours(12))
        .finish();
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/admin"))
        .cookie(cookie)
        .finish()
}

/// `POST /admin/logout`
pub async fn logout() -> HttpResponse {
    let mut cookie = Cookie::build(COOKIE, "")
        .path("/admin")
        .secure(true)
        .http_only(true)
        .same_site(SameSite::Strict)
        .finish();
    cookie.make_removal();
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/admin"))
        .cookie(cookie)
        .finish()
}
