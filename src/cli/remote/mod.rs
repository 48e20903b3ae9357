//! The API client commands: `login`, `deploy`, `apps`, `logs`, `env`, `rollback`, `restart`,
//! `delete`. The server and token come from `--url`/`--token`, `MILKCRATE_URL`/
//! `MILKCRATE_TOKEN`, or the file `milkcrate login` wrote (`~/.config/milkcrate/config.toml`,
//! 0600). Every command can answer in JSON (`--json`); failures are one line on stderr and a
//! non-zero exit.

mod http;
mod resources;

pub use resources::{DomainsArgs, VolumesArgs, domains, volumes};

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use ::http::{Method, StatusCode};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use serde_json::Value;

use self::http::{Client, Server, read_json};

/// Where and as whom: shared by every client command.
#[derive(Debug, Clone, clap::Args)]
pub struct Conn {
    /// The milkcrate server, e.g. https://deploy.example.com (else the saved login).
    #[arg(long, env = "MILKCRATE_URL", global = true)]
    url: Option<String>,
    /// An API token (else the saved login).
    #[arg(long, env = "MILKCRATE_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// A PEM file of CA certificates for https (else the system's).
    #[arg(long, env = "MILKCRATE_CA_FILE", global = true)]
    ca_file: Option<PathBuf>,
    /// The client settings file (default ~/.config/milkcrate/config.toml).
    #[arg(long, env = "MILKCRATE_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Print the answer as JSON.
    #[arg(long, global = true)]
    json: bool,
}

/// The saved login.
#[derive(Debug, Default, PartialEq, Eq)]
struct Saved {
    url: Option<String>,
    token: Option<String>,
}

fn config_path(conn: &Conn) -> Result<PathBuf, String> {
    conn.config
        .clone()
        .or_else(crate::config::client_config_path)
        .ok_or_else(|| "no home folder to keep the login in; set MILKCRATE_CONFIG".to_string())
}

/// Reads `key = "value"` lines (the subset of TOML this file uses).
fn parse_saved(text: &str) -> Saved {
    let mut saved = Saved::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v)
            .to_string();
        match k.trim() {
            "url" => saved.url = Some(v),
            "token" => saved.token = Some(v),
            _ => {}
        }
    }
    saved
}

fn render_saved(s: &Saved) -> String {
    // URLs and tokens hold no quotes or backslashes (both are checked before saving).
    let mut out = String::from("# milkcrate client settings, written by `milkcrate login`\n");
    if let Some(u) = &s.url {
        out.push_str(&format!("url = \"{u}\"\n"));
    }
    if let Some(t) = &s.token {
        out.push_str(&format!("token = \"{t}\"\n"));
    }
    out
}

fn save(path: &Path, saved: &Saved) -> Result<(), String> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let tmp = path.with_extension("toml.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(render_saved(saved).as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600));
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn connect(conn: &Conn) -> Result<Client, String> {
    let saved = match config_path(conn) {
        Ok(p) => std::fs::read_to_string(&p)
            .map(|t| parse_saved(&t))
            .unwrap_or_default(),
        Err(_) => Saved::default(),
    };
    let url =
        conn.url.clone().or(saved.url).ok_or(
            "no server: run `milkcrate login URL`, or set MILKCRATE_URL and MILKCRATE_TOKEN",
        )?;
    let token = conn.token.clone().or(saved.token).ok_or(
        "no token: run `milkcrate login URL`, or set MILKCRATE_TOKEN (create one on the Tokens page)",
    )?;
    Client::new(
        Server::parse(&url)?,
        token.trim().to_string(),
        conn.ca_file.as_deref(),
    )
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start: {e}"))
}

/// Runs a client command: its error becomes `milkcrate: <error>` and exit code 1.
fn run_with(f: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return super::fail(e),
    };
    match rt.block_on(f) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(e),
    }
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Percent-encodes a query or path value.
fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn app_path(app: &str) -> String {
    format!("/api/v1/apps/{}", enc(app).replace('/', "%2F"))
}

// ---- login ----

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// The milkcrate server, e.g. https://deploy.example.com
    server: String,
    #[command(flatten)]
    conn: Conn,
}

pub fn login(args: LoginArgs) -> ExitCode {
    run_with(async move {
        let server = Server::parse(&args.server)?;
        let token = match args.conn.token.clone() {
            Some(t) => t,
            None if std::io::stdin().is_terminal() => {
                rpassword::prompt_password("API token (from the Tokens page): ")
                    .map_err(|e| format!("cannot read the token: {e}"))?
            }
            None => {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .map_err(|e| format!("cannot read the token: {e}"))?;
                line
            }
        };
        let token = token.trim().to_string();
        if token.is_empty() || token.contains(['"', '\\', ' ']) {
            return Err("that is not a token".into());
        }
        let client = Client::new(server.clone(), token.clone(), args.conn.ca_file.as_deref())?;
        let (_, me) = client.json(Method::GET, "/api/v1/whoami", None).await?;
        let path = config_path(&args.conn)?;
        save(
            &path,
            &Saved {
                url: Some(server.base_url()),
                token: Some(token),
            },
        )?;
        if args.conn.json {
            print_json(&me);
        } else {
            println!(
                "Logged in to {} with token {} (scope {}). Saved in {}.",
                server.base_url(),
                me["name"].as_str().unwrap_or("?"),
                me["scope"].as_str().unwrap_or("?"),
                path.display()
            );
        }
        Ok(())
    })
}

// ---- deploy ----

#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The folder to deploy (packaged like `milkcrate package`, honouring .dockerignore).
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// The app's name (default: the folder's name).
    #[arg(long)]
    app: Option<String>,
    /// Its route when it is created (default: /<name>).
    #[arg(long)]
    route: Option<String>,
    /// A host name for the app, when the server routes by host.
    #[arg(long)]
    host: Option<String>,
    /// Leave out paths matching this glob (on whole path components); repeatable.
    #[arg(short, long)]
    exclude: Vec<String>,
    /// Start the deploy and return without following its log.
    #[arg(long)]
    no_wait: bool,
    #[command(flatten)]
    conn: Conn,
}

/// The default app name of a folder: its name, lower case, other characters as `-`.
fn name_of(dir: &Path) -> String {
    let base = std::fs::canonicalize(dir)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "app".into());
    let name: String = base
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    name.trim_matches('-').to_string()
}

pub fn deploy(args: DeployArgs) -> ExitCode {
    run_with(deploy_async(args))
}

async fn deploy_async(args: DeployArgs) -> Result<(), String> {
    let client = connect(&args.conn)?;
    if !args.dir.is_dir() {
        return Err(format!("{} is not a folder", args.dir.display()));
    }
    let name = args.app.clone().unwrap_or_else(|| name_of(&args.dir));
    let started = Instant::now();
    // Package exactly as `milkcrate package` does, into a private temporary file.
    let work = tempfile_dir()?;
    let zip_path = work.join("app.zip");
    let (dir, zp, ex) = (args.dir.clone(), zip_path.clone(), args.exclude.clone());
    let report = tokio::task::spawn_blocking(move || {
        crate::archive::package::package_dir(&dir, &zp, &ex, false)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string());
    let zip = report.and_then(|r| {
        if r.files == 0 {
            return Err(format!(
                "nothing to package in {} (everything was excluded)",
                args.dir.display()
            ));
        }
        if !r.has_build_file {
            return Err(format!(
                "no Dockerfile or compose file at the top of {}",
                args.dir.display()
            ));
        }
        std::fs::read(&zip_path).map_err(|e| e.to_string())
    });
    let _ = std::fs::remove_dir_all(&work);
    let zip = Bytes::from(zip?);
    let quiet = args.conn.json;
    if !quiet {
        eprintln!(
            "Packaged {} ({:.1} KiB); uploading to {}…",
            args.dir.display(),
            zip.len() as f64 / 1024.0,
            client.server().base_url()
        );
    }
    // Create or update: the app's existence decides.
    let exists = match client.json(Method::GET, &app_path(&name), None).await {
        Ok(_) => true,
        Err(e) if e.contains("HTTP 404") => false,
        Err(e) => return Err(e),
    };
    let path = if exists {
        format!("{}/update", app_path(&name))
    } else {
        let route = args.route.clone().unwrap_or_else(|| format!("/{name}"));
        let mut p = format!(
            "/api/v1/apps?app_name={}&public_route={}",
            enc(&name),
            enc(&route)
        );
        if let Some(h) = &args.host {
            p.push_str(&format!("&host={}", enc(h)));
        }
        p
    };
    let resp = client
        .send(Method::POST, &path, Some("application/zip"), zip)
        .await?;
    let (_, started_deploy) = read_json(resp).await?;
    let deploy_id = started_deploy["deploy"]["id"]
        .as_i64()
        .ok_or("the server did not say which deploy it started")?;
    if args.no_wait {
        if quiet {
            print_json(&started_deploy);
        } else {
            println!(
                "{} deploy #{deploy_id} of {name} started.",
                if exists { "Update" } else { "First" }
            );
        }
        return Ok(());
    }
    let (status, error) = follow_log(&client, deploy_id, quiet, started).await?;
    let (_, deploy) = client
        .json(Method::GET, &format!("/api/v1/deploys/{deploy_id}"), None)
        .await?;
    let app = client
        .json(Method::GET, &app_path(&name), None)
        .await
        .ok()
        .map(|(_, a)| a);
    if quiet {
        print_json(&serde_json::json!({"app": app, "deploy": deploy}));
    }
    if status != "succeeded" {
        return Err(format!(
            "deploy #{deploy_id} of {name} failed: {}",
            error.unwrap_or_else(|| "see the log above".into())
        ));
    }
    if !quiet {
        let route = app
            .as_ref()
            .and_then(|a| a["route"].as_str().map(String::from))
            .unwrap_or_default();
        println!(
            "Deployed {name} in {:.1} s: {}{route}",
            started.elapsed().as_secs_f64(),
            client.server().base_url()
        );
    }
    Ok(())
}

/// A private temporary folder for the package.
fn tempfile_dir() -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = crate::config::temp_dir().join(format!(
        "milkcrate-deploy-{}-{}",
        std::process::id(),
        crate::secrets::random_token(6).replace(['-', '_'], "x")
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Streams a deploy's log to stdout (with a progress line on a terminal) until it ends;
/// returns its final status and error.
async fn follow_log(
    client: &Client,
    deploy_id: i64,
    quiet: bool,
    started: Instant,
) -> Result<(String, Option<String>), String> {
    let resp = client
        .send(
            Method::GET,
            &format!("/api/v1/deploys/{deploy_id}/log"),
            None,
            Bytes::new(),
        )
        .await?;
    if resp.status() != StatusCode::OK {
        let (_, v) = read_json(resp).await?;
        return Err(format!("cannot follow the log: {v}"));
    }
    let tty = std::io::stderr().is_terminal() && !quiet;
    let mut body = resp.into_body().into_data_stream();
    let mut pending = Vec::<u8>::new();
    let mut last_step = String::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("the log stream was cut: {e}"))?;
        pending.extend_from_slice(&chunk);
        while let Some(i) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            let Ok(v) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            if let Some(done) = v["done"].as_str() {
                if tty {
                    eprint!("\r\x1b[2K");
                }
                return Ok((done.to_string(), v["error"].as_str().map(String::from)));
            }
            if let Some(text) = v["line"].as_str() {
                if quiet {
                    continue;
                }
                if tty {
                    eprint!("\r\x1b[2K");
                }
                print!("{text}");
                if !text.ends_with('\n') {
                    println!();
                }
                let _ = std::io::stdout().flush();
                let t = text.trim();
                if t.starts_with("Step ") || t.starts_with("Building") || t.starts_with("Waiting") {
                    last_step = t.chars().take(60).collect();
                }
                if tty {
                    eprint!(
                        "\r[{:>4.0}s] deploy #{deploy_id}: {last_step}",
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        }
    }
    Err("the log stream ended before the deploy did (the server went away?)".into())
}

// ---- apps, logs, env, rollback, restart, delete ----

#[derive(Debug, clap::Args)]
pub struct AppsArgs {
    #[command(flatten)]
    conn: Conn,
}

pub fn apps(args: AppsArgs) -> ExitCode {
    run_with(async move {
        let client = connect(&args.conn)?;
        let (_, list) = client.json(Method::GET, "/api/v1/apps", None).await?;
        if args.conn.json {
            print_json(&list);
            return Ok(());
        }
        let apps = list.as_array().cloned().unwrap_or_default();
        if apps.is_empty() {
            println!("No apps yet. Deploy one with `milkcrate deploy DIR`.");
        }
        println!("{:<24} {:<24} {:<12} IMAGE", "NAME", "ROUTE", "STATUS");
        for a in apps {
            println!(
                "{:<24} {:<24} {:<12} {}",
                a["name"].as_str().unwrap_or(""),
                a["route"].as_str().unwrap_or(""),
                a["status"].as_str().unwrap_or(""),
                a["image"].as_str().unwrap_or("")
            );
        }
        Ok(())
    })
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The app (name or id).
    app: String,
    /// Keep following new lines.
    #[arg(short, long)]
    follow: bool,
    /// How many of the last lines.
    #[arg(long, default_value_t = 200)]
    tail: u32,
    #[command(flatten)]
    conn: Conn,
}

pub fn logs(args: LogsArgs) -> ExitCode {
    run_with(async move {
        let client = connect(&args.conn)?;
        let path = format!(
            "{}/logs?tail={}&follow={}",
            app_path(&args.app),
            args.tail,
            args.follow
        );
        let resp = client.send(Method::GET, &path, None, Bytes::new()).await?;
        if !resp.status().is_success() {
            return read_json(resp).await.map(|_| ());
        }
        let mut body = resp.into_body().into_data_stream();
        let mut out = std::io::stdout();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| format!("the log stream was cut: {e}"))?;
            if args.conn.json {
                for line in String::from_utf8_lossy(&chunk).lines() {
                    println!("{}", serde_json::json!({"line": line}));
                }
            } else {
                let _ = out.write_all(&chunk);
                let _ = out.flush();
            }
        }
        Ok(())
    })
}

#[derive(Debug, clap::Args)]
pub struct EnvArgs {
    #[command(subcommand)]
    action: EnvAction,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Debug, clap::Subcommand)]
enum EnvAction {
    /// The app's variable names (values are never shown).
    List { app: String },
    /// Set KEY=value pairs (the app is redeployed with them).
    Set {
        app: String,
        #[arg(required = true)]
        pairs: Vec<String>,
    },
    /// Remove keys (the app is redeployed without them).
    Unset {
        app: String,
        #[arg(required = true)]
        keys: Vec<String>,
    },
}

pub fn env(args: EnvArgs) -> ExitCode {
    run_with(async move {
        let client = connect(&args.conn)?;
        let (app, value) = match &args.action {
            EnvAction::List { app } => {
                let (_, v) = client
                    .json(Method::GET, &format!("{}/env", app_path(app)), None)
                    .await?;
                (app, v)
            }
            EnvAction::Set { app, pairs } => {
                let mut set = serde_json::Map::new();
                for p in pairs {
                    let (k, v) = p
                        .split_once('=')
                        .ok_or_else(|| format!("'{p}' is not KEY=value"))?;
                    set.insert(k.to_string(), Value::String(v.to_string()));
                }
                let (_, v) = client
                    .json(
                        Method::POST,
                        &format!("{}/env?wait=true", app_path(app)),
                        Some(serde_json::json!({"set": set})),
                    )
                    .await?;
                (app, v)
            }
            EnvAction::Unset { app, keys } => {
                let (_, v) = client
                    .json(
                        Method::POST,
                        &format!("{}/env?wait=true", app_path(app)),
                        Some(serde_json::json!({"unset": keys})),
                    )
                    .await?;
                (app, v)
            }
        };
        if args.conn.json {
            print_json(&value);
        } else {
            let keys: Vec<&str> = value["keys"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            println!(
                "{app}: {}",
                if keys.is_empty() {
                    "no variables".into()
                } else {
                    keys.join(", ")
                }
            );
        }
        deploy_outcome(&value["deploy"])
    })
}

/// A non-zero exit when the deploy an action started failed.
fn deploy_outcome(deploy: &Value) -> Result<(), String> {
    match deploy["status"].as_str() {
        Some("failed") => Err(format!(
            "deploy #{} failed: {}",
            deploy["id"],
            deploy["error"].as_str().unwrap_or("see its log")
        )),
        _ => Ok(()),
    }
}

#[derive(Debug, clap::Args)]
pub struct AppArgs {
    /// The app (name or id).
    app: String,
    #[command(flatten)]
    conn: Conn,
}

pub fn rollback(args: AppArgs) -> ExitCode {
    run_with(async move {
        let client = connect(&args.conn)?;
        let (_, v) = client
            .json(
                Method::POST,
                &format!("{}/rollback?wait=true", app_path(&args.app)),
                None,
            )
            .await?;
        if args.conn.json {
            print_json(&v);
        } else if v["deploy"]["status"] == "succeeded" {
            println!(
                "{} rolled back to {}.",
                args.app,
                v["app"]["image"].as_str().unwrap_or("its previous image")
            );
        }
        deploy_outcome(&v["deploy"])
    })
}

pub fn restart(args: AppArgs) -> ExitCode {
    run_with(async move {
        let client = connect(&args.conn)?;
        let (_, v) = client
            .json(
                Method::POST,
                &format!("{}/restart", app_path(&args.app)),
                None,
            )
            .await?;
        if args.conn.json {
            print_json(&v);
        } else {
            println!("{}", v["message"].as_str().unwrap_or("Restarted."));
        }
        Ok(())
    })
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// The app (name or id).
    app: String,
    /// Really delete (its containers, images and sources go; this cannot be undone).
    #[arg(long)]
    yes: bool,
    /// Also delete a compose app's stack volumes and their data.
    #[arg(long)]
    delete_volumes: bool,
    #[command(flatten)]
    conn: Conn,
}

pub fn delete(args: DeleteArgs) -> ExitCode {
    if !args.yes {
        return super::fail(format!(
            "deleting {} cannot be undone; run again with --yes",
            args.app
        ));
    }
    run_with(async move {
        let client = connect(&args.conn)?;
        let (_, v) = client
            .json(
                Method::DELETE,
                &format!(
                    "{}?delete_volumes={}",
                    app_path(&args.app),
                    args.delete_volumes
                ),
                None,
            )
            .await?;
        if args.conn.json {
            print_json(&v);
        } else {
            println!(
                "Deleted {}: {} container(s), {} image(s).",
                args.app, v["containers"], v["images"]
            );
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_logins_read_back() {
        let s = Saved {
            url: Some("https://deploy.example.com".into()),
            token: Some("mct_abc-DEF_123".into()),
        };
        assert_eq!(parse_saved(&render_saved(&s)), s);
        assert_eq!(parse_saved("# nothing\n"), Saved::default());
    }

    #[test]
    fn folder_names_become_app_names() {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path().join("My Site.v2");
        std::fs::create_dir(&d).expect("mkdir");
        assert_eq!(name_of(&d), "my-site-v2");
    }
}
