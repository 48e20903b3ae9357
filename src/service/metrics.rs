//! Prometheus metrics (`prometheus-client`): per-app request counters by status class, latency
//! histograms, bytes, upstream errors and timeouts, requests in flight; deploys by result and
//! their durations; unexpected container exits, CPU and memory per app; engine reachability;
//! seconds until each served certificate expires;
//! the access log's own counters. Request counters move on the router's path (atomic adds);
//! gauges read from state are set when a scrape encodes them. Serving `/metrics` (token or
//! separate listener) is the web layer's job; this module only counts and encodes.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabel {
    pub app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppClass {
    pub app: String,
    /// `2xx` … `5xx` (`other` for anything else).
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppKind {
    pub app: String,
    /// `error` (the app refused or dropped the connection) or `timeout`.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertLabel {
    /// The host name (`default` for SSL_CERT_FILE's).
    pub name: String,
    /// `uploaded`, `acme` or `file`.
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `succeeded` or `failed`.
    pub result: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn request_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ])
}

fn deploy_histogram() -> Histogram {
    Histogram::new([5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0])
}

/// Where the gauges a scrape reads come from (borrowed from `AppState` by the `/metrics`
/// handler).
pub struct Gauges<'a> {
    pub engine: &'a crate::docker::monitor::EngineMonitor,
    pub access: &'a crate::service::access::AccessLog,
    pub stats: &'a crate::service::stats::StatsMonitor,
    pub certs: &'a crate::tls::CertStore,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<AppClass, Counter>,
    duration: HistogramFamily<AppLabel>,
    bytes: Family<AppLabel, Counter>,
    upstream_failures: Family<AppKind, Counter>,
    in_flight: Family<AppLabel, Gauge>,
    deploys: Family<ResultLabel, Counter>,
    deploy_duration: HistogramFamily<ResultLabel>,
    exits: Family<AppLabel, Counter>,
    cpu: Family<AppLabel, Gauge<f64, AtomicU64>>,
    memory: Family<AppLabel, Gauge>,
    engine_up: Gauge,
    cert_expiry: Family<CertLabel, Gauge>,
    access_dropped: Counter,
    access_written: Counter,
    alerts_failed: Counter,
    /// One scrape sets the read-from-state gauges at a time.
    scrape: Mutex<()>,
    /// Each app's request meters, taken from the families once (the router's path then
    /// allocates no label per request).
    meters: std::sync::RwLock<std::collections::HashMap<String, std::sync::Arc<AppMeters>>>,
}

/// One app's request meters: handles into the families (a clone shares the counter), so a
/// request costs atomic adds, not label lookups. The status-class counters are made on first
/// use, so a class no request had is not exported.
pub struct AppMeters {
    app: String,
    in_flight: Gauge,
    duration: Histogram,
    bytes: Counter,
    requests: Family<AppClass, Counter>,
    classes: [std::sync::OnceLock<Counter>; 6],
}

impl AppMeters {
    pub fn started(&self) {
        self.in_flight.inc();
    }

    /// The request is over, answered or abandoned (its client left first).
    pub fn ended(&self) {
        self.in_flight.dec();
    }

    /// An answered request (its end is [`AppMeters::ended`]).
    pub fn finished(&self, status: u16, seconds: f64, bytes: u64) {
        let c = match status / 100 {
            c @ 1..=5 => c as usize,
            _ => 0,
        };
        self.classes[c]
            .get_or_init(|| {
                self.requests
                    .get_or_create(&AppClass {
                        app: self.app.clone(),
                        class: if c == 0 {
                            "other".into()
                        } else {
                            format!("{c}xx")
                        },
                    })
                    .clone()
            })
            .inc();
        self.duration.observe(seconds);
        self.bytes.inc_by(bytes);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("milkcrate");
        let requests = Family::<AppClass, Counter>::default();
        registry.register(
            "http_requests",
            "Requests the built-in router answered, by app and status class",
            requests.clone(),
        );
        let duration: HistogramFamily<AppLabel> = Family::new_with_constructor(request_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to the end of its response body",
            duration.clone(),
        );
        let bytes = Family::<AppLabel, Counter>::default();
        registry.register(
            "http_response_bytes",
            "Response body bytes sent to clients",
            bytes.clone(),
        );
        let upstream_failures = Family::<AppKind, Counter>::default();
        registry.register(
            "http_upstream_failures",
            "Requests the app did not answer (kind: error or timeout)",
            upstream_failures.clone(),
        );
        let in_flight = Family::<AppLabel, Gauge>::default();
        registry.register(
            "http_requests_in_flight",
            "Requests being served now",
            in_flight.clone(),
        );
        let deploys = Family::<ResultLabel, Counter>::default();
        registry.register("deploys", "Deploys that ended, by result", deploys.clone());
        let deploy_duration: HistogramFamily<ResultLabel> =
            Family::new_with_constructor(deploy_histogram);
        registry.register(
            "deploy_duration_seconds",
            "How long deploys took, by result",
            deploy_duration.clone(),
        );
        let exits = Family::<AppLabel, Counter>::default();
        registry.register(
            "container_unexpected_exits",
            "App containers that exited while they should have been running (each is restarted by its restart policy)",
            exits.clone(),
        );
        let cpu = Family::<AppLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "app_cpu_percent",
            "CPU use of the app's containers, percent of one core (last reading)",
            cpu.clone(),
        );
        let memory = Family::<AppLabel, Gauge>::default();
        registry.register(
            "app_memory_bytes",
            "Memory use of the app's containers (last reading)",
            memory.clone(),
        );
        let engine_up = Gauge::default();
        registry.register(
            "engine_up",
            "1 when the Docker Engine answered the last check",
            engine_up.clone(),
        );
        let cert_expiry = Family::<CertLabel, Gauge>::default();
        registry.register(
            "certificate_expiry_seconds",
            "Seconds until each served certificate expires (negative: expired)",
            cert_expiry.clone(),
        );
        let access_dropped = Counter::default();
        registry.register(
            "access_log_dropped",
            "Access log lines dropped because the writer fell behind",
            access_dropped.clone(),
        );
        let access_written = Counter::default();
        registry.register(
            "access_log_written",
            "Access log lines written",
            access_written.clone(),
        );
        let alerts_failed = Counter::default();
        registry.register(
            "alert_deliveries_failed",
            "Alert deliveries that failed after every retry",
            alerts_failed.clone(),
        );
        Self {
            registry,
            requests,
            duration,
            bytes,
            upstream_failures,
            in_flight,
            deploys,
            deploy_duration,
            exits,
            cpu,
            memory,
            engine_up,
            cert_expiry,
            access_dropped,
            access_written,
            alerts_failed,
            scrape: Mutex::new(()),
            meters: Default::default(),
        }
    }
}

/// What the router tells about one finished request.
#[derive(Debug, Clone, Copy)]
pub enum UpstreamFailure {
    Error,
    Timeout,
}

fn app(app: &str) -> AppLabel {
    AppLabel { app: app.into() }
}

impl Metrics {
    /// `name`'s request meters (made on first use, then shared).
    pub fn app_meters(&self, name: &str) -> std::sync::Arc<AppMeters> {
        if let Some(m) = self
            .meters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return m.clone();
        }
        let label = app(name);
        let m = std::sync::Arc::new(AppMeters {
            app: name.to_string(),
            in_flight: self.in_flight.get_or_create(&label).clone(),
            duration: self.duration.get_or_create(&label).clone(),
            bytes: self.bytes.get_or_create(&label).clone(),
            requests: self.requests.clone(),
            classes: Default::default(),
        });
        self.meters
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_insert(m)
            .clone()
    }

    /// A request the app did not answer (error or timeout).
    pub fn upstream_failure(&self, name: &str, failure: UpstreamFailure) {
        let kind = match failure {
            UpstreamFailure::Error => "error",
            UpstreamFailure::Timeout => "timeout",
        };
        self.upstream_failures
            .get_or_create(&AppKind {
                app: name.into(),
                kind: kind.into(),
            })
            .inc();
    }

    pub fn request_started(&self, name: &str) {
        self.in_flight.get_or_create(&app(name)).inc();
    }

    pub fn request_finished(
        &self,
        name: &str,
        status: u16,
        seconds: f64,
        bytes: u64,
        failure: Option<UpstreamFailure>,
    ) {
        let label = app(name);
        self.in_flight.get_or_create(&label).dec();
        let class = match status / 100 {
            c @ 1..=5 => format!("{c}xx"),
            _ => "other".into(),
        };
        self.requests
            .get_or_create(&AppClass {
                app: name.into(),
                class,
            })
            .inc();
        self.duration.get_or_create(&label).observe(seconds);
        self.bytes.get_or_create(&label).inc_by(bytes);
        if let Some(f) = failure {
            let kind = match f {
                UpstreamFailure::Error => "error",
                UpstreamFailure::Timeout => "timeout",
            };
            self.upstream_failures
                .get_or_create(&AppKind {
                    app: name.into(),
                    kind: kind.into(),
                })
                .inc();
        }
    }

    pub fn deploy_finished(&self, result: &str, seconds: f64) {
        let label = ResultLabel {
            result: result.into(),
        };
        self.deploys.get_or_create(&label).inc();
        self.deploy_duration.get_or_create(&label).observe(seconds);
    }

    pub fn unexpected_exit(&self, name: &str) {
        self.exits.get_or_create(&app(name)).inc();
    }

    pub fn alert_failed(&self) {
        self.alerts_failed.inc();
    }

    /// The text format (OpenMetrics, which Prometheus reads), with gauges read from the
    /// handles in `state`.
    pub fn encode(&self, state: &Gauges<'_>) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.engine_up
            .set(i64::from(matches!(state.engine.get(), Some(Ok(_)))));
        let dropped = state.access.dropped();
        self.access_dropped
            .inc_by(dropped.saturating_sub(self.access_dropped.get()));
        let written = state.access.written();
        self.access_written
            .inc_by(written.saturating_sub(self.access_written.get()));
        self.cpu.clear();
        self.memory.clear();
        for (name, point) in state.stats.latest_per_app() {
            self.cpu.get_or_create(&app(&name)).set(point.cpu_percent);
            self.memory
                .get_or_create(&app(&name))
                .set(i64::try_from(point.memory_bytes).unwrap_or(i64::MAX));
        }
        self.cert_expiry.clear();
        let now = crate::clock::now_unix();
        for (name, source, not_after) in state.certs.expiries() {
            self.cert_expiry
                .get_or_create(&CertLabel {
                    name,
                    source: source.into(),
                })
                .set(not_after - now);
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "could not encode the metrics");
        }
        out
    }
}
