//! `milkcrate backup` and `milkcrate restore`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::archive::backup::{extract_verified, verify, write_backup};
use crate::store::Store;

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// Data folder of the install (as for `serve`).
    #[arg(long, env = "MILKCRATE_DATA_DIR", default_value = "./instance")]
    data_dir: PathBuf,
    /// Folder the backup is written to.
    #[arg(short, long, default_value = "./backups")]
    output: PathBuf,
    /// Leave out the uploaded app sources (apps cannot then be rebuilt from the backup).
    #[arg(long)]
    no_sources: bool,
    /// Leave out volume data (read through the Docker Engine otherwise).
    #[arg(long)]
    no_volumes: bool,
}

/// Where a volume's data sits in a backup.
const VOLUMES_DIR: &str = "volumes";

/// The Docker volumes whose data a backup holds: every milkcrate volume and every compose
/// stack volume.
async fn volumes_to_back_up(
    engine: &crate::docker::Engine,
    store: &Store,
) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = store
        .volume_docker_names()
        .await
        .map_err(|e| e.to_string())?;
    let stack = engine
        .volumes_labelled(&[
            format!("{}=true", crate::domain::labels::MANAGED),
            crate::domain::labels::STACK_VOLUME.to_string(),
        ])
        .await
        .map_err(|e| e.to_string())?;
    names.extend(stack);
    names.sort();
    names.dedup();
    Ok(names)
}

/// Reads every volume into `<work>/volumes/<name>.tar` through the engine.
fn export_volumes(store: &Store, work: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let rt = runtime()?;
    rt.block_on(async {
        let engine = match crate::docker::Engine::connect().await {
            Ok(e) => e,
            // No engine and no milkcrate volume: nothing is lost by going on.
            Err(e) if store.count_volumes().map_err(|e| e.to_string())? == 0 => {
                eprintln!("  no volume data: {e}");
                return Ok(Vec::new());
            }
            Err(e) => {
                return Err(format!(
                    "{e}; volume data cannot be read (pass --no-volumes to back up without it)"
                ));
            }
        };
        let names = volumes_to_back_up(&engine, store).await?;
        let dir = work.join(VOLUMES_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let labels = helper_labels();
        let mut out = Vec::new();
        for name in names {
            let file = dir.join(format!("{name}.tar"));
            let size = crate::service::volumes::export_to(&engine, &name, labels.clone(), &file)
                .await
                .map_err(|e| format!("reading volume {name}: {e}"))?;
            eprintln!("  read volume {name} ({:.1} KiB)", size as f64 / 1024.0);
            out.push((format!("{VOLUMES_DIR}/{name}.tar"), file));
            // Its labels too, so a restored volume belongs to the same install.
            let volume_labels = engine
                .volume_labels(&name)
                .await
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
            let labels_file = dir.join(format!("{name}.labels.json"));
            std::fs::write(
                &labels_file,
                serde_json::to_vec(&volume_labels).map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?;
            out.push((format!("{VOLUMES_DIR}/{name}.labels.json"), labels_file));
        }
        Ok(out)
    })
}

/// Labels of the helpers the CLI creates (it has no instance of its own).
fn helper_labels() -> std::collections::HashMap<String, String> {
    std::collections::HashMap::from([(
        crate::domain::labels::MANAGED.to_string(),
        "true".to_string(),
    )])
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

pub fn backup(args: BackupArgs) -> ExitCode {
    let db = args.data_dir.join("milkcrate.sqlite");
    if !db.exists() {
        return super::fail(format!(
            "no database at {}: nothing to back up",
            db.display()
        ));
    }
    if let Err(e) = std::fs::create_dir_all(&args.output) {
        return super::fail(format!("cannot create {}: {e}", args.output.display()));
    }
    let now = time::OffsetDateTime::now_utc();
    let stamp = crate::clock::utc_stamp('_');
    let work = match tempfile_dir(&args.output) {
        Ok(w) => w,
        Err(e) => return super::fail(e),
    };
    let snapshot = work.join("milkcrate.sqlite");
    let result = (|| -> Result<PathBuf, String> {
        let store = Store::open(&db).map_err(|e| e.to_string())?;
        store.snapshot_to(&snapshot).map_err(|e| e.to_string())?;
        let mut files = vec![("milkcrate.sqlite".to_string(), snapshot.clone())];
        if !args.no_volumes {
            files.extend(export_volumes(&store, &work)?);
        }
        for name in ["secret_key", "audit.log"] {
            if args.data_dir.join(name).is_file() {
                files.push((name.to_string(), args.data_dir.join(name)));
            }
        }
        for i in 1..=20 {
            let rotated = format!("audit.log.{i}");
            if args.data_dir.join(&rotated).is_file() {
                files.push((rotated.clone(), args.data_dir.join(rotated)));
            }
        }
        if !args.no_sources {
            collect(&args.data_dir, &args.data_dir.join("apps"), &mut files)
                .map_err(|e| e.to_string())?;
        }
        let out = args.output.join(format!("milkcrate_backup_{stamp}.tar.gz"));
        let created = now
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        write_backup(&out, &created, &files, |name, size| {
            eprintln!("  added {name} ({:.1} KiB)", size as f64 / 1024.0)
        })
        .map_err(|e| e.to_string())?;
        Ok(out)
    })();
    let _ = std::fs::remove_dir_all(&work);
    match result {
        Ok(out) => {
            let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
            println!(
                "Backup written to {} ({:.1} KiB)",
                out.display(),
                size as f64 / 1024.0
            );
            ExitCode::SUCCESS
        }
        Err(e) => super::fail(format!("backup failed: {e}")),
    }
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> std::io::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries {
        let path = e?.path();
        if path.is_dir() {
            collect(root, &path, out)?;
        } else if path.is_file() {
            let rel = path
                .strip_prefix(root)
                .map_err(std::io::Error::other)?
                .to_string_lossy()
                .to_string();
            out.push((rel, path));
        }
    }
    Ok(())
}

fn tempfile_dir(parent: &Path) -> Result<PathBuf, String> {
    let dir = parent.join(format!(
        ".milkcrate-tmp-{}",
        crate::secrets::random_token(9)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(dir)
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The backup to restore (default: the newest in --backup-dir).
    file: Option<PathBuf>,
    /// Data folder to restore into.
    #[arg(long, env = "MILKCRATE_DATA_DIR", default_value = "./instance")]
    data_dir: PathBuf,
    /// Where backups are looked for.
    #[arg(long, default_value = "./backups")]
    backup_dir: PathBuf,
    /// List the backups, newest first, and stop.
    #[arg(long)]
    list: bool,
    /// Replace the current data without asking.
    #[arg(short, long)]
    yes: bool,
    /// Then recreate every app whose container is not running, from its image when the engine
    /// has it, else rebuilt from its sources in the backup (settings such as TRAEFIK_NETWORK
    /// come from the environment, as for `serve`).
    #[arg(long)]
    redeploy: bool,
}

pub fn restore(args: RestoreArgs) -> ExitCode {
    let mut backups: Vec<(PathBuf, std::time::SystemTime, u64)> =
        std::fs::read_dir(&args.backup_dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                            n.starts_with("milkcrate_backup_") && n.ends_with(".tar.gz")
                        })
                    })
                    .filter_map(|p| {
                        std::fs::metadata(&p)
                            .ok()
                            .map(|m| (p, m.modified().unwrap_or(std::time::UNIX_EPOCH), m.len()))
                    })
                    .collect()
            })
            .unwrap_or_default();
    // Names carry the UTC time, so sorting them sorts by date; newest first.
    backups.sort_by(|a, b| b.0.cmp(&a.0));
    if args.list {
        if backups.is_empty() {
            println!("No backups in {}.", args.backup_dir.display());
        }
        for (p, _, size) in &backups {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            let date = name
                .trim_start_matches("milkcrate_backup_")
                .trim_end_matches(".tar.gz");
            println!(
                "{date}  {:>10.1} KiB  {}",
                *size as f64 / 1024.0,
                p.display()
            );
        }
        return ExitCode::SUCCESS;
    }
    let Some(file) = args
        .file
        .clone()
        .or_else(|| backups.first().map(|b| b.0.clone()))
    else {
        return super::fail(format!(
            "no backup given and none in {}",
            args.backup_dir.display()
        ));
    };
    let manifest = match verify(&file) {
        Ok(v) => v,
        Err(e) => return super::fail(e),
    };
    println!(
        "{} is intact: {} files from {}.",
        file.display(),
        manifest.files.len(),
        manifest.created
    );
    if args.data_dir.join("milkcrate.sqlite").exists() && !args.yes {
        if !std::io::stdin().is_terminal() {
            return super::fail(format!(
                "{} holds data; pass --yes to replace it",
                args.data_dir.display()
            ));
        }
        print!(
            "Replace the data in {} with this backup? [y/N] ",
            args.data_dir.display()
        );
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !answer.trim().eq_ignore_ascii_case("y") {
            println!("Nothing was changed.");
            return ExitCode::FAILURE;
        }
    }
    // Everything is written beside the data folder first; only a complete copy replaces it.
    let parent = args
        .data_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let staging = match tempfile_dir(&parent) {
        Ok(s) => s,
        Err(e) => return super::fail(e),
    };
    let write_all = || -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| e.to_string())?;
        extract_verified(&file, &manifest, &staging).map_err(|e| e.to_string())
    };
    if let Err(e) = write_all() {
        let _ = std::fs::remove_dir_all(&staging);
        return super::fail(format!("restore failed, nothing was changed: {e}"));
    }
    let previous = parent.join(format!(
        "{}.before-restore-{}",
        args.data_dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy(),
        crate::clock::now_unix()
    ));
    if args.data_dir.exists()
        && let Err(e) = std::fs::rename(&args.data_dir, &previous)
    {
        let _ = std::fs::remove_dir_all(&staging);
        return super::fail(format!(
            "cannot move the current data aside, nothing was changed: {e}"
        ));
    }
    if let Err(e) = std::fs::rename(&staging, &args.data_dir) {
        let _ = std::fs::rename(&previous, &args.data_dir);
        return super::fail(format!(
            "restore failed, the previous data is back in place: {e}"
        ));
    }
    println!("Restored into {}.", args.data_dir.display());
    let volume_data = args.data_dir.join(VOLUMES_DIR);
    if volume_data.is_dir() {
        match restore_volumes(&volume_data) {
            Ok(()) => {
                let _ = std::fs::remove_dir_all(&volume_data);
            }
            Err(e) => {
                eprintln!(
                    "Volume data was not restored: {e}. It is kept in {}; run restore again when the engine answers.",
                    volume_data.display()
                );
                return ExitCode::FAILURE;
            }
        }
    }
    if previous.exists() {
        println!("The previous data is kept in {}.", previous.display());
    }
    if args.redeploy {
        return match super::redeploy::redeploy_all(&args.data_dir, "restore --redeploy", false) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => super::fail(e),
        };
    }
    println!("Restart milkcrate; apps whose containers are missing show a Redeploy button.");
    ExitCode::SUCCESS
}

/// Puts each volume's data back. A volume that exists and holds data is left as it is (a
/// restore never overwrites live data); a missing or empty one is filled.
fn restore_volumes(dir: &Path) -> Result<(), String> {
    let rt = runtime()?;
    rt.block_on(async {
        let engine = crate::docker::Engine::connect()
            .await
            .map_err(|e| e.to_string())?;
        let labels = helper_labels();
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| e.to_string())?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "tar"))
            .collect();
        entries.sort();
        for file in entries {
            let name = file
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            match engine
                .volume_labels(&name)
                .await
                .map_err(|e| e.to_string())?
            {
                None => {
                    let saved = std::fs::read(dir.join(format!("{name}.labels.json")))
                        .ok()
                        .and_then(|b| {
                            serde_json::from_slice::<std::collections::HashMap<String, String>>(&b)
                                .ok()
                        });
                    let mut l = saved.unwrap_or_else(|| labels.clone());
                    l.insert(crate::domain::labels::MANAGED.into(), "true".into());
                    engine
                        .create_volume(&name, l)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Some(_) => {
                    if !crate::service::volumes::is_empty(&engine, &name, labels.clone()).await? {
                        println!("Volume {name} already holds data: left as it is.");
                        continue;
                    }
                }
            }
            crate::service::volumes::import_from(&engine, &name, labels.clone(), &file)
                .await
                .map_err(|e| format!("volume {name}: {e}"))?;
            println!("Restored the data of volume {name}.");
        }
        Ok(())
    })
}
