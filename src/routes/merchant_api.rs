//! The merchant API: create, read and revoke payment sessions. JSON, camelCase.

use super::openapi::{CreateSessionDoc, ErrorDoc, SessionDoc};
use super::{BodyError, counted_step, load_counted, rate_limit, read_body, rfc3339};
use crate::config::MAX_TTL_SECONDS;
use crate::domain::{Amount, Currency, Description, OrderId, json_whole_number};
use crate::error::ApiError;
use crate::lifecycle::LifecycleEvent;
use crate::merchants::Merchant;
use crate::session::{PaymentToken, Revocation, SessionRecord, SessionStatus, now_ms};
use crate::startup::AppState;
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use serde::Serialize;
use serde_json::{Map, Value};
use std::future::{Ready, ready};

pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The merchant whose API key the request carries. Authorization is decided by this
/// alone, never by a `merchantId` in the body.
pub struct AuthenticatedMerchant(pub Merchant);

impl FromRequest for AuthenticatedMerchant {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<AppState>>() else {
            return ready(Err(ApiError::internal()));
        };
        let key = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, key)| key.trim())
            .filter(|key| !key.is_empty());
        let merchant = key.and_then(|key| state.merchants.authenticate(key));
        ready(
            merchant
                .cloned()
                .map(AuthenticatedMerchant)
                .ok_or_else(ApiError::unauthorized),
        )
    }
}

async fn limit_api(state: &AppState, merchant: &Merchant) -> Result<(), ApiError> {
    let bucket = || api_bucket(merchant);
    Ok(rate_limit(state, bucket, state.settings.api_rate_limit_per_minute).await?)
}

fn api_bucket(merchant: &Merchant) -> String {
    format!("api:{}", merchant.id)
}

/// A session as the merchant sees it. `token` and `url` only while it is open.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionView {
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    status: &'static str,
    order_id: String,
    amount: u64,
    currency: String,
    merchant_id: String,
    /// Always present, `null` when the merchant gave none: the contract lists it among
    /// every session's fields.
    description: Option<String>,
    created_at: String,
    expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    paid_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    card_last4: Option<String>,
}

impl SessionView {
    fn new(record: &SessionRecord, token: &PaymentToken, public_url: &str) -> Self {
        let status = record.status_at(now_ms());
        let open = status == SessionStatus::Open;
        SessionView {
            token: open.then(|| token.expose().to_owned()),
            url: open.then(|| format!("{public_url}/pay/{}", token.expose())),
            status: status.as_str(),
            order_id: record.order_id.to_string(),
            amount: record.amount.minor_units(),
            currency: record.currency.to_string(),
            merchant_id: record.merchant_id.to_string(),
            description: record.description.as_ref().map(|d| d.as_ref().to_owned()),
            created_at: rfc3339(record.created_at_ms),
            expires_at: rfc3339(record.expires_at_ms),
            paid_at: record.paid_at_ms.map(rfc3339),
            revoked_at: record.revoked_at_ms.map(rfc3339),
            card_last4: record.card_last4.clone(),
        }
    }
}

fn is_json(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
        .is_some_and(|m| m.essence_str() == "application/json")
}

/// The validated body of `POST /api/v1/sessions`.
struct NewSession {
    order_id: OrderId,
    amount: Amount,
    currency: Currency,
    ttl_seconds: u64,
    description: Option<Description>,
}

fn string_field<'a>(
    body: &'a Map<String, Value>,
    name: &'static str,
) -> Result<Option<&'a str>, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::invalid_field(
            name,
            format!("{name} must be a string"),
        )),
    }
}

impl NewSession {
    /// Parses the body, field by field in a fixed order, naming the first bad field.
    fn parse(
        body: &Map<String, Value>,
        merchant: &Merchant,
        default_ttl: u64,
        min_ttl: u64,
    ) -> Result<Self, ApiError> {
        // Any merchantId other than the key's own (a number, another id) names another
        // merchant as far as authorization goes.
        match body.get("merchantId") {
            None | Some(Value::Null) => {}
            Some(Value::String(claimed)) if claimed == merchant.id.as_ref() => {}
            Some(_) => return Err(ApiError::merchant_mismatch()),
        }
        let order_id = string_field(body, "orderId")?
            .ok_or_else(|| ApiError::invalid_field("orderId", "orderId is required"))
            .and_then(|s| {
                OrderId::parse(s).map_err(|e| ApiError::invalid_field("orderId", e.to_string()))
            })?;
        let amount = match body.get("amount") {
            None | Some(Value::Null) => {
                return Err(ApiError::invalid_field("amount", "amount is required"));
            }
            Some(v) => Amount::from_json(v)
                .map_err(|e| ApiError::invalid_field("amount", e.to_string()))?,
        };
        let currency = string_field(body, "currency")?
            .ok_or_else(|| ApiError::invalid_field("currency", "currency is required"))
            .and_then(|s| {
                Currency::parse(s).map_err(|e| ApiError::invalid_field("currency", e.to_string()))
            })?;
        let ttl_seconds = match body.get("ttlSeconds") {
            None | Some(Value::Null) => default_ttl,
            Some(v) => json_whole_number(v)
                .and_then(|t| u64::try_from(t).ok())
                .filter(|t| (min_ttl..=MAX_TTL_SECONDS).contains(t))
                .ok_or_else(|| {
                    ApiError::invalid_field(
                        "ttlSeconds",
                        format!(
                            "ttlSeconds must be an integer between {min_ttl} and {MAX_TTL_SECONDS}"
                        ),
                    )
                })?,
        };
        let description = string_field(body, "description")?
            .map(|s| {
                Description::parse(s)
                    .map_err(|e| ApiError::invalid_field("description", e.to_string()))
            })
            .transpose()?;
        Ok(NewSession {
            order_id,
            amount,
            currency,
            ttl_seconds,
            description,
        })
    }
}

/// `POST /api/v1/sessions`
#[utoipa::path(
    post,
    path = "/api/v1/sessions",
    request_body(content = CreateSessionDoc, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = SessionDoc,
            headers(("Location" = String, description = "/api/v1/sessions/{token}"))),
        (status = 400, description = "Body is not JSON or not an object", body = ErrorDoc),
        (status = 401, description = "Missing or unknown API key", body = ErrorDoc),
        (status = 403, description = "merchantId names another merchant", body = ErrorDoc),
        (status = 408, description = "The body did not arrive within 5 s", body = ErrorDoc),
        (status = 413, description = "Body over 16 KiB", body = ErrorDoc),
        (status = 415, description = "Not application/json", body = ErrorDoc),
        (status = 422, description = "A field is invalid", body = ErrorDoc),
        (status = 429, description = "Rate limited", body = ErrorDoc),
        (status = 503, description = "The session store cannot be reached", body = ErrorDoc),
    )
)]
#[tracing::instrument(name = "create session", skip_all, fields(merchantId = %merchant.0.id))]
pub async fn create(
    req: HttpRequest,
    merchant: AuthenticatedMerchant,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let merchant = merchant.0;
    let settings = &state.settings;
    // The request counts against the merchant's limit in the step that creates the session,
    // so that a rate-limited create costs one store round trip; one that is refused before
    // counts on its own, and over the limit it is 429 whatever was wrong with it.
    let new = match read_new_session(&req, payload, &state, &merchant).await {
        Ok(new) => new,
        Err(e) => {
            limit_api(&state, &merchant).await?;
            return Err(e);
        }
    };

    let created_at_ms = now_ms();
    let record = SessionRecord {
        merchant_id: merchant.id.clone(),
        order_id: new.order_id,
        amount: new.amount,
        currency: new.currency,
        description: new.description,
        created_at_ms,
        expires_at_ms: created_at_ms + i64::try_from(new.ttl_seconds * 1000).unwrap_or(0),
        stored_status: SessionStatus::Open,
        paid_at_ms: None,
        revoked_at_ms: None,
        card_last4: None,
    };
    let token = PaymentToken::generate().map_err(|e| {
        tracing::error!(error = %e, "no token could be generated");
        ApiError::internal()
    })?;
    let digest = token.digest();
    let (store, retention) = (&state.store, settings.retention());
    counted_step(
        || api_bucket(&merchant),
        settings.api_rate_limit_per_minute,
        async || store.create(&digest, &record, retention).await,
        async |limit| {
            store
                .create_limited(limit, &digest, &record, retention)
                .await
        },
    )
    .await?;
    state
        .lifecycle
        .emit(LifecycleEvent::Created, &record, &digest);

    let view = SessionView::new(&record, &token, &settings.public_url);
    Ok(HttpResponse::Created()
        .insert_header((
            header::LOCATION,
            format!("/api/v1/sessions/{}", token.expose()),
        ))
        .json(view))
}

/// The new session a create request asks for: a JSON body within the size limit, read
/// in time, with valid fields.
async fn read_new_session(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    merchant: &Merchant,
) -> Result<NewSession, ApiError> {
    if !is_json(req) {
        return Err(ApiError::unsupported_media_type());
    }
    let body = read_body(req, payload, MAX_BODY_BYTES)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge => ApiError::payload_too_large(),
            BodyError::Timeout => ApiError::request_timeout(),
        })?;
    let body = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            return Err(ApiError::malformed_json(
                "the request body must be a JSON object",
            ));
        }
        Err(_) => {
            return Err(ApiError::malformed_json(
                "the request body is not valid JSON",
            ));
        }
    };
    let settings = &state.settings;
    NewSession::parse(
        &body,
        merchant,
        settings.session_ttl_seconds,
        settings.min_ttl_seconds,
    )
}

/// The merchant's session, or `None` for unknown, malformed, forgotten and other
/// merchants' tokens alike; the request counted against the merchant's limit in the same
/// store round trip as the read.
async fn own_session(
    state: &AppState,
    merchant: &Merchant,
    raw: &str,
) -> Result<Option<(PaymentToken, SessionRecord)>, ApiError> {
    let Ok(token) = PaymentToken::parse(raw) else {
        limit_api(state, merchant).await?;
        return Ok(None);
    };
    let bucket = || api_bucket(merchant);
    let max = state.settings.api_rate_limit_per_minute;
    let record = load_counted(state, bucket, max, &token.digest()).await?;
    Ok(record
        .filter(|r| r.merchant_id == merchant.id)
        .map(|r| (token, r)))
}

/// `GET /api/v1/sessions/{token}`
#[utoipa::path(
    get,
    path = "/api/v1/sessions/{token}",
    params(("token" = String, Path, description = "The session's token")),
    responses(
        (status = 200, description = "The session", body = SessionDoc),
        (status = 401, description = "Missing or unknown API key", body = ErrorDoc),
        (status = 404, description = "Unknown, forgotten, or another merchant's", body = ErrorDoc),
        (status = 429, description = "Rate limited", body = ErrorDoc),
        (status = 503, description = "The session store cannot be reached", body = ErrorDoc),
    )
)]
#[tracing::instrument(name = "read session", skip_all, fields(merchantId = %merchant.0.id))]
pub async fn read(
    merchant: AuthenticatedMerchant,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let merchant = merchant.0;
    match own_session(&state, &merchant, &path).await? {
        Some((token, record)) => Ok(HttpResponse::Ok().json(SessionView::new(
            &record,
            &token,
            &state.settings.public_url,
        ))),
        None => Err(ApiError::not_found()),
    }
}

/// `DELETE /api/v1/sessions/{token}`
#[utoipa::path(
    delete,
    path = "/api/v1/sessions/{token}",
    params(("token" = String, Path, description = "The session's token")),
    responses(
        (status = 200, description = "Revoked", body = SessionDoc),
        (status = 401, description = "Missing or unknown API key", body = ErrorDoc),
        (status = 404, description = "Unknown, forgotten, or another merchant's", body = ErrorDoc),
        (status = 409, description = "The session has already ended", body = ErrorDoc),
        (status = 429, description = "Rate limited", body = ErrorDoc),
        (status = 503, description = "The session store cannot be reached", body = ErrorDoc),
    )
)]
#[tracing::instrument(name = "revoke session", skip_all, fields(merchantId = %merchant.0.id))]
pub async fn revoke(
    merchant: AuthenticatedMerchant,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let merchant = merchant.0;
    let Ok(token) = PaymentToken::parse(&path) else {
        limit_api(&state, &merchant).await?;
        return Err(ApiError::not_found());
    };
    let digest = token.digest();
    let (store, now, retention) = (&state.store, now_ms(), state.settings.retention());
    let revoked = counted_step(
        || api_bucket(&merchant),
        state.settings.api_rate_limit_per_minute,
        async || store.revoke(&digest, &merchant.id, now, retention).await,
        async |limit| {
            let revoke = store.revoke_limited(limit, &digest, &merchant.id, now, retention);
            revoke.await
        },
    )
    .await?;
    match revoked {
        Revocation::Revoked(record) => {
            state
                .lifecycle
                .emit(LifecycleEvent::Revoked, &record, &digest);
            Ok(HttpResponse::Ok().json(SessionView::new(
                &record,
                &token,
                &state.settings.public_url,
            )))
        }
        Revocation::NotOpen(record) => {
            let status = record.status_at(now_ms()).as_str();
            Err(ApiError::not_open(
                status,
                format!("the session has already ended: it is {status}"),
            ))
        }
        Revocation::PaymentInProgress(_) => Err(ApiError::not_open(
            SessionStatus::Open.as_str(),
            "a payment for this session is being processed; it can no longer be revoked",
        )),
        Revocation::NotFound => Err(ApiError::not_found()),
    }
}

/// `/api/v1/sessions` takes POST only.
pub async fn method_not_allowed_on_collection() -> Result<HttpResponse, ApiError> {
    Err(ApiError::method_not_allowed("POST"))
}

/// `/api/v1/sessions/{token}` takes GET and DELETE only.
pub async fn method_not_allowed_on_session() -> Result<HttpResponse, ApiError> {
    Err(ApiError::method_not_allowed("GET, DELETE"))
}
