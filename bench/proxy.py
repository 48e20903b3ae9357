#!/usr/bin/env python3
"""The router against nginx, same run, interleaved rounds: wrk (pinned to one CPU) through
milkcrate's built-in router and through nginx (Debian's, a reverse proxy with a keep-alive
upstream, config written here) to the same container, at 10, 100 and 1000 connections, for a
100-byte and a 100 KiB body. Reports req/s, p50/p99 and the proxy's CPU time per request (from
/proc/<pid>/stat, utime + stime, nginx's workers included). Then 1 route against 1000 routes
(999 stopped apps written into the database, with longer routes than the one measured, so a
linear scan would pass them all), and the memory per idle keep-alive client connection (N
connections that each made one proxied request: RSS delta / N). HTTPS rows (10 and 100
connections by default): both terminate TLS with the same self-signed certificate and proxy
to the same upstream.

The upstream is `bench/upstream.rs` (a keep-alive static HTTP/1.1 server on epoll, standard library only),
compiled here with rustc into one static binary and `docker import`ed, so the proxy is what is
measured and nothing is downloaded.

Usage: bench/proxy.py [--rounds 2] [--duration 5] [--wrk-cpu 1] [--idle 1000] [--logs on|off]
       [--connections 10,100,1000] [--https-connections 10,100]
Needs: `cargo build --release`, a Docker Engine, nginx, wrk, taskset, rustc, openssl.
"""
import argparse, io, os, re, resource, shutil, socket, sqlite3, statistics, subprocess, tempfile, time, zipfile
from common import Milkcrate, docker, free_port

IMAGE = "milkcrate-bench/upstream:1"
# The fields of milkcrate's access line (service/access.rs), in nginx's variables.
NGINX_LOG_FORMAT = ('{"time":"$time_iso8601","app":"bench","method":"$request_method","path":"$uri",'
                    '"status":$status,"bytes":$body_bytes_sent,"duration_ms":$request_time,'
                    '"upstream_ms":"$upstream_response_time","client_ip":"$remote_addr","user_agent":"$http_user_agent"}')
WRK_PREFIX = []
TICK = os.sysconf("SC_CLK_TCK")


def build_upstream_image():
    """bench/upstream.rs → a static binary → an image holding only it."""
    d = tempfile.mkdtemp()
    try:
        src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "upstream.rs")
        subprocess.run(["rustc", "--edition", "2024", "-O", "-C", "target-feature=+crt-static", src, "-o", f"{d}/upstream"], check=True)
        tar = subprocess.run(["tar", "-C", d, "-c", "upstream"], check=True, capture_output=True).stdout
        subprocess.run(["docker", "import", "--change", "LABEL milkcrate-bench=upstream", "-", IMAGE], input=tar, check=True, capture_output=True)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        except OSError:
            pass
    return total


def rss_kib(pids):
    total = 0
    for pid in pids:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def wrk(url, duration, connections, pids):
    before = cpu_ticks(pids)
    threads = min(connections, 2)
    out = subprocess.run([*WRK_PREFIX, "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    cpu_s = (cpu_ticks(pids) - before) / TICK
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    n = int(re.search(r"(\d+) requests in", out).group(1))

    def pct(p):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": pct(50), "p99": pct(99), "cpu_us": cpu_s * 1e6 / max(n, 1), "n": n, "cpu_s": cpu_s,
            "errors": int(errors.group(1)) if errors else 0}


def idle_bytes(port, path, pids, n):
    """RSS growth per idle keep-alive connection that made one proxied request."""
    time.sleep(0.5)
    before = rss_kib(pids)
    after = open_idle(port, path, n, lambda: (time.sleep(1), rss_kib(pids))[1])
    return (after - before) * 1024 / n


def open_idle(port, path, n, measure):
    socks = []
    req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(req)
        socks.append(s)
    for s in socks:
        s.settimeout(10)
        got = b""
        while b"\r\n\r\n" not in got:
            got += s.recv(4096)
    got = measure()
    for s in socks:
        s.close()
    return got


def nginx_pids(master):
    kids = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
    return [master, *map(int, kids)]


def set_extra_routes(db, count):
    """`count` stopped apps with routes longer than /bench (so a linear scan passes them all)."""
    with sqlite3.connect(db, timeout=30) as c:
        c.execute("DELETE FROM deployed_apps WHERE app_name LIKE 'zr-%'")
        c.executemany(
            "INSERT INTO deployed_apps (app_name, name_key, container_id, image_tag, public_route, internal_port, status) "
            "VALUES (?, ?, '', '', ?, 8080, 'stopped')",
            [(f"zr-{i:04}", f"zr-{i:04}", f"/zr-route-{i:04}") for i in range(count)])


def wait_route(mc, path, want_status, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if mc.request("GET", path)[0] == want_status:
            return
        time.sleep(0.2)
    raise SystemExit(f"{path} never answered {want_status}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", default="10,100,1000")
    ap.add_argument("--idle", type=int, default=1000, help="idle client connections for the memory figure")
    ap.add_argument("--wrk-cpu", default="1", help="pin wrk to this CPU (taskset -c); '' for no pinning")
    ap.add_argument("--binary", default="target/release/milkcrate")
    ap.add_argument("--https-connections", default="10,100",
                    help="connection counts for the HTTPS rows (keep-alive, TLS 1.3 from wrk); '' for none")
    ap.add_argument("--logs", choices=["on", "off"], default="on",
                    help="on: both keep an access log (milkcrate's defaults; nginx a buffered JSON access log with the same fields); "
                         "off: milkcrate without its access log and with MILKCRATE_LOG=warn, nginx with access_log off")
    args = ap.parse_args()
    if args.wrk_cpu != "":
        WRK_PREFIX[:] = ["taskset", "-c", args.wrk_cpu]
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    conns = [int(c) for c in args.connections.split(",")]
    tls_conns = [int(c) for c in args.https_connections.split(",") if c]
    subprocess.run(["docker", "network", "create", "--label", "milkcrate.instance=bench", "milkcrate-bench"], capture_output=True)
    build_upstream_image()
    quiet = {"MILKCRATE_ACCESS_LOG": "false", "MILKCRATE_LOG": "warn"} if args.logs == "off" else {}
    d = tempfile.mkdtemp()
    # HTTPS: both terminate TLS themselves (one self-signed certificate) and proxy to the same
    # upstream over plain HTTP. milkcrate's MILKCRATE_LISTEN speaks TLS once SSL_CERT_FILE is
    # set; the plain rows go to its MILKCRATE_HTTP_LISTEN.
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", f"{d}/key.pem", "-out", f"{d}/cert.pem", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    tport = free_port()
    mc = Milkcrate(binary=args.binary, listen_var="MILKCRATE_HTTP_LISTEN",
                   env={**quiet, "SSL_CERT_FILE": f"{d}/cert.pem", "SSL_KEY_FILE": f"{d}/key.pem",
                        "MILKCRATE_LISTEN": f"127.0.0.1:{tport}"})
    results, idle, routes = {}, {}, {}
    nginx = None
    try:
        mc.login()
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("Dockerfile", f'FROM {IMAGE}\nEXPOSE 8080\nCMD ["/upstream", "8080", "2"]\n')
        # Two cores' worth of CPU for the upstream, so its limit is not what is measured.
        status, _, _ = mc.upload({"app_name": "bench", "public_route": "/bench", "cpu_percent": "200"}, buf.getvalue())
        assert status == 303, status
        wait_route(mc, "/bench/small", 200, 90)
        cid = docker("ps", "-q", "--filter", "label=milkcrate.instance=bench", "--filter", "label=milkcrate.app=bench").split()[0]
        ip = docker("inspect", "-f", '{{(index .NetworkSettings.Networks "milkcrate-bench").IPAddress}}', cid).strip()

        nport, nsport = free_port(), free_port()
        # With logs on, nginx keeps an access log as milkcrate does: a JSON line per request
        # with the same fields, written in batches (milkcrate's writer flushes every 50 ms).
        access = (f"log_format mc escape=json '{NGINX_LOG_FORMAT}'; access_log {d}/access.log mc buffer=64k flush=1s;"
                  if args.logs == "on" else "access_log off;")
        open(f"{d}/nginx.conf", "w").write(f"""daemon off; worker_processes auto; pid {d}/nginx.pid; error_log {d}/error.log;
worker_rlimit_nofile 8192;
events {{ worker_connections 4096; }}
http {{ {access} client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};
  upstream app {{ server {ip}:8080; keepalive 256; }}
  server {{ listen 127.0.0.1:{nport} backlog=4096; listen 127.0.0.1:{nsport} ssl backlog=4096; keepalive_requests 100000;
    ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem;
    location /bench/ {{ proxy_pass http://app/; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host $host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Real-IP $remote_addr; }} }} }}""")
        nginx = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-c", f"{d}/nginx.conf", "-p", d], stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", nport)).close()
                break
            except OSError:
                time.sleep(0.05)
        targets = {
            "milkcrate": (f"http://127.0.0.1:{mc.port}/bench/", lambda: [mc.proc.pid]),
            "nginx": (f"http://127.0.0.1:{nport}/bench/", lambda: nginx_pids(nginx.pid)),
        }
        tls_targets = {
            "milkcrate": (f"https://127.0.0.1:{tport}/bench/", lambda: [mc.proc.pid]),
            "nginx": (f"https://127.0.0.1:{nsport}/bench/", lambda: nginx_pids(nginx.pid)),
        }
        for name, (base, pids) in targets.items():
            port = int(base.split(":")[2].split("/")[0])
            idle[name] = idle_bytes(port, "/bench/small", pids(), args.idle)
        schemes = [("http", targets)] + ([("https", tls_targets)] if tls_conns else [])
        for r in range(args.rounds):
            for scheme, these in schemes:
                for c in (conns if scheme == "http" else tls_conns):
                    for size in ["small", "big"]:
                        order = list(these.items())
                        if r % 2:
                            order.reverse()
                        for name, (base, pids) in order:
                            results.setdefault((scheme, c, size, name), []).append(wrk(base + size, args.duration, c, pids()))

        # 1 route against 1000 routes, alternating.
        db = os.path.join(mc.dir.name, "instance", "milkcrate.sqlite")
        for r in range(args.rounds):
            for count in [1, 1000]:
                set_extra_routes(db, count - 1)
                wait_route(mc, "/zr-route-0998/", 503 if count == 1000 else 404)
                routes.setdefault(count, []).append(wrk(targets["milkcrate"][0] + "small", args.duration, 10, [mc.proc.pid]))
        set_extra_routes(db, 0)

    finally:
        if nginx:
            nginx.terminate()
            nginx.wait()
        shutil.rmtree(d, ignore_errors=True)
        mc.close()
        for c in docker("ps", "-aq", "--filter", "label=milkcrate.instance=bench").split():
            subprocess.run(["docker", "rm", "-f", c], capture_output=True)
        # The upstream image carries a label of its own: milkcrate refuses to build on an image
        # with its milkcrate.* labels (another app's).
        for i in docker("images", "-q", "--filter", "label=milkcrate.instance=bench").split() + \
                docker("images", "-q", "--filter", "label=milkcrate-bench=upstream").split():
            subprocess.run(["docker", "rmi", "-f", i], capture_output=True)

    med = lambda rows, k: statistics.median(r[k] for r in rows)
    print(f"wrk -t2 -d{args.duration}s pinned to CPU {args.wrk_cpu or '-'}, {args.rounds} interleaved rounds, medians; "
          f"logs {args.logs}: " + ("milkcrate's server log and access log, nginx's access log (JSON, buffered)"
                                   if args.logs == "on" else "milkcrate at MILKCRATE_LOG=warn without access log, nginx access_log off"))
    print(f"{'conns':>5} {'body':6} {'via':10} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'cpu µs/req':>10} {'non-2xx':>7} {'requests':>9} {'cpu s':>6}")
    for scheme, these in schemes:
        if scheme == "https":
            print("HTTPS (each terminates TLS, plain HTTP to the upstream):")
        for c in (conns if scheme == "http" else tls_conns):
            for size in ["small", "big"]:
                for name in these:
                    rows = results[(scheme, c, size, name)]
                    print(f"{c:5} {size:6} {name:10} {med(rows, 'rps'):8.0f} {med(rows, 'p50'):7.2f} {med(rows, 'p99'):7.2f} "
                          f"{med(rows, 'cpu_us'):10.1f} {sum(r['errors'] for r in rows):7d} {sum(r['n'] for r in rows):9d} {sum(r['cpu_s'] for r in rows):6.2f}")
                m, n = results[(scheme, c, size, "milkcrate")], results[(scheme, c, size, "nginx")]
                print(f"{'':5} {size:6} milkcrate/nginx: req/s {med(m, 'rps') / med(n, 'rps'):.2f}x, "
                      f"cpu/req {med(m, 'cpu_us') / med(n, 'cpu_us'):.2f}x, p99 {med(m, 'p99') - med(n, 'p99'):+.2f} ms")
    one, many = routes[1], routes[1000]
    print(f"routes (10 conns, small): 1 route {med(one, 'rps'):.0f} req/s {med(one, 'cpu_us'):.1f} µs/req; "
          f"1000 routes {med(many, 'rps'):.0f} req/s {med(many, 'cpu_us'):.1f} µs/req "
          f"({med(many, 'cpu_us') / med(one, 'cpu_us'):.2f}x cpu)")
    for name, b in idle.items():
        print(f"idle keep-alive client connection ({args.idle}): {name} {b / 1024:.1f} KiB each")


if __name__ == "__main__":
    main()
