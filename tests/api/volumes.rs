//! Volumes against the real engine: create, upload files and ZIPs with awkward names, browse,
//! download, mount into an app that reads and writes them, keep them across an update, refuse
//! to delete a mounted volume, and delete files, folders and the volume itself.

use crate::docker_env::*;
use crate::helpers::*;

const CGI: &str = "#!/bin/sh\necho 'Content-Type: text/plain'\necho\ncat /data/hello.txt\necho\necho \"written by $(id -u)\" > /data/from-app.txt\ncat /data/from-app.txt\n";

/// A busybox httpd app whose `/cgi-bin/note` reads `/data/hello.txt` and writes a file next
/// to it.
fn volume_app_zip(version: &str) -> Vec<u8> {
    let dockerfile = format!(
        "FROM {BASE_IMAGE}\nCOPY www /www\nEXPOSE 8080\nCMD [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
    );
    zip_of(&[
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ("www/index.html", version.as_bytes(), 0o644),
        ("www/cgi-bin/note", CGI.as_bytes(), 0o755),
    ])
}

impl EngineApp {
    async fn create_volume(&self, name: &str, description: &str) -> reqwest::Response {
        self.post_form(
            "/admin/volumes/create",
            "/admin/volumes/create",
            &[("volume_name", name), ("description", description)],
        )
        .await
    }

    /// The id of the volume called `name`, from the JSON list.
    async fn volume_id(&self, name: &str) -> i64 {
        let list: serde_json::Value = self
            .get("/admin/volumes/api/list")
            .await
            .json()
            .await
            .unwrap();
        list["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["volume_name"] == name)
            .unwrap_or_else(|| panic!("{name} is listed: {list}"))["volume_id"]
            .as_i64()
            .unwrap()
    }

    /// Posts the volume page's upload form with `files` (name, bytes) into `folder`.
    async fn upload_files(
        &self,
        id: i64,
        folder: &str,
        files: Vec<(&str, Vec<u8>)>,
    ) -> reqwest::Response {
        let token = csrf_token(&self.get_html(&format!("/admin/volumes/{id}")).await);
        let mut form = reqwest::multipart::Form::new()
            .text("csrf_token", token)
            .text("folder", folder.to_string());
        for (name, bytes) in files {
            form = form.part(
                "files",
                reqwest::multipart::Part::bytes(bytes).file_name(name.to_string()),
            );
        }
        self.client
            .post(self.url(&format!("/admin/volumes/{id}/upload")))
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    /// Posts the volume page's delete form.
    async fn delete_volume(&self, id: i64) -> reqwest::Response {
        self.post_form(
            &format!("/admin/volumes/{id}"),
            &format!("/admin/volumes/{id}/delete"),
            &[],
        )
        .await
    }

    /// The page shown after following a redirect (where the flash message is).
    async fn follow(&self, resp: reqwest::Response) -> String {
        let status = resp.status();
        if status != 303 {
            panic!(
                "not a redirect ({status}): {}",
                resp.text().await.unwrap_or_default()
            );
        }
        unescape(&self.get_html(&location(&resp)).await)
    }
}

/// `ls -ln` of the volume, as a container of our own test image sees it.
fn ls_volume(docker_name: &str, inner: &str) -> String {
    docker(&[
        "run",
        "--rm",
        "--label",
        TEST_LABEL,
        "-v",
        &format!("{docker_name}:/v:ro"),
        BASE_IMAGE,
        "ls",
        "-lna",
        &format!("/v/{inner}"),
    ])
}

#[tokio::test]
async fn volumes_hold_files_apps_can_use_and_keep_across_updates() {
    let app = spawn_engine_app().await;

    // Create, with the original's name rule and our collision rule.
    let page = app
        .follow(app.create_volume("Shared_Data", "files for the shop").await)
        .await;
    assert!(
        page.contains("Volume Shared_Data created successfully"),
        "{page}"
    );
    let docker_name = &format!("milkcrate-{}-vol-shared-data", app.instance);
    let inspect: serde_json::Value =
        serde_json::from_str(&docker(&["volume", "inspect", docker_name])).unwrap();
    assert_eq!(inspect[0]["Labels"]["milkcrate.volume_name"], "Shared_Data");
    assert_eq!(inspect[0]["Labels"]["milkcrate.instance"], app.instance);
    let clash = app.create_volume("shared-data", "").await;
    assert_eq!(clash.status(), 400);
    let clash = unescape(&clash.text().await.unwrap());
    assert!(
        clash.contains(&format!("same Docker volume ({docker_name})")),
        "{clash}"
    );
    let unicode = unescape(&app.create_volume("données", "").await.text().await.unwrap());
    assert!(
        unicode.contains("letters, numbers, hyphens, and underscores"),
        "{unicode}"
    );
    let id = app.volume_id("Shared_Data").await;

    // Several files at once, one with an awkward name, and a ZIP unpacked into a folder.
    let odd = "we|ird name ü.txt";
    let zip = zip_of(&[
        ("a/b/deep.txt", b"deep", 0o600),
        ("a/line\nbreak.txt", b"nl", 0o644),
    ]);
    let page = app
        .follow(
            app.upload_files(
                id,
                "",
                vec![
                    ("hello.txt", b"hello from the volume".to_vec()),
                    (odd, b"odd".to_vec()),
                ],
            )
            .await,
        )
        .await;
    assert!(page.contains("Uploaded 2 files"), "{page}");
    let page = app
        .follow(
            app.upload_files(id, "docs", vec![("bundle.zip", zip)])
                .await,
        )
        .await;
    assert!(page.contains("Uploaded 2 files into docs"), "{page}");
    assert!(
        page.contains("a/</a>"),
        "the folder is shown where it was put: {page}"
    );
    let root = unescape(&app.get_html(&format!("/admin/volumes/{id}")).await);
    assert!(root.contains("4 files"), "the count is live: {root}");
    assert!(root.contains(odd), "{root}");
    let docs = unescape(
        &app.get_html(&format!("/admin/volumes/{id}?path=docs%2Fa"))
            .await,
    );
    assert!(docs.contains("line\nbreak.txt"), "{docs}");
    assert!(docs.contains("b/</a>"), "{docs}");

    // Files belong to nobody (65534), so apps running as nobody can write them.
    let listing = ls_volume(docker_name, "");
    for line in listing
        .lines()
        .filter(|l| l.contains("hello.txt") || l.contains("docs"))
    {
        assert!(
            line.contains(" 65534 ") && line.matches("65534").count() >= 2,
            "{line}"
        );
    }
    let deep = ls_volume(docker_name, "docs/a/b");
    assert!(
        deep.contains("-rw-r--r--"),
        "0644, whatever the ZIP said: {deep}"
    );

    // Downloads give back the bytes, whatever the name.
    let body = app
        .get(&format!("/admin/volumes/{id}/download?path=hello.txt"))
        .await;
    assert_eq!(body.text().await.unwrap(), "hello from the volume");
    let resp = app
        .get(&format!(
            "/admin/volumes/{id}/download?path={}",
            "we%7Cird%20name%20%C3%BC.txt"
        ))
        .await;
    let disposition = resp.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        disposition.contains("UTF-8''we%7Cird%20name%20%C3%BC.txt"),
        "{disposition}"
    );
    assert_eq!(resp.text().await.unwrap(), "odd");

    // A refused ZIP says which entry and writes nothing.
    let evil = zip_of(&[("ok.txt", b"x", 0o644), ("../escape.txt", b"x", 0o644)]);
    let page = app
        .follow(app.upload_files(id, "", vec![("evil.zip", evil)]).await)
        .await;
    assert!(
        page.contains("Nothing was written") && page.contains("../escape.txt"),
        "{page}"
    );
    assert!(!ls_volume(docker_name, "").contains("ok.txt"));

    // Mount paths are checked before anything is built.
    let vol_field = format!("volume_path_{id}");
    let id_text = id.to_string();
    let refused = app
        .upload(
            &[
                ("app_name", "notes"),
                ("public_route", "/notes"),
                ("volumes[]", &id_text),
                (&vol_field, "/etc"),
            ],
            volume_app_zip("v1"),
            "notes.zip",
        )
        .await;
    assert_eq!(refused.status(), 400);
    let refused = unescape(&refused.text().await.unwrap());
    assert!(refused.contains("/etc belongs to the system"), "{refused}");

    // An app mounts it, reads what was uploaded and writes next to it.
    let resp = app
        .upload(
            &[
                ("app_name", "notes"),
                ("public_route", "/notes"),
                ("volumes[]", &id_text),
                (&vol_field, "/data"),
            ],
            volume_app_zip("v1"),
            "notes.zip",
        )
        .await;
    let deploy = deploy_id(&location(&resp));
    let page = app.wait_deploy(deploy).await;
    assert!(page.contains("data-status=\"succeeded\""), "{page}");
    assert!(
        unescape(&page).contains(&format!(
            "Mounting volume milkcrate-{}-vol-shared-data at /data (read-write)",
            app.instance
        )),
        "{page}"
    );
    let app_id = app_id_from(&page);
    let c = inspect_app(&app.instance, "notes");
    let mounts = c["Mounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert_eq!(mounts[0]["Name"], docker_name.as_str());
    assert_eq!(mounts[0]["Destination"], "/data");
    assert_eq!(mounts[0]["RW"], true);
    let note = fetch_from_container(&c, "/cgi-bin/note").await;
    assert!(note.contains("hello from the volume"), "{note}");
    assert!(
        note.contains("written by 65534"),
        "the app wrote into the volume: {note}"
    );

    // An update keeps the mount and the data.
    let resp = app.update(app_id, volume_app_zip("v2")).await;
    let page = app.wait_deploy(deploy_id(&location(&resp))).await;
    assert!(page.contains("data-status=\"succeeded\""), "{page}");
    let c = inspect_app(&app.instance, "notes");
    assert_eq!(fetch_from_container(&c, "/").await, "v2");
    assert_eq!(c["Mounts"][0]["Name"], docker_name.as_str());
    let note = fetch_from_container(&c, "/cgi-bin/note").await;
    assert!(note.contains("hello from the volume"), "{note}");
    let root = unescape(&app.get_html(&format!("/admin/volumes/{id}")).await);
    assert!(root.contains("from-app.txt"), "{root}");
    assert!(root.contains("Mounted by</dt><dd>notes"), "{root}");

    // A mounted volume is not deleted, and the message says by whom.
    let page = app.follow(app.delete_volume(id).await).await;
    assert!(
        page.contains("Volume Shared_Data is mounted by notes"),
        "{page}"
    );

    // Files and folders are deleted through the engine.
    for path in ["from-app.txt", "docs", odd] {
        let page = app
            .follow(
                app.post_form(
                    &format!("/admin/volumes/{id}"),
                    &format!("/admin/volumes/{id}/files/delete"),
                    &[("path", path)],
                )
                .await,
            )
            .await;
        assert!(page.contains(&format!("Deleted {path}")), "{page}");
    }
    let left = ls_volume(docker_name, "");
    assert!(left.contains("hello.txt"), "{left}");
    for gone in ["from-app.txt", "docs", "we|ird"] {
        assert!(!left.contains(gone), "{gone} is gone: {left}");
    }

    // Once the app is gone, the volume can go.
    let resp = app
        .post_form(
            &format!("/admin/apps/{app_id}"),
            &format!("/admin/apps/{app_id}/delete"),
            &[],
        )
        .await;
    assert_eq!(resp.status(), 303);
    let page = app.follow(app.delete_volume(id).await).await;
    assert!(
        page.contains("Volume Shared_Data deleted successfully"),
        "{page}"
    );
    assert!(
        std::process::Command::new("docker")
            .args(["volume", "inspect", docker_name])
            .output()
            .map(|o| !o.status.success())
            .unwrap(),
        "the Docker volume is gone"
    );
    let actions: Vec<String> = app
        .audit_lines()
        .iter()
        .map(|l| format!("{} {} {}", l["action"], l["resource_type"], l["success"]))
        .collect();
    for expected in [
        "\"create\" \"volume\" true",
        "\"upload\" \"volume_file\" true",
        "\"upload\" \"volume_file\" false",
        "\"download\" \"volume_file\" true",
        "\"delete\" \"volume_file\" true",
        "\"delete\" \"volume\" false",
        "\"delete\" \"volume\" true",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} in {actions:?}"
        );
    }
}

#[tokio::test]
async fn a_volume_removed_outside_milkcrate_can_still_be_taken_off_the_list() {
    let app = spawn_engine_app().await;
    let page = app.follow(app.create_volume("gone", "").await).await;
    assert!(page.contains("Volume gone created successfully"), "{page}");
    let id = app.volume_id("gone").await;
    docker(&[
        "volume",
        "rm",
        &format!("milkcrate-{}-vol-gone", app.instance),
    ]);
    let page = app.follow(app.delete_volume(id).await).await;
    assert!(page.contains("was already gone from Docker"), "{page}");
    let list = app.get_html("/admin/volumes").await;
    assert!(list.contains("No volumes yet"), "{list}");
}
