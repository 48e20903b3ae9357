#!/usr/bin/env python3
"""Dashboard latency with 200 apps: p50/p95 of GET /admin (logged in; its first page of 100
apps and the summary of all 200) over one keep-alive connection, against nginx serving the same
HTML as a static file in the same run.

The apps are rows written straight into the database (their containers do not exist, so each
shows "Missing": the page still does all its work). Requests come through TRUSTED_PROXIES with
a different X-Forwarded-For each, so the per-client limit of 100/minute does not cap the run.

Usage: bench/dashboard.py [--apps 200] [--requests 1000] [--binary target/release/milkcrate]
(needs a release build and nginx)
"""
import argparse, http.client, os, shutil, sqlite3, subprocess, tempfile, time
from common import Milkcrate, free_port, percentile


def timed_gets(port, path, n, headers_for):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    times = []
    size = 0
    for i in range(n):
        t0 = time.perf_counter()
        c.request("GET", path, headers=headers_for(i))
        r = c.getresponse()
        body = r.read()
        times.append((time.perf_counter() - t0) * 1000)
        assert r.status == 200, r.status
        size = len(body)
    return times, size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--apps", type=int, default=200)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--binary", default="target/release/milkcrate")
    args = ap.parse_args()
    mc = Milkcrate(binary=args.binary, env={"TRUSTED_PROXIES": "127.0.0.1"})
    try:
        mc.login()
        db = sqlite3.connect(f"{mc.dir.name}/instance/milkcrate.sqlite")
        db.executemany(
            "INSERT INTO deployed_apps (app_name, name_key, container_id, image_tag, public_route, internal_port, status) VALUES (?, ?, ?, ?, ?, 8080, 'running')",
            [(f"app{i}", f"app{i}", f"{i:064x}", f"milkcrate-app{i}:20261128-000000", f"/app{i}") for i in range(args.apps)],
        )
        db.commit()
        db.close()
        cookie = "; ".join(f"{k}={v}" for k, v in mc.cookies.items())
        hdr = lambda i: {"Cookie": cookie, "X-Forwarded-For": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"}
        timed_gets(mc.port, "/admin", 50, hdr)  # warm-up
        ours, size = timed_gets(mc.port, "/admin", args.requests, hdr)
        html = mc.request("GET", "/admin")[2]
        # The first page lists 100 apps; its summary counts all of them.
        assert html.count(b"<tr data-app=") == min(args.apps, 100), "the first page of apps is listed"
        assert f"{args.apps} app".encode() in html, "the summary counts every app"
    finally:
        mc.close()

    with tempfile.TemporaryDirectory() as d:
        os.makedirs(f"{d}/www")
        open(f"{d}/www/admin", "wb").write(html)
        port = free_port()
        open(f"{d}/nginx.conf", "w").write(f"""daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};
  server {{ listen 127.0.0.1:{port}; root {d}/www; default_type text/html; keepalive_requests 100000; }} }}""")
        nginx = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-c", f"{d}/nginx.conf", "-p", d], stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 5
            while time.time() < deadline:
                try:
                    timed_gets(port, "/admin", 50, lambda i: {})
                    break
                except OSError:
                    time.sleep(0.05)
            peer, _ = timed_gets(port, "/admin", args.requests, lambda i: {})
        finally:
            nginx.terminate()
            nginx.wait()

    print(f"apps: {args.apps}, requests: {args.requests}, page: {size / 1024:.0f} KiB")
    print(f"{'':22} {'p50 (ms)':>9} {'p95 (ms)':>9}")
    print(f"{'milkcrate GET /admin':22} {percentile(ours, 50):9.2f} {percentile(ours, 95):9.2f}")
    print(f"{'nginx same bytes':22} {percentile(peer, 50):9.2f} {percentile(peer, 95):9.2f}")
    print(f"ratio p50: {percentile(ours, 50) / percentile(peer, 50):.1f}x")


if __name__ == "__main__":
    main()
