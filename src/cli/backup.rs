//! `milkcrate backup` and `milkcrate restore`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::archive::backup::{extract_verified, verify};
use crate::archive::seal::{OpenKey, SealKey};
use crate::s3::{S3, S3Settings};
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
    /// Upload the backup to an S3-compatible store (s3://bucket/prefix) instead of --output;
    /// always encrypted.
    #[arg(long)]
    to: Option<String>,
    #[command(flatten)]
    s3: S3Args,
    #[command(flatten)]
    keys: BackupKeyArgs,
}

use crate::service::backup::{
    Destination, PART_PREFIX, VOLUMES_DIR, WORK_DIR, WorkDir, export_volumes, folder_backups,
    s3_backups, write_everywhere,
};

/// Reads every volume into `<work>/volumes/<name>.tar` through the engine.
fn cli_export_volumes(
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
        let labels = helper_labels(&args.data_dir, args.instance.as_deref());
        export_volumes(&engine, store, labels, work, &|m| eprintln!("  {m}"))
            .await
            .map_err(|e| e.to_string())
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
    let key = match args.keys.seal_key() {
        Ok(k) => k,
        Err(e) => return super::fail(e),
    };
    let destination = match &args.to {
        Some(location) => match args.s3.connect(location) {
            Ok(s3) => Destination::S3(s3),
            Err(e) => return super::fail(e),
        },
        None => {
            if let Err(e) = std::fs::create_dir_all(&args.output) {
                return super::fail(format!("cannot create {}: {e}", args.output.display()));
            }
            Destination::Folder(args.output.clone())
        }
    };
    if matches!(destination, Destination::S3(_)) && key.is_none() {
        return super::fail(
            "off-site copies are always encrypted: give --passphrase-file, MILKCRATE_BACKUP_PASSPHRASE or --recipient",
        );
    }
    if args.to.is_none() {
        sweep_interrupted(&args.data_dir, &args.output);
    } else {
        sweep_interrupted(&args.data_dir, &args.data_dir.join(WORK_DIR));
    }
    let work = match WorkDir::create(&args.data_dir.join(WORK_DIR)) {
        Ok(w) => w,
        Err(e) => return super::fail(e),
    };
    let snapshot = work.0.join("milkcrate.sqlite");
    let result = (|| -> Result<crate::service::backup::Written, String> {
        let store = Store::open(&db).map_err(|e| e.to_string())?;
        store.snapshot_to(&snapshot).map_err(|e| e.to_string())?;
        let mut files = vec![("milkcrate.sqlite".to_string(), snapshot.clone())];
        if !args.no_volumes {
            files.extend(cli_export_volumes(&args, &store, &work.0)?);
        }
        files.extend(
            crate::service::backup::data_files(&args.data_dir, !args.no_sources)
                .map_err(|e| e.to_string())?,
        );
        let rt = multi_thread_runtime()?;
        let written = Arc::new(AtomicU64::new(0));
        write_everywhere(
            &files,
            std::slice::from_ref(&destination),
            key.as_ref(),
            rt.handle(),
            written,
            &|m| eprintln!("  {m}"),
        )
        .map_err(|e| e.to_string())
    })();
    drop(work);
    match result {
        Ok(w) => {
            for c in &w.copies {
                let place = match &destination {
                    Destination::Folder(_) => {
                        Path::new(&c.place).join(&c.name).display().to_string()
                    }
                    Destination::S3(_) => format!("{}/{}", c.place.trim_end_matches('/'), c.name),
                };
                println!(
                    "Backup written to {place} ({:.1} KiB{})",
                    w.size as f64 / 1024.0,
                    if key.is_some() { ", encrypted" } else { "" }
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => super::fail(format!("backup failed: {e}")),
    }
}

fn multi_thread_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// How to reach an S3-compatible store (for `backup --to` and `restore --from`).
#[derive(Debug, clap::Args)]
pub struct S3Args {
    /// The store's endpoint URL (e.g. https://s3.eu-west-1.amazonaws.com).
    #[arg(long, env = "MILKCRATE_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// The store's region.
    #[arg(long, env = "MILKCRATE_S3_REGION", default_value = "us-east-1")]
    s3_region: String,
    /// Access key id.
    #[arg(long, env = "MILKCRATE_S3_ACCESS_KEY")]
    s3_access_key: Option<String>,
    /// File holding the secret access key (else MILKCRATE_S3_SECRET_KEY).
    #[arg(long)]
    s3_secret_key_file: Option<PathBuf>,
    #[arg(
        long,
        env = "MILKCRATE_S3_SECRET_KEY",
        hide = true,
        hide_env_values = true
    )]
    s3_secret_key: Option<String>,
}

impl S3Args {
    fn connect(&self, location: &str) -> Result<S3, String> {
        let (bucket, prefix) = S3Settings::parse_location(location)?;
        let secret = match (&self.s3_secret_key_file, &self.s3_secret_key) {
            (Some(f), _) => crate::archive::seal::read_passphrase_file(f)
                .map_err(|e| e.replace("passphrase", "secret key"))?,
            (None, Some(s)) => s.clone(),
            (None, None) => {
                return Err(
                    "the S3 secret key is needed: --s3-secret-key-file or MILKCRATE_S3_SECRET_KEY"
                        .into(),
                );
            }
        };
        let settings = S3Settings {
            endpoint: self
                .s3_endpoint
                .clone()
                .ok_or("the S3 endpoint is needed: --s3-endpoint or MILKCRATE_S3_ENDPOINT")?,
            region: self.s3_region.clone(),
            bucket,
            prefix,
            access_key: self
                .s3_access_key
                .clone()
                .ok_or("the S3 access key is needed: --s3-access-key or MILKCRATE_S3_ACCESS_KEY")?,
            secret_key: secret,
        };
        S3::new(&settings).map_err(|e| e.to_string())
    }
}

/// The passphrase or age key of encrypted backups.
#[derive(Debug, clap::Args)]
pub struct KeyArgs {
    /// File whose first line is the backup passphrase (else MILKCRATE_BACKUP_PASSPHRASE).
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
    #[arg(
        long,
        env = "MILKCRATE_BACKUP_PASSPHRASE",
        hide = true,
        hide_env_values = true
    )]
    backup_passphrase: Option<String>,
}

impl KeyArgs {
    fn passphrase(&self) -> Result<Option<String>, String> {
        match (&self.passphrase_file, &self.backup_passphrase) {
            (Some(f), _) => crate::archive::seal::read_passphrase_file(f).map(Some),
            (None, Some(p)) if !p.is_empty() => Ok(Some(p.clone())),
            _ => Ok(None),
        }
    }
}

impl BackupKeyArgs {
    fn seal_key(&self) -> Result<Option<SealKey>, String> {
        if let Some(r) = &self.recipient {
            return SealKey::recipient(r).map(Some);
        }
        self.key
            .passphrase()?
            .map(|p| SealKey::passphrase(&p))
            .transpose()
    }
}

#[derive(Debug, clap::Args)]
pub struct BackupKeyArgs {
    #[command(flatten)]
    key: KeyArgs,
    /// Encrypt to this age recipient (age1…) instead of a passphrase.
    #[arg(long)]
    recipient: Option<String>,
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
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        // 0700 from its first moment: it receives the database and the secret key.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| e.to_string())?;
    }
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
    /// Name of the install (as for `serve`); helpers and recreated volumes carry it.
    #[arg(long, env = "MILKCRATE_INSTANCE")]
    instance: Option<String>,
    /// Restore from an S3-compatible store (s3://bucket/prefix): FILE is then the name of a
    /// backup there; without it, the newest.
    #[arg(long)]
    from: Option<String>,
    /// Restore the newest backup (the default when no FILE is given).
    #[arg(long, conflicts_with = "file")]
    latest: bool,
    #[command(flatten)]
    s3: S3Args,
    #[command(flatten)]
    key: KeyArgs,
    /// An age identity file that opens backups encrypted to its recipient.
    #[arg(long)]
    identity: Option<PathBuf>,
}

/// The key that opens an encrypted backup: the identity file, the passphrase given, or (at a
/// terminal) one typed in.
fn open_key(args: &RestoreArgs, file: &Path) -> Result<Option<OpenKey>, String> {
    if let Some(id) = &args.identity {
        return OpenKey::identity_file(id).map(Some);
    }
    if let Some(p) = args.key.passphrase()? {
        return Ok(Some(OpenKey::passphrase(&p)));
    }
    let sealed = crate::archive::seal::is_sealed(file).map_err(|e| e.to_string())?;
    if sealed && std::io::stdin().is_terminal() {
        let p = rpassword::prompt_password("Backup passphrase: ").map_err(|e| e.to_string())?;
        return Ok(Some(OpenKey::passphrase(&p)));
    }
    Ok(None)
}

/// A downloaded archive, removed when dropped.
struct Download(PathBuf);

impl Drop for Download {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Lists the backups in an S3 location, or downloads one (the named or the newest) into a
/// private file beside the data folder, checked against its checksum object.
fn from_s3(args: &RestoreArgs, location: &str, parent: &Path) -> Result<Option<Download>, String> {
    let s3 = args.s3.connect(location)?;
    let rt = multi_thread_runtime()?;
    let backups = rt.block_on(s3_backups(&s3)).map_err(|e| e.to_string())?;
    if args.list {
        if backups.is_empty() {
            println!("No backups in {location}.");
        }
        for o in &backups {
            println!("{:>12.1} KiB  {}", o.size as f64 / 1024.0, o.name);
        }
        return Ok(None);
    }
    let name = match &args.file {
        Some(f) => {
            let wanted = f.to_string_lossy().to_string();
            backups
                .iter()
                .find(|o| o.name == wanted)
                .map(|o| o.name.clone())
                .ok_or_else(|| format!("no backup named {wanted} in {location} (see --list)"))?
        }
        None => backups
            .first()
            .map(|o| o.name.clone())
            .ok_or_else(|| format!("no backups in {location}"))?,
    };
    std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    leftovers::sweep_dead(parent, DOWNLOAD_PREFIX);
    let path = parent.join(format!(
        "{DOWNLOAD_PREFIX}{}-{}.part",
        Owner::current().as_str(),
        crate::secrets::random_token(9)
    ));
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| write_error(&e, "The download", &path))?;
    }
    let download = Download(path);
    println!("Downloading {name} from {location}…");
    let sum = rt
        .block_on(s3.get_small(
            &format!("{name}{}", crate::service::backup::CHECKSUM_SUFFIX),
            4096,
        ))
        .map_err(|e| e.to_string())?;
    let expected = String::from_utf8_lossy(&sum)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let got = rt
        .block_on(s3.download(&name, &download.0))
        .map_err(|e| e.to_string())?;
    if got.sha256 != expected {
        return Err(format!(
            "{name} does not match its checksum ({name}.sha256): the object was altered or damaged; nothing was restored"
        ));
    }
    Ok(Some(download))
}

/// Downloads of `restore --from`: `.milkcrate-download-<owner>-<random>.part` beside the data
/// folder, 0600, removed when the restore ends.
const DOWNLOAD_PREFIX: &str = ".milkcrate-download-";

pub fn restore(args: RestoreArgs) -> ExitCode {
    let parent = args
        .data_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let _download;
    let mut from_store = None;
    if let Some(location) = &args.from {
        match from_s3(&args, location, &parent) {
            Ok(Some(d)) => {
                from_store = Some(d.0.clone());
                _download = d;
            }
            Ok(None) => return ExitCode::SUCCESS,
            Err(e) => return super::fail(e),
        }
    }
    // Names carry the UTC time, so they sort by date; newest first.
    let backups = if from_store.is_some() {
        Vec::new()
    } else {
        folder_backups(&args.backup_dir)
    };
    if args.list {
        if backups.is_empty() {
            println!("No backups in {}.", args.backup_dir.display());
        }
        for (p, size) in &backups {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            let date = name
                .trim_start_matches("milkcrate_backup_")
                .trim_end_matches(".age")
                .trim_end_matches(".tar.gz");
            println!(
                "{date}  {:>10.1} KiB  {}",
                *size as f64 / 1024.0,
                p.display()
            );
        }
        return ExitCode::SUCCESS;
    }
    let Some(file) = from_store
        .or_else(|| args.file.clone())
        .or_else(|| backups.first().map(|b| b.0.clone()))
    else {
        return super::fail(format!(
            "no backup given and none in {}",
            args.backup_dir.display()
        ));
    };
    let key = match open_key(&args, &file) {
        Ok(k) => k,
        Err(e) => return super::fail(e),
    };
    let manifest = match verify(&file, key.as_ref()) {
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
    let staging = match tempfile_dir(&parent) {
        Ok(s) => s,
        Err(e) => return super::fail(e),
    };
    let write_all = || -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| e.to_string())?;
        extract_verified(&file, &manifest, &staging, key.as_ref()).map_err(|e| e.to_string())
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
                    if !crate::service::volumes::is_empty(&engine, &name, labels.clone())
                        .await
                        .map_err(|e| e.to_string())?
                    {
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
