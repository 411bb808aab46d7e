//! The merchant API described as OpenAPI 3.1, generated from the handlers' annotations and
//! the types below, served at `/api/v1/openapi.json`.

use super::merchant_api;
use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// Body of `POST /api/v1/sessions`.
#[derive(ToSchema)]
#[schema(as = CreateSession)]
#[allow(dead_code)]
pub struct CreateSessionDoc {
    /// The merchant's order reference: 1–128 characters, no control characters.
    #[schema(min_length = 1, max_length = 128, example = "ord_123")]
    #[schema(rename = "orderId")]
    order_id: String,
    /// Minor units of the currency (1999 = USD 19.99 = JPY 1999).
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64, example = 1999)]
    amount: i64,
    /// ISO 4217 alphabetic code, any case; stored upper-case.
    #[schema(pattern = "^[A-Za-z]{3}$", example = "USD")]
    currency: String,
    /// Seconds the link lives: the configured minimum (default 60) to 1200; default 900.
    #[schema(rename = "ttlSeconds", minimum = 1, maximum = 1200, example = 900)]
    ttl_seconds: Option<i64>,
    /// Shown to the payer: at most 200 characters, no control characters.
    #[schema(max_length = 200, example = "2 tickets")]
    description: Option<String>,
    /// If present, must be the merchant the API key belongs to (else 403).
    #[schema(rename = "merchantId", example = "acme")]
    merchant_id: Option<String>,
}

/// A payment session as the merchant sees it.
#[derive(ToSchema)]
#[schema(as = Session)]
#[allow(dead_code)]
pub struct SessionDoc {
    /// The 64-hex token; only while the session is open.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    token: Option<String>,
    /// The payer's link; only while the session is open.
    url: Option<String>,
    #[schema(inline)]
    status: StatusDoc,
    #[schema(rename = "orderId")]
    order_id: String,
    amount: i64,
    currency: String,
    #[schema(rename = "merchantId")]
    merchant_id: String,
    /// `null` when the merchant gave none.
    #[schema(required = true)]
    description: Option<String>,
    /// RFC 3339, UTC.
    #[schema(rename = "createdAt", format = DateTime)]
    created_at: String,
    /// RFC 3339, UTC. Absolute: never extended.
    #[schema(rename = "expiresAt", format = DateTime)]
    expires_at: String,
    #[schema(rename = "paidAt", format = DateTime)]
    paid_at: Option<String>,
    #[schema(rename = "revokedAt", format = DateTime)]
    revoked_at: Option<String>,
    /// Last four digits of the card that paid.
    #[schema(rename = "cardLast4", pattern = "^[0-9]{4}$")]
    card_last4: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "lowercase")]
pub enum StatusDoc {
    Open,
    Paid,
    Revoked,
    Expired,
}

/// Every error of the API.
#[derive(ToSchema)]
#[schema(as = Error)]
#[allow(dead_code)]
pub struct ErrorDoc {
    #[schema(inline)]
    error: ErrorDetailDoc,
    /// The session's status, on 409 `not_open`.
    status: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorDetailDoc {
    /// `malformed_json`, `unauthorized`, `merchant_mismatch`, `not_found`, `not_open`,
    /// `payload_too_large`, `unsupported_media_type`, `invalid_field`, `rate_limited`,
    /// `store_unavailable`, `method_not_allowed`.
    code: String,
    message: String,
    /// The field at fault, on 422 `invalid_field`.
    field: Option<String>,
    /// The session's status, on 409 `not_open`.
    status: Option<String>,
}

struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "merchantKey",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "paylink merchant API",
        description = "One-time payment links: create, read and revoke payment sessions."
    ),
    paths(merchant_api::create, merchant_api::read, merchant_api::revoke),
    components(schemas(CreateSessionDoc, SessionDoc, ErrorDoc)),
    modifiers(&BearerKey),
    security(("merchantKey" = []))
)]
pub struct ApiDoc;

/// `GET /api/v1/openapi.json`
pub async fn spec() -> HttpResponse {
    match ApiDoc::openapi().to_json() {
        Ok(json) => HttpResponse::Ok()
            .content_type("application/json")
            .body(json),
        Err(e) => {
            tracing::error!(error = %e, "OpenAPI document could not be built");
            HttpResponse::InternalServerError().finish()
        }
    }
}
