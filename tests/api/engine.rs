//! The Docker Engine through its API. These tests need a running engine and FAIL without one
//! (scripts/test starts dockerd); they never pass by skipping.

use crate::helpers::*;

/// What the engine itself says, read with the docker CLI as an independent witness.
fn engine_versions() -> (String, String) {
    let out = std::process::Command::new("docker")
        .args([
            "version",
            "--format",
            "{{.Server.Version}} {{.Server.APIVersion}}",
        ])
        .output()
        .expect("the docker CLI is installed (scripts/test installs docker.io)");
    assert!(
        out.status.success(),
        "the Docker Engine is not reachable; these tests need one (scripts/test starts dockerd): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut parts = text.split_whitespace();
    (
        parts.next().unwrap().to_string(),
        parts.next().unwrap().to_string(),
    )
}

#[tokio::test]
async fn the_dashboard_shows_the_engine_version_negotiated_through_the_api() {
    let (version, api) = engine_versions();
    let app = spawn_app().await;
    app.login_as_admin().await;
    let expected = format!("Connected: Docker Engine {version} (API {api})");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let page = app.get_html("/admin").await;
        if page.contains(&expected) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dashboard never showed {expected:?}: {page}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let health: serde_json::Value = app.get("/health").await.json().await.unwrap();
    assert_eq!(health["engine"], "ok");
}

#[tokio::test]
async fn the_engine_client_negotiates_down_to_the_engine_api() {
    let (version, api) = engine_versions();
    let engine = milkcrate::docker::Engine::connect()
        .await
        .expect("engine reachable");
    let info = engine.info().await.unwrap();
    assert_eq!(
        (info.version, info.api_version),
        (version, api),
        "bollard negotiated the engine's API version"
    );
}
