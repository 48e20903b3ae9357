//! An ordinary app on a real Debian userland (run by `scripts/test-real`, which builds the
//! image with mmdebstrap once): a Python web app with a form POST, a redirect and static
//! files, served under a path route that it learns from `X-Forwarded-Prefix`, running as the
//! image's own named user (resolved through Debian's real /etc/passwd) on request.

use std::process::Command;

use crate::docker_env::*;
use crate::helpers::*;

const DEBIAN_IMAGE: &str = "milkcrate-test/debian-python:12";

const APP_PY: &str = r#"import html, os, urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer

NOTES = []
STATIC = "/app/static"

class App(BaseHTTPRequestHandler):
    def prefix(self):
        return self.headers.get("X-Forwarded-Prefix", "").rstrip("/")

    def send(self, code, body, ctype="text/html; charset=utf-8", headers=()):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        p = self.prefix()
        if self.path.startswith("/static/"):
            name = os.path.basename(self.path)
            try:
                with open(os.path.join(STATIC, name), "rb") as f:
                    return self.send(200, f.read(), "text/css")
            except OSError:
                return self.send(404, "no such file")
        items = "".join("<li>%s</li>" % html.escape(n) for n in NOTES)
        self.send(200, '<link rel="stylesheet" href="%s/static/style.css"><form method="post" action="%s/notes"><input name="note"><button>Add</button></form><ul>%s</ul><p>uid %d</p>' % (p, p, items, os.getuid()))

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        NOTES.extend(form.get("note", []))
        self.send(303, "", headers=[("Location", self.prefix() + "/")])

HTTPServer(("0.0.0.0", 8000), App).serve_forever()
"#;

#[tokio::test]
#[ignore = "needs the Debian image scripts/test-real builds; run scripts/test-real"]
async fn a_python_app_on_real_debian_posts_redirects_and_serves_static_files_under_a_path() {
    let present = Command::new("docker")
        .args(["image", "inspect", DEBIAN_IMAGE])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        present,
        "{DEBIAN_IMAGE} is missing: run scripts/test-real, which builds it with mmdebstrap"
    );
    let app = spawn_engine_app().await;
    let dockerfile = format!(
        "FROM {DEBIAN_IMAGE}\nRUN useradd --uid 1500 --user-group --no-create-home web\nCOPY app /app\nUSER web\nEXPOSE 8000\nCMD [\"python3\", \"-u\", \"/app/app.py\"]\n"
    );
    let zip = zip_of(&[
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ("app/app.py", APP_PY.as_bytes(), 0o644),
        ("app/static/style.css", b"body { color: teal }", 0o644),
    ]);
    let resp = app
        .upload(
            &[
                ("app_name", "notes"),
                ("public_route", "/py/notes"),
                ("image_user", "on"),
            ],
            zip,
            "app.zip",
        )
        .await;
    assert_eq!(resp.status(), 303);
    let page = unescape(&app.wait_deploy(deploy_id(&location(&resp))).await);
    assert!(page.contains("data-status=\"succeeded\""), "{page}");
    assert!(
        page.contains("The container runs as 1500:1500: the image's own user web"),
        "{page}"
    );

    let home = wait_status(&app, "/py/notes/", 200)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        home.contains("action=\"/py/notes/notes\"")
            && home.contains("href=\"/py/notes/static/style.css\""),
        "the app built its links from X-Forwarded-Prefix: {home}"
    );
    assert!(home.contains("uid 1500"), "{home}");
    let resp = app
        .client
        .post(app.url("/py/notes/notes"))
        .form(&[("note", "milk & crates")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp), "/py/notes/");
    let home = app.get_html("/py/notes/").await;
    assert!(home.contains("<li>milk &amp; crates</li>"), "{home}");
    let css = app.get("/py/notes/static/style.css").await;
    assert_eq!(css.status(), 200);
    assert_eq!(css.text().await.unwrap(), "body { color: teal }");
}
