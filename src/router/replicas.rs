//! Swarm mode: an app served by several tasks. The route holds the addresses of the service's
//! running tasks (rebuilt at every status refresh, which engine events trigger at once when a
//! task's container dies or starts); each request goes to the next one in turn. A task that
//! stopped is not in the next table; a bodyless idempotent request that meets one that just
//! died before the table changed is sent once more to another task (see `proxy.rs`).
//!
//! Second tries take turns of their own: sharing the first tries' counter made them move it
//! in step with a dead task, so that one healthy task was never picked first (the lab's
//! "healthy task skipped after a node loss"). A task that refused a connection can be marked
//! down ([`ReplicaSet::mark_down`]): first tries pass it over for [`DOWN_FOR`] (the mark
//! survives rebuilds of the table), which Swarm's own view of a lost node takes seconds to do.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// How long a task that refused a connection is passed over (then tried again, unless the
/// table dropped it meanwhile).
pub const DOWN_FOR: Duration = Duration::from_secs(5);

/// Milliseconds on a clock private to this process (only compared with itself).
fn now_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(std::time::Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

use super::{Route, Target};
use crate::service::swarm::SwarmView;
use crate::store::AppRow;

/// One running task the router may send to.
#[derive(Debug)]
pub struct Backend {
    pub task_id: String,
    pub addr: SocketAddr,
    /// Requests being served by it.
    pub inflight: Arc<AtomicUsize>,
    /// Until when (`now_ms`) first tries pass it over; 0 when it is not marked down.
    down_until: Arc<AtomicU64>,
}

impl Backend {
    fn is_down(&self, now: u64) -> bool {
        self.down_until.load(Ordering::Relaxed) > now
    }
}

/// The running tasks of one service, taken in turn.
#[derive(Debug)]
pub struct ReplicaSet {
    pub service_id: String,
    pub backends: Vec<Backend>,
    next: AtomicUsize,
    /// The turns of second tries, apart from the first tries' (`next`).
    next_retry: AtomicUsize,
}

impl ReplicaSet {
    /// A set of `found` (task id, address); counters of tasks already in `previous` carry over.
    pub fn new(
        service_id: &str,
        found: Vec<(String, SocketAddr)>,
        previous: Option<&ReplicaSet>,
    ) -> Self {
        let backends = found
            .into_iter()
            .map(|(task_id, addr)| {
                let known = previous.and_then(|p| {
                    p.backends
                        .iter()
                        .find(|b| b.task_id == task_id && b.addr == addr)
                });
                Backend {
                    task_id,
                    addr,
                    inflight: known.map(|b| b.inflight.clone()).unwrap_or_default(),
                    down_until: known.map(|b| b.down_until.clone()).unwrap_or_default(),
                }
            })
            .collect();
        let carried = |c: fn(&ReplicaSet) -> &AtomicUsize| {
            AtomicUsize::new(previous.map_or(0, |p| c(p).load(Ordering::Relaxed)))
        };
        Self {
            service_id: service_id.to_string(),
            backends,
            next: carried(|p| &p.next),
            next_retry: carried(|p| &p.next_retry),
        }
    }

    /// The next task in turn, passing over those marked down (unless every one is).
    pub fn pick(&self) -> Option<&Backend> {
        if self.backends.is_empty() {
            return None;
        }
        let now = now_ms();
        let up = self.backends.iter().filter(|b| !b.is_down(now)).count();
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        if up == 0 || up == self.backends.len() {
            return self.backends.get(i % self.backends.len());
        }
        self.backends.iter().filter(|b| !b.is_down(now)).nth(i % up)
    }

    /// Another task than the one at `not`, for a second try; in turns of their own, and one
    /// not marked down when there is one.
    pub fn pick_other(&self, not: SocketAddr) -> Option<&Backend> {
        let now = now_ms();
        let others = || self.backends.iter().filter(move |b| b.addr != not);
        let (all, up) = (
            others().count(),
            others().filter(|b| !b.is_down(now)).count(),
        );
        if all == 0 {
            return None;
        }
        let n = self.next_retry.fetch_add(1, Ordering::Relaxed);
        if up == 0 {
            return others().nth(n % all);
        }
        others().filter(|b| !b.is_down(now)).nth(n % up)
    }

    /// Marks the task at `addr` down after it refused a connection (or none came): first
    /// tries pass it over for [`DOWN_FOR`]. Only that task: the others keep their turns.
    pub fn mark_down(&self, addr: SocketAddr) {
        let until = now_ms().saturating_add(DOWN_FOR.as_millis() as u64);
        for b in self.backends.iter().filter(|b| b.addr == addr) {
            b.down_until.store(until, Ordering::Relaxed);
        }
    }
}

/// The target of `app` when it is a swarm service in `view`; `None` for an engine-mode app.
pub(super) fn target(
    app: &AppRow,
    view: &SwarmView,
    previous: Option<&Route>,
    port: u16,
) -> Option<Target> {
    let service = view.service(&app.container_id)?;
    let found = view.backends(&service.id, port);
    if found.is_empty() {
        let (running, wished) = view.counts(&service.id).unwrap_or((0, service.replicas));
        return Some(Target::Failing(if wished == 0 {
            "it has no replica running".into()
        } else if running > 0 {
            format!(
                "{running}/{wished} of its tasks run, but none where milkcrate can reach them (on another node while milkcrate runs on the host)"
            )
        } else {
            format!("none of its {wished} task(s) is running")
        }));
    }
    let previous = previous.and_then(|r| match &r.target {
        Target::Replicas(set) if set.service_id == service.id => Some(set.as_ref()),
        _ => None,
    });
    Some(Target::Replicas(Arc::new(ReplicaSet::new(
        &service.id,
        found,
        previous,
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([172, 18, 0, n], 8080))
    }

    /// Tasks a, b and c at .2, .3 and .4.
    fn three() -> ReplicaSet {
        ReplicaSet::new(
            "svc",
            vec![
                ("a".into(), addr(2)),
                ("b".into(), addr(3)),
                ("c".into(), addr(4)),
            ],
            None,
        )
    }

    #[test]
    fn requests_go_round_and_a_retry_goes_elsewhere() {
        let set = three();
        let picked: Vec<SocketAddr> = (0..6).map(|_| set.pick().unwrap().addr).collect();
        assert_eq!(
            picked,
            [addr(2), addr(3), addr(4), addr(2), addr(3), addr(4)]
        );
        for _ in 0..5 {
            assert_ne!(set.pick_other(addr(3)).unwrap().addr, addr(3));
        }
        let one = ReplicaSet::new("svc", vec![("a".into(), addr(2))], Some(&set));
        assert!(one.pick_other(addr(2)).is_none());
        assert!(ReplicaSet::new("svc", vec![], None).pick().is_none());
    }

    /// The lab's finding: with one task dead (every first try at it fails and goes to a second
    /// try), every healthy task still gets first tries, and second tries spread too.
    #[test]
    fn a_dead_task_does_not_starve_a_healthy_one() {
        let set = three();
        let dead = addr(2);
        let mut served = std::collections::HashMap::<SocketAddr, usize>::new();
        for _ in 0..30 {
            let first = set.pick().unwrap().addr;
            let by = if first == dead {
                set.pick_other(dead).unwrap().addr
            } else {
                first
            };
            *served.entry(by).or_default() += 1;
        }
        assert_eq!(served.get(&dead), None);
        assert!(
            served[&addr(3)] >= 10 && served[&addr(4)] >= 10,
            "{served:?}"
        );
    }

    #[test]
    fn a_task_marked_down_is_passed_over_alone_and_the_mark_survives_a_rebuild() {
        let found = || {
            vec![
                ("a".into(), addr(2)),
                ("b".into(), addr(3)),
                ("c".into(), addr(4)),
            ]
        };
        let set = ReplicaSet::new("svc", found(), None);
        set.mark_down(addr(3));
        let picked: Vec<SocketAddr> = (0..6).map(|_| set.pick().unwrap().addr).collect();
        assert!(!picked.contains(&addr(3)), "{picked:?}");
        assert!(picked.contains(&addr(2)) && picked.contains(&addr(4)));
        for _ in 0..4 {
            assert_eq!(set.pick_other(addr(2)).unwrap().addr, addr(4));
        }
        let again = ReplicaSet::new("svc", found(), Some(&set));
        assert!((0..6).all(|_| again.pick().unwrap().addr != addr(3)));
        // When every task is marked down, they are tried anyway.
        again.mark_down(addr(2));
        again.mark_down(addr(4));
        assert!(again.pick().is_some());
        assert!(again.pick_other(addr(2)).is_some());
    }

    #[test]
    fn in_flight_counts_survive_a_rebuild() {
        let set = ReplicaSet::new("svc", vec![("a".into(), addr(2))], None);
        set.backends[0].inflight.fetch_add(1, Ordering::AcqRel);
        let again = ReplicaSet::new(
            "svc",
            vec![("a".into(), addr(2)), ("b".into(), addr(3))],
            Some(&set),
        );
        assert_eq!(again.backends[0].inflight.load(Ordering::Acquire), 1);
        assert_eq!(again.backends[1].inflight.load(Ordering::Acquire), 0);
    }
}
