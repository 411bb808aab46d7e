//! The payer's pages: `GET /pay/{token}` shows an open link, `POST /pay/{token}` pays it.

use super::{
    BodyError, client_ip, clock_time, date_time, load_counted, per_minute, rate_limit, read_body,
    within,
};
use crate::config::MAX_TTL_SECONDS;
use crate::domain::{CardDetails, CardError};
use crate::error::PageError;
use crate::lifecycle::LifecycleEvent;
use crate::payments::{ChargeOutcome, ChargeRequest};
use crate::session::{
    BeginPayment, ClaimId, Limited, Lockout, PaymentToken, SessionRecord, SessionStatus,
    StoreError, TokenDigest, now_ms,
};
use crate::startup::AppState;
use crate::templates::{FormField, PayPage, ReceiptPage, render};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};
use std::collections::HashMap;
use std::time::Duration;

/// The least time one payment attempt holds a link (it holds until the session's expiry in
/// any case). Longer than any processor call may take (the processor is given less).
const PAYMENT_LEASE: Duration = Duration::from_secs(60);
const PROCESSOR_TIMEOUT: Duration = Duration::from_secs(30);

/// Form bodies larger than this are not card forms.
pub const MAX_FORM_BYTES: usize = 16 * 1024;

/// A malformed token is gone without asking the store.
fn parse_token(raw: &str) -> Result<PaymentToken, PageError> {
    PaymentToken::parse(raw).map_err(|_| PageError::Gone {
        already_paid: false,
    })
}

/// 410 for a link that cannot be paid. A paid link asked for again is a replay: logged.
fn gone_for(state: &AppState, record: Option<&SessionRecord>, digest: &TokenDigest) -> PageError {
    let already_paid = record.is_some_and(|r| r.stored_status == SessionStatus::Paid);
    if let Some(record) = record.filter(|_| already_paid) {
        state
            .lifecycle
            .emit(LifecycleEvent::ReplayRejected, record, digest);
    }
    PageError::Gone { already_paid }
}

/// The display name payers see; the id if the merchant has since left the registry.
fn merchant_name<'a>(state: &'a AppState, record: &'a SessionRecord) -> &'a str {
    state
        .merchants
        .get(&record.merchant_id)
        .map_or(record.merchant_id.as_ref(), |m| m.name.as_str())
}

fn pay_page(
    state: &AppState,
    record: &SessionRecord,
    status: StatusCode,
    decline_reason: Option<String>,
    errors: &[CardError],
) -> HttpResponse {
    let page = PayPage {
        merchant_name: merchant_name(state, record),
        order_id: record.order_id.as_ref(),
        amount: record.amount.display_with(record.currency),
        description: record.description.as_ref().map(AsRef::as_ref),
        expires_at_iso: super::rfc3339(record.expires_at_ms),
        expires_at_text: clock_time(record.expires_at_ms),
        expires_at_ms: record.expires_at_ms,
        now_ms: now_ms(),
        decline_reason,
        fields: FormField::card_form_html(errors),
        has_errors: !errors.is_empty(),
    };
    render(status, &page)
}

/// Counts one request to `/pay/*` against the client's limit (`PAYLINK_PAY_RATE_LIMIT_PER_MINUTE`
/// requests per client IP per minute, views and payment attempts alike). A malformed link is
/// not counted: the contract says the store is not consulted for one, and the counter lives
/// in the store; it is answered 410 without touching anything. Requests that go on to the
/// store count in the step they need ([`load_for_view`], [`claim_link`]); this is for those
/// that end before.
async fn limit_pay(state: &AppState, req: &HttpRequest) -> Result<(), PageError> {
    let bucket = || pay_bucket(state, req);
    Ok(rate_limit(state, bucket, state.settings.pay_rate_limit_per_minute).await?)
}

fn pay_bucket(state: &AppState, req: &HttpRequest) -> String {
    format!("pay:{}", client_ip(req, &state.settings.trusted_proxies))
}

/// Takes the link for this payment attempt as `claim`, counting the attempt against the
/// client's limit in the same store step when there is a limit.
async fn claim_link(
    state: &AppState,
    req: &HttpRequest,
    digest: &TokenDigest,
    claim: ClaimId,
) -> Result<Limited<BeginPayment>, StoreError> {
    let max = state.settings.pay_rate_limit_per_minute;
    if max == 0 {
        let begun = state
            .store
            .begin_payment(digest, PAYMENT_LEASE, claim)
            .await;
        return begun.map(Limited::Ran);
    }
    let bucket = pay_bucket(state, req);
    let limit = per_minute(&bucket, max);
    state
        .store
        .begin_payment_limited(limit, digest, PAYMENT_LEASE, claim)
        .await
}

/// The record behind a page (a view, or the card form shown again with its errors), with
/// the request counted against the client's limit when there is one: both in one store
/// round trip.
async fn load_for_view(
    state: &AppState,
    req: &HttpRequest,
    digest: &TokenDigest,
) -> Result<Option<SessionRecord>, PageError> {
    let bucket = || pay_bucket(state, req);
    let max = state.settings.pay_rate_limit_per_minute;
    Ok(load_counted(state, bucket, max, digest).await?)
}

/// The pay page's route pattern, as the request span and the latency metric name it.
pub const ROUTE: &str = "/pay/{token}";
/// Every other path under `/pay/`.
pub const OTHER_ROUTE: &str = "/pay/{tail:.*}";

/// The route pattern of a path under `/pay`, or `None` for one outside it.
pub fn route_of(path: &str) -> Option<&'static str> {
    if token_segment(path).is_some() {
        Some(ROUTE)
    } else {
        path.starts_with("/pay/").then_some(OTHER_ROUTE)
    }
}

/// The token of `/pay/{token}`: one non-empty segment after `/pay/`.
fn token_segment(path: &str) -> Option<&str> {
    path.strip_prefix("/pay/")
        .filter(|token| !token.is_empty() && !token.contains('/'))
}

/// Every request under `/pay`, routed here rather than by the router: the pay page is the
/// hottest path, and a `/pay/{token}` resource ran a regex over each view's path, a
/// twelfth of a view's instructions. `GET` and `HEAD` on `/pay/{token}` show the link,
/// `POST` pays it, other methods get 405. Any other path under `/pay/` is a malformed link
/// (410, without asking the store); `/pay` itself is not a page (404).
pub async fn route(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let Some(token) = token_segment(req.path()) else {
        return Err(if req.path() == "/pay" {
            PageError::NotFound
        } else {
            PageError::Gone {
                already_paid: false,
            }
        });
    };
    match *req.method() {
        Method::GET | Method::HEAD => show(&req, token, &state).await,
        Method::POST => submit(&req, token, payload, &state).await,
        _ => Err(PageError::MethodNotAllowed {
            allow: "GET, HEAD, POST",
        }),
    }
}

/// `GET /pay/{token}`: 200 with the card form while the link is open, 410 otherwise. No span
/// of its own: the request span's route already names it, and this is the hottest path.
async fn show(req: &HttpRequest, raw: &str, state: &AppState) -> Result<HttpResponse, PageError> {
    let token = parse_token(raw)?;
    let digest = token.digest();
    match load_for_view(state, req, &digest).await? {
        Some(record) if record.status_at(now_ms()) == SessionStatus::Open => {
            state
                .lifecycle
                .emit(LifecycleEvent::Viewed, &record, &digest);
            Ok(pay_page(state, &record, StatusCode::OK, None, &[]))
        }
        other => Err(gone_for(state, other.as_ref(), &digest)),
    }
}

/// `POST /pay/{token}`: validates the card, takes the link in one atomic step, charges it,
/// and records the outcome. Only the caller that took the link reaches the processor.
#[tracing::instrument(name = "pay", skip_all)]
async fn submit(
    req: &HttpRequest,
    raw: &str,
    payload: web::Payload,
    state: &AppState,
) -> Result<HttpResponse, PageError> {
    let token = parse_token(raw)?;
    let digest = token.digest();
    // The attempt counts against the client's limit in the store step it ends with, so
    // that a rate-limited payment costs no more round trips than one without a limit.
    let body = match read_body(req, payload, MAX_FORM_BYTES).await {
        Ok(body) => body,
        Err(e) => {
            limit_pay(state, req).await?;
            return Err(match e {
                BodyError::TooLarge => PageError::PayloadTooLarge,
                BodyError::Timeout => PageError::RequestTimeout,
            });
        }
    };

    // An unreadable body is an empty form: every field is then reported missing.
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let field = |name: &str| form.get(name).map(String::as_str);
    let today = time::OffsetDateTime::now_utc();
    let card = CardDetails::parse(
        field("cardholderName"),
        field("cardNumber"),
        field("expiry"),
        field("cvc"),
        (
            u16::try_from(today.year()).unwrap_or(0),
            u8::from(today.month()),
        ),
    );
    let card = match card {
        Ok(card) => card,
        Err(errors) => {
            return match load_for_view(state, req, &digest).await? {
                Some(record) if record.status_at(now_ms()) == SessionStatus::Open => Ok(pay_page(
                    state,
                    &record,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    None,
                    &errors,
                )),
                other => Err(gone_for(state, other.as_ref(), &digest)),
            };
        }
    };

    let claim = ClaimId::generate().map_err(|e| {
        tracing::error!(error = %e, "no payment claim id could be drawn");
        PageError::Internal
    })?;
    let begun = claim_link(state, req, &digest, claim).await;
    let begun = begun.inspect_err(|_| release_in_background(state, digest, claim))?;
    let record = match within(begun)? {
        BeginPayment::Claimed(record) => record,
        BeginPayment::InProgress(_) => return Err(PageError::PaymentInProgress),
        BeginPayment::Locked { until_ms } => {
            let left = u64::try_from(until_ms - now_ms()).unwrap_or(0);
            return Err(PageError::PaymentsLocked {
                retry_after: Duration::from_millis(left),
            });
        }
        BeginPayment::NotOpen(record) => return Err(gone_for(state, record.as_ref(), &digest)),
    };

    let charge = ChargeRequest {
        amount: record.amount,
        currency: record.currency,
        card: &card,
        idempotency_key: digest,
    };
    let outcome = tokio::time::timeout(PROCESSOR_TIMEOUT, state.processor.charge(charge)).await;
    match outcome {
        Ok(Ok(ChargeOutcome::Approved)) => {
            state
                .metrics
                .payments
                .with_label_values(&["approved"])
                .inc();
            let paid_at = now_ms();
            let last4 = card.number.last4();
            let paid = record_payment(state, &digest, &record, paid_at, last4).await;
            state.lifecycle.emit(LifecycleEvent::Paid, &paid, &digest);
            Ok(receipt(state, &paid, paid_at, last4))
        }
        Ok(Ok(ChargeOutcome::Declined(reason))) => {
            state
                .metrics
                .payments
                .with_label_values(&["declined"])
                .inc();
            state
                .lifecycle
                .emit(LifecycleEvent::PaymentDeclined, &record, &digest);
            let lockout = Lockout {
                max_failures: state.settings.pay_max_declines,
                duration: Duration::from_secs(state.settings.pay_lockout_seconds),
            };
            match state.store.decline_payment(&digest, claim, lockout).await {
                Ok(Some(_)) => tracing::warn!(
                    tokenRef = %digest.token_ref(),
                    merchantId = %record.merchant_id,
                    orderId = %record.order_id,
                    "too many declined payments: this link's payments are locked for a while"
                ),
                Ok(None) => {}
                Err(e) => {
                    // Not counted, perhaps; but the claim must not keep the link closed.
                    tracing::warn!(error = %e, tokenRef = %digest.token_ref(), "could not record a decline");
                    release_in_background(state, digest, claim);
                }
            }
            Ok(pay_page(
                state,
                &record,
                StatusCode::PAYMENT_REQUIRED,
                Some(reason),
                &[],
            ))
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, tokenRef = %digest.token_ref(), "payment processor failed");
            release(state, &digest, claim).await;
            Err(PageError::Unavailable)
        }
        Err(_) => {
            // The processor did not answer: the charge may or may not have happened, so the
            // claim is kept (it holds until the session expires) rather than letting a
            // second attempt in.
            tracing::error!(tokenRef = %digest.token_ref(), "payment processor timed out");
            Err(PageError::Unavailable)
        }
    }
}

/// Frees the link after a payment that did not reach the card (the processor failed).
async fn release(state: &AppState, digest: &TokenDigest, claim: ClaimId) {
    if let Err(e) = state.store.abandon_payment(digest, claim).await {
        tracing::warn!(error = %e, tokenRef = %digest.token_ref(), "could not release payment claim; retrying in the background");
        release_in_background(state, *digest, claim);
    }
}

/// How long paylink keeps trying to free a claim whose fate it does not know: as long as
/// such a claim can hold (the lease, or the longest a session lives).
const RELEASE_RETRY_FOR: Duration = Duration::from_secs(PAYMENT_LEASE.as_secs() + MAX_TTL_SECONDS);

/// The store failed while taking (or freeing) the claim, so the claim may be held with
/// no payment behind it: the store may have run the step and lost only the answer, or it
/// may still run it, late, after a pause. Left alone, the link would answer "payment in
/// progress" until the session expires. No card was charged under this claim, and a
/// release frees only this claim, so this keeps releasing it, backing off, until the store
/// frees it or the claim could no longer be holding the link.
fn release_in_background(state: &AppState, digest: TokenDigest, claim: ClaimId) {
    let store = state.store.clone();
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let mut wait = Duration::from_millis(100);
        while started.elapsed() < RELEASE_RETRY_FOR {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(30));
            if let Ok(true) = store.abandon_payment(&digest, claim).await {
                tracing::info!(tokenRef = %digest.token_ref(), "payment claim released after a store failure");
                return;
            }
        }
        tracing::warn!(
            tokenRef = %digest.token_ref(),
            "gave up releasing a payment claim after a store failure: if it ever landed, the link answers 409 until it expires"
        );
    });
}

/// Writes the approved payment. The money has moved, so this does not give up: it tries
/// again in the background until the store takes it (the lease keeps the link closed
/// meanwhile), and the payer gets the receipt either way.
async fn record_payment(
    state: &AppState,
    digest: &TokenDigest,
    claimed: &SessionRecord,
    paid_at: i64,
    last4: &str,
) -> SessionRecord {
    let retention = state.settings.retention();
    match state
        .store
        .complete_payment(digest, &claimed.merchant_id, paid_at, last4, retention)
        .await
    {
        Ok(Some(record)) => record,
        Ok(None) | Err(_) => {
            tracing::error!(
                tokenRef = %digest.token_ref(),
                merchantId = %claimed.merchant_id,
                orderId = %claimed.order_id,
                "approved payment not yet recorded; retrying in the background"
            );
            let store = state.store.clone();
            let merchant = claimed.merchant_id.clone();
            let digest = *digest;
            let owned_last4 = last4.to_owned();
            // Until it is recorded the claim keeps the link closed (it outlives the
            // session), so retrying for as long as it takes is safe; backing off to 5 s.
            tokio::spawn(async move {
                let mut wait = Duration::from_millis(250);
                for attempt in 1u64.. {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                    let recorded = store
                        .complete_payment(&digest, &merchant, paid_at, &owned_last4, retention)
                        .await;
                    match recorded {
                        Ok(Some(_)) => {
                            tracing::info!(tokenRef = %digest.token_ref(), attempt, "approved payment recorded");
                            return;
                        }
                        Ok(None) => {
                            tracing::error!(tokenRef = %digest.token_ref(), "approved payment could not be recorded: the store no longer has the session");
                            return;
                        }
                        Err(_) if attempt % 12 == 0 => {
                            tracing::error!(tokenRef = %digest.token_ref(), attempt, "approved payment still not recorded; retrying");
                        }
                        Err(_) => {}
                    }
                }
            });
            let mut paid = claimed.clone();
            paid.stored_status = SessionStatus::Paid;
            paid.paid_at_ms = Some(paid_at);
            paid.card_last4 = Some(last4.to_owned());
            paid
        }
    }
}

fn receipt(state: &AppState, record: &SessionRecord, paid_at: i64, last4: &str) -> HttpResponse {
    render(
        StatusCode::OK,
        &ReceiptPage {
            merchant_name: merchant_name(state, record),
            order_id: record.order_id.as_ref(),
            amount: record.amount.display_with(record.currency),
            card_last4: last4,
            paid_at_text: date_time(paid_at),
        },
    )
}
