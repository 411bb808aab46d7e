use super::has_control_chars;
use std::fmt;

/// The merchant's order reference: 1–128 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderId(Box<str>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OrderIdError {
    #[error("orderId must be 1 to 128 characters")]
    Length,
    #[error("orderId must not contain control characters")]
    ControlCharacter,
}

impl OrderId {
    pub fn parse(s: &str) -> Result<Self, OrderIdError> {
        let len = s.chars().count();
        if !(1..=128).contains(&len) {
            Err(OrderIdError::Length)
        } else if has_control_chars(s) {
            Err(OrderIdError::ControlCharacter)
        } else {
            Ok(OrderId(s.into()))
        }
    }
}

impl AsRef<str> for OrderId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A free-text description shown to the payer: at most 200 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description(Box<str>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DescriptionError {
    #[error("description must be at most 200 characters")]
    TooLong,
    #[error("description must not contain control characters")]
    ControlCharacter,
}

impl Description {
    pub fn parse(s: &str) -> Result<Self, DescriptionError> {
        if s.chars().count() > 200 {
            Err(DescriptionError::TooLong)
        } else if has_control_chars(s) {
            Err(DescriptionError::ControlCharacter)
        } else {
            Ok(Description(s.into()))
        }
    }
}

impl AsRef<str> for Description {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ids_are_counted_in_characters_not_bytes() {
        assert!(OrderId::parse(&"é".repeat(128)).is_ok());
        assert_eq!(OrderId::parse(&"é".repeat(129)), Err(OrderIdError::Length));
        assert_eq!(OrderId::parse(""), Err(OrderIdError::Length));
        assert_eq!(OrderId::parse("a\nb"), Err(OrderIdError::ControlCharacter));
        assert_eq!(
            OrderId::parse("a\u{85}b"),
            Err(OrderIdError::ControlCharacter)
        );
    }

    #[test]
    fn descriptions_are_bounded_and_printable() {
        assert!(Description::parse("").is_ok());
        assert!(Description::parse(&"x".repeat(200)).is_ok());
        assert_eq!(
            Description::parse(&"x".repeat(201)),
            Err(DescriptionError::TooLong)
        );
        assert_eq!(
            Description::parse("tab\there"),
            Err(DescriptionError::ControlCharacter)
        );
    }
}
