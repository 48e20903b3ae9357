//! `milkcrate migrate --from DIR`: adopts an install of the original (Python) milkcrate. Its
//! database is copied with a consistent snapshot and adopted in place by the migrations (apps
//! keep their routes, the werkzeug password keeps working and is re-hashed at the first login),
//! its audit log is kept (both line formats are read), and each app's newest extracted sources
//! become its stored sources. The original's containers lack milkcrate's labels (and Docker
//! cannot add labels to a container): they show as Missing until Redeploy recreates them
//! hardened from their image; `--redeploy` does that for every app at once and stops the
//! original's containers.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;

use crate::archive::package::package_dir;
use crate::config::write_private_file;
use crate::store::Store;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The original's project folder (holding instance/, uploads/, extracted_apps/).
    #[arg(long)]
    from: PathBuf,
    /// Data folder to create for milkcrate.
    #[arg(long, env = "MILKCRATE_DATA_DIR", default_value = "./instance")]
    data_dir: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Then recreate every app hardened (from the original's image, or rebuilt from its
    /// sources) and stop the original's container of each app that came back.
    #[arg(long)]
    redeploy: bool,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    apps: Vec<MovedApp>,
    volumes: usize,
    settings: Vec<String>,
    audit_lines: usize,
    needs_a_hand: Vec<String>,
}

#[derive(Debug, Serialize)]
struct MovedApp {
    name: String,
    route: String,
    sources: Option<String>,
}

pub fn run(args: Args) -> ExitCode {
    let original_db = args.from.join("instance").join("milkcrate.sqlite");
    if !original_db.is_file() {
        return super::fail(format!("no original database at {}", original_db.display()));
    }
    let target_db = args.data_dir.join("milkcrate.sqlite");
    if target_db.exists() {
        return super::fail(format!(
            "{} already holds a database; migrate into a new data folder",
            args.data_dir.display()
        ));
    }
    match migrate(&args, &original_db, &target_db) {
        Ok(report) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                println!(
                    "Moved {} app(s), {} volume record(s), settings {:?}, {} audit line(s) into {}.",
                    report.apps.len(),
                    report.volumes,
                    report.settings,
                    report.audit_lines,
                    args.data_dir.display()
                );
                for a in &report.apps {
                    println!(
                        "  {} at {}: sources {}",
                        a.name,
                        a.route,
                        a.sources.as_deref().unwrap_or("not found")
                    );
                }
                for n in &report.needs_a_hand {
                    println!("Needs a hand: {n}");
                }
            }
            if args.redeploy
                && let Err(e) =
                    super::redeploy::redeploy_all(&args.data_dir, "migrate --redeploy", true)
            {
                return super::fail(e);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            // Leave nothing half-made behind.
            let _ = std::fs::remove_dir_all(&args.data_dir);
            super::fail(format!("migration failed, nothing was kept: {e}"))
        }
    }
}

fn migrate(args: &Args, original_db: &Path, target_db: &Path) -> Result<Report, String> {
    crate::config::create_private_dir(&args.data_dir).map_err(|e| e.to_string())?;
    // A consistent copy of the original's database (it may still be running), then adopted.
    Store::open_existing_snapshot(original_db, target_db).map_err(|e| e.to_string())?;
    let store = Store::open(target_db).map_err(|e| e.to_string())?;
    // The migrated install is new: it gets its identity now, before it creates anything (the
    // original's containers carry none and are never touched but by this command).
    store
        .set_setting_blocking(
            crate::store::settings::INSTALL_ID,
            &format!("mc-{}", hex::encode(crate::secrets::random_bytes::<5>())),
        )
        .map_err(|e| e.to_string())?;
    let mut report = Report::default();
    let key = args.data_dir.join("secret_key");
    write_private_file(&key, crate::secrets::random_token(32).as_bytes())
        .map_err(|e| e.to_string())?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let apps = runtime.block_on(store.apps()).map_err(|e| e.to_string())?;
    report.volumes = store.count_volumes().map_err(|e| e.to_string())?;
    use crate::store::settings::{ADMIN_PASSWORD, DEFAULT_HOME_ROUTE};
    for key in [DEFAULT_HOME_ROUTE, ADMIN_PASSWORD] {
        if store
            .setting_blocking(key)
            .ok()
            .flatten()
            .is_some_and(|v| !v.is_empty())
        {
            report.settings.push(key.to_string());
        }
    }
    for app in &apps {
        let sources = newest_extracted(&args.from.join("extracted_apps"), &app.name);
        let stored = match &sources {
            Some(dir) => {
                let target_dir = args.data_dir.join("apps").join(&app.name_key);
                std::fs::create_dir_all(&target_dir).map_err(|e| e.to_string())?;
                let zip = target_dir.join("migrated.zip");
                package_dir(dir, &zip, &[], false).map_err(|e| e.to_string())?;
                runtime
                    .block_on(store.set_app_source(app.id, zip.display().to_string()))
                    .map_err(|e| e.to_string())?;
                Some(zip.display().to_string())
            }
            None => {
                report.needs_a_hand.push(format!(
                    "{}: no extracted sources found; upload its ZIP again with Update",
                    app.name
                ));
                None
            }
        };
        report.apps.push(MovedApp {
            name: app.name.clone(),
            route: app.public_route.clone(),
            sources: stored,
        });
        if !app.public_route.is_empty()
            && crate::domain::app::PublicRoute::parse(&app.public_route)
                .map(|r| r.as_str().to_string())
                .ok()
                .as_deref()
                != Some(app.public_route.as_str())
        {
            report.needs_a_hand.push(format!("{}: its route {} overlaps milkcrate's own paths and is not served; delete and redeploy it at another route", app.name, app.public_route));
        }
    }
    if !apps.is_empty() && !args.redeploy {
        report.needs_a_hand.push("the original's containers lack milkcrate's labels: each app shows as Missing until you press Redeploy (or run migrate with --redeploy), which recreates it hardened from its image".into());
    }
    let audit = args.from.join("instance").join("audit.log");
    if audit.is_file() {
        std::fs::copy(&audit, args.data_dir.join("audit.log")).map_err(|e| e.to_string())?;
        report.audit_lines = std::fs::read_to_string(&audit)
            .map(|t| t.lines().count())
            .unwrap_or(0);
    }
    Ok(report)
}

/// The newest `extracted_apps/<name>_<YYYYmmdd_HHMMSS>` (or `<name>_update_<…>`) folder: the
/// name must be followed by `_` and a timestamp, so `app1` never picks up `app10_…`.
fn newest_extracted(root: &Path, name: &str) -> Option<PathBuf> {
    let mut found: Vec<(String, PathBuf)> = std::fs::read_dir(root)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .filter_map(|e| {
            let dir = e.file_name().to_string_lossy().to_string();
            let rest = dir.strip_prefix(name)?.strip_prefix('_')?;
            let stamp = rest.strip_prefix("update_").unwrap_or(rest);
            let valid = stamp.len() == 15
                && stamp
                    .chars()
                    .enumerate()
                    .all(|(i, c)| if i == 8 { c == '_' } else { c.is_ascii_digit() });
            valid.then(|| (stamp.to_string(), e.path()))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}
