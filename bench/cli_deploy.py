#!/usr/bin/env python3
"""`milkcrate deploy DIR` against the upload form and against a raw `docker build` + `docker
run`, for the same folder: wall time from the command's start (packaging included) to its exit
after the deploy succeeded; the multipart POST of the folder's ZIP (zipped beforehand, not
timed) until the deploy page says succeeded (polled every 200 ms: the admin pages are rate-limited); `docker build` then `docker
run -d` until the container answers HTTP 200 on its published port (polled every 50 ms).

The machine is shared and noisy, so the figure is the median of per-round ratios: each round
runs the three once, in a rotating order, with a fresh page (no side reuses another's COPY
layer), and the ratios cli/ui and cli/raw are taken within the round. The aim is cli/ui
within 1.05.

Usage: python3 bench/cli_deploy.py [--rounds 8] [--binary target/release/milkcrate]
(needs a Docker Engine and the busybox base image the tests import: run scripts/test once)
"""
import argparse, io, os, re, statistics, subprocess, sys, tempfile, time, urllib.parse, urllib.request, zipfile
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Milkcrate, cleanup_bench, free_port

BASE = "milkcrate-test/busybox:2"
DOCKERFILE = f'FROM {BASE}\nCOPY www /www\nEXPOSE 8080\nCMD ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]\n'


def write_folder(d, page):
    os.makedirs(f"{d}/www", exist_ok=True)
    open(f"{d}/Dockerfile", "w").write(DOCKERFILE)
    open(f"{d}/www/index.html", "w").write(page)


def mint_token(mc):
    body = urllib.parse.urlencode({"csrf_token": mc.token("/admin/tokens"), "name": "bench",
                                   "scope": "deploy", "apps": "", "expires": "1d"})
    status, _, html = mc.request("POST", "/admin/tokens", body, {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200, status
    return re.search(r'id="new-token">([^<]+)<', html.decode()).group(1)


def ui_round(mc, name, page):
    with tempfile.TemporaryDirectory() as d:
        write_folder(d, page)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for root, _, files in os.walk(d):
                for f in files:
                    p = os.path.join(root, f)
                    z.write(p, os.path.relpath(p, d))
        zip_bytes = buf.getvalue()
    t0 = time.perf_counter()
    status, headers, _ = mc.upload({"app_name": name, "public_route": "/" + name}, zip_bytes)
    assert status == 303, status
    deploy = headers["location"]
    while time.perf_counter() < t0 + 180:
        status, _, body = mc.request("GET", deploy)
        # The admin pages allow 100 requests a minute per route: polling faster than that
        # across rounds would measure the rate limit's window, not the deploy.
        assert status != 429, "the deploy page's rate limit was hit: poll less often"
        html = body.decode()
        if 'data-status="succeeded"' in html:
            return time.perf_counter() - t0
        assert 'data-status="failed"' not in html, html[-2000:]
        time.sleep(0.2)
    raise SystemExit("the UI deploy did not finish")


def cli_round(mc, binary, token, name, page):
    with tempfile.TemporaryDirectory() as d:
        folder = f"{d}/{name}"
        write_folder(folder, page)
        env = {"PATH": os.environ.get("PATH", ""), "HOME": d,
               "MILKCRATE_URL": f"http://127.0.0.1:{mc.port}", "MILKCRATE_TOKEN": token}
        t0 = time.perf_counter()
        out = subprocess.run([binary, "deploy", folder], env=env, capture_output=True, text=True)
        took = time.perf_counter() - t0
        assert out.returncode == 0, out.stderr
        return took


def raw_round(name, page):
    with tempfile.TemporaryDirectory() as d:
        write_folder(d, page)
        port = free_port()
        t0 = time.perf_counter()
        subprocess.run(["docker", "build", "-q", "--label", "milkcrate.instance=bench", "-t", f"bench-raw-{name}", d],
                       check=True, capture_output=True, timeout=300)
        subprocess.run(["docker", "run", "-d", "--label", "milkcrate.instance=bench", "-p", f"127.0.0.1:{port}:8080",
                        f"bench-raw-{name}"], check=True, capture_output=True, timeout=120)
        while time.perf_counter() < t0 + 180:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    if r.status == 200:
                        return time.perf_counter() - t0
            except OSError:
                pass
            time.sleep(0.05)
    raise SystemExit("the raw container did not answer")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--binary", default="target/release/milkcrate")
    args = ap.parse_args()
    cleanup_bench()
    subprocess.run(["docker", "network", "create", "--label", "milkcrate.instance=bench", "milkcrate-bench"], capture_output=True)
    mc = Milkcrate(binary=args.binary)
    mc.login()
    token = mint_token(mc)
    times = {"cli": [], "ui": [], "raw": []}
    kinds = ["cli", "ui", "raw"]
    try:
        for i in range(args.rounds):
            page = f"round {i} {time.time()}"
            for kind in kinds[i % 3:] + kinds[:i % 3]:
                if kind == "cli":
                    times["cli"].append(cli_round(mc, args.binary, token, f"cli{i}", page + " cli"))
                elif kind == "ui":
                    times["ui"].append(ui_round(mc, f"ui{i}", page + " ui"))
                else:
                    times["raw"].append(raw_round(f"{i}", page + " raw"))
    finally:
        mc.close()
        cleanup_bench()
    print(f"rounds: {args.rounds} (order rotating cli/ui/raw)")
    labels = {"cli": "milkcrate deploy DIR -> exit", "ui": "upload form POST -> deploy done",
              "raw": "docker build + run -> HTTP 200"}
    for k, label in labels.items():
        xs = times[k]
        print(f"{label:34} median {statistics.median(xs)*1000:6.0f} ms  (all: {', '.join(f'{x*1000:.0f}' for x in xs)})")
    for other in ["ui", "raw"]:
        ratios = [c / o for c, o in zip(times["cli"], times[other])]
        print(f"cli/{other} per round: median {statistics.median(ratios):.3f} "
              f"(min {min(ratios):.3f}, max {max(ratios):.3f}; all: {', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    main()
