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
                                write_out(lock(&writer));
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
                                    && let Ok(held) = held.try_lock()
                                {
                                    write_out(held);
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

/// Writes the buffer to stderr. stderr's lock is taken before the buffer's is let go, so no
/// line overtakes these; the write itself happens with the buffer free again for other
/// threads' lines (a 64 KiB write would otherwise hold up every request that logs meanwhile).
fn write_out(mut held: std::sync::MutexGuard<'_, Vec<u8>>) {
    if held.is_empty() {
        return;
    }
    let room = if RUNNING.load(Ordering::Acquire) {
        MAX_HELD
    } else {
        0
    };
    let full = std::mem::replace(&mut *held, Vec::with_capacity(room));
    let mut err = std::io::stderr().lock();
    drop(held);
    let _ = err.write_all(&full);
    let _ = err.flush();
}

/// Writes out what the buffer holds (before the program ends, or before a message printed
/// straight to stderr).
pub fn flush() {
    if let Some(held) = SHARED.get() {
        write_out(lock(held));
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
                static OUT: std::cell::RefCell<(Vec<u8>, crate::clock::SecondCache)> =
                    std::cell::RefCell::new((Vec::with_capacity(256), Default::default()));
            }
            OUT.with_borrow_mut(|(out, times)| {
                out.clear();
                format_access(
                    out,
                    *style,
                    timestamp(std::time::SystemTime::now(), times),
                    line,
                );
                let mut held = lock(held);
                held.extend_from_slice(out);
                if !RUNNING.load(Ordering::Acquire) || held.len() >= MAX_HELD {
                    write_out(held);
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

/// A moment as tracing-subscriber writes it (`2026-12-02T10:36:25.123456Z`): the part up to
/// the second, and the microseconds.
struct Timestamp<'a> {
    seconds: &'a str,
    micros: u32,
}

fn timestamp(at: std::time::SystemTime, cache: &mut crate::clock::SecondCache) -> Timestamp<'_> {
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: cache.get(since.as_secs() as i64),
        micros: since.subsec_micros(),
    }
}

/// The line tracing-subscriber's `fmt` layer writes for [`access`]'s event, without colours:
/// the message first, then the fields in the order the event names them.
fn format_access(out: &mut Vec<u8>, style: Style, time: Timestamp<'_>, line: &Access<'_>) {
    match style {
        Style::Text => {
            out.extend_from_slice(time.seconds.as_bytes());
            out.push(b'.');
            put_number(out, u64::from(time.micros), 6);
            out.extend_from_slice(b"Z  INFO milkcrate::access: request request_id=");
            out.extend_from_slice(line.request_id.as_bytes());
            out.extend_from_slice(b" method=");
            out.extend_from_slice(line.method.as_bytes());
            out.extend_from_slice(b" path=");
            out.extend_from_slice(line.path.as_bytes());
            out.extend_from_slice(b" route=");
            out.extend_from_slice(line.route.as_bytes());
            out.extend_from_slice(b" status=");
            put_number(out, u64::from(line.status), 0);
            out.extend_from_slice(b" latency_ms=");
            put_number(out, line.latency_ms, 0);
        }
        Style::Json => {
            out.extend_from_slice(b"{\"timestamp\":\"");
            out.extend_from_slice(time.seconds.as_bytes());
            out.push(b'.');
            put_number(out, u64::from(time.micros), 6);
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
            put_number(out, u64::from(line.status), 0);
            out.extend_from_slice(b",\"latency_ms\":");
            put_number(out, line.latency_ms, 0);
            out.extend_from_slice(b",\"target\":\"milkcrate::access\"}");
        }
    }
    out.push(b'\n');
}

/// A string as serde_json writes it.
fn json_string(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Writes `n` in decimal, zero-padded to `width` digits, without `core::fmt`.
fn put_number(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start.min(digits.len().saturating_sub(width))..]);
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
            write_out(held);
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
        let mut cache = crate::clock::SecondCache::default();
        format_access(
            &mut ours,
            style,
            timestamp(std::time::SystemTime::now(), &mut cache),
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
