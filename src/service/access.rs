//! The access log of app traffic: one JSON line per request the built-in router served, kept
//! per app in `<data>/access/<app>.log` (rotated by size like the audit log), plus the last
//! hour in memory for the app's Requests tab (recent lines, per-minute totals and latencies).
//!
//! The router never waits on it: [`AccessLog::record`] puts the line on a bounded queue with
//! `try_send`; when the queue is full the line is dropped and counted ([`AccessLog::dropped`]).
//! One writer thread owns the files. Metrics counters are updated by the caller, not here, so
//! they stay exact even when lines are dropped.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::{broadcast, mpsc};

/// Lines kept in memory per app for the Requests tab.
pub const RECENT: usize = 1000;
/// Per-minute buckets kept per app: the last hour.
const MINUTES: usize = 60;
/// Latencies are counted in buckets growing by this factor (from 0.01 ms): percentiles are
/// read to within 5% whatever the traffic, in memory proportional to the spread, not the count.
const BUCKET_GROWTH: f64 = 1.05;
const BUCKET_BASE_MS: f64 = 0.01;
const BUCKETS: u16 = 400;

/// One line of an app's access log. Field order is the order written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AccessLine {
    /// RFC 3339, UTC, milliseconds (the router leaves it empty: the writer fills it in from
    /// `at_ms`, off the request's path).
    pub time: String,
    pub app: String,
    /// A standard method's name is not copied per line.
    pub method: std::borrow::Cow<'static, str>,
    /// Without the query string (it may carry tokens).
    pub path: String,
    pub status: u16,
    /// Response body bytes sent to the client.
    pub bytes: u64,
    /// From the request's arrival to the end of the response body, in milliseconds.
    pub duration_ms: f64,
    /// Until the app's response headers arrived; absent when the app did not answer.
    pub upstream_ms: Option<f64>,
    /// As the trusted-proxy rules decide (`TRUSTED_PROXIES`).
    pub client_ip: std::net::IpAddr,
    pub user_agent: String,
    /// Unix milliseconds, for ordering and windows; not written.
    #[serde(skip)]
    pub at_ms: i64,
}

impl AccessLine {
    pub fn class(&self) -> u16 {
        self.status / 100
    }
}

/// RFC 3339 with milliseconds for a Unix-milliseconds time.
pub fn format_time(at_ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.replace_millisecond((at_ms.rem_euclid(1000)) as u16)
                .ok()
                .and_then(|t| t.format(&Rfc3339).ok())
        })
        .unwrap_or_default()
}

/// [`format_time`] for a stream of times close together: the date and time of day come from
/// a [`crate::clock::SecondCache`], the milliseconds are appended (as RFC 3339 writes them,
/// trailing zeros dropped).
#[derive(Default)]
struct TimeCache(crate::clock::SecondCache);

impl TimeCache {
    fn format(&mut self, at_ms: i64) -> String {
        let prefix = self.0.get(at_ms.div_euclid(1000));
        if prefix.is_empty() {
            return format_time(at_ms);
        }
        let mut out = String::with_capacity(prefix.len() + 5);
        out.push_str(prefix);
        let ms = at_ms.rem_euclid(1000);
        if ms != 0 {
            let digits = [
                b'.',
                b'0' + (ms / 100) as u8,
                b'0' + (ms / 10 % 10) as u8,
                b'0' + (ms % 10) as u8,
            ];
            let end = digits.iter().rposition(|&d| d != b'0').map_or(1, |i| i + 1);
            out.extend(digits[..end].iter().map(|&d| char::from(d)));
        }
        out.push('Z');
        out
    }
}

/// One minute of one app's traffic.
#[derive(Debug, Clone, Default)]
struct Minute {
    /// Unix minute.
    at: i64,
    /// Requests by status class (index 1..=5; 0 for anything else).
    by_class: [u64; 6],
    bytes: u64,
    /// Latency bucket → requests.
    latencies: BTreeMap<u16, u32>,
}

fn bucket_of(ms: f64) -> u16 {
    if ms.is_nan() || ms <= BUCKET_BASE_MS {
        return 0;
    }
    let k = ((ms / BUCKET_BASE_MS).ln() / BUCKET_GROWTH.ln()).ceil();
    (k as u16).min(BUCKETS - 1)
}

/// A bucket's upper bound in ms.
fn bucket_value(k: u16) -> f64 {
    BUCKET_BASE_MS * BUCKET_GROWTH.powi(i32::from(k))
}

/// The nearest-rank percentile of bucketed counts (the bucket's upper bound).
fn bucket_percentile(buckets: &BTreeMap<u16, u64>, q: f64) -> Option<f64> {
    let total: u64 = buckets.values().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (k, n) in buckets {
        seen += n;
        if seen >= rank {
            return Some(bucket_value(*k));
        }
    }
    None
}

#[derive(Default)]
struct AppTraffic {
    recent: VecDeque<Arc<AccessLine>>,
    minutes: VecDeque<Minute>,
}

/// Totals of one app over a window, for the Requests tab and the dashboard.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub requests: u64,
    pub by_class: [u64; 6],
    pub bytes: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// One point of the request-rate and latency charts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinutePoint {
    /// Unix seconds of the minute's start.
    pub at: i64,
    pub requests: u64,
    pub errors: u64,
    pub p95_ms: Option<f64>,
}

struct Shared {
    traffic: Mutex<HashMap<String, AppTraffic>>,
    dropped: AtomicU64,
    written: AtomicU64,
    write_errors: AtomicU64,
    /// Lines put on the queue, and lines the writer is done with: equal when it is idle.
    queued: AtomicU64,
    handled: AtomicU64,
    live: broadcast::Sender<Arc<AccessLine>>,
}

/// What the writer thread is told, in order.
enum Msg {
    Line(AccessLine),
    /// An app was deleted: close its file and remove it with its rotated ones.
    Forget(String),
}

/// The access log; cheap to clone.
#[derive(Clone)]
pub struct AccessLog {
    tx: Option<mpsc::Sender<Msg>>,
    shared: Arc<Shared>,
}

/// How the files are kept.
#[derive(Debug, Clone)]
pub struct FileOptions {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub keep: u32,
}

impl AccessLog {
    /// Starts the writer thread; `None` keeps nothing (MILKCRATE_ACCESS_LOG=false).
    pub fn start(files: Option<FileOptions>, queue: usize) -> Self {
        let (live, _) = broadcast::channel(256);
        let shared = Arc::new(Shared {
            traffic: Mutex::default(),
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            handled: AtomicU64::new(0),
            live,
        });
        let Some(files) = files else {
            return Self { tx: None, shared };
        };
        let (tx, rx) = mpsc::channel(queue.max(1));
        let writer_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(rx, files, writer_shared));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start the access log writer; access lines are not kept");
            return Self { tx: None, shared };
        }
        Self {
            tx: Some(tx),
            shared,
        }
    }

    /// A log that keeps nothing (tests of other parts, the CLI).
    pub fn disabled() -> Self {
        Self::start(None, 1)
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues `line` without waiting; a full queue drops it and counts the drop.
    pub fn record(&self, line: AccessLine) {
        let Some(tx) = &self.tx else { return };
        if tx.try_send(Msg::Line(line)).is_err() {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            self.shared.queued.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits (up to `within`) until the writer has written every line queued so far: the
    /// server calls it as it stops, since the writer lets lines gather between batches.
    pub async fn drain(&self, within: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.shared.handled.load(Ordering::Acquire)
            < self.shared.queued.load(Ordering::Acquire)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Lines dropped because the queue was full, since the start.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Lines written since the start.
    pub fn written(&self) -> u64 {
        self.shared.written.load(Ordering::Relaxed)
    }

    /// Lines that could not be written (a full disk), since the start.
    pub fn write_errors(&self) -> u64 {
        self.shared.write_errors.load(Ordering::Relaxed)
    }

    /// New lines as they are written, for a live follow.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<AccessLine>> {
        self.shared.live.subscribe()
    }

    /// The app's last lines, newest first, that `keep` accepts; at most `take`.
    pub fn recent(
        &self,
        app: &str,
        take: usize,
        keep: impl Fn(&AccessLine) -> bool,
    ) -> Vec<Arc<AccessLine>> {
        let traffic = self
            .shared
            .traffic
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        traffic
            .get(app)
            .map(|t| {
                t.recent
                    .iter()
                    .rev()
                    .filter(|l| keep(l))
                    .take(take)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Totals and latency percentiles of the app over the minutes since `since_unix`.
    pub fn summary(&self, app: &str, since_unix: i64) -> Summary {
        let traffic = self
            .shared
            .traffic
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let Some(t) = traffic.get(app) else {
            return Summary::default();
        };
        let mut s = Summary::default();
        let mut latencies: BTreeMap<u16, u64> = BTreeMap::new();
        for m in t.minutes.iter().filter(|m| m.at * 60 >= since_unix - 59) {
            for (i, n) in m.by_class.iter().enumerate() {
                s.by_class[i] += n;
            }
            s.bytes += m.bytes;
            for (k, n) in &m.latencies {
                *latencies.entry(*k).or_default() += u64::from(*n);
            }
        }
        s.requests = s.by_class.iter().sum();
        s.p50_ms = bucket_percentile(&latencies, 0.50);
        s.p95_ms = bucket_percentile(&latencies, 0.95);
        s.p99_ms = bucket_percentile(&latencies, 0.99);
        s
    }

    /// Per-minute requests, errors (5xx) and p95 latency since `since_unix`, oldest first.
    pub fn minutes(&self, app: &str, since_unix: i64) -> Vec<MinutePoint> {
        let traffic = self
            .shared
            .traffic
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let Some(t) = traffic.get(app) else {
            return Vec::new();
        };
        t.minutes
            .iter()
            .filter(|m| m.at * 60 >= since_unix - 59)
            .map(|m| {
                let l = m
                    .latencies
                    .iter()
                    .map(|(k, n)| (*k, u64::from(*n)))
                    .collect();
                MinutePoint {
                    at: m.at * 60,
                    requests: m.by_class.iter().sum(),
                    errors: m.by_class[5],
                    p95_ms: bucket_percentile(&l, 0.95),
                }
            })
            .collect()
    }

    /// Forgets a deleted app: its lines in memory, and its files (the current one and the
    /// rotated ones), removed by the writer after the lines queued before this call, so no
    /// line of the app outlives it on disk (the decision: an access log holds client
    /// addresses, and goes with the app it is about). Never waits: with the queue full, a
    /// helper thread waits for room.
    pub fn forget(&self, app: &str) {
        self.shared
            .traffic
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(app);
        let Some(tx) = &self.tx else { return };
        if let Err(mpsc::error::TrySendError::Full(msg)) = tx.try_send(Msg::Forget(app.into())) {
            let tx = tx.clone();
            let spawned = std::thread::Builder::new()
                .name("access-forget".into())
                .spawn(move || {
                    let _ = tx.blocking_send(msg);
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, app, "could not remove the deleted app's access log");
            }
        }
    }
}

impl Shared {
    /// Keeps written lines in memory, tells live followers, and counts them handled.
    fn remember(&self, lines: impl ExactSizeIterator<Item = Arc<AccessLine>>) {
        let count = lines.len() as u64;
        if count == 0 {
            return;
        }
        let mut traffic = self.traffic.lock().unwrap_or_else(|p| p.into_inner());
        for line in lines {
            if !traffic.contains_key(&line.app) {
                traffic.insert(line.app.clone(), AppTraffic::default());
            }
            if let Some(t) = traffic.get_mut(&line.app) {
                t.remember(&line);
            }
            if self.live.receiver_count() > 0 {
                let _ = self.live.send(line);
            }
        }
        drop(traffic);
        self.handled.fetch_add(count, Ordering::Release);
    }
}

impl AppTraffic {
    fn remember(&mut self, line: &Arc<AccessLine>) {
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(line.clone());
        let minute = line.at_ms.div_euclid(60_000);
        if self.minutes.back().is_none_or(|m| m.at < minute) {
            if self.minutes.len() == MINUTES {
                self.minutes.pop_front();
            }
            self.minutes.push_back(Minute {
                at: minute,
                ..Minute::default()
            });
        }
        // A line a little late for its minute (written out of order) counts in the newest.
        if let Some(m) = self.minutes.back_mut() {
            let class = usize::from(line.class());
            m.by_class[if (1..=5).contains(&class) { class } else { 0 }] += 1;
            m.bytes += line.bytes;
            let n = m.latencies.entry(bucket_of(line.duration_ms)).or_default();
            *n = n.saturating_add(1);
        }
        while self
            .minutes
            .front()
            .is_some_and(|m| m.at + MINUTES as i64 <= minute)
        {
            self.minutes.pop_front();
        }
    }
}

/// How long the writer lets lines gather after writing a batch.
const BATCH_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);

fn write_loop(mut rx: mpsc::Receiver<Msg>, files: FileOptions, shared: Arc<Shared>) {
    if let Err(e) = crate::config::create_private_dir(&files.dir) {
        tracing::error!(error = %e, dir = %files.dir.display(), "cannot create the access log folder");
    }
    let mut writers: HashMap<String, AppFile> = HashMap::new();
    let mut batch = Vec::with_capacity(256);
    // One line's JSON, reused from line to line.
    let mut json = Vec::with_capacity(512);
    let mut times = TimeCache::default();
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < 256 {
            match rx.try_recv() {
                Ok(l) => batch.push(l),
                Err(_) => break,
            }
        }
        // The lines of a batch go into memory under one lock, after they are written.
        let mut written = Vec::with_capacity(batch.len());
        for msg in batch.drain(..) {
            let line = match msg {
                Msg::Line(mut line) => {
                    if line.time.is_empty() {
                        line.time = times.format(line.at_ms);
                    }
                    Arc::new(line)
                }
                Msg::Forget(app) => {
                    shared.remember(written.drain(..));
                    if let Some(mut f) = writers.remove(&app) {
                        let _ = f.flush();
                    }
                    remove_files(&files.dir.join(file_name(&app)));
                    // Lines queued before the deletion were remembered on the way.
                    shared
                        .traffic
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&app);
                    continue;
                }
            };
            if !writers.contains_key(&line.app) {
                match AppFile::open(&files.dir.join(file_name(&line.app)), &files) {
                    Ok(f) => {
                        writers.insert(line.app.clone(), f);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, app = %line.app, "cannot open the access log");
                    }
                }
            }
            json.clear();
            let ok = match (
                writers.get_mut(&line.app),
                serde_json::to_writer(&mut json, &*line),
            ) {
                (Some(f), Ok(())) => {
                    json.push(b'\n');
                    f.write_line(&json).is_ok()
                }
                _ => false,
            };
            if ok {
                shared.written.fetch_add(1, Ordering::Relaxed);
            } else if shared
                .write_errors
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(1000)
            {
                tracing::warn!(app = %line.app, "could not write an access log line");
            }
            written.push(line);
        }
        shared.remember(written.drain(..));
        for f in writers.values_mut() {
            let _ = f.flush();
        }
        if rx.is_empty() {
            // Lines come in batches, not one wake-up (and one write) per request, and short
            // ones: a batch gathered over 50 ms (1,500 lines at 30k requests per second) took a
            // few milliseconds of a core at once, which showed in the slowest requests of
            // the threads it shared the cores with. A queue of 8192 holds 50 ms of 160k
            // requests per second. Nothing waits on this thread.
            std::thread::sleep(BATCH_PAUSE);
        }
    }
    for f in writers.values_mut() {
        let _ = f.flush();
    }
}

/// An app's log file name: app names are already plain (`AppName`), anything else is hex.
pub fn file_name(app: &str) -> String {
    let plain = !app.is_empty()
        && app.len() <= 100
        && !app.starts_with('.')
        && app
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if plain {
        format!("{app}.log")
    } else {
        format!("x-{}.log", hex::encode(app.as_bytes()))
    }
}

struct AppFile {
    path: PathBuf,
    out: BufWriter<File>,
    size: u64,
    max_bytes: u64,
    keep: u32,
}

impl AppFile {
    fn open(path: &Path, o: &FileOptions) -> io::Result<Self> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            size,
            max_bytes: o.max_bytes,
            keep: o.keep,
        })
    }

    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.out.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.out.flush()?;
        for i in (1..self.keep).rev() {
            let from = rotated(&self.path, i);
            if from.exists() {
                std::fs::rename(&from, rotated(&self.path, i + 1))?;
            }
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))?;
        self.out = BufWriter::new(open_append(&self.path)?);
        self.size = 0;
        Ok(())
    }
}

/// Removes an app's log and every rotated file of it (`<name>.log.N`).
fn remove_files(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let rotated_prefix = format!("{name}.");
    for e in entries.flatten() {
        let n = e.file_name();
        let Some(n) = n.to_str() else { continue };
        let is_rotation = n
            .strip_prefix(&rotated_prefix)
            .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()));
        if (n == name || is_rotation)
            && let Err(err) = std::fs::remove_file(e.path())
        {
            tracing::warn!(error = %err, file = %e.path().display(), "could not remove an access log");
        }
    }
}

fn rotated(path: &Path, i: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{i}"));
    PathBuf::from(name)
}

fn open_append(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// Reads an app's log file (not the rotated ones), oldest first: for tests and tools.
pub fn read_file(path: &Path) -> io::Result<Vec<AccessLine>> {
    let f = File::open(path)?;
    Ok(BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_formatted_once_a_second_read_as_rfc3339_does() {
        let mut cache = TimeCache::default();
        let base = 1_764_670_000_000i64;
        for at in (base - 2500..base + 2500)
            .step_by(7)
            .chain([0, 1, 10, 100, 999, 1000])
        {
            assert_eq!(cache.format(at), format_time(at), "at {at}");
        }
        assert_eq!(cache.format(base + 120), "2025-12-02T10:06:40.12Z");
    }

    fn line(app: &str, at_ms: i64, status: u16, ms: f64) -> AccessLine {
        AccessLine {
            time: format_time(at_ms),
            app: app.into(),
            method: "GET".into(),
            path: "/".into(),
            status,
            bytes: 10,
            duration_ms: ms,
            upstream_ms: Some(ms),
            client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            user_agent: "t".into(),
            at_ms,
        }
    }

    fn close(got: Option<f64>, want: f64) -> bool {
        got.is_some_and(|g| g >= want && g <= want * BUCKET_GROWTH * 1.0001)
    }

    #[test]
    fn percentiles_are_nearest_rank_within_five_percent() {
        let mut b = BTreeMap::new();
        for v in 1..=100 {
            *b.entry(bucket_of(f64::from(v))).or_insert(0u64) += 1;
        }
        assert!(
            close(bucket_percentile(&b, 0.5), 50.0),
            "{:?}",
            bucket_percentile(&b, 0.5)
        );
        assert!(close(bucket_percentile(&b, 0.95), 95.0));
        assert!(close(bucket_percentile(&b, 0.99), 99.0));
        assert_eq!(bucket_percentile(&BTreeMap::new(), 0.5), None);
        for ms in [0.0, 0.005, 0.3, 7.0, 1234.5, 59_000.0] {
            let k = bucket_of(ms);
            assert!(bucket_value(k) >= ms, "{ms} fits under its bucket");
            assert!(
                k == 0 || bucket_value(k - 1) < ms,
                "{ms} is in the lowest bucket that holds it"
            );
        }
        assert_eq!(bucket_of(f64::NAN), 0);
        assert_eq!(bucket_of(1e12), BUCKETS - 1, "huge values are clamped");
    }

    #[test]
    fn times_have_milliseconds() {
        assert_eq!(format_time(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn file_names_cannot_leave_the_folder() {
        assert_eq!(file_name("shop"), "shop.log");
        assert!(file_name("../etc").starts_with("x-"));
        assert!(file_name("a/b").starts_with("x-"));
        assert!(file_name("").starts_with("x-"));
    }

    #[test]
    fn summary_and_minutes_cover_the_window() {
        let log = AccessLog::disabled();
        let base = 1_700_000_000_000 - 1_700_000_000_000 % 60_000;
        for i in 0..100 {
            let status = if i % 10 == 0 { 500 } else { 200 };
            log.shared.remember(std::iter::once(Arc::new(line(
                "a",
                base + i * 1000,
                status,
                i as f64,
            ))));
        }
        let s = log.summary("a", base / 1000);
        assert_eq!(s.requests, 100);
        assert_eq!(s.by_class[5], 10);
        assert_eq!(s.by_class[2], 90);
        assert!(close(s.p50_ms, 49.0), "{:?}", s.p50_ms);
        let m = log.minutes("a", base / 1000);
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!(m[0].requests, 60);
        assert_eq!(m[1].requests, 40);
        // An hour later the old minutes are gone.
        log.shared.remember(std::iter::once(Arc::new(line(
            "a",
            base + 3_700_000,
            200,
            1.0,
        ))));
        assert_eq!(log.summary("a", 0).requests, 1);
        assert_eq!(log.recent("a", 5, |_| true).len(), 5);
        assert_eq!(log.recent("a", 500, |l| l.status == 500).len(), 10);
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_files_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let log = AccessLog::start(
            Some(FileOptions {
                dir: dir.path().join("access"),
                max_bytes: 4096,
                keep: 2,
            }),
            16,
        );
        let mut rx = log.subscribe();
        for i in 0..5000 {
            log.record(line("a", 1_700_000_000_000 + i, 200, 1.0));
        }
        let dropped = log.dropped();
        assert!(dropped > 0, "a queue of 16 cannot take 5000 lines at once");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while log.written() + dropped < 5000 {
            assert!(std::time::Instant::now() < deadline, "lines not written");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(log.written() + log.dropped(), 5000);
        // A follower that fell behind hears that it lagged, which also means lines came.
        assert!(
            !matches!(
                rx.try_recv(),
                Err(tokio::sync::broadcast::error::TryRecvError::Empty)
            ),
            "live followers get lines"
        );
        let main = dir.path().join("access/a.log");
        assert!(rotated(&main, 1).exists());
        assert!(!rotated(&main, 3).exists());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let lines = read_file(&main).unwrap();
            if lines.last().is_some_and(|l| l.status == 200) {
                break;
            }
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn a_forgotten_app_loses_its_files_after_its_queued_lines_and_others_keep_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let access = dir.path().join("access");
        let log = AccessLog::start(
            Some(FileOptions {
                dir: access.clone(),
                max_bytes: 4096,
                keep: 3,
            }),
            4,
        );
        let wait = |what: &str, done: &dyn Fn() -> bool| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while !done() {
                assert!(std::time::Instant::now() < deadline, "{what}");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        };
        // Enough lines to rotate; "shop" and "shop.log.x" are names of other apps' files.
        let mut sent = 0;
        while !rotated(&access.join("gone.log"), 1).exists() {
            log.record(line("gone", 1_700_000_000_000 + sent, 200, 1.0));
            log.record(line("shop", 1_700_000_000_000 + sent, 200, 1.0));
            sent += 1;
            std::thread::sleep(std::time::Duration::from_millis(1));
            assert!(sent < 100_000, "the log never rotated");
        }
        std::fs::write(access.join("gone.log.old"), b"not a rotation").unwrap();
        // The queue is full: forgetting waits for room without blocking the caller.
        for i in 0..100 {
            log.record(line("gone", 1_700_000_100_000 + i, 200, 1.0));
        }
        log.forget("gone");
        wait("the app's files removed", &|| {
            !access.join("gone.log").exists() && !rotated(&access.join("gone.log"), 1).exists()
        });
        assert!(
            access.join("shop.log").exists(),
            "another app keeps its log"
        );
        assert!(
            access.join("gone.log.old").exists(),
            "only rotations are removed"
        );
        assert!(log.recent("gone", 10, |_| true).is_empty());
        // A new app of the same name starts a fresh file.
        log.record(line("gone", 1_700_000_200_000, 201, 1.0));
        wait("a fresh file", &|| {
            read_file(&access.join("gone.log")).is_ok_and(|l| l.len() == 1 && l[0].status == 201)
        });
    }
}
