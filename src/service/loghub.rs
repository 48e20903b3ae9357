//! Live logs of running deploys: every line is kept in memory while the deploy runs and sent to
//! whoever watches, so a page that connects late still gets the whole log, then the rest live.
//! Finished deploys are read from the store instead.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::broadcast;

#[derive(Debug, Clone)]
pub enum LogEvent {
    Line(String),
    /// The deploy ended: `succeeded` or `failed`.
    Done(String),
}

struct Active {
    lines: Vec<String>,
    tx: broadcast::Sender<LogEvent>,
}

#[derive(Default)]
pub struct LogHub {
    active: Mutex<HashMap<i64, Active>>,
}

impl LogHub {
    pub fn open(&self, deploy_id: i64) {
        let (tx, _) = broadcast::channel(1024);
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                deploy_id,
                Active {
                    lines: Vec::new(),
                    tx,
                },
            );
    }

    pub fn line(&self, deploy_id: i64, line: String) {
        let mut map = self.active.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = map.get_mut(&deploy_id) {
            a.lines.push(line.clone());
            let _ = a.tx.send(LogEvent::Line(line));
        }
    }

    pub fn close(&self, deploy_id: i64, status: &str) {
        if let Some(a) = self
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&deploy_id)
        {
            let _ = a.tx.send(LogEvent::Done(status.to_string()));
        }
    }

    /// The lines so far and a receiver for what follows, taken atomically; `None` when the
    /// deploy is not running.
    pub fn watch(&self, deploy_id: i64) -> Option<(Vec<String>, broadcast::Receiver<LogEvent>)> {
        let map = self.active.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&deploy_id)
            .map(|a| (a.lines.clone(), a.tx.subscribe()))
    }
}
