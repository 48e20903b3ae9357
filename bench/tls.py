"""HTTPS termination: wrk against milkcrate's HTTPS listener (rustls, certificate chosen by SNI)
vs nginx terminating TLS with the same certificate in front of milkcrate's plain listener, and
milkcrate over plain HTTP (what TLS adds), in the same run, alternating. The answer is
milkcrate's own `/health` (no app container), so the difference between the rows is the TLS
termination. Keep-alive, and a new connection (full handshake) per request.
Then milkcrate's resident memory with 100 uploaded certificates loaded.

Usage: bench/tls.py [--rounds 3] [--duration 5] [--connections 10] [--wrk-cpu 1]
Needs: a release build, nginx, wrk, openssl.
"""
import argparse, os, re, shutil, statistics, subprocess, tempfile, time
from common import Milkcrate, free_port

WRK_PREFIX = []


def wrk(url, duration, connections, close=False):
    cmd = [*WRK_PREFIX, "wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency"]
    if close:
        cmd += ["-H", "Connection: close"]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    def pct(p):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
    return rps, pct(99)


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cert(d, name):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", f"{d}/{name}.key", "-out", f"{d}/{name}.crt", "-days", "30", "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName=DNS:{name}"], check=True, capture_output=True)
    return f"{d}/{name}.crt", f"{d}/{name}.key"


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
    https_port = free_port()
    mc = Milkcrate(env={"MILKCRATE_HTTPS_LISTEN": f"127.0.0.1:{https_port}", "SSL_CERT_FILE": crt, "SSL_KEY_FILE": key})
    nport = free_port()
    open(f"{d}/nginx.conf", "w").write(f"""daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;
events {{ worker_connections 4096; }}
http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};
  upstream mc {{ server 127.0.0.1:{mc.port}; keepalive 64; }}
  server {{ listen 127.0.0.1:{nport} ssl; ssl_certificate {crt}; ssl_certificate_key {key}; keepalive_requests 100000;
    location / {{ proxy_pass http://mc; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host localhost; }} }} }}""")
    nginx = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-c", f"{d}/nginx.conf", "-p", d], stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    targets = {
        "milkcrate https": f"https://localhost:{https_port}/health",
        "nginx https -> milkcrate http": f"https://localhost:{nport}/health",
        "milkcrate http": f"http://127.0.0.1:{mc.port}/health",
    }
    results = {}
    try:
        for mode in ["keep-alive", "new connection"]:
            for r in range(args.rounds):
                order = list(targets.items())
                if r % 2:
                    order.reverse()
                for name, url in order:
                    results.setdefault((mode, name), []).append(wrk(url, args.duration, args.connections, mode != "keep-alive"))
        # 100 certificates uploaded on the Certificates page, then RSS.
        before = rss_mib(mc.proc.pid)
        mc.login()
        for i in range(100):
            c, k = cert(d, f"h{i}.example.org")
            tok = mc.token("/admin/certificates")
            body = "&".join(f"{a}={__import__('urllib.parse').parse.quote(b)}" for a, b in
                            [("csrf_token", tok), ("host", f"h{i}.example.org"), ("certificate", open(c).read()), ("private_key", open(k).read())])
            st = mc.request("POST", "/admin/certificates/upload", body=body, headers={"Content-Type": "application/x-www-form-urlencoded"})[0]
            assert st == 303, st
        after = rss_mib(mc.proc.pid)
    finally:
        nginx.terminate()
        nginx.wait()
        mc.close()
        shutil.rmtree(d, ignore_errors=True)
    print(f"{'mode':15} {'target':32} {'req/s':>10} {'p99 ms':>8}")
    for (mode, name), runs in results.items():
        rps = statistics.median(r[0] for r in runs)
        p99 = statistics.median(r[1] for r in runs)
        print(f"{mode:15} {name:32} {rps:10.0f} {p99:8.2f}")
    for mode in ["keep-alive", "new connection"]:
        m = [statistics.median(r[0] for r in results[(mode, "milkcrate https")])]
        n = [statistics.median(r[0] for r in results[(mode, "nginx https -> milkcrate http")])]
        p_https = statistics.median(r[1] for r in results[(mode, "milkcrate https")])
        p_http = statistics.median(r[1] for r in results[(mode, "milkcrate http")])
        print(f"{mode}: milkcrate https / nginx https = {m[0] / n[0]:.2f}x req/s; p99 added by TLS = {p_https - p_http:.2f} ms")
    print(f"RSS: {before:.1f} MiB before, {after:.1f} MiB with 100 uploaded certificates")


if __name__ == "__main__":
    main()
