//! The admin UI in a real browser (Debian's chromium through chromedriver), against the real
//! server and Docker Engine. Every page visited is checked for console errors and CSP
//! violations, unlabelled controls and horizontal overflow; screenshots of each step go to
//! `target/e2e/<suite>/`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::docker_env::*;
use crate::helpers::*;
use crate::webdriver::Browser;

const NEW_PASSWORD: &str = "E2e-Strong-pass-1";

/// Fails on console errors or CSP violations, controls without a label, status shown by
/// colour alone, or a page wider than the window.
async fn check_page(b: &Browser, what: &str) {
    let problems: Vec<(String, String)> = b
        .console()
        .await
        .into_iter()
        .filter(|(level, msg)| {
            level == "SEVERE"
                || msg.contains("Content Security Policy")
                || msg.contains("Refused to")
        })
        .collect();
    assert!(
        problems.is_empty(),
        "{what}: console errors or CSP violations: {problems:?}"
    );
    let unlabelled = b
        .js(r#"
            const bad = [];
            for (const el of document.querySelectorAll('input, select, textarea, button')) {
              if (el.type === 'hidden') continue;
              const named = (el.labels && el.labels.length > 0) || el.getAttribute('aria-label')
                || el.getAttribute('aria-labelledby') || (el.tagName === 'BUTTON' && el.textContent.trim());
              if (!named) bad.push(el.outerHTML.slice(0, 120));
            }
            return bad;"#)
        .await;
    assert_eq!(
        unlabelled,
        serde_json::json!([]),
        "{what}: controls without a label"
    );
    let colour_only = b
        .js(r#"return [...document.querySelectorAll('.state')].filter(s => !s.textContent.replace(/[●▲✕■\s]/g, '').length).length;"#)
        .await;
    assert_eq!(colour_only, 0, "{what}: a status shown by colour alone");
    let overflow = b
        .js("return document.documentElement.scrollWidth - window.innerWidth;")
        .await;
    assert!(
        overflow.as_i64().unwrap_or(0) <= 1,
        "{what}: the page is {overflow} px wider than the window"
    );
}

fn write_zip(dir: &std::path::Path, name: &str, bytes: Vec<u8>) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A web app whose `/cgi-bin/show` prints `/data/a.txt` from a mounted volume.
fn volume_reader_zip(body: &str) -> Vec<u8> {
    let dockerfile = format!(
        "FROM {BASE_IMAGE}\nCOPY www /www\nEXPOSE 8080\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
    );
    let cgi = "#!/bin/sh\necho 'Content-Type: text/plain'\necho\ncat /data/a.txt\n";
    zip_of(&[
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ("www/index.html", body.as_bytes(), 0o644),
        ("www/cgi-bin/show", cgi.as_bytes(), 0o755),
    ])
}

async fn wait_deploy_page(b: &Browser) {
    b.wait_text("#deploy-status", "Succeeded", 120).await;
}

#[tokio::test]
async fn the_admin_ui_works_end_to_end_in_chromium() {
    let started = Instant::now();
    let app = spawn_engine_app().await;
    let files = tempfile::tempdir().unwrap();
    let mut b = Browser::start("admin-ui", 1280).await;
    let url = |p: &str| app.url(p);

    // Log in, and see the default-password banner.
    b.goto(&url("/login")).await;
    check_page(&b, "login").await;
    b.shot("login").await;
    b.type_into("#password", "admin").await;
    b.click("form[action='/login'] button[type=submit]").await;
    b.wait_text(".banner-warning", "still the default", 10)
        .await;
    check_page(&b, "dashboard").await;
    b.shot("default-password-banner").await;

    // Focus is visible: the first Tab lands on the skip link, outlined.
    b.press_tab().await;
    let outline = b
        .js("const a = document.activeElement; return [a.className, getComputedStyle(a).outlineStyle, getComputedStyle(a).outlineWidth];")
        .await;
    assert_eq!(outline[0], "skip", "{outline}");
    assert_ne!(outline[1], "none", "focus shows: {outline}");
    b.shot("focus-visible").await;

    // Change the password: the banner goes.
    b.goto(&url("/admin/settings")).await;
    check_page(&b, "settings").await;
    b.type_into("#current_password", "admin").await;
    b.type_into("#new_password", NEW_PASSWORD).await;
    b.type_into("#confirm_password", NEW_PASSWORD).await;
    b.click("form[action='/admin/settings/password'] button[type=submit]")
        .await;
    b.wait_text(".flash-success", "Admin password updated successfully", 10)
        .await;
    assert!(
        b.try_find(".banner-warning").await.is_none(),
        "the banner is gone"
    );
    b.shot("password-changed").await;

    // Deploy a ZIP and watch the build log stream.
    let v1 = write_zip(
        files.path(),
        "site-v1.zip",
        volume_reader_zip("hello from the browser v1"),
    );
    b.goto(&url("/upload")).await;
    check_page(&b, "upload").await;
    b.choose_files("#file", &[&v1]).await;
    b.type_into("#app_name", "e2e-site").await;
    b.type_into("#public_route", "/e2e").await;
    b.shot("upload-form").await;
    b.click("form[action='/upload'] button[type=submit]").await;
    b.wait_text("#deploy-log", "-e2e-site:", 30).await;
    let reached = b
        .js("return [...document.querySelectorAll('#deploy-steps li.done, #deploy-steps li.current')].map(li => li.dataset.step);")
        .await;
    assert!(
        reached.as_array().is_some_and(|r| r
            .iter()
            .any(|s| s == "building" || s == "starting" || s == "succeeded")),
        "the progress shows the build: {reached}"
    );
    b.shot("deploy-log-streaming").await;
    wait_deploy_page(&b).await;
    let log = b.text("#deploy-log").await;
    assert!(
        log.contains("Step 1/") && log.contains("Deployed e2e-site at /e2e"),
        "{log}"
    );
    check_page(&b, "deploy page").await;
    b.shot("deploy-succeeded").await;
    for width in [375, 1440] {
        b.set_width(width).await;
        check_page(&b, &format!("deploy page at {width} px")).await;
        b.shot(&format!("deploy-page-{width}")).await;
    }
    b.set_width(1280).await;
    let app_link = b
        .js("return document.querySelector('.page-head a').getAttribute('href');")
        .await;
    let app_page = app_link.as_str().unwrap().to_string();
    let app_id: i64 = app_page.rsplit('/').next().unwrap().parse().unwrap();

    // The app answers at its route.
    b.goto(&url("/e2e/")).await;
    b.wait_text("body", "hello from the browser v1", 10).await;
    b.shot("app-at-its-route").await;

    // The dashboard sees the app stop without a reload.
    b.goto(&url("/admin")).await;
    b.wait_text("tr[data-app='e2e-site'] .state-label", "Running", 20)
        .await;
    for width in [375, 1440] {
        b.set_width(width).await;
        check_page(&b, &format!("dashboard at {width} px")).await;
        b.shot(&format!("dashboard-{width}")).await;
    }
    b.set_width(1280).await;
    b.js("window.__notReloaded = true; return null;").await;
    app.login(NEW_PASSWORD).await;
    let resp = app
        .post_action(
            &format!("/admin/apps/{app_id}"),
            &format!("/admin/apps/{app_id}/stop"),
        )
        .await;
    assert_eq!(resp.status(), 303);
    b.wait_text("tr[data-app='e2e-site'] .state-label", "Stopped", 20)
        .await;
    assert_eq!(
        b.js("return window.__notReloaded === true;").await,
        true,
        "the page updated itself"
    );
    b.shot("dashboard-sees-stop").await;
    b.click("tr[data-app='e2e-site'] button[formaction$='/start']")
        .await;
    b.wait_text("tr[data-app='e2e-site'] .state-label", "Running", 20)
        .await;

    // Update from the app's page.
    let v2 = write_zip(
        files.path(),
        "site-v2.zip",
        volume_reader_zip("hello from the browser v2"),
    );
    b.goto(&url(&app_page)).await;
    check_page(&b, "app page").await;
    b.choose_files("#update-file", &[&v2]).await;
    b.click(&format!(
        "form[action='/admin/update/{app_id}'] button[type=submit]"
    ))
    .await;
    wait_deploy_page(&b).await;
    // A new query each time: the browser may cache the app's own pages.
    b.goto(&url("/e2e/?after=update")).await;
    b.wait_text("body", "hello from the browser v2", 10).await;

    // Roll back, confirming once.
    b.goto(&url(&app_page)).await;
    b.click("form[action$='/rollback'] button").await;
    let question = b.accept_dialog().await;
    assert!(question.contains("Roll e2e-site back"), "{question}");
    wait_deploy_page(&b).await;
    b.goto(&url("/e2e/?after=rollback")).await;
    b.wait_text("body", "hello from the browser v1", 10).await;
    b.shot("rolled-back").await;

    // A volume: create, upload files with the file picker, mount it into the app.
    b.goto(&url("/admin/volumes/create")).await;
    check_page(&b, "create volume").await;
    b.type_into("#volume_name", "e2e-data").await;
    b.type_into("#description", "files for the browser test")
        .await;
    b.click("form[action='/admin/volumes/create'] button[type=submit]")
        .await;
    b.wait_text(".flash-success", "Volume e2e-data created successfully", 10)
        .await;
    check_page(&b, "volumes").await;
    b.click("table a[href^='/admin/volumes/']").await;
    let a = files.path().join("a.txt");
    let bfile = files.path().join("b.txt");
    std::fs::write(&a, "from the e2e volume").unwrap();
    std::fs::write(&bfile, "second file").unwrap();
    b.choose_files("#files", &[&a, &bfile]).await;
    b.click("form[action$='/upload'] button[type=submit]").await;
    b.wait_text(".flash-success", "Uploaded 2 files", 20).await;
    let listing = b.text("table").await;
    assert!(
        listing.contains("a.txt") && listing.contains("b.txt"),
        "{listing}"
    );
    check_page(&b, "volume page").await;
    b.shot("volume-with-files").await;
    b.goto(&url(&app_page)).await;
    b.click("input[name='volumes[]']").await;
    b.js("document.querySelector('input[id^=vol-path-]').value = '/data'; return null;")
        .await;
    let v3 = write_zip(
        files.path(),
        "site-v3.zip",
        volume_reader_zip("v3 with a volume"),
    );
    b.choose_files("#update-file", &[&v3]).await;
    b.click(&format!(
        "form[action='/admin/update/{app_id}'] button[type=submit]"
    ))
    .await;
    wait_deploy_page(&b).await;
    assert!(b.text("#deploy-log").await.contains(&format!(
        "Mounting volume milkcrate-{}-vol-e2e-data at /data",
        app.instance
    )));
    b.goto(&url("/e2e/cgi-bin/show")).await;
    b.wait_text("body", "from the e2e volume", 10).await;
    b.shot("app-reads-the-volume").await;

    // Delete the app from the dashboard after one confirmation.
    b.goto(&url("/admin")).await;
    b.click("tr[data-app='e2e-site'] button[formaction$='/delete']")
        .await;
    let question = b.accept_dialog().await;
    assert!(question.contains("Delete e2e-site"), "{question}");
    b.wait_text(".flash-success", "Application e2e-site deleted", 20)
        .await;
    assert!(b.try_find("tr[data-app='e2e-site']").await.is_none());
    b.shot("app-deleted").await;

    // Log out; the admin pages then ask for a login.
    b.click("form[action='/logout'] button").await;
    b.goto(&url("/admin")).await;
    b.find("#password").await;
    assert!(b.url().await.contains("/login"), "{}", b.url().await);

    // A form whose CSRF token no longer holds says so.
    b.js("document.querySelector('input[name=csrf_token]').value = 'expired'; return null;")
        .await;
    b.type_into("#password", NEW_PASSWORD).await;
    b.click("form[action='/login'] button[type=submit]").await;
    b.wait_text("body", "This form has expired", 10).await;
    b.shot("csrf-expired").await;
    let _ = b.console().await; // the 403 itself is logged by the browser as a failed load

    println!(
        "browser suite: {:.1} s, screenshots in {}",
        started.elapsed().as_secs_f64(),
        b.shots.display()
    );
}

#[tokio::test]
async fn the_dashboard_with_50_apps_paints_fast_and_stays_light() {
    let app = spawn_with_apps(50).await;
    let mut b = Browser::start("dashboard-50", 1280).await;
    b.goto(&app.url("/login")).await;
    b.type_into("#password", "admin").await;
    b.click("form[action='/login'] button[type=submit]").await;
    b.find("tr[data-app='app-049']").await;
    b.goto(&app.url("/admin")).await;
    b.find("tr[data-app='app-049']").await;
    let paint = b
        .js("return JSON.stringify(performance.getEntriesByType('paint').map(p => [p.name, p.startTime]));")
        .await;
    println!("paint entries: {paint}");
    // Chromium records the paint a moment after the page is usable: wait for the entry.
    let deadline = Instant::now() + Duration::from_secs(10);
    let paint = loop {
        let p = b
            .js("const p = performance.getEntriesByName('first-contentful-paint')[0]; return p ? p.startTime : -1;")
            .await;
        if p.as_f64().is_some_and(|v| v > 0.0) || Instant::now() > deadline {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let weight = b
        .js("return performance.getEntriesByType('navigation')[0].decodedBodySize + performance.getEntriesByType('resource').filter(r => /\\.(css|js)$/.test(r.name)).reduce((n, r) => n + r.decodedBodySize, 0);")
        .await;
    check_page(&b, "dashboard with 50 apps").await;
    b.shot("dashboard-50-apps").await;
    let paint_ms = paint.as_f64().unwrap();
    let bytes = weight.as_f64().unwrap();
    println!(
        "dashboard with 50 apps: first contentful paint {paint_ms:.0} ms, HTML+CSS+JS {:.1} KiB",
        bytes / 1024.0
    );
    assert!(paint_ms > 0.0, "Chromium reported a paint");
    assert!(
        bytes < 100.0 * 1024.0,
        "HTML + CSS + JS under 100 KiB: {bytes} bytes"
    );
    // Static assets are fingerprinted and cached for good.
    let css = b
        .js("return document.querySelector('link[rel=stylesheet]').getAttribute('href');")
        .await;
    let resp = app.get(css.as_str().unwrap()).await;
    let cache = resp.headers()["cache-control"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        cache.contains("immutable") && cache.contains("max-age="),
        "{cache}"
    );
}

/// 13.1 and 13.11 in Chromium: a hostile app's page, opened by the signed-in admin, cannot
/// register a service worker over the origin, and its `Set-Cookie` for milkcrate's session
/// (with a byte that is not UTF-8) does not log the admin out.
#[tokio::test]
async fn a_hostile_app_page_cannot_take_over_the_admin_in_chromium() {
    let app = spawn_engine_app().await;
    app.deploy("hostile", "/hostile", crate::attacks::hostile_app_zip())
        .await;
    let mut b = Browser::start("hostile-app", 1280).await;
    b.goto(&app.url("/login")).await;
    b.type_into("#password", "admin").await;
    b.click("form[action='/login'] button[type=submit]").await;
    b.wait_text(".banner-warning", "still the default", 10)
        .await;

    // The app answers within a status refresh of the deploy.
    let deadline = Instant::now() + Duration::from_secs(20);
    let title = loop {
        b.goto(&app.url("/hostile/index.html")).await;
        let inner = Instant::now() + Duration::from_secs(5);
        let title = loop {
            let t = b.js("return document.title;").await;
            let t = t.as_str().unwrap_or("").to_string();
            if t != "loading" || Instant::now() > inner {
                break t;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if title.starts_with("registered") || title.starts_with("refused") {
            break title;
        }
        assert!(
            Instant::now() < deadline,
            "the app page never ran: {title:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    b.shot("hostile-app-page").await;
    assert!(title.starts_with("refused"), "worker registration: {title}");
    let workers = b
        .js("return navigator.serviceWorker.getRegistrations().then(r => r.length);")
        .await;
    assert_eq!(workers, 0, "no worker is registered on the origin");

    // The admin is still signed in: the dashboard, not the login page.
    b.goto(&app.url("/admin")).await;
    b.find("#app-rows, .dashboard, main").await;
    assert!(
        !b.url().await.contains("/login"),
        "the app's cookie did not replace the admin's session: {}",
        b.url().await
    );
    b.wait_text("main", "hostile", 10).await;
    b.shot("admin-still-signed-in").await;
}
