//! CSRF: every state-changing route, present and future, refuses a request without a token.

use crate::helpers::*;

/// Walks the whole route table: each non-GET route, called by a logged-in admin without a token
/// (and with a forged one), answers 400 with the "form expired" page and changes nothing.
#[tokio::test]
async fn every_state_changing_route_refuses_a_request_without_a_token() {
    let app = spawn_app().await;
    app.login_as_admin().await;
    let audit_before = app.audit_lines().len();
    let mut checked = 0;
    for route in milkcrate::web::route_table() {
        if route.method == reqwest::Method::GET || milkcrate::web::api::is_api_path(route.path) {
            continue;
        }
        let path = fill_params(route.path);
        for token in [None, Some("forged-token")] {
            let mut req = app.client.request(route.method.clone(), app.url(&path));
            let mut form = vec![
                ("new_password", "Changed-Pass-1"),
                ("confirm_password", "Changed-Pass-1"),
                ("current_password", "admin"),
                ("default_route", "/x"),
            ];
            if let Some(t) = token {
                form.push(("csrf_token", t));
            }
            req = req.form(&form);
            let resp = req.send().await.unwrap();
            assert_eq!(
                resp.status(),
                400,
                "{} {path} with token {token:?}",
                route.method
            );
            let body = resp.text().await.unwrap();
            assert!(
                body.contains("This form has expired"),
                "{} {path}: {body}",
                route.method
            );
            checked += 1;
        }
    }
    assert!(checked >= 4, "the walk covered the POST routes");
    assert_eq!(
        app.get("/admin").await.status(),
        200,
        "still logged in (logout refused)"
    );
    assert_eq!(
        app.audit_lines().len(),
        audit_before,
        "nothing was done, so nothing audited"
    );
    assert!(
        app.get_html("/admin").await.contains("still the default"),
        "password unchanged"
    );
    assert_eq!(
        location(&app.second_browser().get("/").await),
        "",
        "home route unchanged"
    );
}

fn fill_params(path: &str) -> String {
    path.split('/')
        .map(|seg| if seg.starts_with('{') { "1" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn a_token_from_another_session_is_refused() {
    let app = spawn_app().await;
    app.login_as_admin().await;
    let other = app.second_browser();
    other.login_as_admin().await;
    let foreign = csrf_token(&other.get_html("/admin/settings").await);
    let resp = app
        .client
        .post(app.url("/admin/settings/default-route"))
        .form(&[
            ("csrf_token", foreign.as_str()),
            ("default_route", "/stolen"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("This form has expired"));
}

#[tokio::test]
async fn the_token_header_is_accepted_like_the_original() {
    let app = spawn_app().await;
    app.login_as_admin().await;
    let token = csrf_token(&app.get_html("/admin/settings").await);
    let resp = app
        .client
        .post(app.url("/admin/settings/default-route"))
        .header("X-CSRFToken", token)
        .form(&[("default_route", "/via-header")])
        .send()
        .await
        .unwrap();
    assert_eq!(location(&resp), "/admin/settings");
    assert_eq!(
        location(&app.second_browser().get("/").await),
        "/via-header"
    );
}

#[tokio::test]
async fn the_login_form_needs_its_token_too() {
    let app = spawn_app().await;
    let resp = app
        .client
        .post(app.url("/login"))
        .form(&[("password", "admin")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("This form has expired"));
    assert_eq!(
        location(&app.get("/admin").await),
        "/login?next=/admin",
        "not logged in"
    );
}
