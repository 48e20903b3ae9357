//! `milkcrate backup` and `milkcrate restore`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::archive::backup::{BackupError, extract_verified, verify, write_backup};
use crate::service::leftovers::{self, Owner, write_error};
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
    /// Name of the install (as for `serve`); the helper containers the backup makes carry it.
    #[arg(long, env = "MILKCRATE_INSTANCE")]
    instance: Option<String>,
}

/// Where a volume's data sits in a backup.
const VOLUMES_DIR: &str = "volumes";
/// Work folders of running backups, inside the data folder: `<owner>-<random>/`. Those of a
/// backup that was killed are removed by the next backup and the next server start.
const WORK_DIR: &str = leftovers::BACKUP_WORK_DIR;
/// A backup being written: `.milkcrate_backup_<owner>-<random>.part` in the output folder,
/// 0600, renamed to its final name only once complete and on disk.
const PART_PREFIX: &str = ".milkcrate_backup_";

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
fn export_volumes(
    args: &BackupArgs,
    store: &Store,
    work: &Path,
) -> Result<Vec<(String, PathBuf)>, String> {
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
        // Helpers of a backup of this data folder that was killed hold their volume in use.
        let stale =
            crate::service::volumes::remove_dead_backup_helpers(&engine, &args.data_dir).await;
        if stale > 0 {
            eprintln!("  removed {stale} helper container(s) an interrupted backup left");
        }
        let names = volumes_to_back_up(&engine, store).await?;
        let dir = work.join(VOLUMES_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let labels = helper_labels(&args.data_dir, args.instance.as_deref());
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
            .map_err(|e| write_error(&e, "Volume labels", &labels_file))?;
            out.push((format!("{VOLUMES_DIR}/{name}.labels.json"), labels_file));
        }
        Ok(out)
    })
}

/// Labels of the helpers the CLI creates: scoped to this data folder and this process, so a
/// killed run's helpers are found and removed, and no one else's.
fn helper_labels(
    data_dir: &Path,
    instance: Option<&str>,
) -> std::collections::HashMap<String, String> {
    let instance = instance.map(str::trim).filter(|i| !i.is_empty());
    crate::service::volumes::backup_helper_labels(data_dir, instance)
}

/// Labels a volume recreated by a restore gets when the backup did not record its own.
fn volume_labels(instance: Option<&str>) -> std::collections::HashMap<String, String> {
    let mut labels = std::collections::HashMap::from([(
        crate::domain::labels::MANAGED.to_string(),
        "true".to_string(),
    )]);
    if let Some(i) = instance.map(str::trim).filter(|i| !i.is_empty()) {
        labels.insert(crate::config::INSTANCE_LABEL.to_string(), i.to_string());
    }
    labels
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// A folder removed when dropped (on success, failure and panic alike); a `kill -9` leaves it
/// to the next run's sweep, which knows it by its owner.
struct WorkDir(PathBuf);

impl WorkDir {
    fn create(root: &Path) -> Result<Self, String> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = root.join(format!(
            "{}-{}",
            Owner::current().as_str(),
            crate::secrets::random_token(9)
        ));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("cannot create the work folder {}: {e}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The archive being written: a `.part` file (0600, a name no other run can pick), removed
/// when dropped unless it was published under its final name.
struct PartFile(Option<PathBuf>);

impl PartFile {
    fn create(dir: &Path) -> Result<(Self, std::fs::File), String> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(format!(
            "{PART_PREFIX}{}-{}.part",
            Owner::current().as_str(),
            crate::secrets::random_token(9)
        ));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| write_error(&e, "The backup", &path))?;
        Ok((Self(Some(path)), file))
    }

    /// Gives the complete archive its final name: `milkcrate_backup_<stamp>.tar.gz`, or with
    /// `-2`, `-3`… when a backup of the same second has it (a hard link never replaces a file,
    /// so two backups cannot overwrite each other). The folder is synced after.
    fn publish(mut self, dir: &Path, stamp: &str) -> Result<PathBuf, String> {
        let part = self.0.take().unwrap_or_default();
        for n in 1..1000 {
            let name = if n == 1 {
                format!("milkcrate_backup_{stamp}.tar.gz")
            } else {
                format!("milkcrate_backup_{stamp}-{n}.tar.gz")
            };
            let target = dir.join(name);
            match std::fs::hard_link(&part, &target) {
                Ok(()) => {
                    let _ = std::fs::remove_file(&part);
                    if let Ok(d) = std::fs::File::open(dir) {
                        let _ = d.sync_all();
                    }
                    return Ok(target);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(_) if target.exists() => continue,
                // A file system without hard links (FAT, some network shares): a rename
                // onto a name that is free now.
                Err(_) => {
                    std::fs::rename(&part, &target).map_err(|e| {
                        let _ = std::fs::remove_file(&part);
                        format!("cannot name the backup {}: {e}", target.display())
                    })?;
                    if let Ok(d) = std::fs::File::open(dir) {
                        let _ = d.sync_all();
                    }
                    return Ok(target);
                }
            }
        }
        let _ = std::fs::remove_file(&part);
        Err(format!(
            "too many backups named {stamp} in {}",
            dir.display()
        ))
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Removes what interrupted backups of this data folder left on disk: work folders and
/// unfinished `.part` archives whose process is gone. Helpers go when the engine is reached.
fn sweep_interrupted(data_dir: &Path, output: &Path) {
    let work = leftovers::sweep_dead(&data_dir.join(WORK_DIR), "");
    let parts = leftovers::sweep_dead(output, PART_PREFIX);
    if work + parts > 0 {
        eprintln!(
            "  removed what an interrupted backup left ({work} work folder(s), {parts} unfinished archive(s))"
        );
    }
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
    sweep_interrupted(&args.data_dir, &args.output);
    let now = time::OffsetDateTime::now_utc();
    let stamp = crate::clock::utc_stamp('_');
    let work = match WorkDir::create(&args.data_dir.join(WORK_DIR)) {
        Ok(w) => w,
        Err(e) => return super::fail(e),
    };
    let snapshot = work.0.join("milkcrate.sqlite");
    let result = (|| -> Result<PathBuf, String> {
        let store = Store::open(&db).map_err(|e| e.to_string())?;
        store.snapshot_to(&snapshot).map_err(|e| e.to_string())?;
        let mut files = vec![("milkcrate.sqlite".to_string(), snapshot.clone())];
        if !args.no_volumes {
            files.extend(export_volumes(&args, &store, &work.0)?);
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
        // The ACME account, issued certificates and the admin's uploads: a restore serves
        // them at once and orders nothing new.
        let before = files.len();
        collect(&args.data_dir, &args.data_dir.join("tls"), &mut files)
            .map_err(|e| e.to_string())?;
        let mut i = before;
        while i < files.len() {
            if files[i].0.ends_with(".part") {
                files.remove(i);
            } else {
                i += 1;
            }
        }
        if !args.no_sources {
            collect(&args.data_dir, &args.data_dir.join("apps"), &mut files)
                .map_err(|e| e.to_string())?;
        }
        let created = now
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let (part, file) = PartFile::create(&args.output)?;
        let part_path = part.0.clone().unwrap_or_default();
        write_backup(file, &created, &files, |name, size| {
            eprintln!("  added {name} ({:.1} KiB)", size as f64 / 1024.0);
            crate::config::pause_point("backup-writing-archive");
        })
        .map_err(|e| match e {
            BackupError::Io(io) => write_error(&io, "The backup", &part_path),
            other => other.to_string(),
        })?;
        part.publish(&args.output, &stamp)
    })();
    drop(work);
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

/// Staging folders of restores: `.milkcrate-restore-<owner>-<random>` beside the data folder.
const STAGING_PREFIX: &str = ".milkcrate-restore-";

fn tempfile_dir(parent: &Path) -> Result<PathBuf, String> {
    // What a killed restore left is removed first.
    leftovers::sweep_dead(parent, STAGING_PREFIX);
    let dir = parent.join(format!(
        "{STAGING_PREFIX}{}-{}",
        Owner::current().as_str(),
        crate::secrets::random_token(9)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(dir)
}

/// A finished backup's name (`milkcrate_backup_<stamp>[-<n>].tar.gz`, never a `.part`) as a
/// key that sorts by date, then by `n` for backups of the same second.
fn backup_sort_key(name: &str) -> Option<(String, u32)> {
    let date = name
        .strip_prefix("milkcrate_backup_")?
        .strip_suffix(".tar.gz")?;
    Some(match date.rsplit_once('-') {
        Some((stamp, n)) if n.parse::<u32>().is_ok() => (stamp.to_string(), n.parse().ok()?),
        _ => (date.to_string(), 1),
    })
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
    /// Name of the install (as for `serve`); helpers and recreated volumes carry it.
    #[arg(long, env = "MILKCRATE_INSTANCE")]
    instance: Option<String>,
}

pub fn restore(args: RestoreArgs) -> ExitCode {
    let mut backups: Vec<(PathBuf, std::time::SystemTime, u64)> =
        std::fs::read_dir(&args.backup_dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .and_then(backup_sort_key)
                            .is_some()
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
    let key = |p: &PathBuf| {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(backup_sort_key)
    };
    backups.sort_by_key(|b| std::cmp::Reverse(key(&b.0)));
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
        match restore_volumes(&volume_data, &args.data_dir, args.instance.as_deref()) {
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
fn restore_volumes(dir: &Path, data_dir: &Path, instance: Option<&str>) -> Result<(), String> {
    let rt = runtime()?;
    rt.block_on(async {
        let engine = crate::docker::Engine::connect()
            .await
            .map_err(|e| e.to_string())?;
        let labels = helper_labels(data_dir, instance);
        let fallback = volume_labels(instance);
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
                    let mut l = saved.unwrap_or_else(|| fallback.clone());
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
