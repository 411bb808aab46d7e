//! One struct per page; every page extends `_layout.html`. Escaping is on for all of them.

use crate::domain::{CardError, CardField};
use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use askama::Template;
use std::borrow::Cow;
use std::sync::LazyLock;

/// Bytes reserved for a rendered page; the pay page with every error shown is about 3 KB.
const PAGE_CAPACITY: usize = 4 * 1024;

/// Renders a page with `status`. A template that fails to render is a bare 500.
pub fn render<T: Template>(status: StatusCode, page: &T) -> HttpResponse {
    // Room for the largest page up front: growing the buffer while rendering copied it.
    let mut html = String::with_capacity(PAGE_CAPACITY);
    match page.render_into(&mut html) {
        Ok(()) => HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .body(html),
        Err(e) => {
            tracing::error!(error = %e, "template failed to render");
            HttpResponse::InternalServerError()
                .content_type("text/plain; charset=utf-8")
                .body("Internal Server Error")
        }
    }
}

/// One input of the card form, with its error when the last submission had one.
pub struct FormField {
    pub name: &'static str,
    pub label: &'static str,
    pub autocomplete: &'static str,
    pub inputmode: &'static str,
    pub placeholder: &'static str,
    pub maxlength: u8,
    pub error: Option<&'static str>,
}

impl FormField {
    /// The card form's inputs as HTML, marked with `errors`. Without errors, as on every
    /// view of an open link, they are the same on every page and are rendered only once.
    pub fn card_form_html(errors: &[CardError]) -> Cow<'static, str> {
        static UNMARKED: LazyLock<String> = LazyLock::new(|| FormField::render_form(&[]));
        if errors.is_empty() {
            Cow::Borrowed(UNMARKED.as_str())
        } else {
            Cow::Owned(FormField::render_form(errors))
        }
    }

    /// Rendering into a `String` fails only if a value's `Display` does, and no field's
    /// value can.
    fn render_form(errors: &[CardError]) -> String {
        let fields = CardFields {
            fields: FormField::card_form(errors),
        };
        fields.render().unwrap_or_default()
    }

    /// The card form's four inputs, marked with `errors`.
    pub fn card_form(errors: &[CardError]) -> Vec<FormField> {
        let error_for =
            |field: CardField| errors.iter().find(|e| e.field == field).map(|e| e.message);
        vec![
            FormField {
                name: CardField::CardholderName.name(),
                label: "Name on card",
                autocomplete: "cc-name",
                inputmode: "text",
                placeholder: "",
                maxlength: 100,
                error: error_for(CardField::CardholderName),
            },
            FormField {
                name: CardField::CardNumber.name(),
                label: "Card number",
                autocomplete: "cc-number",
                inputmode: "numeric",
                placeholder: "1234 1234 1234 1234",
                maxlength: 23,
                error: error_for(CardField::CardNumber),
            },
            FormField {
                name: CardField::Expiry.name(),
                label: "Expiry date (MM/YY)",
                autocomplete: "cc-exp",
                inputmode: "numeric",
                placeholder: "MM/YY",
                maxlength: 7,
                error: error_for(CardField::Expiry),
            },
            FormField {
                name: CardField::Cvc.name(),
                label: "Security code (CVC)",
                autocomplete: "cc-csc",
                inputmode: "numeric",
                placeholder: "123",
                maxlength: 4,
                error: error_for(CardField::Cvc),
            },
        ]
    }
}

/// The open link: "Complete your payment".
#[derive(Template)]
#[template(path = "pay.html")]
pub struct PayPage<'a> {
    pub merchant_name: &'a str,
    pub order_id: &'a str,
    pub amount: String,
    pub description: Option<&'a str>,
    pub expires_at_iso: String,
    pub expires_at_text: String,
    pub expires_at_ms: i64,
    pub now_ms: i64,
    pub decline_reason: Option<String>,
    /// The card form's inputs, from [`FormField::card_form_html`].
    pub fields: Cow<'static, str>,
    pub has_errors: bool,
}

/// The card form's inputs, each marked with its error if it has one.
#[derive(Template)]
#[template(path = "card_fields.html")]
struct CardFields {
    fields: Vec<FormField>,
}

/// After an approved payment.
#[derive(Template)]
#[template(path = "receipt.html")]
pub struct ReceiptPage<'a> {
    pub merchant_name: &'a str,
    pub order_id: &'a str,
    pub amount: String,
    pub card_last4: &'a str,
    pub paid_at_text: String,
}

/// 410: "Link Expired", for every link that cannot be paid.
#[derive(Template)]
#[template(path = "gone.html")]
pub struct GonePage {
    pub already_paid: bool,
}

/// 503: the store is away.
#[derive(Template)]
#[template(path = "unavailable.html")]
pub struct UnavailablePage;

/// Any other error a payer can meet.
#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub title: &'static str,
    pub message: &'static str,
}

pub struct MerchantRow {
    pub id: String,
    pub name: String,
    pub active: Option<u64>,
}

pub struct EventCount {
    pub name: &'static str,
    pub last_hour: u64,
    pub since_start: u64,
}

pub struct EventRow {
    pub at: String,
    pub event: &'static str,
    pub merchant_id: String,
    pub order_id: String,
    pub token_ref: String,
}

/// The operator dashboard.
#[derive(Template)]
#[template(path = "admin.html")]
pub struct AdminPage {
    pub active_total: Option<u64>,
    pub merchants: Vec<MerchantRow>,
    pub totals: Vec<EventCount>,
    pub store_ok: bool,
    pub store_ms: String,
    pub backend: &'static str,
    pub events: Vec<EventRow>,
}

/// The dashboard's login form.
#[derive(Template)]
#[template(path = "admin_login.html")]
pub struct AdminLoginPage {
    pub failed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pay template writes a form field's own strings without escaping them, which is
    /// right only while none of them means anything to HTML.
    #[test]
    fn form_field_strings_need_no_escaping() {
        for field in FormField::card_form(&[]) {
            for text in [
                field.name,
                field.label,
                field.autocomplete,
                field.inputmode,
                field.placeholder,
            ] {
                assert!(
                    !text.contains(['<', '>', '&', '"', '\'']),
                    "{text:?} would need escaping"
                );
            }
        }
    }
}
