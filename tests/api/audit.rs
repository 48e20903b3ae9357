//! The audit log: every login attempt and admin action, as JSON lines, shown newest first.

use crate::helpers::*;

#[tokio::test]
async fn logins_settings_password_and_logout_are_audited_and_listed() {
    let app = spawn_app().await;
    assert_eq!(app.login("wrong").await.status(), 401);
    app.login_as_admin().await;
    app.post_form(
        "/admin/settings",
        "/admin/settings/default-route",
        &[("default_route", "/shop")],
    )
    .await;
    app.change_password(DEFAULT_PASSWORD, STRONG_PASSWORD, STRONG_PASSWORD)
        .await;

    let lines = app.audit_lines();
    let actions: Vec<(&str, bool)> = lines
        .iter()
        .map(|l| {
            (
                l["action"].as_str().unwrap(),
                l["success"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("login", false),
            ("login", true),
            ("settings_change", true),
            ("password_change", true)
        ]
    );
    for l in &lines {
        for key in [
            "timestamp",
            "action",
            "resource_type",
            "resource_id",
            "success",
            "ip",
            "user_agent",
            "details",
        ] {
            assert!(l.get(key).is_some(), "{key} in {l}");
        }
        let ts = l["timestamp"].as_str().unwrap();
        assert!(ts.ends_with('Z') && ts.contains('T'), "UTC RFC 3339: {ts}");
        assert_eq!(l["ip"], "127.0.0.1");
    }
    assert_eq!(lines[0]["error"], "invalid password");
    assert!(lines[1].get("error").is_none(), "no error key on success");
    assert_eq!(lines[2]["details"]["value"], "/shop");
    assert!(
        !std::fs::read_to_string(app.data_dir.join("audit.log"))
            .unwrap()
            .contains(STRONG_PASSWORD),
        "no secrets in the log"
    );

    let page = app.get_html("/admin/audit").await;
    let newest = page
        .find("password_change</td>")
        .expect("password change listed");
    let oldest = page.find("invalid password").expect("failed login listed");
    assert!(newest < oldest, "newest first");

    let filtered = app.get_html("/admin/audit?action=settings_change").await;
    assert!(
        filtered.contains("settings_change</td>") && !filtered.contains("password_change</td>")
    );

    app.logout().await;
    assert_eq!(app.audit_lines().last().unwrap()["action"], "logout");
}

#[tokio::test]
async fn the_audit_page_is_paged() {
    let app = spawn_app().await;
    for _ in 0..3 {
        app.login("wrong").await;
    }
    app.login_as_admin().await;
    let log =
        milkcrate::audit::AuditLog::open(&app.data_dir.join("audit.log"), 10 << 20, 5).unwrap();
    let actor = milkcrate::audit::Actor::default();
    for i in 0..60 {
        log.record(
            &actor,
            milkcrate::audit::Event::new("settings_change", "setting", format!("k{i}")),
        )
        .await
        .unwrap();
    }
    let first = app.get_html("/admin/audit").await;
    assert!(
        first.contains("setting k59") && !first.contains("setting k9<"),
        "50 newest on page one"
    );
    assert!(first.contains("Older →"));
    let second = app.get_html("/admin/audit?action=&page=1").await;
    assert!(second.contains("setting k9") && second.contains("← Newer"));
}
