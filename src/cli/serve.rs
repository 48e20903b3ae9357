//! `milkcrate serve`: parse settings, open the data folder, listen, serve until Ctrl-C/SIGTERM.

use std::process::ExitCode;

use crate::app::{self, AppState};
use crate::config::{ServeArgs, Settings};

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
    runtime.block_on(async move {
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
        let addr = state.settings.listen;
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => return super::fail(format!("cannot listen on {addr}: {e}")),
        };
        let scheme = if state.settings.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let bound = listener.local_addr().unwrap_or(addr);
        eprintln!(
            "milkcrate listening on {scheme}://{bound} (data in {})",
            state.settings.data_dir.display()
        );
        match app::serve(state, listener, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => super::fail(e),
        }
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    eprintln!("milkcrate: shutting down");
}
