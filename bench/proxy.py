#!/usr/bin/env python3
"""Proxy throughput and latency: wrk through milkcrate's built-in router, through nginx set up as
a reverse proxy (keep-alive upstream) to the same container, and straight to the container, in
the same run, alternating, for a small page and a 100 KiB file. Then milkcrate's resident memory
while 1 000 client connections are open.

Usage: bench/proxy.py [--rounds 3] [--duration 8] [--connections 50]
Needs: a release build, a Docker Engine with the test base image (scripts/test once), nginx, wrk.
"""
import argparse, io, os, re, shutil, socket, statistics, subprocess, tempfile, time, zipfile
from common import Milkcrate, docker, free_port

BASE = "milkcrate-test/busybox:2"


WRK_PREFIX = []


def wrk(url, duration, connections):
    out = subprocess.run([*WRK_PREFIX, "wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    def pct(p):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return rps, pct(50), pct(99), (int(errors.group(1)) if errors else 0), (socket_errors.group(1) if socket_errors else "")


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--wrk-cpu", help="pin wrk to this CPU (taskset -c), so it does not compete with the servers")
    args = ap.parse_args()
    if args.wrk_cpu is not None:
        WRK_PREFIX[:] = ["taskset", "-c", args.wrk_cpu]
    subprocess.run(["docker", "network", "create", "--label", "milkcrate.instance=bench", "milkcrate-bench"], capture_output=True)
    mc = Milkcrate()
    results = {}
    try:
        mc.login()
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("Dockerfile", f'FROM {BASE}\nCOPY www /www\nEXPOSE 8080\nCMD ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]\n')
            z.writestr("www/small.html", "<p>hello</p>\n")
            z.writestr("www/big.bin", os.urandom(100 * 1024))
        status, headers, _ = mc.upload({"app_name": "bench", "public_route": "/bench"}, buf.getvalue())
        assert status == 303, status
        deadline = time.time() + 60
        while time.time() < deadline:
            if mc.request("GET", "/bench/small.html")[0] == 200:
                break
            time.sleep(0.2)
        cid = docker("ps", "-q", "--filter", "label=milkcrate.instance=bench", "--filter", "label=milkcrate.app=bench").split()[0]
        ip = docker("inspect", "-f", '{{(index .NetworkSettings.Networks "milkcrate-bench").IPAddress}}', cid).strip()

        d = tempfile.mkdtemp()
        nport = free_port()
        open(f"{d}/nginx.conf", "w").write(f"""daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;
events {{ worker_connections 4096; }}
http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};
  upstream app {{ server {ip}:8080; keepalive 64; }}
  server {{ listen 127.0.0.1:{nport}; keepalive_requests 100000;
    location /bench/ {{ proxy_pass http://app/; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }} }} }}""")
        nginx = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-c", f"{d}/nginx.conf", "-p", d], stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        targets = {
            "milkcrate": f"http://127.0.0.1:{mc.port}/bench/",
            "nginx": f"http://127.0.0.1:{nport}/bench/",
            "direct": f"http://{ip}:8080/",
        }
        try:
            for size in ["small.html", "big.bin"]:
                for r in range(args.rounds):
                    order = list(targets.items())
                    if r % 2:
                        order.reverse()
                    for name, base in order:
                        results.setdefault((size, name), []).append(wrk(base + size, args.duration, args.connections))
        finally:
            nginx.terminate()
            nginx.wait()
            shutil.rmtree(d, ignore_errors=True)

        # 1 000 open client connections, idle after one request each.
        socks = []
        for _ in range(1000):
            s = socket.create_connection(("127.0.0.1", mc.port))
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            socks.append(s)
        time.sleep(1)
        open_rss = rss_mib(mc.proc.pid)
        for s in socks:
            s.close()
    finally:
        mc.close()
        for c in docker("ps", "-aq", "--filter", "label=milkcrate.instance=bench").split():
            subprocess.run(["docker", "rm", "-f", c], capture_output=True)
        for i in docker("images", "-q", "--filter", "label=milkcrate.instance=bench").split():
            subprocess.run(["docker", "rmi", "-f", i], capture_output=True)

    print(f"wrk -t2 -c{args.connections} -d{args.duration}s, {args.rounds} rounds, medians")
    print(f"{'body':10} {'via':10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for size in ["small.html", "big.bin"]:
        for name in targets:
            rows = results[(size, name)]
            print(f"{size:10} {name:10} {statistics.median(r[0] for r in rows):9.0f} {statistics.median(r[1] for r in rows):8.2f} "
                  f"{statistics.median(r[2] for r in rows):8.2f} {sum(r[3] for r in rows):8d}")
        m = statistics.median(r[0] for r in results[(size, 'milkcrate')])
        n = statistics.median(r[0] for r in results[(size, 'nginx')])
        p99m = statistics.median(r[2] for r in results[(size, 'milkcrate')])
        p99n = statistics.median(r[2] for r in results[(size, 'nginx')])
        print(f"{size}: milkcrate/nginx throughput {m / n:.2f}x, p99 difference {p99m - p99n:+.2f} ms")
    print(f"milkcrate RSS with 1000 open connections: {open_rss:.1f} MiB")


if __name__ == "__main__":
    main()
