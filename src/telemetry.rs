//! Logging: readable lines or JSON lines on stdout, written in batches off the request
//! path, and a request span that never holds a token (it names the route pattern, not the
//! path).

use crate::config::LogFormat;
use crate::routes::pay;
use crate::text;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::{Error, HttpMessage};
use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing::{Event, Span, Subscriber};
use tracing_actix_web::{RequestId, RootSpanBuilder};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// Installs the global subscriber, writing to stdout through a [`BatchWriter`]; keep the
/// guard until exit, so that the last lines are written. `RUST_LOG` overrides the default
/// `info` level.
pub fn init(format: LogFormat) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = BatchWriter::start(io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    // Another subscriber may already be installed (tests build many apps in one process).
    let _ = match format {
        LogFormat::Json => builder
            .fmt_fields(JsonSpanFields)
            .event_format(JsonLines)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
    guard
}

/// The root span of each request: method, route pattern (`/pay/{token}`, never the
/// token itself), and the request id that is also sent as `X-Request-Id`. (Statuses are
/// in the metrics: no line is logged after a response, so a status field would be unseen.)
pub struct RedactedRootSpan;

/// The route pattern a request matched, worked out once by the root span and kept in the
/// request's extensions for the latency metric: finding it walks the routes again and runs
/// each dynamic one's regex, a few per cent of a pay page's time.
#[derive(Clone)]
pub struct Route(pub Cow<'static, str>);

/// The pattern of the route that matches `request` (`/pay/{token}`, never the path, which
/// may hold a token), or `unmatched`.
pub fn route_pattern(request: &ServiceRequest) -> Cow<'static, str> {
    if let Some(Route(route)) = request.extensions().get::<Route>() {
        return route.clone();
    }
    // The pay pages are routed by hand: the router knows only their scope.
    if let Some(route) = pay::route_of(request.path()) {
        return Cow::Borrowed(route);
    }
    request
        .match_pattern()
        .map_or(Cow::Borrowed("unmatched"), Cow::Owned)
}

impl RootSpanBuilder for RedactedRootSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let route = route_pattern(request);
        request.extensions_mut().insert(Route(route.clone()));
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(ToString::to_string)
            .unwrap_or_default();
        tracing::info_span!(
            "request",
            method = %request.method(),
            route = %route,
            request_id = %request_id,
        )
    }

    fn on_request_end<B: MessageBody>(_: Span, _: &Result<ServiceResponse<B>, Error>) {}
}

/// JSON lines written straight into the line buffer: `timestamp`, `level`, the event's
/// fields (`message` among them), `target`, and `spans` from the root (each span's name and
/// fields). The stock JSON formatter gathers the fields into a map of JSON values and
/// parses every span's fields again for each line; on the pay page that was a fifth of
/// the request's CPU time.
pub struct JsonLines;

impl<S> FormatEvent<S, JsonSpanFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonSpanFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        LINE.with(|line| match line.try_borrow_mut() {
            Ok(mut line) => {
                line.clear();
                write_json_line(ctx, &mut *line, event)?;
                let written = writer.write_str(&line);
                if line.capacity() > LINE_CAPACITY_KEPT {
                    *line = String::new();
                }
                written
            }
            // Formatting a value of this line logged a line of its own (a global
            // subscriber delivers such nested events): that one goes straight out.
            Err(_) => write_json_line(ctx, &mut writer, event),
        })
    }
}

thread_local! {
    /// Where a line is put together before it goes to the writer in one piece: a write to
    /// a `String` is inlined, each write to the `Writer` is a dynamic call, and a line is
    /// a few dozen writes.
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// The most a thread's line buffer keeps between lines; an unusually long line's room is
/// given back.
const LINE_CAPACITY_KEPT: usize = 16 * 1024;

fn write_json_line<S, W>(
    ctx: &FmtContext<'_, S, JsonSpanFields>,
    out: &mut W,
    event: &Event<'_>,
) -> fmt::Result
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: fmt::Write,
{
    let meta = event.metadata();
    out.write_str("{\"timestamp\":\"")?;
    text::write_rfc3339(out, time::OffsetDateTime::now_utc(), 6)?;
    out.write_str("\",\"level\":\"")?;
    out.write_str(meta.level().as_str())?;
    out.write_char('"')?;
    let mut fields = JsonFieldWriter {
        out: &mut *out,
        result: Ok(()),
    };
    event.record(&mut fields);
    fields.result?;
    out.write_str(",\"target\":")?;
    write_json_str(out, meta.target())?;
    if let Some(scope) = ctx.event_scope() {
        out.write_str(",\"spans\":[")?;
        for (i, span) in scope.from_root().enumerate() {
            if i > 0 {
                out.write_char(',')?;
            }
            out.write_str("{\"name\":")?;
            write_json_str(out, span.name())?;
            if let Some(stored) = span.extensions().get::<FormattedFields<JsonSpanFields>>() {
                out.write_str(&stored.fields)?;
            }
            out.write_char('}')?;
        }
        out.write_char(']')?;
    }
    out.write_str("}\n")
}

/// Keeps a span's fields as the `,"name":value` pairs [`JsonLines`] copies into each line
/// of the span.
pub struct JsonSpanFields;

impl<'writer> FormatFields<'writer> for JsonSpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut pairs = JsonFieldWriter {
            out: &mut writer,
            result: Ok(()),
        };
        fields.record(&mut pairs);
        pairs.result
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &Record<'_>,
    ) -> fmt::Result {
        self.format_fields(current.as_writer(), fields)
    }
}

/// Writes an event's or span's fields as `,"name":value` pairs.
struct JsonFieldWriter<'a, W: fmt::Write> {
    out: &'a mut W,
    result: fmt::Result,
}

impl<W: fmt::Write> JsonFieldWriter<'_, W> {
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        // `,"name":` in as few writes as the name allows: each is a dynamic call.
        self.result = (|| {
            self.out.write_str(",\"")?;
            JsonEscaped(&mut *self.out).write_str(field.name())?;
            self.out.write_str("\":")?;
            value(self.out)
        })();
    }
}

impl<W: fmt::Write> Visit for JsonFieldWriter<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, |out| write_json_str(out, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |out| write!(out, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.field(field, |out| write!(out, "{value}"));
        } else {
            self.field(field, |out| write_json_str(out, &value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, |out| {
            out.write_char('"')?;
            write!(JsonEscaped(&mut *out), "{value:?}")?;
            out.write_char('"')
        });
    }
}

fn write_json_str(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    out.write_char('"')?;
    JsonEscaped(&mut *out).write_str(text)?;
    out.write_char('"')
}

/// Escapes what passes through it for the inside of a JSON string.
struct JsonEscaped<W>(W);

impl<W: fmt::Write> fmt::Write for JsonEscaped<W> {
    /// Every byte that needs escaping is ASCII, and no byte of a multi-byte character is
    /// below 0x80, so the slices between them stay whole characters.
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let bytes = text.as_bytes();
        let mut plain = 0;
        while let Some(offset) = first_to_escape(&bytes[plain..]) {
            let at = plain + offset;
            self.0.write_str(&text[plain..at])?;
            match bytes[at] {
                b'"' => self.0.write_str("\\\"")?,
                b'\\' => self.0.write_str("\\\\")?,
                b'\n' => self.0.write_str("\\n")?,
                b'\r' => self.0.write_str("\\r")?,
                b'\t' => self.0.write_str("\\t")?,
                control => write!(self.0, "\\u{control:04x}")?,
            }
            plain = at + 1;
        }
        self.0.write_str(&text[plain..])
    }
}

/// True for a byte JSON does not allow as it is inside a string.
fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// Where the first byte of `bytes` that [`needs_escape`] is, looking at eight bytes at a
/// time: nearly every string a log line carries has none, and a byte-by-byte scan was
/// most of what writing a line cost.
fn first_to_escape(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // The high bit of each byte of the result is set where a byte of `word` is zero,
    // possibly also above the first zero byte (a borrow), never where none is: a hint.
    let zero_byte = |word: u64| word.wrapping_sub(ONES) & !word & HIGHS;
    let mut chunks = bytes.chunks_exact(8);
    let mut start = 0;
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes(chunk.try_into().unwrap_or([0; 8]));
        // Bytes below 0x20: (byte & 0xe0) == 0. Quotes and backslashes: byte ^ c == 0.
        let hint = zero_byte(word & u64::from_ne_bytes([0xe0; 8]))
            | zero_byte(word ^ u64::from_ne_bytes([b'"'; 8]))
            | zero_byte(word ^ u64::from_ne_bytes([b'\\'; 8]));
        if hint != 0
            && let Some(offset) = chunk.iter().position(|&b| needs_escape(b))
        {
            return Some(start + offset);
        }
        start += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| needs_escape(b))
        .map(|offset| start + offset)
}

/// How long the writer thread lets lines gather before it writes them: the most a line
/// waits, and what turns thousands of lines a second into a few hundred writes.
const BATCH_WINDOW: Duration = Duration::from_millis(5);
/// Pending bytes that wake the writer before the window ends.
const BATCH_HIGH_WATER: usize = 256 * 1024;
/// Pending bytes at which a logging thread waits for the writer: the log is never lossy,
/// and a stalled stdout cannot grow memory without bound.
const BATCH_LIMIT: usize = 16 * 1024 * 1024;

/// Log lines written in batches by one thread. A request only appends its line to a
/// shared buffer — no system call and no stdout lock on the request path; the writer
/// thread writes what gathered, at most `BATCH_WINDOW` after the first line of a batch.
/// Lines keep their order. Dropping the [`LogGuard`] writes what is left.
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Batch>,
}

struct Batch {
    pending: Mutex<Pending>,
    /// Signalled when a batch starts, passes the high-water mark, or the log closes.
    ready: Condvar,
    /// Signalled when the writer has taken a batch.
    drained: Condvar,
}

#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    closed: bool,
}

/// Keeps the writer thread; dropping it writes every pending line and ends the thread.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    shared: Arc<Batch>,
    thread: Option<JoinHandle<()>>,
}

impl BatchWriter {
    /// Starts the writer thread over `out`.
    pub fn start<W: Write + Send + 'static>(mut out: W) -> (BatchWriter, LogGuard) {
        let shared = Arc::new(Batch {
            pending: Mutex::new(Pending::default()),
            ready: Condvar::new(),
            drained: Condvar::new(),
        });
        let batch = shared.clone();
        let thread = std::thread::Builder::new()
            .name("paylink-log".into())
            .spawn(move || {
                let mut spare = Vec::new();
                while batch.next(&mut spare) {
                    // Nowhere to report a failed log write but the log itself.
                    let _ = out.write_all(&spare).and_then(|()| out.flush());
                    spare.clear();
                }
            })
            .expect("the log writer thread starts");
        (
            BatchWriter {
                shared: shared.clone(),
            },
            LogGuard {
                shared,
                thread: Some(thread),
            },
        )
    }
}

impl Batch {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a batch and swaps it into `into` (empty); false once closed and drained.
    fn next(&self, into: &mut Vec<u8>) -> bool {
        let mut pending = self.lock();
        while pending.lines.is_empty() && !pending.closed {
            pending = self.ready.wait(pending).unwrap_or_else(|e| e.into_inner());
        }
        if pending.lines.is_empty() {
            return false;
        }
        let started = Instant::now();
        while !pending.closed && pending.lines.len() < BATCH_HIGH_WATER {
            let Some(left) = BATCH_WINDOW.checked_sub(started.elapsed()) else {
                break;
            };
            pending = self
                .ready
                .wait_timeout(pending, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        std::mem::swap(&mut pending.lines, into);
        self.drained.notify_all();
        true
    }

    fn append(&self, line: &[u8]) {
        let mut pending = self.lock();
        while pending.lines.len() >= BATCH_LIMIT && !pending.closed {
            pending = self
                .drained
                .wait(pending)
                .unwrap_or_else(|e| e.into_inner());
        }
        let was_empty = pending.lines.is_empty();
        pending.lines.extend_from_slice(line);
        let high = pending.lines.len() >= BATCH_HIGH_WATER;
        drop(pending);
        if was_empty || high {
            self.ready.notify_one();
        }
    }
}

impl Write for BatchWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.shared.append(buf);
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.shared.append(buf);
        Ok(())
    }

    /// Lines are written by the writer thread, within `BATCH_WINDOW`.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = BatchWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The word-at-a-time scan finds what a byte-by-byte one finds, wherever the byte
        /// sits in its word and whatever surrounds it (multi-byte characters included).
        #[test]
        fn the_fast_scan_finds_the_first_byte_to_escape(
            bytes in proptest::collection::vec(
                prop_oneof![
                    any::<u8>(),
                    Just(b'"'), Just(b'\\'), Just(0x1f), Just(0x20), Just(0x7f), Just(0xe0),
                ],
                0..40,
            )
        ) {
            prop_assert_eq!(
                first_to_escape(&bytes),
                bytes.iter().position(|&b| needs_escape(b))
            );
        }

        /// Whatever a string holds, its escaped form read back as a JSON string is it.
        #[test]
        fn escaped_text_reads_back_as_the_same_string(text in any::<String>()) {
            let mut escaped = String::from("\"");
            JsonEscaped(&mut escaped).write_str(&text).unwrap();
            escaped.push('"');
            let read: String = serde_json::from_str(&escaped).unwrap();
            prop_assert_eq!(read, text);
        }
    }

    #[test]
    fn every_byte_that_needs_escaping_is_found_in_every_position_of_a_word() {
        for needle in (0u8..0x20).chain([b'"', b'\\']) {
            for at in 0..24 {
                let mut bytes = vec![b'a'; 24];
                bytes[at] = needle;
                assert_eq!(first_to_escape(&bytes), Some(at), "{needle:#x} at {at}");
            }
        }
        let plain: Vec<u8> = (0x20u8..=0xff)
            .filter(|&b| b != b'"' && b != b'\\')
            .collect();
        assert_eq!(first_to_escape(&plain), None);
    }

    /// An output the test can read while the writer thread owns it.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_from_many_threads_arrive_whole_in_order_and_all_by_the_guard_drop() {
        let out = Shared::default();
        let (writer, guard) = BatchWriter::start(out.clone());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        writer
                            .write_all(
                                format!("thread {t} line {i:05} {}\n", "x".repeat(40)).as_bytes(),
                            )
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 80_000);
        for t in 0..4 {
            let mine: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| l.starts_with(&format!("thread {t} ")))
                .collect();
            assert_eq!(mine.len(), 20_000);
            for (i, line) in mine.iter().enumerate() {
                assert!(
                    line.starts_with(&format!("thread {t} line {i:05} ")),
                    "{line}"
                );
            }
        }
    }

    /// A subscriber writing [`JsonLines`] into the returned output.
    fn json_subscriber() -> (Shared, impl Subscriber + Send + Sync) {
        let out = Shared::default();
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .fmt_fields(JsonSpanFields)
            .event_format(JsonLines)
            .finish();
        (out, subscriber)
    }

    #[test]
    fn json_lines_carry_escaped_fields_and_the_span_list_from_the_root() {
        let (out, subscriber) = json_subscriber();
        tracing::subscriber::with_default(subscriber, || {
            let request = tracing::info_span!(
                "request",
                method = "GET",
                request_id = %"r-1",
                late = tracing::field::Empty
            );
            request.record("late", 3);
            let _request = request.enter();
            let step = tracing::info_span!("step");
            let _step = step.enter();
            tracing::warn!(
                event = "session.viewed",
                text = "quote \" backslash \\ line\nbreak \u{1} é",
                count = 5_u64,
                delta = -3_i64,
                ok = true,
                shown = %"displayed",
                "seen {}",
                7
            );
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let line: serde_json::Value = serde_json::from_str(text.trim_end()).expect(&text);
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["message"], "seen 7");
        assert_eq!(line["event"], "session.viewed");
        assert_eq!(line["text"], "quote \" backslash \\ line\nbreak \u{1} é");
        assert_eq!(line["count"], 5);
        assert_eq!(line["delta"], -3);
        assert_eq!(line["ok"], true);
        assert_eq!(line["shown"], "displayed");
        assert_eq!(line["target"], module_path!());
        assert_eq!(
            line["spans"],
            serde_json::json!([
                {"name": "request", "method": "GET", "request_id": "r-1", "late": 3},
                {"name": "step"}
            ])
        );
        let stamp = line["timestamp"].as_str().unwrap();
        assert!(
            time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339)
                .is_ok(),
            "{stamp}"
        );
    }

    /// A line formatted while the thread's line buffer is in use (a value of another line
    /// logging, under the global subscriber) is written whole without the buffer, and the
    /// buffer serves the next line.
    #[test]
    fn a_line_formatted_while_the_line_buffer_is_busy_comes_out_whole() {
        let (out, subscriber) = json_subscriber();
        tracing::subscriber::with_default(subscriber, || {
            LINE.with(|line| {
                let _busy = line.borrow_mut();
                tracing::info!(value = "v", "while busy");
            });
            tracing::info!("after");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect(l))
            .collect();
        let messages: Vec<&str> = lines
            .iter()
            .map(|l| l["message"].as_str().unwrap())
            .collect();
        assert_eq!(messages, ["while busy", "after"], "{text}");
        assert_eq!(lines[0]["value"], "v");
    }

    #[test]
    fn a_lone_line_is_written_without_more_lines_or_a_drop() {
        let out = Shared::default();
        let (mut writer, _guard) = BatchWriter::start(out.clone());
        writer.write_all(b"one line\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while out.0.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "the line was never written");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(out.0.lock().unwrap().as_slice(), b"one line\n");
    }
}
