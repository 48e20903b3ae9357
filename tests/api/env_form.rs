//! The app page's environment form (`service::apps::save_env_lines`): a line reading
//! `(unchanged)` keeps the stored value, and when the stored values cannot be read (the
//! `SECRET_KEY` changed) the save is refused rather than replacing them with empty ones.

use std::path::Path;

use crate::helpers::*;

/// A database holding one app that has no container (so a saved environment starts no deploy).
async fn one_app(data: &Path) -> i64 {
    std::fs::create_dir_all(data).expect("a data folder");
    let store =
        milkcrate::store::Store::open(&data.join("milkcrate.sqlite")).expect("the database");
    let new = milkcrate::store::NewApp {
        name: "keeper".into(),
        public_route: "/keeper".into(),
        deployment_type: "dockerfile".into(),
        health_path: None,
        memory_mb: 512,
        cpu_percent: 50,
        port_override: None,
        source_zip: String::new(),
        volume_mounts: None,
        domains: Vec::new(),
    };
    let (id, deploy) = store
        .insert_app(new, 0)
        .await
        .expect("the store")
        .expect("a free name");
    let image = "milkcrate-keeper:20261201".to_string();
    store
        .app_deployed(id, String::new(), image.clone(), None, 8080)
        .await
        .expect("the store");
    store
        .finish_deploy(
            deploy,
            milkcrate::domain::state::DeployStatus::Succeeded,
            Some(image),
            None,
            0,
        )
        .await
        .expect("the store");
    id
}

async fn stored(data: &Path, id: i64) -> Vec<(String, Vec<u8>)> {
    let store =
        milkcrate::store::Store::open(&data.join("milkcrate.sqlite")).expect("the database");
    store
        .env(id)
        .await
        .expect("the store")
        .into_iter()
        .map(|v| (v.key, v.ciphertext))
        .collect()
}

#[tokio::test]
async fn unreadable_stored_values_are_refused_not_blanked() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let data = dir.path().join("data");
    let id = one_app(&data).await;
    let page = format!("/admin/apps/{id}");
    let action = format!("/admin/apps/{id}/env");

    let first = spawn_in(data.clone(), |s| {
        s.secret_key = Some("first-key-for-the-env-form-test-0123456789".into())
    })
    .await;
    first.login_as_admin().await;
    let saved = first
        .post_form(&page, &action, &[("env", "TOKEN=s3cr3t")])
        .await;
    assert_eq!(saved.status(), 303, "saved");
    // Kept as it is when the form says so.
    let kept = first
        .post_form(&page, &action, &[("env", "TOKEN=(unchanged)\nMODE=one")])
        .await;
    assert_eq!(kept.status(), 303, "saved again");
    let before = stored(&data, id).await;
    assert_eq!(before.len(), 2, "{before:?}");
    drop(first);

    // Another SECRET_KEY: the stored values cannot be decrypted.
    let second = spawn_in(data.clone(), |s| {
        s.secret_key = Some("second-key-for-the-env-form-test-9876543210".into())
    })
    .await;
    second.login_as_admin().await;
    let refused = second
        .post_form(&page, &action, &[("env", "TOKEN=(unchanged)\nMODE=two")])
        .await;
    assert_eq!(refused.status(), 409);
    let body = refused.text().await.expect("a page");
    assert!(
        body.contains("could not be read") && body.contains("give every value again"),
        "{body}"
    );
    assert_eq!(stored(&data, id).await, before, "nothing was replaced");

    // Giving every value again works.
    let replaced = second
        .post_form(&page, &action, &[("env", "TOKEN=new\nMODE=two")])
        .await;
    assert_eq!(replaced.status(), 303);
    assert_ne!(stored(&data, id).await, before);
}
