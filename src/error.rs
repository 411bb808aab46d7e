//! The two error shapes at the boundary: JSON for the merchant API, HTML for payers.
//! A 500 never says why; the cause goes to the log (without secrets).

use crate::session::StoreError;
use crate::templates::{ErrorPage, GonePage, UnavailablePage, render};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use std::time::Duration;

/// An error of the merchant API: `{"error": {"code", "message", "field"?}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<&'static str>,
    session_status: Option<&'static str>,
    retry_after: Option<Duration>,
    allow: Option<&'static str>,
}

#[derive(Serialize)]
struct ApiErrorBody<'a> {
    error: ApiErrorDetail<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
}

#[derive(Serialize)]
struct ApiErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            session_status: None,
            retry_after: None,
            allow: None,
        }
    }

    pub fn malformed_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_json", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid merchant API key is required as 'Authorization: Bearer <key>'",
        )
    }

    pub fn merchant_mismatch() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "merchant_mismatch",
            "merchantId does not match the merchant this API key belongs to",
        )
    }

    /// The one answer for an unknown token, a forgotten record and another merchant's
    /// session: byte-for-byte the same, so none can be told from the others.
    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such payment session",
        )
    }

    pub fn route_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
    }

    /// 405 with the `Allow` header listing what the endpoint takes.
    pub fn method_not_allowed(allow: &'static str) -> Self {
        let mut e = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this method is not allowed on this endpoint",
        );
        e.allow = Some(allow);
        e
    }

    pub fn not_open(status: &'static str, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::CONFLICT, "not_open", message);
        e.session_status = Some(status);
        e
    }

    pub fn payload_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body must be at most 16 KiB",
        )
    }

    pub fn request_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request body did not arrive in time",
        )
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the request body must be application/json",
        )
    }

    pub fn invalid_field(field: &'static str, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message);
        e.field = Some(field);
        e
    }

    pub fn rate_limited(retry_after: Duration) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests; retry after the number of seconds in Retry-After",
        );
        e.retry_after = Some(retry_after);
        e
    }

    pub fn store_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the session store is temporarily unavailable; try again shortly",
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "something went wrong on our side",
        )
    }

    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.code)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let body = ApiErrorBody {
            error: ApiErrorDetail {
                code: self.code,
                message: &self.message,
                field: self.field,
                status: self.session_status,
            },
            status: self.session_status,
        };
        let mut response = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if let Some(after) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, retry_after_secs(after)));
        }
        if let Some(allow) = self.allow {
            response.insert_header((header::ALLOW, allow));
        }
        response.json(body)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) | StoreError::Timeout => {
                tracing::warn!(error = %e, "session store unavailable");
                ApiError::store_unavailable()
            }
            StoreError::Corrupt(_) | StoreError::Conflict => {
                tracing::error!(error = %e, "session store error");
                ApiError::internal()
            }
        }
    }
}

/// Whole seconds for `Retry-After`, rounded up and at least 1.
pub fn retry_after_secs(d: Duration) -> HeaderValue {
    let secs = d.as_millis().div_ceil(1000).max(1);
    HeaderValue::from(u64::try_from(secs).unwrap_or(u64::MAX))
}

/// An error a payer sees as a page.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// Unknown, malformed, expired, revoked or paid: 410 "Link Expired".
    #[error("link gone")]
    Gone { already_paid: bool },
    /// The store cannot be reached: 503, never 410.
    #[error("store unavailable")]
    Unavailable,
    #[error("payment in progress")]
    PaymentInProgress,
    #[error("rate limited")]
    RateLimited { retry_after: Duration },
    /// Too many declined payments on this link: its payments wait a while.
    #[error("payments locked")]
    PaymentsLocked { retry_after: Duration },
    #[error("page not found")]
    NotFound,
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("request body too slow")]
    RequestTimeout,
    /// With the methods the resource does take, for `Allow`.
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("internal error")]
    Internal,
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) | StoreError::Timeout => {
                tracing::warn!(error = %e, "session store unavailable");
                PageError::Unavailable
            }
            StoreError::Corrupt(_) | StoreError::Conflict => {
                tracing::error!(error = %e, "session store error");
                PageError::Internal
            }
        }
    }
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        match self {
            PageError::Gone { .. } => StatusCode::GONE,
            PageError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            PageError::PaymentInProgress => StatusCode::CONFLICT,
            PageError::RateLimited { .. } | PageError::PaymentsLocked { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            PageError::NotFound => StatusCode::NOT_FOUND,
            PageError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            PageError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            PageError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            PageError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let mut response = match self {
            PageError::Gone { already_paid } => render(
                status,
                &GonePage {
                    already_paid: *already_paid,
                },
            ),
            PageError::Unavailable => render(status, &UnavailablePage),
            PageError::PaymentInProgress => render(
                status,
                &ErrorPage {
                    title: "Payment in progress",
                    message: "A payment for this link is being processed. Wait a moment, then reload this page.",
                },
            ),
            PageError::RateLimited { .. } => render(
                status,
                &ErrorPage {
                    title: "Too many requests",
                    message: "You have made too many requests. Wait a minute and try again.",
                },
            ),
            PageError::PaymentsLocked { .. } => render(
                status,
                &ErrorPage {
                    title: "Too many declined payments",
                    message: "Payments for this link are paused after several declined cards. Try again later, or contact the merchant.",
                },
            ),
            PageError::NotFound => render(
                status,
                &ErrorPage {
                    title: "Page not found",
                    message: "There is nothing at this address.",
                },
            ),
            PageError::PayloadTooLarge => render(
                status,
                &ErrorPage {
                    title: "Request too large",
                    message: "The form you sent is larger than a payment form can be.",
                },
            ),
            PageError::RequestTimeout => render(
                status,
                &ErrorPage {
                    title: "Request timed out",
                    message: "Your browser took too long to send the form. Nothing was charged; please try again.",
                },
            ),
            PageError::MethodNotAllowed { .. } => render(
                status,
                &ErrorPage {
                    title: "Method not allowed",
                    message: "This page cannot be requested that way.",
                },
            ),
            PageError::Internal => render(
                status,
                &ErrorPage {
                    title: "Something went wrong",
                    message: "Something went wrong on our side. Please try again.",
                },
            ),
        };
        if let PageError::MethodNotAllowed { allow } = self {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if let PageError::RateLimited { retry_after } | PageError::PaymentsLocked { retry_after } =
            self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after_secs(*retry_after));
        }
        response
    }
}
