//! HTTP in, domain calls, HTTP out. Routes talk to the store trait only.

pub mod admin;
pub mod assets;
pub mod health;
pub mod merchant_api;
pub mod openapi;
pub mod pay;

use crate::error::{ApiError, PageError};
use crate::session::{
    Limited, RateLimit, RateLimitHit, SessionRecord, StoreError, TokenDigest, hit_over_limit,
};
use crate::startup::AppState;
use crate::text;
use actix_web::{HttpRequest, web};
use futures_util::StreamExt;
use std::net::IpAddr;
use std::time::Duration;
use time::OffsetDateTime;
use time::macros::format_description;

const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Why a rate-limited request was stopped.
pub(crate) enum Refused {
    /// Over the limit: this long until the window ends.
    Limited(Duration),
    /// The store failed. A counter that did not answer within the store's timeout stops the
    /// request too: it needs the store, and `PAYLINK_STORE_TIMEOUT_MS` is the longest wait,
    /// not one per call.
    Store(StoreError),
}

impl From<StoreError> for Refused {
    fn from(e: StoreError) -> Self {
        Refused::Store(e)
    }
}

/// Counts one request against the bucket `bucket` names (`limit` per minute, 0 = off, and
/// then the bucket is not even named). A store that answers but cannot count (say, out of
/// memory) does not block traffic: the request goes on, and any failure of the store's
/// shows up where the request needs it.
pub(crate) async fn rate_limit(
    state: &AppState,
    bucket: impl FnOnce() -> String,
    limit: u64,
) -> Result<(), Refused> {
    if limit == 0 {
        return Ok(());
    }
    let key = bucket();
    match hit_over_limit(state.store.as_ref(), per_minute(&key, limit)).await? {
        Some(hit) => Err(Refused::Limited(hit.resets_in)),
        None => Ok(()),
    }
}

/// A store step, with the request counted against `max` requests a minute on the bucket
/// `bucket` names (0 = off, and then the bucket is not even named): `plain` is the step
/// alone, `limited` the step under a limit, which counts the hit in the same round trip
/// where the store can. Over the limit, or when the counter does not answer, the step does
/// not run.
pub(crate) async fn counted_step<T>(
    bucket: impl FnOnce() -> String,
    max: u64,
    plain: impl AsyncFnOnce() -> Result<T, StoreError>,
    limited: impl AsyncFnOnce(RateLimit<'_>) -> Result<Limited<T>, StoreError>,
) -> Result<T, Refused> {
    if max == 0 {
        return Ok(plain().await?);
    }
    let key = bucket();
    within(limited(per_minute(&key, max)).await?)
}

/// The record behind `digest`, with the request counted against `max` requests a minute on
/// the bucket `bucket` names (0 = off, and then the bucket is not even named): both in one
/// store round trip. Over the limit the record is read all the same, and the request
/// refused.
pub(crate) async fn load_counted(
    state: &AppState,
    bucket: impl FnOnce() -> String,
    max: u64,
    digest: &TokenDigest,
) -> Result<Option<SessionRecord>, Refused> {
    if max == 0 {
        return Ok(state.store.load(digest).await?);
    }
    let (hit, record) = state
        .store
        .hit_rate_limit_and_load(&bucket(), RATE_WINDOW, digest)
        .await?;
    over_limit(hit, max)?;
    Ok(record)
}

/// The limit of `max` requests a minute on the bucket `key`.
pub(crate) fn per_minute(key: &str, max: u64) -> RateLimit<'_> {
    RateLimit {
        key,
        window: RATE_WINDOW,
        max,
    }
}

/// The result of a store step run under a rate limit, or `Limited` when its request went
/// over the limit (and the step did not run).
pub(crate) fn within<T>(step: Limited<T>) -> Result<T, Refused> {
    match step {
        Limited::Ran(result) => Ok(result),
        Limited::Over(hit) => Err(Refused::Limited(hit.resets_in)),
        Limited::CounterTimedOut => Err(Refused::Store(StoreError::Timeout)),
    }
}

/// `Limited` when `hit` went over `limit`; a hit the store could not count (`None`) lets
/// the request through.
pub(crate) fn over_limit(hit: Option<RateLimitHit>, limit: u64) -> Result<(), Refused> {
    match hit {
        Some(hit) if hit.count > limit => Err(Refused::Limited(hit.resets_in)),
        _ => Ok(()),
    }
}

impl From<Refused> for PageError {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Limited(retry_after) => PageError::RateLimited { retry_after },
            Refused::Store(e) => e.into(),
        }
    }
}

impl From<Refused> for ApiError {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Limited(retry_after) => ApiError::rate_limited(retry_after),
            Refused::Store(e) => e.into(),
        }
    }
}

/// How long a client may take to send a (small) request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request body was not read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// Larger than the route accepts.
    TooLarge,
    /// Not all sent within [`BODY_TIMEOUT`] (a slow or stalled upload).
    Timeout,
}

/// Reads a request body of at most `limit` bytes within [`BODY_TIMEOUT`]. A larger one is
/// refused at once when its `Content-Length` says so, else as soon as the bytes read pass
/// the limit, without buffering the rest; a client that stalls does not hold a worker's
/// connection open.
pub(crate) async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, BodyError> {
    // actix-http has already refused a Content-Length that is not a number (400).
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let read = async {
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            // A broken upload reads as what arrived; validation then reports what is missing.
            let Ok(chunk) = chunk else { break };
            if body.len() + chunk.len() > limit {
                return Err(BodyError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    tokio::time::timeout(BODY_TIMEOUT, read)
        .await
        .unwrap_or(Err(BodyError::Timeout))
}

/// The client's address: the socket's peer, unless that peer is a configured trusted proxy;
/// then the right-most `X-Forwarded-For` entry that is not itself a trusted proxy. A
/// client can prepend whatever it likes to the header, so only what trusted hops appended
/// is believed.
pub(crate) fn client_ip(req: &HttpRequest, trusted: &[IpAddr]) -> String {
    let Some(peer) = req.peer_addr().map(|a| a.ip()) else {
        return "unknown".into();
    };
    if !trusted.contains(&peer) {
        return peer.to_string();
    }
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    forwarded
        .iter()
        .rev()
        .map_while(|s| s.parse::<IpAddr>().ok())
        .find(|ip| !trusted.contains(ip))
        .unwrap_or(peer)
        .to_string()
}

fn datetime(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// RFC 3339 in UTC with milliseconds: `2026-12-04T16:38:41.123Z`.
pub fn rfc3339(ms: i64) -> String {
    let mut out = String::with_capacity(24);
    let _ = text::write_rfc3339(&mut out, datetime(ms), 3);
    out
}

/// What a payer reads: `16:53:12 UTC`.
pub fn clock_time(ms: i64) -> String {
    let mut out = String::with_capacity(12);
    let _ = text::write_clock(&mut out, datetime(ms));
    out.push_str(" UTC");
    out
}

/// A date and time for a receipt: `4 Dec 2026, 16:53 UTC`.
pub fn date_time(ms: i64) -> String {
    let fmt =
        format_description!("[day padding:none] [month repr:short] [year], [hour]:[minute] UTC");
    datetime(ms).format(fmt).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rendered_in_utc() {
        assert_eq!(rfc3339(1_796_402_321_123), "2026-12-04T16:38:41.123Z");
        assert_eq!(clock_time(1_796_402_321_123), "16:38:41 UTC");
        assert_eq!(date_time(1_796_402_321_123), "4 Dec 2026, 16:38 UTC");
        // Padding, and the first and last instant of a day.
        assert_eq!(rfc3339(1_704_067_200_007), "2024-01-01T00:00:00.007Z");
        assert_eq!(clock_time(1_704_067_200_007), "00:00:00 UTC");
        assert_eq!(rfc3339(1_704_153_599_999), "2024-01-01T23:59:59.999Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        // Out of the representable range: the epoch, as before.
        assert_eq!(rfc3339(i64::MAX), "1970-01-01T00:00:00.000Z");
    }
}
