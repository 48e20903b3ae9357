//! One action per app at a time. Every deploy (create, update, rollback, reconfigure), start,
//! stop, restart and delete of an app holds its lock, so two updates started 50 ms apart run
//! one after the other (the second re-reads the row the first wrote) instead of racing to
//! leave two containers running. Delete also cancels a deploy of the app that is under way:
//! the deploy undoes what it made, then delete runs. The status loop's repairs only try the
//! lock and skip an app that is busy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedMutexGuard, watch};

#[derive(Default)]
pub struct AppLocks {
    apps: Mutex<HashMap<i64, Entry>>,
}

#[derive(Clone)]
struct Entry {
    lock: Arc<tokio::sync::Mutex<()>>,
    /// Bumped by delete: a deploy under way sees the change and stops.
    cancel: watch::Sender<u64>,
}

/// Held while an action on one app runs.
pub struct AppGuard {
    _guard: OwnedMutexGuard<()>,
}

impl AppLocks {
    fn entry(&self, app_id: i64) -> Entry {
        let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        apps.entry(app_id)
            .or_insert_with(|| Entry {
                lock: Arc::default(),
                cancel: watch::channel(0).0,
            })
            .clone()
    }

    /// Waits for the app's other action (if any) to end. `waiting` is called once when it
    /// has to wait, so the caller can say so.
    pub async fn lock(&self, app_id: i64, waiting: impl FnOnce()) -> AppGuard {
        let lock = self.entry(app_id).lock;
        let guard = match lock.clone().try_lock_owned() {
            Ok(g) => g,
            Err(_) => {
                waiting();
                lock.lock_owned().await
            }
        };
        AppGuard { _guard: guard }
    }

    /// The lock if the app is idle now; `None` when an action is under way.
    pub fn try_lock(&self, app_id: i64) -> Option<AppGuard> {
        self.entry(app_id)
            .lock
            .try_lock_owned()
            .ok()
            .map(|g| AppGuard { _guard: g })
    }

    /// A receiver that changes when the app's deploys are to stop (it is being deleted).
    pub fn cancellation(&self, app_id: i64) -> watch::Receiver<u64> {
        self.entry(app_id).cancel.subscribe()
    }

    /// Tells a deploy of the app under way to stop and undo itself.
    pub fn cancel(&self, app_id: i64) {
        self.entry(app_id).cancel.send_modify(|n| *n += 1);
    }

    /// Forgets a deleted app.
    pub fn forget(&self, app_id: i64) {
        self.apps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&app_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_action_waits_for_the_first_and_says_so() {
        let locks = Arc::new(AppLocks::default());
        let first = locks.lock(7, || panic!("nothing to wait for")).await;
        assert!(locks.try_lock(7).is_none(), "busy");
        assert!(locks.try_lock(8).is_some(), "other apps are not");
        let said = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (l, s) = (locks.clone(), said.clone());
        let second = tokio::spawn(async move {
            let _g = l
                .lock(7, || s.store(true, std::sync::atomic::Ordering::SeqCst))
                .await;
        });
        tokio::task::yield_now().await;
        assert!(said.load(std::sync::atomic::Ordering::SeqCst));
        assert!(!second.is_finished());
        drop(first);
        second.await.unwrap();
        assert!(locks.try_lock(7).is_some());
    }

    #[tokio::test]
    async fn cancel_reaches_a_deploy_under_way() {
        let locks = AppLocks::default();
        let mut rx = locks.cancellation(3);
        locks.cancel(3);
        rx.changed().await.unwrap();
    }
}
