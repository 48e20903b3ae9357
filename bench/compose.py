#!/usr/bin/env python3
"""Compose deploy: wall time from the upload POST of a two-service stack (web depends on api)
to the main service's first answer, against doing the same by hand with the docker CLI in the
same run (build both images, create the network, run api, run web, first answer), alternating
which goes first. Each round changes the pages, so neither side reuses the other's COPY layer.

Usage: bench/compose.py [--rounds 5]   (needs a release build, a Docker Engine and the busybox
base image the tests import: run scripts/test once)
"""
import argparse, io, os, statistics, tempfile, time, urllib.request, uuid, zipfile
from common import Milkcrate, cleanup_bench, container_ip, docker, first_answer

BASE = "milkcrate-test/busybox:2"
DOCKERFILE = f'FROM {BASE}\nCOPY www /www\nCMD ["httpd", "-f", "-p", "8080", "-h", "/www"]\n'
COMPOSE = """services:
  web:
    build: ./web
    ports: ["8080"]
    depends_on: [api]
    stop_grace_period: 1s
  api:
    build: ./api
    expose: ["8080"]
    stop_grace_period: 1s
"""




def milkcrate_round(mc, name, tag):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("docker-compose.yml", COMPOSE)
        for svc in ("web", "api"):
            z.writestr(f"{svc}/Dockerfile", DOCKERFILE)
            z.writestr(f"{svc}/www/index.html", f"{svc} {tag}")
    t0 = time.perf_counter()
    status, _, _ = mc.upload({"app_name": name, "public_route": "/" + name}, buf.getvalue())
    assert status == 303, status
    ip = container_ip(["--filter", "label=milkcrate.instance=bench", "--filter", f"label=milkcrate.app={name}",
                "--filter", "label=milkcrate.service=web"], "milkcrate-bench", t0 + 120)
    first_answer(ip, t0 + 120)
    return time.perf_counter() - t0


def docker_round(name, tag):
    net = f"bench-raw-{name}"
    with tempfile.TemporaryDirectory() as d:
        for svc in ("web", "api"):
            os.makedirs(f"{d}/{svc}/www")
            open(f"{d}/{svc}/Dockerfile", "w").write(DOCKERFILE)
            open(f"{d}/{svc}/www/index.html", "w").write(f"{svc} {tag}")
        t0 = time.perf_counter()
        for svc in ("api", "web"):
            docker("build", "-q", "-t", f"bench-raw-{name}-{svc}", "--label", "milkcrate.instance=bench", f"{d}/{svc}")
        docker("network", "create", "--label", "milkcrate.instance=bench", net)
        docker("run", "-d", "--name", f"bench-raw-{name}-api", "--label", "milkcrate.instance=bench", "--network", net,
               "--network-alias", "api", f"bench-raw-{name}-api")
        docker("run", "-d", "--name", f"bench-raw-{name}-web", "--label", "milkcrate.instance=bench", "--network", net,
               f"bench-raw-{name}-web")
        docker("network", "connect", "milkcrate-bench", f"bench-raw-{name}-web")
        ip = container_ip(["--filter", f"name=bench-raw-{name}-web"], "milkcrate-bench", t0 + 120)
        first_answer(ip, t0 + 120)
        return time.perf_counter() - t0




def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    try:
        docker("network", "create", "--label", "milkcrate.instance=bench", "milkcrate-bench")
    except Exception:
        pass
    mc = Milkcrate()
    ours, theirs = [], []
    try:
        mc.login()
        for r in range(args.rounds):
            tag = uuid.uuid4().hex
            if r % 2 == 0:
                ours.append(milkcrate_round(mc, f"stack{r}", tag))
                theirs.append(docker_round(f"s{r}", tag))
            else:
                theirs.append(docker_round(f"s{r}", tag))
                ours.append(milkcrate_round(mc, f"stack{r}", tag))
    finally:
        mc.close()
        cleanup_bench()
    o, t = statistics.median(ours), statistics.median(theirs)
    print(f"two-service stack, {args.rounds} rounds (median ms)")
    print(f"milkcrate upload -> first answer {o * 1000:8.0f}")
    print(f"docker CLI by hand              {t * 1000:8.0f}")
    print(f"ratio {o / t:.2f}x, {(o - t) * 1000:+.0f} ms")


if __name__ == "__main__":
    main()
