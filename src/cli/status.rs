//! `milkcrate status`: the apps, their routes and what the engine says of them.

use std::process::ExitCode;

use serde::Serialize;

use crate::config::{ServeArgs, Settings};
use crate::docker::Engine;
use crate::service::status::{Snapshot, status_of};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    serve: ServeArgs,
    /// Print the apps as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Row {
    name: String,
    route: String,
    status: String,
    detail: String,
    image: String,
    port: u16,
    /// A compose app's services and the engine's state of each.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    services: std::collections::BTreeMap<String, String>,
}

pub fn run(args: Args) -> ExitCode {
    let settings = match Settings::from_args(&args.serve) {
        Ok(s) => s,
        Err(e) => return super::fail(e),
    };
    let db = settings.database_path();
    // Opening a missing database would create an empty one (and report "No apps").
    if !db.is_file() {
        return super::fail(format!(
            "there is no milkcrate database at {}: {}. Pass the install's folder with --data-dir (or MILKCRATE_DATA_DIR), or run `milkcrate setup` to create one",
            db.display(),
            if settings.data_dir.is_dir() {
                "the data folder holds no install"
            } else {
                "the data folder does not exist"
            }
        ));
    }
    let store = match crate::store::Store::open(&db) {
        Ok(s) => s,
        Err(e) => {
            return super::fail(format!(
                "cannot open the database {}: {e}. Run this as the user that runs `milkcrate serve`, with the same --data-dir",
                db.display()
            ));
        }
    };
    let mut settings = settings;
    if let Err(e) = crate::app::settle_identity(&mut settings, &store) {
        return super::fail(e);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (apps, snap) = runtime.block_on(async {
        let apps = store.apps().await;
        let mut snap = Snapshot::default();
        match Engine::connect().await {
            Ok(engine) => match engine
                .list_labelled(&[settings.managed_filter()], &settings.network)
                .await
            {
                Ok(c) => {
                    snap.containers = c;
                    snap.taken = Some(std::time::Instant::now());
                }
                Err(e) => snap.engine_error = Some(e.to_string()),
            },
            Err(e) => snap.engine_error = Some(e.to_string()),
        }
        (apps, snap)
    });
    let apps = match apps {
        Ok(a) => a,
        Err(e) => return super::fail(e),
    };
    let rows: Vec<Row> = apps
        .iter()
        .map(|a| {
            let s = status_of(a, &snap);
            Row {
                name: a.name.clone(),
                route: a.public_route.clone(),
                status: crate::web::health::label(&s.health),
                detail: s.detail,
                image: a.image_tag.clone(),
                port: a.internal_port,
                services: crate::service::status::stack_services(a, &snap)
                    .into_iter()
                    .map(|(s, c)| (s.to_string(), c.state.clone()))
                    .collect(),
            }
        })
        .collect();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
    } else if rows.is_empty() {
        println!("No apps.");
    } else {
        println!("{:24} {:24} {:12} IMAGE", "APP", "ROUTE", "STATUS");
        for r in &rows {
            println!("{:24} {:24} {:12} {}", r.name, r.route, r.status, r.image);
            if !r.services.is_empty() {
                let each: Vec<String> = r
                    .services
                    .iter()
                    .map(|(s, st)| format!("{s} {st}"))
                    .collect();
                println!("{:24} services: {}", "", each.join(", "));
            }
        }
    }
    if let Some(e) = snap.engine_error {
        eprintln!("milkcrate: warning: {e}");
    }
    ExitCode::SUCCESS
}
