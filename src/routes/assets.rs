//! The payer pages' stylesheet and script, built into the binary and answered from memory.
//!
//! Every pay page asks for both, so they are served as cheaply as the page itself: no file
//! is opened and no blocking thread is woken (serving them from disk answered fewer than a
//! tenth as many requests a second as the page). The binary also needs no directory beside
//! it. Each carries a strong `ETag` (a digest of its bytes); a browser that asks again with
//! `If-None-Match` gets a bodiless 304.
//!
//! The pages link each asset by its versioned URL ([`stylesheet_url`], [`script_url`]):
//! `/static/<name>?v=<version>`,
//! where the version is the hex of the `ETag`. Those bytes never change under that URL, so
//! the answer may be kept for a year without asking again ([`IMMUTABLE`]); a release with
//! new bytes links a new URL, which every page then loads at once. Any other URL of an
//! asset (no version, or a version that is not the current one, as from a page rendered by
//! an older release) gets the current bytes with a short lifetime, [`MAX_AGE_SECONDS`].

use crate::error::PageError;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

/// How long a browser may use an asset fetched by any URL but its current versioned one
/// without asking again: short, because those bytes may change under that URL.
pub const MAX_AGE_SECONDS: u32 = 300;

/// The `Cache-Control` of an asset fetched by its current versioned URL.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// One file under `/static/`.
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
    /// `"<version>"`, quotes included.
    etag: HeaderValue,
    /// `/static/<name>?v=<version>`, where the version is the first 16 bytes of the
    /// SHA-256 of the body, hex.
    url: String,
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
        let version = hex::encode(&Sha256::digest(body)[..16]);
        Asset {
            name,
            content_type,
            body,
            etag: HeaderValue::from_str(&format!("\"{version}\""))
                .expect("hex digits make a valid header value"),
            url: format!("/static/{name}?v={version}"),
        }
    }

    /// The hex between the quotes of the `ETag`.
    fn version(&self) -> &str {
        let tag = self.etag.to_str().unwrap_or_default();
        tag.get(1..tag.len().saturating_sub(1)).unwrap_or_default()
    }

    /// True when `query` is exactly this asset's current version, `v=<version>`.
    fn is_current(&self, query: &str) -> bool {
        query.strip_prefix("v=") == Some(self.version())
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

/// The URL pages link the stylesheet by, with its current version.
pub fn stylesheet_url() -> &'static str {
    &ASSETS[0].url
}

/// The URL the pay page links the countdown script by, with its current version.
pub fn script_url() -> &'static str {
    &ASSETS[1].url
}

/// Every request under `/static`: `GET` and `HEAD` of a known asset answer it (or 304),
/// other methods on it 405, anything else the 404 page.
pub async fn serve(req: HttpRequest) -> HttpResponse {
    let Some(asset) = req.path().strip_prefix("/static/").and_then(Asset::named) else {
        return PageError::NotFound.error_response();
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return crate::startup::method_not_allowed(&req, "GET, HEAD");
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
    let cache_control = if asset.is_current(req.query_string()) {
        HeaderValue::from_static(IMMUTABLE)
    } else {
        CACHE_CONTROL.clone()
    };
    let mut response = HttpResponse::build(status);
    response
        .insert_header((header::ETAG, asset.etag.clone()))
        .insert_header((header::CACHE_CONTROL, cache_control));
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
        assert_eq!(
            stylesheet_url(),
            format!("/static/paylink.css?v={}", css.version())
        );
        assert_eq!(
            script_url(),
            format!("/static/countdown.js?v={}", js.version())
        );
        assert_eq!(css.version(), tag_hex(css));
        assert!(css.is_current(&format!("v={}", css.version())));
        for stale in [
            "",
            "v=",
            "v=0123",
            "x=1",
            &format!("v={}&x=1", css.version()),
        ] {
            assert!(!css.is_current(stale), "{stale}");
        }
        assert!(!css.is_current(&format!("v={}", js.version())));
        assert!(Asset::named("").is_none());
        assert!(Asset::named("../Cargo.toml").is_none());
        assert!(Asset::named("PAYLINK.CSS").is_none());
    }

    fn tag_hex(asset: &Asset) -> &str {
        asset.etag().trim_matches('"')
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
