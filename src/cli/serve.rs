//! `milkcrate serve`: parse settings, open the data folder, listen, serve until Ctrl-C/SIGTERM.
//! After the server's own graceful shutdown, work still running (a deploy's blocking step,
//! say) gets a short grace period and is then abandoned: a signal always ends the process.

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use crate::app::{self, AppState};
use crate::config::{ServeArgs, Settings};
use crate::server::{Listener, ListenerKind};

pub fn run(args: ServeArgs) -> ExitCode {
    let settings = match Settings::from_args(&args) {
        Ok(s) => s,
        Err(e) => return super::fail(e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return super::fail(format!("cannot start the async runtime: {e}")),
    };
    run_then_stop(runtime, SHUTDOWN_GRACE, async move {
        let state = match AppState::open(settings) {
            Ok(s) => s,
            Err(e) => return super::fail(e),
        };
        if let Some(files) = &state.settings.tls
            && let Err(e) = crate::server::load_tls(files)
        {
            return super::fail(e);
        }
        for w in &state.settings.warnings {
            eprintln!("milkcrate: warning: {w}");
        }
        let mut listeners = Vec::new();
        let main_tls = state.settings.tls.is_some();
        let wanted = [
            (
                Some(state.settings.listen),
                ListenerKind::Main { tls: main_tls },
            ),
            (state.settings.http_listen, ListenerKind::Http),
            (state.settings.https_listen, ListenerKind::Https),
        ];
        for (addr, kind) in wanted {
            let Some(addr) = addr else { continue };
            let listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => return super::fail(format!("cannot listen on {addr}: {e}")),
            };
            let scheme = if matches!(kind, ListenerKind::Https | ListenerKind::Main { tls: true }) {
                "https"
            } else {
                "http"
            };
            let bound = listener.local_addr().unwrap_or(addr);
            super::log_writer::flush();
            eprintln!(
                "milkcrate listening on {scheme}://{bound} (data in {})",
                state.settings.data_dir.display()
            );
            listeners.push(Listener { listener, kind });
        }
        // Handlers are in place before anyone is told the server listens: a signal sent from
        // then on always takes the graceful path.
        let shutdown = shutdown_signal();
        match app::serve_on(state, listeners, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => super::fail(e),
        }
    })
}

/// How long tasks still running after the server stopped may take before the process exits.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Runs `main` on `runtime`, then shuts the runtime down waiting at most `grace` for what is
/// left. Dropping a runtime instead waits for every blocking task to end, so one stuck
/// thread would keep a stopped server's process alive for as long as it runs.
fn run_then_stop(
    runtime: tokio::runtime::Runtime,
    grace: Duration,
    main: impl Future<Output = ExitCode>,
) -> ExitCode {
    let code = runtime.block_on(main);
    runtime.shutdown_timeout(grace);
    code
}

/// Registers for SIGINT and SIGTERM now; the returned future resolves at the first of them.
fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).ok();
    let mut term = signal(SignalKind::terminate()).ok();
    async move {
        let wait = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = wait(int.take()) => {}
            () = wait(term.take()) => {}
        }
        super::log_writer::flush();
        eprintln!("milkcrate: shutting down");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blocking task that never ends (the exponential `.dockerignore` of issue 13.6 was
    /// one) must not keep the process alive once the server has stopped.
    #[test]
    fn a_stuck_blocking_task_does_not_keep_the_process_alive() {
        let (release, stuck) = std::sync::mpsc::channel::<()>();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .build()
                .expect("a runtime");
            let code = run_then_stop(runtime, Duration::from_millis(100), async move {
                tokio::task::spawn_blocking(move || {
                    let _ = stuck.recv();
                });
                ExitCode::SUCCESS
            });
            let _ = done.send(code);
        });
        let outcome = finished.recv_timeout(Duration::from_secs(30));
        let _ = release.send(());
        assert_eq!(
            outcome.expect("serve returned while a blocking task was still running"),
            ExitCode::SUCCESS
        );
    }
}
