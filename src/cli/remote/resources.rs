//! `milkcrate domains …` and `milkcrate volumes …`: an app's custom domains and the server's
//! volumes through the JSON API, each command one API call, with `--json` for scripts.

use std::path::PathBuf;
use std::process::ExitCode;

use ::http::Method;
use bytes::Bytes;
use serde_json::Value;

use super::http::read_json;
use super::{Conn, app_path, connect, enc, print_json, run_with};

#[derive(Debug, clap::Args)]
pub struct DomainsArgs {
    #[command(subcommand)]
    action: DomainsAction,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Debug, clap::Subcommand)]
enum DomainsAction {
    /// The app's host names (its apps-domain name and its custom domains).
    List { app: String },
    /// Give the app a custom domain (served at once; in Traefik mode the app is redeployed).
    Add { app: String, domain: String },
    /// Take a custom domain from the app.
    Remove { app: String, domain: String },
}

pub fn domains(args: DomainsArgs) -> ExitCode {
    run_with(async move {
        let client = connect(&args.conn)?;
        let (app, value) = match &args.action {
            DomainsAction::List { app } => {
                let path = format!("{}/domains", app_path(app));
                (app, client.json(Method::GET, &path, None).await?.1)
            }
            DomainsAction::Add { app, domain } => {
                let path = format!("{}/domains", app_path(app));
                let body = serde_json::json!({ "domain": domain });
                (app, client.json(Method::POST, &path, Some(body)).await?.1)
            }
            DomainsAction::Remove { app, domain } => {
                let path = format!("{}/domains/{}", app_path(app), enc(domain));
                (app, client.json(Method::DELETE, &path, None).await?.1)
            }
        };
        if args.conn.json {
            print_json(&value);
            return Ok(());
        }
        let hosts: Vec<&str> = value["hosts"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        println!(
            "{app}: {}",
            if hosts.is_empty() {
                "no host names".to_string()
            } else {
                hosts.join(", ")
            }
        );
        if let Some(id) = value["deploy_id"].as_i64() {
            println!("redeploying (deploy #{id}) so Traefik applies the change");
        }
        Ok(())
    })
}

#[derive(Debug, clap::Args)]
pub struct VolumesArgs {
    #[command(subcommand)]
    action: VolumesAction,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Debug, clap::Subcommand)]
enum VolumesAction {
    /// Every volume.
    List,
    /// The files of a volume (by id).
    Files { volume: i64 },
    /// Put a file into a volume (a .zip is unpacked unless --keep-zip).
    Upload {
        volume: i64,
        file: PathBuf,
        /// The folder inside the volume (made when missing).
        #[arg(long, default_value = "")]
        folder: String,
        #[arg(long)]
        keep_zip: bool,
    },
}

pub fn volumes(args: VolumesArgs) -> ExitCode {
    run_with(async move {
        let client = connect(&args.conn)?;
        let value = match &args.action {
            VolumesAction::List => client.json(Method::GET, "/api/v1/volumes", None).await?.1,
            VolumesAction::Files { volume } => {
                let path = format!("/api/v1/volumes/{volume}/files");
                client.json(Method::GET, &path, None).await?.1
            }
            VolumesAction::Upload {
                volume,
                file,
                folder,
                keep_zip,
            } => {
                let name = file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .ok_or_else(|| format!("{} names no file", file.display()))?
                    .to_string();
                let bytes = tokio::fs::read(file)
                    .await
                    .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
                let path = format!(
                    "/api/v1/volumes/{volume}/files?name={}&folder={}&keep_zips={keep_zip}",
                    enc(&name),
                    enc(folder)
                );
                let resp = client
                    .send(
                        Method::POST,
                        &path,
                        Some("application/octet-stream"),
                        Bytes::from(bytes),
                    )
                    .await?;
                read_json(resp).await?.1
            }
        };
        if args.conn.json {
            print_json(&value);
            return Ok(());
        }
        match &args.action {
            VolumesAction::List => {
                println!("{:<6} {:<24} {:>7} {:>12}", "ID", "NAME", "FILES", "BYTES");
                for v in value.as_array().cloned().unwrap_or_default() {
                    println!(
                        "{:<6} {:<24} {:>7} {:>12}",
                        v["id"],
                        v["name"].as_str().unwrap_or(""),
                        v["file_count"],
                        v["total_size_bytes"]
                    );
                }
            }
            VolumesAction::Files { .. } => {
                for f in value.as_array().cloned().unwrap_or_default() {
                    let dir = if f["is_dir"] == true { "/" } else { "" };
                    println!("{}{dir}  {}", f["path"].as_str().unwrap_or(""), f["size"]);
                }
            }
            VolumesAction::Upload { .. } => println!(
                "{} file(s) written into /{}",
                value["files_written"],
                value["folder"].as_str().unwrap_or("")
            ),
        }
        Ok(())
    })
}
