//! The server's log on stderr, written in batches: a request line per proxied request is too
//! many writes (and, under systemd, too many journal messages) to make one by one. Lines at
//! INFO and below gather in a buffer that a thread writes out every [`PAUSE`] (or at once past
//! [`MAX_HELD`] bytes); a WARN or ERROR line is written at once, after what gathered before
//! it, so the order holds. [`flush`] writes what is left before the program ends.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long an INFO line may wait in the buffer.
const PAUSE: Duration = Duration::from_millis(100);
/// A buffer this large is written out at once.
const MAX_HELD: usize = 64 * 1024;

static SHARED: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
/// Whether the thread that writes the buffer out runs (else every line goes out at once).
static RUNNING: AtomicBool = AtomicBool::new(false);

/// The writer for `tracing_subscriber::fmt`; starts the thread that writes the buffer out.
#[derive(Clone)]
pub struct Batched {
    held: Arc<Mutex<Vec<u8>>>,
}

impl Batched {
    /// `batched`: start the thread that writes the buffer out; without it every line is
    /// written at once.
    pub fn start(batched: bool) -> Self {
        let held = SHARED
            .get_or_init(|| {
                let held = Arc::new(Mutex::new(Vec::with_capacity(if batched { MAX_HELD } else { 0 })));
                if batched {
                    let writer = held.clone();
                    let spawned = std::thread::Builder::new()
                        .name("server-log".into())
                        .spawn(move || {
                            loop {
                                std::thread::sleep(PAUSE);
                                write_out(&mut lock(&writer));
                            }
                        });
                    match spawned {
                        Ok(_) => {
                            RUNNING.store(true, Ordering::Release);
                            // A panic's message comes after the lines that led to it.
                            let previous = std::panic::take_hook();
                            std::panic::set_hook(Box::new(move |info| {
                                // Never waits: the panic may have come while the lock was held.
                                if let Some(held) = SHARED.get()
                                    && let Ok(mut held) = held.try_lock()
                                {
                                    write_out(&mut held);
                                }
                                previous(info);
                            }));
                        }
                        Err(e) => eprintln!(
                            "milkcrate: no thread for the server log ({e}); lines are written one by one"
                        ),
                    }
                }
                held
            })
            .clone();
        Self { held }
    }
}

fn lock(held: &Mutex<Vec<u8>>) -> std::sync::MutexGuard<'_, Vec<u8>> {
    held.lock().unwrap_or_else(|p| p.into_inner())
}

/// Writes the buffer to stderr while its lock is held, so no line overtakes it.
fn write_out(held: &mut Vec<u8>) {
    if held.is_empty() {
        return;
    }
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(held);
    let _ = err.flush();
    held.clear();
    if held.capacity() > 4 * MAX_HELD {
        held.shrink_to(MAX_HELD);
    }
}

/// Writes out what the buffer holds (before the program ends, or before a message printed
/// straight to stderr).
pub fn flush() {
    if let Some(held) = SHARED.get() {
        write_out(&mut lock(held));
    }
}

/// How the server log is written when milkcrate formats its access lines itself: the same
/// bytes as tracing-subscriber's `fmt` layer writes for them (checked by a test), without its
/// per-field formatting machinery, which cost more than parsing the request. Not set when the
/// log is coloured (a terminal): those lines go through tracing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Text,
    Json,
}

static STYLE: OnceLock<Style> = OnceLock::new();

/// Access lines are written as `style` from now on.
pub fn write_access_lines(style: Style) {
    let _ = STYLE.set(style);
}

/// The fields of a request's line in the server log (target `milkcrate::access`, INFO).
pub struct Access<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    /// The path as logged (no query string).
    pub path: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub latency_ms: u64,
}

/// Logs a request's line: formatted here when [`write_access_lines`] said how and the line
/// would be logged outside any span (`in_span`: the admin UI's requests carry one, whose
/// fields tracing writes), else through tracing.
pub fn access(line: &Access<'_>, in_span: bool) {
    if !tracing::enabled!(target: "milkcrate::access", tracing::Level::INFO) {
        return;
    }
    match (STYLE.get(), SHARED.get()) {
        (Some(style), Some(held)) if !in_span => {
            thread_local! {
                static OUT: std::cell::RefCell<(Vec<u8>, TimeCache)> =
                    std::cell::RefCell::new((Vec::with_capacity(256), TimeCache::default()));
            }
            OUT.with_borrow_mut(|(out, times)| {
                out.clear();
                format_access(out, *style, times.now(std::time::SystemTime::now()), line);
                let mut held = lock(held);
                held.extend_from_slice(out);
                if !RUNNING.load(Ordering::Acquire) || held.len() >= MAX_HELD {
                    write_out(&mut held);
                }
            });
        }
        _ => tracing::info!(
            target: "milkcrate::access",
            request_id = %line.request_id,
            method = %line.method,
            path = %line.path,
            route = %line.route,
            status = line.status,
            latency_ms = line.latency_ms,
            "request"
        ),
    }
}

/// tracing-subscriber's timestamp (`2026-12-02T10:36:25.123456Z`), the part up to the second
/// made once a second.
#[derive(Default)]
struct TimeCache {
    second: Option<u64>,
    /// Up to and including the `.` before the microseconds.
    prefix: String,
}

impl TimeCache {
    fn now(&mut self, at: std::time::SystemTime) -> Timestamp<'_> {
        let since = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        if self.second != Some(since.as_secs()) {
            self.prefix.clear();
            if let Ok(t) = time::OffsetDateTime::from_unix_timestamp(since.as_secs() as i64) {
                use std::fmt::Write as _;
                let _ = write!(
                    self.prefix,
                    "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.",
                    t.year(),
                    u8::from(t.month()),
                    t.day(),
                    t.hour(),
                    t.minute(),
                    t.second()
                );
            }
            self.second = Some(since.as_secs());
        }
        Timestamp {
            prefix: &self.prefix,
            micros: since.subsec_micros(),
        }
    }
}

struct Timestamp<'a> {
    prefix: &'a str,
    micros: u32,
}

/// The line tracing-subscriber's `fmt` layer writes for [`access`]'s event, without colours:
/// the message first, then the fields in the order the event names them.
fn format_access(out: &mut Vec<u8>, style: Style, time: Timestamp<'_>, line: &Access<'_>) {
    let mut micros = [b'0'; 6];
    let mut n = time.micros;
    for digit in micros.iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let mut numbers = itoa_buf();
    match style {
        Style::Text => {
            out.extend_from_slice(time.prefix.as_bytes());
            out.extend_from_slice(&micros);
            out.extend_from_slice(b"Z  INFO milkcrate::access: request request_id=");
            out.extend_from_slice(line.request_id.as_bytes());
            out.extend_from_slice(b" method=");
            out.extend_from_slice(line.method.as_bytes());
            out.extend_from_slice(b" path=");
            out.extend_from_slice(line.path.as_bytes());
            out.extend_from_slice(b" route=");
            out.extend_from_slice(line.route.as_bytes());
            out.extend_from_slice(b" status=");
            out.extend_from_slice(numbers.format(u64::from(line.status)));
            out.extend_from_slice(b" latency_ms=");
            out.extend_from_slice(numbers.format(line.latency_ms));
        }
        Style::Json => {
            out.extend_from_slice(b"{\"timestamp\":\"");
            out.extend_from_slice(time.prefix.as_bytes());
            out.extend_from_slice(&micros);
            out.extend_from_slice(
                b"Z\",\"level\":\"INFO\",\"message\":\"request\",\"request_id\":",
            );
            json_string(out, line.request_id);
            out.extend_from_slice(b",\"method\":");
            json_string(out, line.method);
            out.extend_from_slice(b",\"path\":");
            json_string(out, line.path);
            out.extend_from_slice(b",\"route\":");
            json_string(out, line.route);
            out.extend_from_slice(b",\"status\":");
            out.extend_from_slice(numbers.format(u64::from(line.status)));
            out.extend_from_slice(b",\"latency_ms\":");
            out.extend_from_slice(numbers.format(line.latency_ms));
            out.extend_from_slice(b",\"target\":\"milkcrate::access\"}");
        }
    }
    out.push(b'\n');
}

/// A string as serde_json writes it.
fn json_string(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Formats unsigned integers without `core::fmt`.
struct Digits([u8; 20]);

fn itoa_buf() -> Digits {
    Digits([0; 20])
}

impl Digits {
    fn format(&mut self, mut n: u64) -> &[u8] {
        let mut i = self.0.len();
        loop {
            i -= 1;
            self.0[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                return &self.0[i..];
            }
        }
    }
}

/// One formatted line on its way.
pub struct Line<'a> {
    held: &'a Mutex<Vec<u8>>,
    at_once: bool,
}

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut held = lock(self.held);
        held.extend_from_slice(bytes);
        if self.at_once || held.len() >= MAX_HELD {
            write_out(&mut held);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Batched {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line {
            held: &self.held,
            at_once: true,
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        Line {
            held: &self.held,
            at_once: at_once(meta.level()),
        }
    }
}

/// WARN and ERROR go out at once, and every line when no thread writes the buffer out.
fn at_once(level: &tracing::Level) -> bool {
    *level <= tracing::Level::WARN || !RUNNING.load(Ordering::Acquire)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What tracing-subscriber's layer writes for the access event, as `init_logging` sets it
    /// up, and what [`format_access`] writes, both without their timestamps.
    fn both_ways(style: Style, line: &Access<'_>) -> (String, String) {
        let capture = Capture::default();
        let writer = capture.clone();
        let builder = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false);
        if style == Style::Json {
            let sub = builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .finish();
            tracing::subscriber::with_default(sub, || access(line, true));
        } else {
            tracing::subscriber::with_default(builder.finish(), || access(line, true));
        }
        let theirs = String::from_utf8(lock(&capture.0).clone()).expect("utf-8");
        let mut ours = Vec::new();
        let mut times = TimeCache::default();
        format_access(
            &mut ours,
            style,
            times.now(std::time::SystemTime::now()),
            line,
        );
        let ours = String::from_utf8(ours).expect("utf-8");
        // The timestamps differ by the time between the two: compared by shape.
        let shape = |s: &str| -> String {
            s.chars()
                .map(|c| if c.is_ascii_digit() { '9' } else { c })
                .collect()
        };
        let stamp = "9999-99-99T99:99:99.999999Z";
        let (t, o) = match style {
            Style::Text => (theirs.split_at(stamp.len()), ours.split_at(stamp.len())),
            Style::Json => {
                let at = "{\"timestamp\":\"".len();
                let (t, o) = (
                    (&theirs[at..at + stamp.len()], &theirs[at + stamp.len()..]),
                    (&ours[at..at + stamp.len()], &ours[at + stamp.len()..]),
                );
                assert_eq!(theirs[..at], ours[..at]);
                (t, o)
            }
        };
        assert_eq!(shape(t.0), stamp, "{theirs}");
        assert_eq!(shape(o.0), stamp, "{ours}");
        (t.1.to_string(), o.1.to_string())
    }

    #[test]
    fn access_lines_written_here_are_the_lines_tracing_writes() {
        for line in [
            Access {
                request_id: "4f1c2a",
                method: "GET",
                path: "/shop/items",
                route: "/shop",
                status: 200,
                latency_ms: 0,
            },
            Access {
                request_id: "-",
                method: "OPTIONS",
                path: "/a \"quoted\" \\ path/\u{e9}\t",
                route: "shop.example",
                status: 503,
                latency_ms: 123_456,
            },
        ] {
            for style in [Style::Text, Style::Json] {
                let (theirs, ours) = both_ways(style, &line);
                assert_eq!(ours, theirs, "{style:?}");
            }
        }
    }

    #[test]
    fn warnings_go_out_at_once_and_info_waits_for_the_batch() {
        assert!(at_once(&tracing::Level::ERROR) && at_once(&tracing::Level::WARN));
        RUNNING.store(true, Ordering::Release);
        assert!(!at_once(&tracing::Level::INFO) && !at_once(&tracing::Level::DEBUG));
        RUNNING.store(false, Ordering::Release);
        assert!(at_once(&tracing::Level::INFO), "no thread: nothing waits");

        let held = Mutex::new(Vec::new());
        let mut info = Line {
            held: &held,
            at_once: false,
        };
        info.write_all(b"held\n").expect("write");
        assert_eq!(&*lock(&held), b"held\n", "an INFO line waits");
        let mut warning = Line {
            held: &held,
            at_once: true,
        };
        warning.write_all(b"now\n").expect("write");
        assert!(
            lock(&held).is_empty(),
            "a warning writes out all before it, then itself"
        );
        info.write_all(&vec![b'x'; MAX_HELD]).expect("write");
        assert!(lock(&held).is_empty(), "a full buffer goes out at once");
    }
}
