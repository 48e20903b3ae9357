//! ZIPs written to break the tar milkcrate builds (issue 13, points 4, 12 and 13), against the
//! real engine: entries that lie about their size, entries that land on one path, and
//! Dockerfiles that would swallow milkcrate's `LABEL` line. Each is refused by name and
//! leaves nothing behind; what is accepted is built with milkcrate's labels.

use std::io::Write;

use crate::docker_env::*;
use crate::helpers::*;

/// Rewrites the declared uncompressed size of entry `name` in its local header and its
/// central directory record (the CRC stays that of the real bytes), as a crafted ZIP does.
fn patch_declared_size(zip: &[u8], name: &str, size: u32) -> Vec<u8> {
    let mut out = zip.to_vec();
    let mut patched = 0;
    for (sig, size_at, name_len_at, name_at) in
        [(b"PK\x03\x04", 22, 26, 30), (b"PK\x01\x02", 24, 28, 46)]
    {
        for i in 0..out.len().saturating_sub(name_at) {
            if &out[i..i + 4] != sig {
                continue;
            }
            let len = u16::from_le_bytes([out[i + name_len_at], out[i + name_len_at + 1]]);
            let at = i + name_at;
            if out.get(at..at + len as usize) == Some(name.as_bytes()) {
                out[i + size_at..i + size_at + 4].copy_from_slice(&size.to_le_bytes());
                patched += 1;
            }
        }
    }
    assert_eq!(patched, 2, "both headers of {name} patched");
    out
}

/// The attack as found: `www/lies.bin` declares 512 bytes more than it holds, and what it
/// holds is a tar stream (a setuid root shell, a device node, a link to `/`) that a desynchronised
/// reader takes for the next entries.
fn lying_zip(dockerfile: &str) -> Vec<u8> {
    let mut smuggled = tar::Builder::new(Vec::new());
    for (path, kind, mode) in [
        ("www/su", tar::EntryType::Regular, 0o4755),
        ("www/mem", tar::EntryType::Char, 0o666),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(0);
        smuggled
            .append_data(&mut h, path, std::io::empty())
            .unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    smuggled.append_link(&mut h, "www/root", "/").unwrap();
    let payload = smuggled.into_inner().unwrap();
    let mut cursor = std::io::Cursor::new(Vec::new());
    {
        let mut w = zip::ZipWriter::new(&mut cursor);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, data) in [
            ("Dockerfile", dockerfile.as_bytes()),
            ("www/lies.bin", &payload[..]),
            ("www/index.html", b"hello"),
        ] {
            w.start_file(name, opts).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap();
    }
    let real = payload.len() as u32;
    patch_declared_size(&cursor.into_inner(), "www/lies.bin", real + 512)
}

fn uploads_left(app: &EngineApp) -> usize {
    std::fs::read_dir(app.data_dir.join("uploads"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_zip_entry_that_lies_about_its_size_reaches_no_image_and_no_volume() {
    let app = spawn_engine_app().await;
    let dockerfile = format!(
        "FROM {BASE_IMAGE}\nCOPY www /www\nEXPOSE 8080\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
    );
    let zip = lying_zip(&dockerfile);

    // As an app: the deploy fails naming the entry, and nothing of it stays.
    let resp = app
        .upload(
            &[("app_name", "liar"), ("public_route", "/liar")],
            zip.clone(),
            "liar.zip",
        )
        .await;
    assert_eq!(
        resp.status(),
        303,
        "{}",
        resp.text().await.unwrap_or_default()
    );
    let page = unescape(&app.wait_deploy(deploy_id(&location(&resp))).await);
    assert!(
        page.contains("data-status=\"failed\"")
            && page.contains("'www/lies.bin' holds only")
            && page.contains("damaged or crafted"),
        "{page}"
    );
    assert_eq!(
        labelled_leftovers(&app.instance, "liar"),
        (String::new(), String::new())
    );
    assert!(!app.data_dir.join("apps/liar").exists());
    assert_eq!(uploads_left(&app), 0, "no upload or build context left");

    // Into a volume: refused naming the entry, nothing written.
    let token = csrf_token(&app.get_html("/admin/volumes/create").await);
    let resp = app
        .client
        .post(app.url("/admin/volumes/create"))
        .form(&[
            ("csrf_token", token.as_str()),
            ("volume_name", "liar_data"),
            ("description", ""),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let list: serde_json::Value = app
        .get("/admin/volumes/api/list")
        .await
        .json()
        .await
        .unwrap();
    let id = list["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["volume_name"] == "liar_data")
        .expect("the volume is listed")["volume_id"]
        .as_i64()
        .unwrap();
    let token = csrf_token(&app.get_html(&format!("/admin/volumes/{id}")).await);
    let form = reqwest::multipart::Form::new()
        .text("csrf_token", token)
        .text("folder", "")
        .part(
            "files",
            reqwest::multipart::Part::bytes(zip).file_name("liar.zip"),
        );
    let resp = app
        .client
        .post(app.url(&format!("/admin/volumes/{id}/upload")))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let page = unescape(&app.get_html(&location(&resp)).await);
    assert!(
        page.contains("Nothing was written") && page.contains("'www/lies.bin' holds only"),
        "{page}"
    );
    let listing = docker(&[
        "run",
        "--rm",
        "--label",
        TEST_LABEL,
        "-v",
        &format!("milkcrate-{}-vol-liar-data:/v:ro", app.instance),
        BASE_IMAGE,
        "ls",
        "-A",
        "/v",
    ]);
    assert_eq!(listing.trim(), "", "the volume stays empty");
    assert_eq!(uploads_left(&app), 0, "no spooled tar left");
}

#[tokio::test]
async fn entries_that_land_on_one_path_are_refused_at_upload_naming_both() {
    let app = spawn_engine_app().await;
    let good = format!("FROM {BASE_IMAGE}\nCMD [\"sleep\", \"60\"]\n");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dot",
            zip_of(&[
                ("Dockerfile", good.as_bytes(), 0o644),
                ("./Dockerfile", b"FROM scratch\nCOPY / /\n", 0o644),
            ]),
            "'Dockerfile' and './Dockerfile' would both be written to 'Dockerfile'",
        ),
        (
            "slashes",
            zip_of(&[
                ("app/Dockerfile", good.as_bytes(), 0o644),
                ("app//Dockerfile", b"FROM scratch\n", 0o644),
            ]),
            "'app/Dockerfile' and 'app//Dockerfile'",
        ),
        (
            "case",
            zip_of(&[
                ("Dockerfile", good.as_bytes(), 0o644),
                ("dockerfile", b"FROM scratch\n", 0o644),
            ]),
            "differ only in case",
        ),
    ];
    for (name, zip, reason) in cases {
        let route = format!("/{name}");
        let resp = app
            .upload(
                &[("app_name", name), ("public_route", &route)],
                zip,
                "a.zip",
            )
            .await;
        assert_eq!(resp.status(), 400, "{name}");
        let body = unescape(&resp.text().await.unwrap());
        let shown = body
            .find("upload-error")
            .map(|i| &body[i..(i + 400).min(body.len())])
            .unwrap_or("no error shown");
        assert!(body.contains(reason), "{name}: {reason:?} not in {shown}");
        assert_eq!(uploads_left(&app), 0, "{name}: no upload left");
        assert_eq!(
            labelled_leftovers(&app.instance, name),
            (String::new(), String::new())
        );
    }
}

#[tokio::test]
async fn a_dockerfile_cannot_swallow_milkcrates_labels() {
    let app = spawn_engine_app().await;

    // A trailing continuation (through blank and comment lines): refused at upload.
    let open = format!("FROM {BASE_IMAGE}\nCMD [\"sleep\", \"60\"]\nRUN true \\\n\n# done\n");
    let resp = app
        .upload(
            &[("app_name", "open"), ("public_route", "/open")],
            zip_of(&[("Dockerfile", open.as_bytes(), 0o644)]),
            "a.zip",
        )
        .await;
    assert_eq!(resp.status(), 400);
    let body = unescape(&resp.text().await.unwrap());
    assert!(
        body.contains("The Dockerfile 'Dockerfile' ends with a line continuation"),
        "{body}"
    );
    assert_eq!(uploads_left(&app), 0);

    // A compose service's Dockerfile: refused when its build context is written.
    let yml = "services:\n  web:\n    build: ./web\n    ports: [\"8080\"]\n";
    let web = format!("FROM {BASE_IMAGE}\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\"]\nRUN true `\n");
    let escape_web = format!("# escape=`\n{web}");
    let resp = app
        .upload(
            &[("app_name", "openstack"), ("public_route", "/openstack")],
            zip_of(&[
                ("compose.yaml", yml.as_bytes(), 0o644),
                ("web/Dockerfile", escape_web.as_bytes(), 0o644),
            ]),
            "a.zip",
        )
        .await;
    assert_eq!(
        resp.status(),
        303,
        "{}",
        resp.text().await.unwrap_or_default()
    );
    let page = unescape(&app.wait_deploy(deploy_id(&location(&resp))).await);
    assert!(
        page.contains("data-status=\"failed\"")
            && page.contains("'web/Dockerfile' ends with a line continuation"),
        "{page}"
    );
    assert_eq!(
        labelled_leftovers(&app.instance, "openstack"),
        (String::new(), String::new())
    );
    assert_eq!(uploads_left(&app), 0);

    // Endings that look alike but do not continue build, and the image carries the labels.
    let fine = format!(
        "FROM {BASE_IMAGE}\nCOPY www /www\nEXPOSE 8080\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n# a comment ending in \\"
    );
    app.deploy(
        "fine",
        "/fine",
        zip_of(&[
            ("Dockerfile", fine.as_bytes(), 0o644),
            ("www/index.html", b"fine", 0o644),
        ]),
    )
    .await;
    let container = inspect_app(&app.instance, "fine");
    let image = container["Config"]["Image"].as_str().unwrap().to_string();
    let labels: serde_json::Value = serde_json::from_str(&docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Labels}}",
        &image,
    ]))
    .unwrap();
    assert_eq!(labels["milkcrate.app"], "fine", "{labels}");
    assert_eq!(
        labels["milkcrate.instance"],
        app.instance.as_str(),
        "{labels}"
    );
}

/// Issue 13.6: a `.dockerignore` made to blow up a backtracking matcher (the old one never
/// finished on it and pinned a core past the deploy's timeout). The deploy now completes,
/// and the patterns still decide what the image holds.
#[tokio::test]
async fn a_pathological_dockerignore_does_not_stall_the_deploy() {
    let app = spawn_engine_app().await;
    let stars = format!("{}b", "*a".repeat(40));
    let doubles = format!("{}/nomatch", ["**", "*a*a*a*"].repeat(30).join("/"));
    let ignore = format!("{stars}\n{doubles}\nsecret.txt\n");
    let long_name = format!("www/{}", "a".repeat(200));
    let deep = format!("www/{}/index.html", vec!["aaaaaaaaaa"; 30].join("/"));
    let dockerfile = format!(
        "FROM {BASE_IMAGE}\nCOPY . /www-src\nCOPY www /www\nEXPOSE 8080\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
    );
    let zip = zip_of(&[
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        (".dockerignore", ignore.as_bytes(), 0o644),
        ("www/index.html", b"still fast", 0o644),
        (long_name.as_str(), b"x", 0o644),
        (deep.as_str(), b"deep", 0o644),
        ("secret.txt", b"left out", 0o644),
    ]);
    app.deploy("globby", "/globby", zip).await;
    let container = inspect_app(&app.instance, "globby");
    let image = container["Config"]["Image"].as_str().unwrap().to_string();
    let listing = docker(&[
        "run",
        "--rm",
        "--label",
        TEST_LABEL,
        "--entrypoint",
        "ls",
        &image,
        "-A",
        "/www-src",
    ]);
    assert!(listing.contains("www"), "{listing}");
    assert!(!listing.contains("secret.txt"), "{listing}");
}
