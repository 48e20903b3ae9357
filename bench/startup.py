#!/usr/bin/env python3
"""Start-up cost: time from exec to the first 200 on /login, and resident memory after 100
requests. nginx serving a static page is measured the same way in the same run, as the peer.

Usage: bench/startup.py [--rounds N] [--binary target/release/milkcrate]
Needs: a release build (cargo build --release) and nginx (apt-get install nginx-light).
"""
import argparse, http.client, os, shutil, socket, statistics, subprocess, tempfile, time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_200(port, path, deadline):
    while time.perf_counter() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", path)
            if c.getresponse().status == 200:
                return time.perf_counter()
        except OSError:
            time.sleep(0.0005)
    raise SystemExit(f"no 200 on :{port}{path}")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def tree_rss_kib(pid):
    """RSS of a process and its children (nginx forks a worker)."""
    total = rss_kib(pid)
    for child in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split():
        total += rss_kib(int(child))
    return total


def measure(start, port, path, pid_of=lambda p: p.pid):
    t0 = time.perf_counter()
    proc = start()
    try:
        t1 = wait_200(port, path, t0 + 20)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        for _ in range(100):
            c.request("GET", path)
            c.getresponse().read()
        return (t1 - t0) * 1000, tree_rss_kib(pid_of(proc)) / 1024
    finally:
        proc.terminate()
        proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--binary", default="target/release/milkcrate")
    args = ap.parse_args()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    results = {"milkcrate": [], "nginx": []}
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as d:
            port = free_port()
            env = {"PATH": os.environ.get("PATH", ""), "MILKCRATE_DATA_DIR": f"{d}/instance", "MILKCRATE_LISTEN": f"127.0.0.1:{port}"}
            results["milkcrate"].append(measure(
                lambda: subprocess.Popen([args.binary, "serve"], env=env, stderr=subprocess.DEVNULL), port, "/login"))

            port = free_port()
            os.makedirs(f"{d}/www")
            with open(f"{d}/www/login", "w") as f:
                f.write("<!doctype html><title>login</title>" + "x" * 1200)
            with open(f"{d}/nginx.conf", "w") as f:
                f.write(f"""daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};
  server {{ listen 127.0.0.1:{port}; root {d}/www; default_type text/html; }} }}""")
            results["nginx"].append(measure(
                lambda: subprocess.Popen([nginx, "-c", f"{d}/nginx.conf", "-p", d], stderr=subprocess.DEVNULL), port, "/login"))

    med = {k: (statistics.median(t for t, _ in v), statistics.median(m for _, m in v)) for k, v in results.items()}
    print(f"rounds: {args.rounds}")
    print(f"{'':10} {'start→200 (ms, median)':>24} {'RSS after 100 req (MiB)':>25}")
    for k, (t, m) in med.items():
        print(f"{k:10} {t:24.1f} {m:25.1f}")
    print(f"ratio milkcrate/nginx: start {med['milkcrate'][0] / med['nginx'][0]:.2f}x, memory {med['milkcrate'][1] / med['nginx'][1]:.2f}x")


if __name__ == "__main__":
    main()
