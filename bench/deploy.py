#!/usr/bin/env python3
"""Deploy overhead: wall time from the upload POST to the app's first HTTP answer on its
container address, against `docker build` + `docker run` + first answer on the same context,
in the same run, alternating which goes first. Each round changes the page, so neither side
reuses the other's cached COPY layer.

Usage: bench/deploy.py [--rounds 5] [--binary target/release/milkcrate]   (needs a release build, a Docker Engine, the busybox base
image the tests import: run scripts/test once)
"""
import argparse, io, statistics, subprocess, tempfile, time, urllib.request, zipfile
from common import Milkcrate, cleanup_bench, container_ip, docker, first_answer

BASE = "milkcrate-test/busybox:2"
DOCKERFILE = f'FROM {BASE}\nCOPY www /www\nEXPOSE 8080\nCMD ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]\n'




def milkcrate_round(mc, name, page):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("Dockerfile", DOCKERFILE)
        z.writestr("www/index.html", page)
    t0 = time.perf_counter()
    status, headers, _ = mc.upload({"app_name": name, "public_route": "/" + name}, buf.getvalue())
    assert status == 303, status
    ip = container_ip(["--filter", "label=milkcrate.instance=bench", "--filter", f"label=milkcrate.app={name}"], "milkcrate-bench", t0 + 120)
    first_answer(ip, t0 + 120)
    return time.perf_counter() - t0


def docker_round(name, page):
    with tempfile.TemporaryDirectory() as d:
        open(f"{d}/Dockerfile", "w").write(DOCKERFILE)
        subprocess.run(["mkdir", "-p", f"{d}/www"], check=True)
        open(f"{d}/www/index.html", "w").write(page)
        t0 = time.perf_counter()
        docker("build", "-q", "-t", f"bench-raw-{name}", "--label", "milkcrate.instance=bench", d)
        docker("run", "-d", "--name", f"bench-raw-{name}", "--label", "milkcrate.instance=bench", "--network", "milkcrate-bench", f"bench-raw-{name}")
        ip = container_ip(["--filter", f"name=bench-raw-{name}"], "milkcrate-bench", t0 + 120)
        first_answer(ip, t0 + 120)
        return time.perf_counter() - t0




def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--binary", default="target/release/milkcrate")
    args = ap.parse_args()
    cleanup_bench()
    subprocess.run(["docker", "network", "create", "--label", "milkcrate.instance=bench", "milkcrate-bench"], capture_output=True)
    mc = Milkcrate(binary=args.binary)
    mc.login()
    ours, raw = [], []
    try:
        for i in range(args.rounds):
            page = f"round {i} {time.time()}"
            order = [("m", f"app{i}"), ("d", f"raw{i}")]
            if i % 2:
                order.reverse()
            for kind, name in order:
                (ours if kind == "m" else raw).append(milkcrate_round(mc, name, page) if kind == "m" else docker_round(name, page))
    finally:
        mc.close()
        cleanup_bench()
    m, d = statistics.median(ours), statistics.median(raw)
    print(f"rounds: {args.rounds}")
    print(f"milkcrate upload → first answer: median {m*1000:.0f} ms  (all: {', '.join(f'{x*1000:.0f}' for x in ours)})")
    print(f"docker build+run → first answer: median {d*1000:.0f} ms  (all: {', '.join(f'{x*1000:.0f}' for x in raw)})")
    print(f"overhead: {(m - d)*1000:+.0f} ms, ratio {m/d:.2f}x")


if __name__ == "__main__":
    main()
