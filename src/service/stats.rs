//! Resource use of the apps over the last hour, for the charts on their pages. One stats
//! stream per running app container (the engine pushes a reading about every second), but only
//! while someone looks: an app's page (reading its history) or a `/metrics` scrape (reading
//! every app's latest) marks it watched for [`WATCH_LEASE`]; a stream ends at its next reading
//! after the lease ran out, so an engine serves no stream for charts nobody opens. One point is
//! kept per sampling period, at most [`HISTORY`] per container, in memory only.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::clock::now_unix;

/// Points kept per container: an hour at the default period of 10 s.
pub const HISTORY: usize = 360;

/// How long an app's resource use is followed after it was last looked at.
pub const WATCH_LEASE: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Unix seconds, rounded down to the sampling period.
    pub at: i64,
    pub memory_bytes: u64,
    pub cpu_percent: f64,
}

struct Series {
    app: String,
    points: VecDeque<Point>,
    updated: Instant,
}

#[derive(Default)]
pub struct StatsMonitor {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    streaming: HashSet<String>,
    series: HashMap<String, Series>,
    /// App → when it was last looked at.
    watched: HashMap<String, Instant>,
    /// When every app was last looked at (a metrics scrape).
    all_watched: Option<Instant>,
}

impl Inner {
    fn wanted(&self, app: &str, now: Instant) -> bool {
        let fresh = |at: &Instant| now.saturating_duration_since(*at) < WATCH_LEASE;
        self.all_watched.as_ref().is_some_and(fresh) || self.watched.get(app).is_some_and(fresh)
    }
}

impl StatsMonitor {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a point for `container` of `app`; a second point in the same period replaces
    /// the first (the latest reading wins).
    pub fn record(&self, container: &str, app: &str, point: Point) {
        let mut inner = self.lock();
        let series = inner
            .series
            .entry(container.to_string())
            .or_insert_with(|| Series {
                app: app.to_string(),
                points: VecDeque::with_capacity(HISTORY),
                updated: Instant::now(),
            });
        series.updated = Instant::now();
        match series.points.back_mut() {
            Some(last) if last.at == point.at => *last = point,
            _ => {
                if series.points.len() == HISTORY {
                    series.points.pop_front();
                }
                series.points.push_back(point);
            }
        }
    }

    /// The app's points, its containers summed per period (a compose stack is one app), oldest
    /// first. Reading them marks the app watched: its streams run for [`WATCH_LEASE`] more.
    pub fn app_history(&self, app: &str) -> Vec<Point> {
        let mut inner = self.lock();
        inner.watched.insert(app.to_string(), Instant::now());
        let inner = inner;
        let mut by_time: BTreeMap<i64, Point> = BTreeMap::new();
        for s in inner.series.values().filter(|s| s.app == app) {
            for p in &s.points {
                let e = by_time.entry(p.at).or_insert(Point {
                    at: p.at,
                    memory_bytes: 0,
                    cpu_percent: 0.0,
                });
                e.memory_bytes += p.memory_bytes;
                e.cpu_percent += p.cpu_percent;
            }
        }
        by_time.into_values().collect()
    }

    /// Each app's latest reading (its containers' last points summed), for the metrics. Reading
    /// them marks every app watched.
    pub fn latest_per_app(&self) -> Vec<(String, Point)> {
        let mut inner = self.lock();
        inner.all_watched = Some(Instant::now());
        let inner = inner;
        let mut by_app: BTreeMap<&str, Point> = BTreeMap::new();
        // A container not heard of for two minutes is gone (stopped or replaced).
        let live = inner
            .series
            .values()
            .filter(|s| s.updated.elapsed() < Duration::from_secs(120));
        for s in live {
            if let Some(last) = s.points.back() {
                let e = by_app.entry(s.app.as_str()).or_insert(Point {
                    at: last.at,
                    memory_bytes: 0,
                    cpu_percent: 0.0,
                });
                e.memory_bytes += last.memory_bytes;
                e.cpu_percent += last.cpu_percent;
            }
        }
        by_app
            .into_iter()
            .map(|(a, p)| (a.to_string(), p))
            .collect()
    }

    /// Whether someone looked at `app` within the lease.
    pub fn wanted(&self, app: &str) -> bool {
        self.lock().wanted(app, Instant::now())
    }

    /// Claims `container` of `app` for a new stream; false when one already runs or nobody
    /// looks at the app.
    fn start(&self, container: &str, app: &str) -> bool {
        let mut inner = self.lock();
        inner.wanted(app, Instant::now()) && inner.streaming.insert(container.to_string())
    }

    fn stop(&self, container: &str) {
        self.lock().streaming.remove(container);
    }

    /// Forgets containers not heard of for longer than the history covers, and looks that
    /// ran out.
    fn prune(&self, older_than: Duration) {
        let mut inner = self.lock();
        inner.series.retain(|_, s| s.updated.elapsed() < older_than);
        inner.watched.retain(|_, at| at.elapsed() < WATCH_LEASE);
    }

    pub fn streams(&self) -> usize {
        self.lock().streaming.len()
    }
}

/// Starts a stream for every running app container the status snapshot lists whose app someone
/// looks at; runs for the life of the server.
/// `period` is MILKCRATE_STATS_INTERVAL; the status monitor says what runs, the engine
/// monitor gives the engine, `stats` keeps the points.
pub async fn follow(
    period: Duration,
    status: Arc<crate::service::status::StatusMonitor>,
    engine: Arc<crate::docker::monitor::EngineMonitor>,
    stats: Stats,
) {
    loop {
        let snap = status.snapshot();
        if let Ok(engine) = engine.client().await {
            for c in snap.containers.iter().filter(|c| c.state == "running") {
                let Some(app) = c.app.clone() else { continue };
                if !stats.start(&c.id, &app) {
                    continue;
                }
                let (engine, stats, id) = (engine.clone(), stats.clone(), c.id.clone());
                tokio::spawn(async move {
                    let mut stream = Box::pin(engine.stats(&id));
                    while let Some(Ok(sample)) = stream.next().await {
                        let secs = period.as_secs().max(1) as i64;
                        let at = now_unix() / secs * secs;
                        stats.record(
                            &id,
                            &app,
                            Point {
                                at,
                                memory_bytes: sample.memory_bytes,
                                cpu_percent: sample.cpu_percent,
                            },
                        );
                        if !stats.wanted(&app) {
                            // Nobody looks any more: the engine's stream is closed.
                            break;
                        }
                    }
                    stats.stop(&id);
                });
            }
        }
        stats.prune(period * HISTORY as u32 + Duration::from_secs(60));
        tokio::time::sleep(period).await;
    }
}

/// Shared handle, as `AppState` holds it.
pub type Stats = Arc<StatsMonitor>;

#[cfg(test)]
mod tests {
    use super::*;

    fn p(at: i64, mem: u64, cpu: f64) -> Point {
        Point {
            at,
            memory_bytes: mem,
            cpu_percent: cpu,
        }
    }

    #[test]
    fn one_point_per_period_and_a_bounded_history() {
        let m = StatsMonitor::default();
        m.record("c1", "app", p(10, 1, 1.0));
        m.record("c1", "app", p(10, 2, 2.0));
        assert_eq!(
            m.app_history("app"),
            vec![p(10, 2, 2.0)],
            "the latest reading wins"
        );
        for i in 0..(HISTORY as i64 + 50) {
            m.record("c1", "app", p(20 + i * 10, 1, 0.0));
        }
        assert_eq!(m.app_history("app").len(), HISTORY);
    }

    #[test]
    fn only_apps_someone_looks_at_are_streamed() {
        let m = StatsMonitor::default();
        assert!(!m.start("c1", "shop"), "nobody looked: no stream");
        assert_eq!(m.streams(), 0);
        m.app_history("shop");
        assert!(m.start("c1", "shop"), "its page was read");
        assert!(!m.start("c1", "shop"), "one stream per container");
        assert!(!m.start("c2", "blog"), "another app nobody looks at");
        assert_eq!(m.streams(), 1);
        m.latest_per_app();
        assert!(m.start("c2", "blog"), "a metrics scrape wants every app");

        let mut inner = Inner::default();
        let then = Instant::now();
        inner.watched.insert("shop".into(), then);
        assert!(inner.wanted("shop", then + WATCH_LEASE / 2));
        assert!(
            !inner.wanted("shop", then + WATCH_LEASE),
            "the lease runs out"
        );
        assert!(!inner.wanted("blog", then));
    }

    #[test]
    fn a_stacks_containers_add_up() {
        let m = StatsMonitor::default();
        m.record("web", "shop", p(10, 100, 5.0));
        m.record("db", "shop", p(10, 300, 10.0));
        m.record("other", "blog", p(10, 999, 99.0));
        assert_eq!(m.app_history("shop"), vec![p(10, 400, 15.0)]);
    }
}
