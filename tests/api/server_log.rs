//! The server's own log, read from the real binary's stderr (issue 14): with
//! `MILKCRATE_LOG_FORMAT=json` every request and a refused login carry the request id sent back
//! as `X-Request-Id`, the method and the status; `MILKCRATE_LOG=warn` keeps the warnings and
//! drops the info lines.

use crate::helpers::*;
use crate::logging::LoggedServer;

/// The id the server sent back.
fn request_id(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("an X-Request-Id header")
        .to_string()
}

/// A login with a wrong password; returns its request id.
async fn failed_login(server: &LoggedServer, client: &reqwest::Client) -> String {
    let html = server.html(client, "/login").await;
    let resp = client
        .post(server.url("/login"))
        .form(&[
            ("csrf_token", csrf_token(&html).as_str()),
            ("password", "not-the-password"),
        ])
        .send()
        .await
        .expect("POST /login");
    assert_eq!(resp.status(), 401, "a wrong password is refused");
    request_id(&resp)
}

/// The JSON line (any target) with this message whose request span has this id.
fn warn_line(server: &mut LoggedServer, message: &'static str, id: &str) -> serde_json::Value {
    let id = id.to_string();
    let line = server.wait_for_line(message, move |l| {
        serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| {
            v["message"] == message
                && v["span"]["name"] == "request"
                && v["span"]["request_id"] == id.as_str()
        })
    });
    serde_json::from_str(&line).expect("a JSON line")
}

#[tokio::test]
async fn json_lines_carry_request_id_method_and_status_of_requests_and_failed_logins() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut server = LoggedServer::start(
        &dir.path().join("data"),
        &[("MILKCRATE_LOG_FORMAT", "json")],
    );
    let client = new_client();
    let resp = client
        .get(server.url("/login"))
        .send()
        .await
        .expect("GET /login");
    assert_eq!(resp.status(), 200);
    let id = request_id(&resp);
    let line = server.access_line(&id);
    assert_eq!(line["method"], "GET", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["route"], "/login", "{line}");

    let id = failed_login(&server, &client).await;
    let line = server.access_line(&id);
    assert_eq!(line["method"], "POST", "{line}");
    assert_eq!(line["status"], 401, "{line}");
    assert_eq!(line["route"], "/login", "{line}");
    // The refusal itself is a warning inside the request's span: same id, same method.
    let warn = warn_line(&mut server, "login refused: invalid password", &id);
    assert_eq!(warn["level"], "WARN", "{warn}");
    assert_eq!(warn["span"]["method"], "POST", "{warn}");
    assert_eq!(warn["client"], "127.0.0.1", "{warn}");
    let all = server.lines.lock().expect("log lines").join("\n");
    assert!(
        !all.contains("not-the-password"),
        "the password reached the log:\n{all}"
    );
}

#[tokio::test]
async fn a_warn_filter_keeps_warnings_and_drops_info_lines() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut server = LoggedServer::start(
        &dir.path().join("data"),
        &[("MILKCRATE_LOG_FORMAT", "json"), ("MILKCRATE_LOG", "warn")],
    );
    let client = new_client();
    let resp = client
        .get(server.url("/login"))
        .send()
        .await
        .expect("GET /login");
    assert_eq!(resp.status(), 200);
    let id = failed_login(&server, &client).await;
    // stderr is one ordered stream: once the refusal's warning is read, every line written
    // before it (the access lines of the two GETs of the login page, were they kept) has been
    // read too.
    warn_line(&mut server, "login refused: invalid password", &id);
    let lines = server.lines.lock().expect("log lines").clone();
    let info: Vec<&String> = lines
        .iter()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .is_ok_and(|v| v["level"] == "INFO" || v["target"] == "milkcrate::access")
        })
        .collect();
    assert!(
        info.is_empty(),
        "info lines under MILKCRATE_LOG=warn: {info:?}"
    );
}
