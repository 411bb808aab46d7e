//! Times and figures written digit by digit. They are on every pay page and in every log
//! line, where `format!` padding and the `time` crate's format descriptions cost several
//! times as much.

use std::fmt::{self, Write};
use time::OffsetDateTime;

/// The last `width` (at most 20) decimal digits of `value`, zero-padded.
pub fn write_digits<W: Write + ?Sized>(out: &mut W, value: u64, width: u32) -> fmt::Result {
    let mut buf = [b'0'; 20];
    let digits = &mut buf[..(width as usize).min(20)];
    put_digits(digits, value);
    out.write_str(ascii(digits))
}

/// RFC 3339 in UTC with `fraction` digits (1 to 9) of the second:
/// `2026-12-04T16:38:41.123Z`. `t` must be in UTC. Years are written with four digits: no
/// instant of ours is before year 0 or after 9999.
pub fn write_rfc3339<W: Write + ?Sized>(
    out: &mut W,
    t: OffsetDateTime,
    fraction: u32,
) -> fmt::Result {
    let fraction = fraction.clamp(1, 9) as usize;
    let mut buf = *b"0000-00-00T00:00:00.000000000Z";
    put_digits(&mut buf[0..4], u64::try_from(t.year()).unwrap_or(0));
    put_digits(&mut buf[5..7], u8::from(t.month()).into());
    put_digits(&mut buf[8..10], t.day().into());
    put_clock(&mut buf[11..19], t);
    let nanos = u64::from(t.nanosecond());
    put_digits(
        &mut buf[20..20 + fraction],
        nanos / 10u64.pow(9 - fraction as u32),
    );
    buf[20 + fraction] = b'Z';
    out.write_str(ascii(&buf[..21 + fraction]))
}

/// `16:38:41`.
pub fn write_clock<W: Write + ?Sized>(out: &mut W, t: OffsetDateTime) -> fmt::Result {
    let mut buf = *b"00:00:00";
    put_clock(&mut buf, t);
    out.write_str(ascii(&buf))
}

/// `hh:mm:ss` into the 8 bytes of `slot`.
fn put_clock(slot: &mut [u8], t: OffsetDateTime) {
    put_digits(&mut slot[0..2], t.hour().into());
    slot[2] = b':';
    put_digits(&mut slot[3..5], t.minute().into());
    slot[5] = b':';
    put_digits(&mut slot[6..8], t.second().into());
}

/// The last `slot.len()` decimal digits of `value` into `slot`, zero-padded.
fn put_digits(slot: &mut [u8], mut value: u64) {
    for byte in slot.iter_mut().rev() {
        *byte = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Bytes this module wrote: ASCII digits and separators, so always text.
fn ascii(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::format_description::well_known::Rfc3339;

    fn rfc3339(t: OffsetDateTime, fraction: u32) -> String {
        let mut out = String::new();
        write_rfc3339(&mut out, t, fraction).unwrap();
        out
    }

    #[test]
    fn digits_are_zero_padded_to_the_width() {
        let mut out = String::new();
        write_digits(&mut out, 7, 3).unwrap();
        write_digits(&mut out, 0, 2).unwrap();
        write_digits(&mut out, 123_456, 6).unwrap();
        assert_eq!(out, "00700123456");
    }

    #[test]
    fn instants_are_written_as_the_time_crate_reads_them() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_796_402_321_123_456_789).unwrap();
        assert_eq!(rfc3339(t, 3), "2026-12-04T16:38:41.123Z");
        assert_eq!(rfc3339(t, 6), "2026-12-04T16:38:41.123456Z");
        assert_eq!(rfc3339(t, 9), "2026-12-04T16:38:41.123456789Z");
        for nanos in [0, 1_704_067_200_000_000_007, 253_402_300_799_999_999_999] {
            let t = OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap();
            let text = rfc3339(t, 9);
            assert_eq!(OffsetDateTime::parse(&text, &Rfc3339).unwrap(), t, "{text}");
        }
        let mut clock = String::new();
        write_clock(&mut clock, t).unwrap();
        assert_eq!(clock, "16:38:41");
    }
}
