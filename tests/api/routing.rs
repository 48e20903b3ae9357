//! The built-in router against real containers: apps at their routes with the prefix stripped,
//! forwarded headers, no admin middleware on app traffic, clear pages when an app cannot answer,
//! and updates with zero failed requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::docker_env::*;
use crate::helpers::*;

/// A Dockerfile that serves `www/` with busybox httpd on port 8080 (CGI under `cgi-bin/`).
fn httpd_dockerfile() -> String {
    format!(
        "FROM {BASE_IMAGE}\nCOPY www /www\nEXPOSE 8080\nCMD [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
    )
}

/// An app whose /cgi-bin/env prints what the request looked like when it arrived.
fn echo_app_zip(page: &str) -> Vec<u8> {
    let dockerfile = httpd_dockerfile();
    let cgi = b"#!/bin/sh\necho 'Content-Type: text/plain'\necho\nenv | sort\n";
    zip_of(&[
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ("www/index.html", page.as_bytes(), 0o644),
        ("www/cgi-bin/env", cgi, 0o755),
    ])
}

#[tokio::test]
async fn apps_are_served_at_their_route_with_the_prefix_stripped() {
    let app = spawn_engine_app().await;
    app.deploy("echo", "/echo", echo_app_zip("echo home")).await;
    // Exactly the route gets a 308 to the route with its slash, so relative links resolve
    // inside the prefix.
    let bare = app.get("/echo").await;
    assert_eq!(bare.status(), 308);
    assert_eq!(location(&bare), "/echo/");
    assert_eq!(app.get("/echo/").await.text().await.unwrap(), "echo home");

    let resp = app
        .client
        .get(app.url("/echo/cgi-bin/env?a=1&b=two"))
        .header("user-agent", "route-test")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers().get("content-security-policy").is_none(),
        "the admin UI's headers are not put on app responses"
    );
    let env = resp.text().await.unwrap();
    for line in [
        "REQUEST_URI=/cgi-bin/env?a=1&b=two".to_string(),
        "QUERY_STRING=a=1&b=two".into(),
        "HTTP_X_FORWARDED_PREFIX=/echo".into(),
        "HTTP_X_FORWARDED_PROTO=http".into(),
        "HTTP_X_FORWARDED_FOR=127.0.0.1".into(),
        format!("HTTP_X_FORWARDED_HOST={}", app.addr),
        "HTTP_USER_AGENT=route-test".into(),
    ] {
        assert!(env.lines().any(|l| l == line), "{line} in:\n{env}");
    }
    assert!(
        !env.contains("milkcrate_session") && !env.contains("milkcrate_csrf"),
        "the admin's cookies are never forwarded to an app: {env}"
    );

    // App traffic is not the admin UI's: no CSRF check, no admin rate limit.
    let post = app
        .client
        .post(app.url("/echo/cgi-bin/env"))
        .body("x=1")
        .send()
        .await
        .unwrap();
    assert_eq!(
        post.status(),
        200,
        "a POST to an app needs no milkcrate CSRF token"
    );
    for _ in 0..120 {
        assert_eq!(app.get("/echo/").await.status(), 200);
    }

    // Segment boundaries: /echoes is not the app; milkcrate's own pages stay milkcrate's.
    assert_eq!(app.get("/echoes").await.status(), 404);
    assert!(app.get_html("/admin").await.contains("<h1>Dashboard</h1>"));
}

#[tokio::test]
async fn longest_route_wins_and_deleted_apps_are_gone() {
    let app = spawn_engine_app().await;
    app.deploy("outer", "/shop", echo_app_zip("outer")).await;
    let (inner, _) = app
        .deploy("inner", "/shop/api", echo_app_zip("inner"))
        .await;
    assert_eq!(app.get("/shop/api/").await.text().await.unwrap(), "inner");
    assert_eq!(location(&app.get("/shop/api").await), "/shop/api/");
    assert_eq!(
        app.get("/shop/apix").await.status(),
        404,
        "busybox's own 404: /apix is in the outer app"
    );
    assert_eq!(app.get("/shop/").await.text().await.unwrap(), "outer");
    app.post_action("/admin", &format!("/admin/apps/{inner}/delete"))
        .await;
    let gone = wait_status(&app, "/shop/api", 404)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        gone.contains("404") || gone == "outer" || !gone.contains("inner"),
        "no longer the inner app: {gone}"
    );
    assert_eq!(
        app.get("/shop/").await.text().await.unwrap(),
        "outer",
        "the other app still served"
    );
}

#[tokio::test]
async fn a_stopped_app_gets_a_page_saying_so() {
    let app = spawn_engine_app().await;
    let (id, _) = app.deploy("napper", "/napper", echo_app_zip("awake")).await;
    app.post_action("/admin", &format!("/admin/apps/{id}/stop"))
        .await;
    let resp = wait_status(&app, "/napper/", 503).await;
    let body = resp.text().await.unwrap();
    assert!(body.contains("napper is stopped."), "{body}");
    app.post_action("/admin", &format!("/admin/apps/{id}/start"))
        .await;
    let resp = wait_status(&app, "/napper/", 200).await;
    assert_eq!(resp.text().await.unwrap(), "awake");
}

/// Requests keep flowing through an update: not one fails, and they move from v1 to v2.
/// A new version that never gets ready is removed, and v1 keeps serving.
#[tokio::test]
async fn updates_switch_traffic_without_a_single_failed_request() {
    let app = spawn_engine_app().await;
    let (id, _) = app.deploy("steady", "/steady", web_app_zip("v1")).await;
    wait_status(&app, "/steady/", 200).await;

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let load = {
        let (stop, failures, seen) = (stop.clone(), failures.clone(), seen.clone());
        let (client, url) = (new_client(), app.url("/steady/"));
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        let body = r.text().await.unwrap_or_default();
                        let mut s = seen.lock().unwrap();
                        if s.last() != Some(&body) {
                            s.push(body);
                        }
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                n += 1;
            }
            n
        })
    };

    // Never ready: the port never opens.
    let never = zip_of(&[(
        "Dockerfile",
        format!("FROM {BASE_IMAGE}\nEXPOSE 8080\nCMD [\"/bin/sleep\", \"600\"]\n").as_bytes(),
        0o644,
    )]);
    let resp = app.update(id, never).await;
    let page = app.wait_deploy(deploy_id(&location(&resp))).await;
    assert!(
        page.contains("data-status=\"failed\"")
            && page.contains("did not accept connections on port 8080"),
        "{page}"
    );

    let resp = app.update(id, web_app_zip("v2")).await;
    let page = app.wait_deploy(deploy_id(&location(&resp))).await;
    assert!(page.contains("data-status=\"succeeded\""), "{page}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let requests = load.await.unwrap();
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "no request failed out of {requests}"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        ["v1", "v2"],
        "traffic moved from v1 to v2 once"
    );
    assert!(requests > 50, "the load kept flowing: {requests}");
}

#[tokio::test]
async fn https_serves_the_apps_too() {
    ensure_base_image();
    let certs = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(certs.path().join("c.pem"), ck.cert.pem()).unwrap();
    std::fs::write(certs.path().join("k.pem"), ck.signing_key.serialize_pem()).unwrap();
    let instance = format!("test-{}", rand_suffix());
    let inst = instance.clone();
    let (c, k) = (certs.path().join("c.pem"), certs.path().join("k.pem"));
    let inner = spawn_app_with(move |s| {
        s.set_instance(&inst);
        s.network = NETWORK.into();
        s.status_interval = Duration::from_millis(500);
        s.tls = Some(milkcrate::config::TlsFiles { cert: c, key: k });
    })
    .await;
    inner.login_as_admin().await;
    let app = EngineApp {
        app: inner,
        instance,
    };
    app.deploy("secure", "/secure", echo_app_zip("over tls"))
        .await;
    let resp = wait_status(&app, "/secure/cgi-bin/env", 200).await;
    assert!(app.base.starts_with("https://"));
    let env = resp.text().await.unwrap();
    assert!(env.contains("HTTP_X_FORWARDED_PROTO=https"), "{env}");
}

#[tokio::test]
async fn in_traefik_mode_milkcrate_leaves_app_routes_to_traefik() {
    ensure_base_image();
    let instance = format!("test-{}", rand_suffix());
    let inst = instance.clone();
    let inner = spawn_app_with(move |s| {
        s.set_instance(&inst);
        s.network = NETWORK.into();
        s.status_interval = Duration::from_millis(300);
        s.builtin_router = false;
    })
    .await;
    inner.login_as_admin().await;
    let app = EngineApp {
        app: inner,
        instance,
    };
    app.deploy("viatraefik", "/viatraefik", echo_app_zip("x"))
        .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        app.get("/viatraefik/").await.status(),
        404,
        "milkcrate does not proxy in traefik mode"
    );
    let c = inspect_app(&app.instance, "viatraefik");
    assert_eq!(
        c["Config"]["Labels"]["traefik.http.routers.milkcrate-app-viatraefik.rule"],
        "Path(`/viatraefik`) || PathPrefix(`/viatraefik/`)"
    );
}

/// WebSocket upgrades pass through: the app answers 101 and the connection becomes a pipe.
/// (busybox nc plays the app: it answers the upgrade, then echoes what it receives.)
#[tokio::test]
async fn websocket_upgrades_pass_through() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_engine_app().await;
    let script = b"#!/bin/sh\nwhile read -r line; do case \"$line\" in \"\"|\"$(printf '\\r')\") break;; esac; done\nprintf 'HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n\\r\\n'\nexec cat\n";
    let dockerfile = format!(
        "FROM {BASE_IMAGE}\nCOPY ws.sh /ws.sh\nEXPOSE 8080\nCMD [\"/bin/busybox\", \"nc\", \"-ll\", \"-p\", \"8080\", \"-e\", \"/ws.sh\"]\n"
    );
    let zip = zip_of(&[
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ("ws.sh", script, 0o755),
    ]);
    app.deploy("socket", "/socket", zip).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let reply = loop {
        let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        s.write_all(b"GET /socket/chat HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&head).to_string();
        if text.starts_with("HTTP/1.1 101") {
            s.write_all(b"ping-42\n").await.unwrap();
            let mut echoed = Vec::new();
            while !String::from_utf8_lossy(&echoed).contains("ping-42") {
                let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                    .await
                    .unwrap()
                    .unwrap();
                assert!(n > 0, "the pipe closed before the echo");
                echoed.extend_from_slice(&buf[..n]);
            }
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no 101 through the router: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        reply.to_ascii_lowercase().contains("upgrade: websocket"),
        "{reply}"
    );
}

/// Bodies stream through the router: downloading 256 MiB leaves the process's peak memory well
/// below the size of the download (buffering it would add at least 256 MiB). The bound leaves
/// room for tests running alongside in the same process.
#[tokio::test]
async fn large_downloads_stream_without_growing_memory() {
    let app = spawn_engine_app().await;
    let cgi = b"#!/bin/sh\necho 'Content-Type: application/octet-stream'\necho\nexec /bin/busybox dd if=/dev/zero bs=1048576 count=256 2>/dev/null\n";
    let dockerfile = httpd_dockerfile();
    let zip = zip_of(&[
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ("www/index.html", b"x", 0o644),
        ("www/cgi-bin/big", cgi, 0o755),
    ]);
    app.deploy("bulk", "/bulk", zip).await;
    wait_status(&app, "/bulk/", 200).await;
    let peak_before = peak_rss_kib();
    let mut resp = app.get("/bulk/cgi-bin/big").await;
    assert_eq!(resp.status(), 200);
    let mut total: u64 = 0;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        total += chunk.len() as u64;
    }
    assert_eq!(total, 256 * 1024 * 1024, "the whole body arrived");
    let growth_mib = (peak_rss_kib().saturating_sub(peak_before)) / 1024;
    assert!(
        growth_mib < 160,
        "peak memory grew by {growth_mib} MiB for a 256 MiB download"
    );
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmHWM:")
                .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap())
        })
        .unwrap()
}

/// An app with a page, a CGI whose answer has no length (busybox ends it by closing) and one
/// that writes a whole chunked response itself, with a chunk extension and a trailer.
fn framing_app_zip() -> Vec<u8> {
    let dockerfile = httpd_dockerfile();
    let env = b"#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"method=$REQUEST_METHOD length=$CONTENT_LENGTH\"\nhead -c \"${CONTENT_LENGTH:-0}\"\n";
    let chunked = b"#!/bin/sh\nprintf 'HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n5;ext=secret\\r\\nhello\\r\\n6\\r\\n world\\r\\n0\\r\\nX-Trailer: t\\r\\n\\r\\n'\n";
    zip_of(&[
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ("www/index.html", b"framing home", 0o644),
        ("www/cgi-bin/env", env, 0o755),
        ("www/cgi-bin/chunked", chunked, 0o755),
    ])
}

/// One HTTP/1.1 response read off a raw connection: status, lower-case headers, the body
/// decoded (by length, chunks, or up to the close).
async fn read_response(
    conn: &mut tokio::io::BufReader<tokio::net::TcpStream>,
) -> (u16, Vec<(String, String)>, Vec<u8>, Vec<u8>) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut raw = Vec::new();
    let mut line = String::new();
    conn.read_line(&mut line).await.expect("a status line");
    raw.extend_from_slice(line.as_bytes());
    let status: u16 = line.split(' ').nth(1).expect("a status").parse().unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        conn.read_line(&mut line).await.expect("a header line");
        raw.extend_from_slice(line.as_bytes());
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').expect("a header");
        headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if let Some(n) = get("content-length") {
        body.resize(n.parse().unwrap(), 0);
        conn.read_exact(&mut body).await.unwrap();
        raw.extend_from_slice(&body);
    } else if get("transfer-encoding").as_deref() == Some("chunked") {
        loop {
            line.clear();
            conn.read_line(&mut line).await.unwrap();
            raw.extend_from_slice(line.as_bytes());
            let size = usize::from_str_radix(line.trim_end(), 16).expect("a bare chunk size");
            let mut chunk = vec![0; size + 2];
            conn.read_exact(&mut chunk).await.unwrap();
            raw.extend_from_slice(&chunk);
            if size == 0 {
                assert_eq!(chunk, b"\r\n", "no trailers after the last chunk");
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        conn.read_to_end(&mut body).await.unwrap();
    }
    (status, headers, body, raw)
}

#[tokio::test]
async fn one_keep_alive_connection_carries_pipelined_gets_bodies_and_any_framing_in_order() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_engine_app().await;
    app.deploy("framing", "/f", framing_app_zip()).await;
    let host = app.addr.to_string();
    let stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let mut conn = tokio::io::BufReader::new(stream);
    // Three requests in one write: answered in order, each framed for this client.
    let pipelined = format!(
        "GET /f/ HTTP/1.1\r\nHost: {host}\r\n\r\nGET /f/cgi-bin/chunked HTTP/1.1\r\nHost: {host}\r\n\r\nGET /f/cgi-bin/env HTTP/1.1\r\nHost: {host}\r\n\r\n"
    );
    conn.get_mut()
        .write_all(pipelined.as_bytes())
        .await
        .unwrap();
    let (status, headers, body, _) = read_response(&mut conn).await;
    assert_eq!((status, body.as_slice()), (200, &b"framing home"[..]));
    assert!(
        headers.iter().any(|(k, _)| k == "x-request-id"),
        "{headers:?}"
    );
    assert!(headers.iter().any(|(k, _)| k == "date"), "{headers:?}");
    let (status, _, body, raw) = read_response(&mut conn).await;
    assert_eq!((status, body.as_slice()), (200, &b"hello world"[..]));
    let raw = String::from_utf8_lossy(&raw);
    assert!(
        !raw.contains("secret") && !raw.contains("X-Trailer"),
        "chunk extensions and trailers do not pass: {raw}"
    );
    // No length from the app (it closes): chunked to the client, which keeps its connection.
    let (status, headers, body, _) = read_response(&mut conn).await;
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8_lossy(&body).trim(), "method=GET length=");
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v == "chunked"),
        "{headers:?}"
    );
    // A request with a body on the same connection, then a GET again.
    let post = format!(
        "POST /f/cgi-bin/env HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\n\r\nabcdeGET /f/ HTTP/1.1\r\nHost: {host}\r\n\r\n"
    );
    conn.get_mut().write_all(post.as_bytes()).await.unwrap();
    let (status, _, body, _) = read_response(&mut conn).await;
    assert_eq!(status, 200);
    assert_eq!(
        String::from_utf8_lossy(&body).trim(),
        "method=POST length=5\nabcde"
    );
    let (status, _, body, _) = read_response(&mut conn).await;
    assert_eq!((status, body.as_slice()), (200, &b"framing home"[..]));
    // A HEAD has the length and no body; `Connection: close` is answered, then the server closes.
    let fresh = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let mut conn = tokio::io::BufReader::new(fresh);
    let head = format!(
        "HEAD /f/ HTTP/1.1\r\nHost: {host}\r\n\r\nGET /f/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    );
    conn.get_mut().write_all(head.as_bytes()).await.unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut line = String::new();
    conn.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    let mut length = None;
    loop {
        line.clear();
        conn.read_line(&mut line).await.unwrap();
        if line.trim_end().is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = Some(v.trim().to_string());
        }
    }
    assert_eq!(length.as_deref(), Some("12"), "HEAD keeps the length");
    let (status, headers, body, _) = read_response(&mut conn).await;
    assert_eq!((status, body.as_slice()), (200, &b"framing home"[..]));
    closes_cleanly_after(&headers, &mut conn).await;
}

/// The answer said `Connection: close`, and the server then closed the connection cleanly:
/// nothing more, and no reset.
async fn closes_cleanly_after(
    headers: &[(String, String)],
    conn: &mut tokio::io::BufReader<tokio::net::TcpStream>,
) {
    use tokio::io::AsyncReadExt;
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "connection" && v == "close"),
        "{headers:?}"
    );
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut rest))
        .await
        .expect("the server closes after a Connection: close")
        .expect("a clean close, not a reset");
    assert_eq!(n, 0, "nothing after the last answer");
}

#[tokio::test]
async fn keep_alive_upstream_connections_are_reused_and_one_the_app_closed_is_retried() {
    let image = ensure_keepalive_image();
    let app = spawn_engine_app().await;
    let dockerfile = format!("FROM {image}\nEXPOSE 8080\nCMD [\"/upstream\", \"8080\", \"1\"]\n");
    app.deploy(
        "keepalive",
        "/ka",
        zip_of(&[("Dockerfile", dockerfile.as_bytes(), 0o644)]),
    )
    .await;
    // Requests on one client connection (served by one thread, whose pooled upstream
    // connection it reuses): the app sees one connection.
    let client = new_client();
    let conn_number = || async {
        let resp = client.get(app.url("/ka/conn")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.text().await.unwrap()
    };
    let first = conn_number().await;
    for _ in 0..5 {
        assert_eq!(
            conn_number().await,
            first,
            "the pooled connection is reused"
        );
    }
    // The app closes its end after this answer without saying so; the router's next request on
    // that connection finds it closed and goes again on a new one: the client sees no error.
    let bye = client.get(app.url("/ka/bye")).send().await.unwrap();
    assert_eq!(bye.status(), 200);
    assert_eq!(bye.bytes().await.unwrap().len(), 100);
    let after = conn_number().await;
    assert_ne!(
        after, first,
        "a new connection after the app closed the old one"
    );
    assert_eq!(conn_number().await, after, "and that one is pooled in turn");
    // An app that writes an answer no request asked for: it is never read as the next one's.
    for _ in 0..3 {
        let extra = client.get(app.url("/ka/extra")).send().await.unwrap();
        assert_eq!(extra.bytes().await.unwrap().len(), 100);
        // The app writes its stray answer 50 ms after the first; the next request comes later.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let next = conn_number().await;
        assert!(
            next.parse::<u64>().is_ok(),
            "the next request got another's answer: {next}"
        );
    }
    // An answer whose first chunk is not a chunk: the client is told (502), not left with a
    // connection that closes without a word.
    let bad = client.get(app.url("/ka/badchunk")).send().await.unwrap();
    assert_eq!(bad.status(), 502);
    // A chunked answer whose trailers never end: the client has its body and its next request
    // is answered (the app's connection is dropped, not waited on). A request sent after
    // `Connection: close` (it reaches a socket the server is closing) is read and dropped, so
    // no reset destroys the answer before it.
    use tokio::io::AsyncWriteExt;
    let host = app.addr.to_string();
    let stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let mut conn = tokio::io::BufReader::new(stream);
    let requests = format!(
        "GET /ka/late HTTP/1.1\r\nHost: {host}\r\n\r\nGET /ka/conn HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    );
    conn.get_mut().write_all(requests.as_bytes()).await.unwrap();
    let within = Duration::from_secs(10);
    let (status, _, body, _) = tokio::time::timeout(within, read_response(&mut conn))
        .await
        .expect("an answer whose trailers never end still reaches the client");
    assert_eq!((status, body.as_slice()), (200, &b"hello"[..]));
    let late = format!("GET /ka/conn HTTP/1.1\r\nHost: {host}\r\n\r\n");
    conn.get_mut().write_all(late.as_bytes()).await.unwrap();
    let (status, headers, _, _) = tokio::time::timeout(within, read_response(&mut conn))
        .await
        .expect("the request after it is answered");
    assert_eq!(status, 200);
    closes_cleanly_after(&headers, &mut conn).await;
}

#[tokio::test]
async fn a_client_that_leaves_ends_its_request_at_once() {
    use crate::observe::{TOKEN, metrics_of, wait_for};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_engine_app_with(|s| s.observe.metrics_token = Some(TOKEN.into())).await;
    let dockerfile = httpd_dockerfile();
    // One answers after 60 s; the other sends its head and a line, then nothing for 60 s.
    let wait = b"#!/bin/sh\nsleep 60\necho 'Content-Type: text/plain'\necho\necho late\n";
    let slow =
        b"#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho start\nsleep 60\necho end\n";
    // Answers after 3 s.
    let pause = b"#!/bin/sh\nsleep 3\necho 'Content-Type: text/plain'\necho\necho paused-answer\n";
    app.deploy(
        "leaver",
        "/leaver",
        zip_of(&[
            ("Dockerfile", dockerfile.as_bytes(), 0o644),
            ("www/index.html", b"hi", 0o644),
            ("www/cgi-bin/wait", wait, 0o755),
            ("www/cgi-bin/slow", slow, 0o755),
            ("www/cgi-bin/pause", pause, 0o755),
            ("www/next.txt", b"next-answer", 0o644),
        ]),
    )
    .await;
    let key = "milkcrate_http_requests_in_flight{app=\"leaver\"}";
    let in_flight = || async { metrics_of(&app).await.get(key).copied() };
    for (path, read_first) in [
        ("/leaver/cgi-bin/wait", false),
        ("/leaver/cgi-bin/slow", true),
    ] {
        let mut conn = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr);
        conn.write_all(req.as_bytes()).await.unwrap();
        wait_for(20, "the request at the app", || async {
            (in_flight().await == Some(1.0)).then_some(())
        })
        .await;
        if read_first {
            let mut head = vec![0u8; 512];
            let n = conn.read(&mut head).await.unwrap();
            assert!(
                String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"),
                "the head came first"
            );
        }
        drop(conn);
        // Long before the app would have answered (60 s).
        wait_for(10, "the request ended when its client left", || async {
            (in_flight().await == Some(0.0)).then_some(())
        })
        .await;
    }
    // A client that sends its next request while an answer is slow has not left: the first
    // answer comes, then the second, on the same connection.
    let mut conn = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let first = format!(
        "GET /leaver/cgi-bin/pause HTTP/1.1\r\nHost: {}\r\n\r\n",
        app.addr
    );
    conn.write_all(first.as_bytes()).await.unwrap();
    wait_for(20, "the slow request at the app", || async {
        (in_flight().await == Some(1.0)).then_some(())
    })
    .await;
    let second = format!(
        "GET /leaver/next.txt HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        app.addr
    );
    conn.write_all(second.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut got))
        .await
        .expect("both answers within 20 s")
        .expect("the connection reads to its end");
    let text = String::from_utf8_lossy(&got);
    assert_eq!(
        text.matches("HTTP/1.1 200").count(),
        2,
        "two answers: {text}"
    );
    let paused = text.find("paused-answer").expect("the slow answer");
    let next = text.find("next-answer").expect("the pipelined answer");
    assert!(paused < next, "in order: {text}");
}
