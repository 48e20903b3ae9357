//! Bringing apps back after `restore` or `migrate`: every app whose container is not running is
//! recreated, hardened, from its image when the engine still has it, else rebuilt from its
//! stored sources. One deploy at a time, each run to its end, with one line per app.

use std::path::Path;

use crate::service::deploy::{self, DeployKind, DeployRequest};

/// `serve`'s settings for `data_dir`, every other one from the environment.
#[derive(clap::Parser)]
struct SettingsFromEnv {
    #[command(flatten)]
    serve: crate::config::ServeArgs,
}

/// The original names each app's container `app-<name, lowercased, '-' as '_'>`.
fn original_container(app: &str) -> String {
    format!("app-{}", app.to_lowercase().replace('-', "_"))
}

/// Redeploys every app whose container is not running. With `stop_original`, the original
/// milkcrate's container of each app that came back is stopped (never removed).
pub fn redeploy_all(data_dir: &Path, command: &str, stop_original: bool) -> Result<(), String> {
    use clap::Parser;
    let dir = data_dir.to_string_lossy().to_string();
    let args = SettingsFromEnv::try_parse_from(["milkcrate", "--data-dir", &dir])
        .map_err(|e| e.to_string())?
        .serve;
    let settings = crate::config::Settings::from_args(&args).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let state = crate::app::AppState::open(settings).map_err(|e| e.to_string())?;
        let engine = state.engine.client().await.map_err(|e| e.to_string())?;
        let mut failed = Vec::new();
        for app in state.store.apps().await.map_err(|e| e.to_string())? {
            let running = !app.container_id.is_empty()
                && engine
                    .inspect(&app.container_id, &state.settings.network)
                    .await
                    .is_ok_and(|c| c.running);
            if running {
                println!("{}: running, left as it is", app.name);
                continue;
            }
            let compose = app.deployment_type == crate::service::compose::DEPLOYMENT_TYPE;
            // The sources are in this data folder, whatever path the old one had.
            let zip = app
                .source_zip
                .as_deref()
                .and_then(|p| Path::new(p).file_name())
                .map(|f| crate::service::app_dir(&state.settings, &app.name_key).join(f))
                .filter(|p| p.is_file());
            let (kind, source) = if !compose && engine.image_exists(&app.image_tag).await {
                (DeployKind::Reconfigure, None)
            } else if let Some(zip) = zip {
                match crate::archive::check_zip(&zip, &state.settings.zip_limits) {
                    Ok(checked) => (DeployKind::Update, Some((zip, checked))),
                    Err(e) => {
                        println!("{}: its sources are unusable: {e}", app.name);
                        failed.push(app.name.clone());
                        continue;
                    }
                }
            } else {
                println!(
                    "{}: neither its image nor its sources are here; deploy it again from the web page",
                    app.name
                );
                failed.push(app.name.clone());
                continue;
            };
            let deploy_id = state
                .store
                .create_deploy(app.id, app.name.clone(), kind.as_str(), crate::clock::now_unix())
                .await
                .map_err(|e| e.to_string())?;
            let how = if source.is_some() { "rebuilding from its sources" } else { "recreating from its image" };
            println!("{}: {how} (deploy #{deploy_id})…", app.name);
            let req = DeployRequest {
                deploy_id,
                app_id: app.id,
                kind,
                source,
                mounts: None,
                actor: crate::audit::Actor::cli(command),
            };
            let status = deploy::run_to_end(&state.deployer(), req).await;
            println!("{}: {status}", app.name);
            if status != "succeeded" {
                failed.push(app.name.clone());
                continue;
            }
            let original = original_container(&app.name);
            if stop_original
                && engine
                    .inspect(&original, &state.settings.network)
                    .await
                    .is_ok_and(|c| c.running)
            {
                match engine.stop(&original).await {
                    Ok(()) => println!(
                        "{}: stopped the original's container {original} (remove it with `docker rm {original}` when all is well)",
                        app.name
                    ),
                    Err(e) => println!("{}: could not stop {original}: {e}", app.name),
                }
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(format!("these apps did not come back: {}", failed.join(", ")))
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_originals_container_names() {
        assert_eq!(super::original_container("My-App"), "app-my_app");
    }
}
