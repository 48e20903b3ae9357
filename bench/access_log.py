#!/usr/bin/env python3
"""Router overhead of the access log and metrics: wrk through two milkcrate servers in the same
run, one with MILKCRATE_ACCESS_LOG=true and one with it false, each proxying to its own copy of
the same busybox app, alternating rounds. Reports req/s and p50/p99 of each and the ratio.

Usage: bench/access_log.py [--rounds 5] [--duration 5] [--connections 10] [--wrk-cpu 1]
Needs: a release build, a Docker Engine with the test base image (scripts/test once), wrk.
"""
import argparse, io, statistics, subprocess, time, zipfile
from common import Milkcrate, docker
import proxy

BASE = "milkcrate-test/busybox:2"


def deploy(mc):
    mc.login()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("Dockerfile", f'FROM {BASE}\nCOPY www /www\nEXPOSE 8080\nCMD ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]\n')
        z.writestr("www/small.html", "<p>hello</p>\n")
    status, _, _ = mc.upload({"app_name": "bench", "public_route": "/bench"}, buf.getvalue())
    assert status == 303, status
    deadline = time.time() + 90
    while time.time() < deadline:
        if mc.request("GET", "/bench/small.html")[0] == 200:
            return
        time.sleep(0.2)
    raise SystemExit("the bench app did not come up")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=10)
    ap.add_argument("--wrk-cpu")
    args = ap.parse_args()
    if args.wrk_cpu is not None:
        proxy.WRK_PREFIX[:] = ["taskset", "-c", args.wrk_cpu]
    subprocess.run(["docker", "network", "create", "--label", "milkcrate.instance=bench", "milkcrate-bench"], capture_output=True)
    servers = {}
    results = {}
    try:
        for name, on in [("log on", "true"), ("log off", "false")]:
            inst = "bench" if on == "true" else "bench-off"
            servers[name] = Milkcrate(env={"MILKCRATE_ACCESS_LOG": on, "MILKCRATE_INSTANCE": inst})
            deploy(servers[name])
        for r in range(args.rounds):
            order = list(servers.items())
            if r % 2:
                order.reverse()
            for name, mc in order:
                url = f"http://127.0.0.1:{mc.port}/bench/small.html"
                results.setdefault(name, []).append(proxy.wrk(url, args.duration, args.connections))
    finally:
        for mc in servers.values():
            mc.close()
        for inst in ["bench", "bench-off"]:
            for c in docker("ps", "-aq", "--filter", f"label=milkcrate.instance={inst}").split():
                subprocess.run(["docker", "rm", "-f", c], capture_output=True)
            for i in docker("images", "-q", "--filter", f"label=milkcrate.instance={inst}").split():
                subprocess.run(["docker", "rmi", "-f", i], capture_output=True)

    print(f"wrk -t2 -c{args.connections} -d{args.duration}s, {args.rounds} rounds alternating, medians")
    print(f"{'via':10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for name, rows in results.items():
        print(f"{name:10} {statistics.median(r[0] for r in rows):9.0f} {statistics.median(r[1] for r in rows):8.2f} "
              f"{statistics.median(r[2] for r in rows):8.2f} {sum(r[3] for r in rows):8d}")
    on = statistics.median(r[0] for r in results["log on"])
    off = statistics.median(r[0] for r in results["log off"])
    print(f"throughput with the access log / without: {on / off:.3f}x")


if __name__ == "__main__":
    main()
