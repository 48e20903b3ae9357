//! `milkcrate reset-password`: sets the admin password without the web UI, for a forgotten
//! password. Reads from a prompt (twice) or, when stdin is not a terminal, one line of stdin.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::audit::{Actor, AuditLog, Event};
use crate::domain::password::check_strength;
use crate::store::Store;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data folder of the install (as for `serve`).
    #[arg(long, env = "MILKCRATE_DATA_DIR", default_value = "./instance")]
    data_dir: PathBuf,
}

pub fn run(args: Args) -> ExitCode {
    let password = match read_password() {
        Ok(p) => p,
        Err(e) => return super::fail(e),
    };
    if let Err(e) = check_strength(&password) {
        return super::fail(format!("password refused: {e}"));
    }
    if let Err(e) = std::fs::create_dir_all(&args.data_dir) {
        return super::fail(format!(
            "cannot create the data folder {}: {e}",
            args.data_dir.display()
        ));
    }
    let store = match Store::open(&args.data_dir.join("milkcrate.sqlite")) {
        Ok(s) => s,
        Err(e) => return super::fail(e),
    };
    if let Err(e) = crate::auth::set_password_blocking(&store, &password) {
        return super::fail(e);
    }
    let ended = store.delete_all_sessions_blocking().unwrap_or(0);
    if let Ok(log) = AuditLog::open(&args.data_dir.join("audit.log"), u64::MAX, 5) {
        let actor = Actor::cli("reset-password");
        let event = Event::new("password_change", "setting", "admin_password")
            .details(serde_json::json!({"via": "cli", "sessions_ended": ended}));
        let _ = log.record_blocking(&actor, event);
    }
    println!("Admin password updated; {ended} session(s) signed out.");
    ExitCode::SUCCESS
}

pub(super) fn read_password() -> Result<String, String> {
    if std::io::stdin().is_terminal() {
        let first =
            rpassword::prompt_password("New admin password: ").map_err(|e| e.to_string())?;
        let second = rpassword::prompt_password("Again: ").map_err(|e| e.to_string())?;
        if first != second {
            return Err("the two passwords do not match".into());
        }
        Ok(first)
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read stdin: {e}"))?;
        Ok(line.trim_end_matches(['\n', '\r']).to_string())
    }
}
