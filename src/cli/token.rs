//! `milkcrate token create NAME [--scope ...] [--app ...] [--expires 90d]`: mints an API token
//! at the server's terminal (from its data folder, no server needed). The secret is printed
//! once; only its hash is stored.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::audit::{Actor, AuditLog, Event};
use crate::domain::token::{Level, Scope, parse_lifetime};
use crate::store::Store;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Create a token and print its secret (once).
    Create(CreateArgs),
}

#[derive(Debug, clap::Args)]
struct CreateArgs {
    /// A name to recognise it by (e.g. ci-deploy).
    name: String,
    /// read, deploy or admin.
    #[arg(long, default_value = "deploy")]
    scope: String,
    /// Limit a deploy token to this app; repeatable.
    #[arg(long)]
    app: Vec<String>,
    /// Lifetime: 90d, 12h, 30m or never.
    #[arg(long, default_value = "90d")]
    expires: String,
    /// Data folder of the install (as for `serve`).
    #[arg(long, env = "MILKCRATE_DATA_DIR", default_value = "./instance")]
    data_dir: PathBuf,
    /// Print {"token", "id"} as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> ExitCode {
    let Action::Create(args) = args.action;
    let scope = Level::parse(&args.scope).and_then(|l| Scope::new(l, &args.app));
    let (scope, lifetime) = match scope.and_then(|s| Ok((s, parse_lifetime(&args.expires)?))) {
        Ok(v) => v,
        Err(e) => return super::fail(e),
    };
    let db = args.data_dir.join("milkcrate.sqlite");
    if !db.is_file() {
        return super::fail(format!(
            "no milkcrate database in {} (run `milkcrate setup` or pass --data-dir)",
            args.data_dir.display()
        ));
    }
    let store = match Store::open(&db) {
        Ok(s) => s,
        Err(e) => return super::fail(e),
    };
    let minted = match crate::service::tokens::create_blocking(&store, &args.name, &scope, lifetime)
    {
        Ok(m) => m,
        Err(e) => return super::fail(e),
    };
    if let Ok(log) = AuditLog::open(&args.data_dir.join("audit.log"), u64::MAX, 5) {
        let event = Event::new(
            "token_create",
            "token",
            format!("{}#{}", args.name.trim(), minted.id),
        )
        .details(
            serde_json::json!({"scope": scope.level.as_str(), "apps": scope.apps, "via": "cli"}),
        );
        let _ = log.record_blocking(&Actor::cli("token create"), event);
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({"token": minted.secret, "id": minted.id})
        );
    } else {
        println!("{}", minted.secret);
        eprintln!(
            "Token {} (#{}, scope {scope}) created; it is shown only this once.",
            args.name.trim(),
            minted.id
        );
    }
    ExitCode::SUCCESS
}
