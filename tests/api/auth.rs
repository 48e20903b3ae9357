//! Logging in and out, sessions, the password and where `/` and `next` may send a browser.

use crate::helpers::*;

#[tokio::test]
async fn admin_logs_in_with_the_password_alone_and_sees_the_banner() {
    let app = spawn_app().await;
    let anonymous = app.get("/admin").await;
    assert_eq!(location(&anonymous), "/login?next=/admin");

    let resp = app.login(DEFAULT_PASSWORD).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp), "/admin");
    let cookie = set_cookies(&resp)
        .into_iter()
        .find(|c| c.starts_with("milkcrate_session="))
        .expect("session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP gets no Secure flag: {cookie}"
    );

    let dashboard = app.get_html("/admin").await;
    assert!(dashboard.contains("<h1>Dashboard</h1>"));
    assert!(
        dashboard.contains("the admin password is still the default"),
        "default-password banner shown"
    );
}

#[tokio::test]
async fn a_wrong_password_is_refused_with_a_message() {
    let app = spawn_app().await;
    let resp = app.login("not-the-password").await;
    assert_eq!(resp.status(), 401);
    assert!(resp.text().await.unwrap().contains("Invalid password"));
    assert_eq!(
        location(&app.get("/admin").await),
        "/login?next=/admin",
        "still logged out"
    );
}

#[tokio::test]
async fn the_session_id_changes_at_login_and_dies_at_logout() {
    let app = spawn_app().await;
    app.login_as_admin().await;
    let first = app.client.get(app.url("/admin")).send().await.unwrap();
    assert_eq!(first.status(), 200);

    // A second login from the same browser gets a new id; the old one stops working.
    let again = app
        .post_form("/admin", "/login", &[("password", DEFAULT_PASSWORD)])
        .await;
    let new_cookie = set_cookies(&again)
        .into_iter()
        .find(|c| c.starts_with("milkcrate_session="))
        .expect("new session cookie");

    let resp = app.logout().await;
    assert_eq!(location(&resp), "/login");
    assert!(
        set_cookies(&resp)
            .iter()
            .any(|c| c.starts_with("milkcrate_session=;") && c.contains("Max-Age=0"))
    );
    assert_eq!(location(&app.get("/admin").await), "/login?next=/admin");

    // Replaying the cookie after logout does not get back in.
    let replay = new_client();
    let id = new_cookie.split(';').next().unwrap();
    let resp = replay
        .get(app.url("/admin"))
        .header("cookie", id)
        .send()
        .await
        .unwrap();
    assert_eq!(location(&resp), "/login?next=/admin");
}

#[tokio::test]
async fn logout_is_a_post_not_a_link() {
    let app = spawn_app().await;
    app.login_as_admin().await;
    let resp = app.get("/logout").await;
    assert_eq!(resp.status(), 405);
    assert_eq!(
        app.get("/admin").await.status(),
        200,
        "a GET does not log out"
    );
}

#[tokio::test]
async fn forged_and_malformed_session_cookies_are_ignored_and_cleared() {
    let app = spawn_app().await;
    for cookie in [
        "milkcrate_session=garbage",
        "milkcrate_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "milkcrate_session=%00%ff",
    ] {
        let resp = new_client()
            .get(app.url("/admin"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(location(&resp), "/login?next=/admin", "{cookie}");
        assert!(
            set_cookies(&resp)
                .iter()
                .any(|c| c.starts_with("milkcrate_session=;")),
            "{cookie} is cleared"
        );
    }
}

#[tokio::test]
async fn next_goes_to_local_paths_only() {
    let app = spawn_app().await;
    let resp = app
        .post_form(
            "/login?next=/admin/settings",
            "/login",
            &[("password", DEFAULT_PASSWORD), ("next", "/admin/settings")],
        )
        .await;
    assert_eq!(location(&resp), "/admin/settings");
    for evil in ["//evil.example", "https://evil.example/", "/\\evil.example"] {
        let b = app.second_browser();
        let resp = b
            .post_form(
                "/login",
                "/login",
                &[("password", DEFAULT_PASSWORD), ("next", evil)],
            )
            .await;
        assert_eq!(location(&resp), "/admin", "{evil} must not be followed");
    }
}

#[tokio::test]
async fn changing_the_password_checks_the_current_one_and_the_rules_and_ends_other_sessions() {
    let app = spawn_app().await;
    app.login_as_admin().await;
    let other = app.second_browser();
    other.login_as_admin().await;

    let resp = app
        .change_password("wrong", STRONG_PASSWORD, STRONG_PASSWORD)
        .await;
    assert_eq!(resp.status(), 400);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("The current password is not correct.")
    );

    let resp = app
        .change_password(DEFAULT_PASSWORD, STRONG_PASSWORD, "Correct-Horse-43")
        .await;
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("Passwords do not match")
    );

    for (weak, why) in [
        ("short", "at least 8 characters"),
        ("alllowercase1!", "uppercase letter"),
        ("NoSpecial123", "special character"),
        ("Password123", "special character"),
    ] {
        let resp = app.change_password(DEFAULT_PASSWORD, weak, weak).await;
        assert_eq!(resp.status(), 400);
        assert!(
            resp.text().await.unwrap().contains(why),
            "{weak} refused for {why}"
        );
    }
    assert_eq!(
        other.get("/admin").await.status(),
        200,
        "refusals change nothing"
    );

    let resp = app
        .change_password(DEFAULT_PASSWORD, STRONG_PASSWORD, STRONG_PASSWORD)
        .await;
    assert_eq!(location(&resp), "/admin/settings");
    let page = app.get_html("/admin/settings").await;
    assert!(
        page.contains("Admin password updated successfully. 1 other session(s) were signed out."),
        "{page}"
    );
    assert!(!page.contains("still the default"), "banner gone");

    assert_eq!(
        location(&other.get("/admin").await),
        "/login?next=/admin",
        "the other session ended"
    );
    assert_eq!(
        app.get("/admin").await.status(),
        200,
        "this session goes on"
    );

    let fresh = app.second_browser();
    assert_eq!(
        fresh.login(DEFAULT_PASSWORD).await.status(),
        401,
        "old password no longer works"
    );
    assert_eq!(location(&fresh.login(STRONG_PASSWORD).await), "/admin");
}

#[tokio::test]
async fn non_ascii_passwords_work() {
    let app = spawn_app().await;
    app.login_as_admin().await;
    let pw = "Grüße-Ünïcode#9";
    assert_eq!(
        location(&app.change_password(DEFAULT_PASSWORD, pw, pw).await),
        "/admin/settings"
    );
    let b = app.second_browser();
    assert_eq!(b.login("Grusse-Unicode#9").await.status(), 401);
    assert_eq!(location(&b.login(pw).await), "/admin");
}

#[tokio::test]
async fn the_environment_password_wins_over_the_stored_one() {
    let app = spawn_app_with(|s| s.admin_password_override = Some("From-The-Env-1".into())).await;
    assert_eq!(app.login(DEFAULT_PASSWORD).await.status(), 401);
    assert_eq!(location(&app.login("From-The-Env-1").await), "/admin");
    let page = app.get_html("/admin").await;
    assert!(
        !page.contains("still the default"),
        "no default-password banner with an override"
    );
}

#[tokio::test]
async fn home_route_redirects_only_to_local_paths() {
    let app = spawn_app().await;
    let landing = app.get("/").await;
    assert_eq!(landing.status(), 200);
    assert!(landing.text().await.unwrap().contains("Admin login"));

    app.login_as_admin().await;
    let resp = app
        .post_form(
            "/admin/settings",
            "/admin/settings/default-route",
            &[("default_route", "shop")],
        )
        .await;
    assert_eq!(location(&resp), "/admin/settings");
    assert!(
        app.get_html("/admin/settings")
            .await
            .contains("Default route updated to: /shop")
    );

    for evil in ["//evil.example", "https://evil.example", "/\\evil.example"] {
        let resp = app
            .post_form(
                "/admin/settings",
                "/admin/settings/default-route",
                &[("default_route", evil)],
            )
            .await;
        assert_eq!(resp.status(), 400, "{evil}");
        let body = resp.text().await.unwrap();
        assert!(
            body.contains("was not saved") && body.contains("a path on this site"),
            "{evil}: {body}"
        );
    }

    let visitor = app.second_browser();
    assert_eq!(
        location(&visitor.get("/").await),
        "/shop",
        "the refused values changed nothing"
    );
    assert_eq!(
        location(&app.get("/").await),
        "/admin",
        "the admin goes to the dashboard"
    );

    app.post_form(
        "/admin/settings",
        "/admin/settings/default-route",
        &[("default_route", "")],
    )
    .await;
    assert_eq!(
        visitor.get("/").await.status(),
        200,
        "cleared: landing page again"
    );
}

#[tokio::test]
async fn the_environment_home_route_is_used_when_none_is_set() {
    let app = spawn_app_with(|s| {
        s.default_home_route = Some(milkcrate::domain::route::HomeRoute::parse("/docs").unwrap())
    })
    .await;
    assert_eq!(location(&app.get("/").await), "/docs");
}

#[tokio::test]
async fn idle_sessions_end() {
    let app = spawn_app_with(|s| s.session_idle = std::time::Duration::from_secs(1)).await;
    app.login_as_admin().await;
    assert_eq!(app.get("/admin").await.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(location(&app.get("/admin").await), "/login?next=/admin");
}

/// Session cookies planted by a page on a sibling host (`Domain=`, longer paths, so browsers
/// send them first) cannot push the admin's real one out, however many there are.
#[tokio::test]
async fn planted_session_cookies_do_not_lock_the_admin_out() {
    let app = spawn_app().await;
    let resp = app.login(DEFAULT_PASSWORD).await;
    let real = set_cookies(&resp)
        .into_iter()
        .find_map(|c| {
            c.strip_prefix("milkcrate_session=")
                .map(|v| v.split(';').next().unwrap().to_string())
        })
        .expect("signed in");
    let planted: Vec<String> = (0..40)
        .map(|i| format!("milkcrate_session={i:0>43}"))
        .collect();
    let header = format!("{}; milkcrate_session={real}", planted.join("; "));
    let resp = new_client()
        .get(app.url("/admin"))
        .header("cookie", header)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "still signed in: {:?}", resp.headers());
}
