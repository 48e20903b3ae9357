"""HTTPS termination: wrk against milkcrate's HTTPS listener (rustls, certificate chosen by SNI)
vs nginx terminating TLS with the same certificate in front of milkcrate's plain listener, and
milkcrate over plain HTTP (what TLS adds), in the same run, rounds alternating, medians. Every
row fetches the same small page of a busybox app through milkcrate's router (the admin's own
pages are rate-limited per client, which would turn the run into a 429 benchmark), so the
difference between the rows is the TLS termination. Keep-alive, and a new connection (full
handshake) per request. Then milkcrate's resident memory with 100 uploaded certificates.

Why the last session's run hung: with SSL_CERT_FILE set, MILKCRATE_LISTEN speaks TLS, so the
start-up probe (plain HTTP) never got an answer it could read; the exception left `milkcrate
serve` running with the caller's stdout, and the caller waited on that pipe for ever. Now the
plain listener is MILKCRATE_HTTP_LISTEN, the server gets no inherited pipe, and every exit
path stops it.

HTTP/2 vs HTTP/1.1 over TLS (milkcrate and nginx, same page) is measured with h2load, one
client tool for both protocols: `-m 1` (one request at a time per connection, like wrk) and
`-m 10` (ten streams per connection, what HTTP/2 is for).

Usage: python3 bench/tls.py [--rounds 3] [--duration 5] [--connections 10] [--wrk-cpu 1]
Needs: a release build, Docker, nginx, wrk, openssl, h2load (Debian: nghttp2-client).
"""
import argparse, os, re, shutil, statistics, subprocess, sys, tempfile, time, urllib.parse
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Milkcrate, docker, free_port
import access_log

WRK_PREFIX = []
PAGE = "/bench/small.html"


def wrk(url, duration, connections, close=False):
    cmd = [*WRK_PREFIX, "wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency"]
    if close:
        cmd += ["-H", "Connection: close"]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True, timeout=duration + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    def pct(p):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
    return rps, pct(99), int(bad.group(1)) if bad else 0


def h2load(url, duration, connections, streams, h1):
    cmd = [*WRK_PREFIX, "h2load", "-t1", f"-c{connections}", f"-m{streams}", f"-D{duration}", "--warm-up-time=1"]
    if h1:
        cmd.append("--h1")
    out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=duration + 60).stdout
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    return rps, int(m.group(1)) - int(m.group(2))


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cert(d, name):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", f"{d}/{name}.key", "-out", f"{d}/{name}.crt", "-days", "30", "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName=DNS:{name}"], check=True, capture_output=True, timeout=30)
    return f"{d}/{name}.crt", f"{d}/{name}.key"


def upload_certs(mc, d, n):
    tok = mc.token("/admin/certificates")
    for i in range(n):
        c, k = cert(d, f"h{i}.example.org")
        body = urllib.parse.urlencode([("csrf_token", tok), ("host", f"h{i}.example.org"),
                                       ("certificate", open(c).read()), ("private_key", open(k).read())])
        for _ in range(5):
            st, h, _ = mc.request("POST", "/admin/certificates/upload", body=body,
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
            if st != 429:
                break
            time.sleep(int(h.get("retry-after", "5")))
        assert st == 303, st


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=10)
    ap.add_argument("--wrk-cpu", help="pin wrk to this CPU (taskset -c)")
    args = ap.parse_args()
    if args.wrk_cpu is not None:
        WRK_PREFIX[:] = ["taskset", "-c", args.wrk_cpu]
    d = tempfile.mkdtemp()
    crt, key = cert(d, "localhost")
    https_port, tls_main = free_port(), free_port()
    subprocess.run(["docker", "network", "create", "--label", "milkcrate.instance=bench", "milkcrate-bench"],
                   capture_output=True)
    mc = nginx = None
    results = {}
    try:
        mc = Milkcrate(env={"MILKCRATE_HTTPS_LISTEN": f"127.0.0.1:{https_port}", "MILKCRATE_LISTEN": f"127.0.0.1:{tls_main}",
                            "SSL_CERT_FILE": crt, "SSL_KEY_FILE": key}, listen_var="MILKCRATE_HTTP_LISTEN")
        access_log.deploy(mc)
        nport = free_port()
        open(f"{d}/nginx.conf", "w").write(f"""daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;
events {{ worker_connections 4096; }}
http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};
  upstream mc {{ server 127.0.0.1:{mc.port}; keepalive 64; }}
  server {{ listen 127.0.0.1:{nport} ssl http2; ssl_certificate {crt}; ssl_certificate_key {key}; keepalive_requests 100000;
    location / {{ proxy_pass http://mc; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host 127.0.0.1; }} }} }}""")
        nginx = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-c", f"{d}/nginx.conf", "-p", d],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        targets = {
            "milkcrate https": f"https://localhost:{https_port}{PAGE}",
            "nginx https -> milkcrate http": f"https://localhost:{nport}{PAGE}",
            "milkcrate http": f"http://127.0.0.1:{mc.port}{PAGE}",
        }
        for name, url in targets.items():  # every row answers 200 before it is measured
            out = subprocess.run(["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "--retry", "10",
                                  "--retry-connrefused", "--retry-delay", "1", url], capture_output=True, text=True, timeout=60)
            assert out.stdout == "200", (name, out.stdout)
        for mode in ["keep-alive", "new connection"]:
            for r in range(args.rounds):
                order = list(targets.items())
                if r % 2:
                    order.reverse()
                for name, url in order:
                    results.setdefault((mode, name), []).append(wrk(url, args.duration, args.connections, mode != "keep-alive"))
        protocols = {}
        if shutil.which("h2load"):
            for r in range(args.rounds):
                for name in ["milkcrate https", "nginx https -> milkcrate http"]:
                    for label, streams, h1 in [("h1.1 -m1", 1, True), ("h2 -m1", 1, False), ("h2 -m10", 10, False)]:
                        protocols.setdefault((name, label), []).append(
                            h2load(targets[name], args.duration, args.connections, streams, h1))
        before = rss_mib(mc.proc.pid)
        upload_certs(mc, d, 100)
        after = rss_mib(mc.proc.pid)
    finally:
        if nginx:
            nginx.terminate()
            nginx.wait()
        if mc:
            mc.close()
        for c in docker("ps", "-aq", "--filter", "label=milkcrate.instance=bench").split():
            subprocess.run(["docker", "rm", "-f", c], capture_output=True)
        for i in docker("images", "-q", "--filter", "label=milkcrate.instance=bench").split():
            subprocess.run(["docker", "rmi", "-f", i], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)
    print(f"wrk -t2 -c{args.connections} -d{args.duration}s, {args.rounds} rounds alternating, medians; GET {PAGE} of a busybox app")
    print(f"{'mode':15} {'target':32} {'req/s':>10} {'p99 ms':>8} {'non-2xx':>8}")
    for (mode, name), runs in results.items():
        rps = statistics.median(r[0] for r in runs)
        p99 = statistics.median(r[1] for r in runs)
        print(f"{mode:15} {name:32} {rps:10.0f} {p99:8.2f} {sum(r[2] for r in runs):8d}")
    for mode in ["keep-alive", "new connection"]:
        m = statistics.median(r[0] for r in results[(mode, "milkcrate https")])
        n = statistics.median(r[0] for r in results[(mode, "nginx https -> milkcrate http")])
        h = statistics.median(r[0] for r in results[(mode, "milkcrate http")])
        p_https = statistics.median(r[1] for r in results[(mode, "milkcrate https")])
        p_http = statistics.median(r[1] for r in results[(mode, "milkcrate http")])
        print(f"{mode}: milkcrate https / nginx https = {m / n:.2f}x req/s; https / http = {m / h:.2f}x; "
              f"p99 added by TLS = {p_https - p_http:.2f} ms")
    if protocols:
        print(f"h2load -c{args.connections} -D{args.duration}, medians; req/s (failed)")
        for (name, label), runs in protocols.items():
            print(f"  {name:32} {label:10} {statistics.median(r[0] for r in runs):10.0f} ({sum(r[1] for r in runs)})")
        for label in ["h2 -m1", "h2 -m10"]:
            m2 = statistics.median(r[0] for r in protocols[("milkcrate https", label)])
            m1 = statistics.median(r[0] for r in protocols[("milkcrate https", "h1.1 -m1")])
            n2 = statistics.median(r[0] for r in protocols[("nginx https -> milkcrate http", label)])
            print(f"{label}: milkcrate h2 / h1.1 = {m2 / m1:.2f}x; milkcrate / nginx over h2 = {m2 / n2:.2f}x")
    else:
        print("h2load not found (Debian: nghttp2-client): no HTTP/2 rows")
    print(f"RSS: {before:.1f} MiB before, {after:.1f} MiB with 100 uploaded certificates")


if __name__ == "__main__":
    main()
