//! Swarm mode: an app served by several tasks. The route holds the addresses of the service's
//! running tasks (rebuilt at every status refresh, which engine events trigger at once when a
//! task's container dies or starts); each request goes to the next one in turn. A task that
//! stopped is not in the next table; a bodyless idempotent request that meets one that just
//! died before the table changed is sent once more to another task (see `proxy.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

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
}

/// The running tasks of one service, taken in turn.
#[derive(Debug)]
pub struct ReplicaSet {
    pub service_id: String,
    pub backends: Vec<Backend>,
    next: AtomicUsize,
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
                let inflight = previous
                    .and_then(|p| {
                        p.backends
                            .iter()
                            .find(|b| b.task_id == task_id && b.addr == addr)
                    })
                    .map(|b| b.inflight.clone())
                    .unwrap_or_default();
                Backend {
                    task_id,
                    addr,
                    inflight,
                }
            })
            .collect();
        Self {
            service_id: service_id.to_string(),
            backends,
            next: AtomicUsize::new(previous.map_or(0, |p| p.next.load(Ordering::Relaxed))),
        }
    }

    /// The next task in turn.
    pub fn pick(&self) -> Option<&Backend> {
        if self.backends.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.backends.len();
        self.backends.get(i)
    }

    /// Another task than the one at `not`, for a second try.
    pub fn pick_other(&self, not: SocketAddr) -> Option<&Backend> {
        let others = self.backends.iter().filter(|b| b.addr != not).count();
        if others == 0 {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed) % others;
        self.backends.iter().filter(|b| b.addr != not).nth(n)
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

    #[test]
    fn requests_go_round_and_a_retry_goes_elsewhere() {
        let set = ReplicaSet::new(
            "svc",
            vec![
                ("a".into(), addr(2)),
                ("b".into(), addr(3)),
                ("c".into(), addr(4)),
            ],
            None,
        );
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
