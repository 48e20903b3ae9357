//! `milkcrate setup`: the data folder, database, secret key file and admin password, once.
//! A second run changes nothing and says so.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::write_private_file;
use crate::domain::password::check_strength;
use crate::store::Store;
use crate::store::settings::ADMIN_PASSWORD;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data folder of the install (as for `serve`).
    #[arg(long, env = "MILKCRATE_DATA_DIR", default_value = "./instance")]
    data_dir: PathBuf,
}

pub fn run(args: Args) -> ExitCode {
    let dir = &args.data_dir;
    let mut done = Vec::new();
    if !dir.is_dir() {
        if let Err(e) = crate::config::create_private_dir(dir) {
            return super::fail(format!(
                "cannot create the data folder {}: {e}",
                dir.display()
            ));
        }
        done.push(format!(
            "created the data folder {} (mode 700)",
            dir.display()
        ));
    }
    let db = dir.join("milkcrate.sqlite");
    let existed = db.exists();
    let store = match Store::open(&db) {
        Ok(s) => s,
        Err(e) => return super::fail(e),
    };
    if !existed {
        done.push(format!("created the database {}", db.display()));
    }
    let key = dir.join("secret_key");
    if !key.exists() {
        if let Err(e) = write_private_file(&key, crate::secrets::random_token(32).as_bytes()) {
            return super::fail(format!("cannot write {}: {e}", key.display()));
        }
        done.push(format!(
            "wrote a random secret key to {} (mode 600)",
            key.display()
        ));
    }
    let has_password = store
        .setting_blocking(ADMIN_PASSWORD)
        .ok()
        .flatten()
        .is_some_and(|p| !p.trim().is_empty());
    if !has_password {
        let pw = match super::reset_password::read_password() {
            Ok(p) => p,
            Err(e) => return super::fail(e),
        };
        if let Err(e) = check_strength(&pw) {
            return super::fail(format!("password refused: {e}"));
        }
        if let Err(e) = crate::auth::set_password_blocking(&store, &pw) {
            return super::fail(e);
        }
        done.push("set the admin password".into());
    }
    if done.is_empty() {
        println!(
            "milkcrate is already set up in {}: nothing changed.",
            dir.display()
        );
    } else {
        for d in &done {
            println!("{d}");
        }
        println!(
            "Start it with: MILKCRATE_DATA_DIR={} milkcrate serve",
            dir.display()
        );
    }
    ExitCode::SUCCESS
}
