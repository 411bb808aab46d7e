//! The payer pages' stylesheet and script, built into the binary and answered from memory.
//!
//! Every pay page asks for both, so they are served as cheaply as the page itself: no file
//! is opened and no blocking thread is woken (serving them from disk answered fewer than a
//! tenth as many requests a second as the page). The binary also needs no directory beside
//! it. Each carries a strong `ETag` (a digest of its bytes) and may be kept for
//! [`MAX_AGE_SECONDS`]; a browser that asks again with `If-None-Match` gets a bodiless 304.

use crate::error::PageError;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

/// How long a browser may use an asset without asking again. Assets keep their names across
/// releases, so this is short: a new release's stylesheet reaches every payer within it.
pub const MAX_AGE_SECONDS: u32 = 300;

/// One file under `/static/`.
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
    /// `"<first 16 bytes of the SHA-256 of body, hex>"`, quotes included.
    etag: HeaderValue,
}

/// Every asset there is; any other name under `/static/` is 404.
static ASSETS: LazyLock<[Asset; 2]> = LazyLock::new(|| {
    [
        Asset::new(
            "paylink.css",
            "text/css; charset=utf-8",
            include_bytes!("../../static/paylink.css"),
        ),
        Asset::new(
            "countdown.js",
            "text/javascript; charset=utf-8",
            include_bytes!("../../static/countdown.js"),
        ),
    ]
});

static CACHE_CONTROL: LazyLock<HeaderValue> = LazyLock::new(|| {
    HeaderValue::from_str(&format!("public, max-age={MAX_AGE_SECONDS}"))
        .expect("a number makes a valid header value")
});

impl Asset {
    fn new(name: &'static str, content_type: &'static str, body: &'static [u8]) -> Asset {
        let digest = Sha256::digest(body);
        let etag = format!("\"{}\"", hex::encode(&digest[..16]));
        Asset {
            name,
            content_type,
            body,
            etag: HeaderValue::from_str(&etag).expect("hex digits make a valid header value"),
        }
    }

    /// The asset called `name`, if there is one.
    pub fn named(name: &str) -> Option<&'static Asset> {
        ASSETS.iter().find(|asset| asset.name == name)
    }

    /// The quoted entity tag this asset is sent with.
    #[cfg(test)]
    fn etag(&self) -> &str {
        self.etag.to_str().unwrap_or_default()
    }

    /// True when an `If-None-Match` value names this asset's current bytes. Weak tags match
    /// too (RFC 9110 compares them weakly for this header), as does `*`.
    fn matches(&self, if_none_match: &[u8]) -> bool {
        if_none_match
            .split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
            .any(|tag| {
                tag == b"*" || tag.strip_prefix(b"W/").unwrap_or(tag) == self.etag.as_bytes()
            })
    }
}

/// Every request under `/static`: `GET` and `HEAD` of a known asset answer it (or 304),
/// other methods on it 405, anything else the 404 page.
pub async fn serve(req: HttpRequest) -> HttpResponse {
    let Some(asset) = req.path().strip_prefix("/static/").and_then(Asset::named) else {
        return PageError::NotFound.error_response();
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut response = PageError::MethodNotAllowed.error_response();
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let fresh = req
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .any(|value| asset.matches(value.as_bytes()));
    let status = if fresh {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::OK
    };
    let mut response = HttpResponse::build(status);
    response
        .insert_header((header::ETAG, asset.etag.clone()))
        .insert_header((header::CACHE_CONTROL, CACHE_CONTROL.clone()));
    if fresh {
        return response.finish();
    }
    response
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        ))
        .body(asset.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_its_file_and_a_distinct_quoted_tag() {
        let css = Asset::named("paylink.css").unwrap();
        let js = Asset::named("countdown.js").unwrap();
        assert_eq!(css.body, std::fs::read("static/paylink.css").unwrap());
        assert_eq!(js.body, std::fs::read("static/countdown.js").unwrap());
        for asset in [css, js] {
            let tag = asset.etag();
            assert_eq!(tag.len(), 34, "{tag}");
            assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");
        }
        assert_ne!(css.etag(), js.etag());
        assert!(Asset::named("").is_none());
        assert!(Asset::named("../Cargo.toml").is_none());
        assert!(Asset::named("PAYLINK.CSS").is_none());
    }

    #[test]
    fn if_none_match_lists_are_read_tag_by_tag() {
        let css = Asset::named("paylink.css").unwrap();
        let tag = css.etag();
        assert!(css.matches(tag.as_bytes()));
        assert!(css.matches(format!("W/{tag}").as_bytes()));
        assert!(css.matches(format!("\"other\" ,  {tag}").as_bytes()));
        assert!(css.matches(b"*"));
        assert!(!css.matches(b""));
        assert!(!css.matches(b"\"other\""));
        assert!(!css.matches(tag.trim_matches('"').as_bytes()));
        let js = Asset::named("countdown.js").unwrap();
        assert!(!css.matches(js.etag().as_bytes()));
    }
}
