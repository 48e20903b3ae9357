#!/usr/bin/env python3
"""`milkcrate deploy DIR` against the upload form, for the same folder: wall time from the
command's start (packaging included) to its exit after the deploy succeeded, against the
multipart POST of the folder's ZIP (zipped beforehand, not timed) until the deploy page says
succeeded (polled every 50 ms). Alternates which goes first; each round changes the page so
neither side reuses the other's COPY layer. The aim is a ratio within 1.05.

Usage: bench/cli_deploy.py [--rounds 6] [--binary target/release/milkcrate]
(needs a Docker Engine and the busybox base image the tests import: run scripts/test once)
"""
import argparse, io, os, re, statistics, subprocess, tempfile, time, urllib.parse, zipfile
from common import Milkcrate, cleanup_bench

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
        html = mc.request("GET", deploy)[2].decode()
        if 'data-status="succeeded"' in html:
            return time.perf_counter() - t0
        assert 'data-status="failed"' not in html, html[-2000:]
        time.sleep(0.05)
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
    cli, ui = [], []
    try:
        for i in range(args.rounds):
            page = f"round {i} {time.time()}"
            order = ["cli", "ui"] if i % 2 == 0 else ["ui", "cli"]
            for kind in order:
                if kind == "cli":
                    cli.append(cli_round(mc, args.binary, token, f"cli{i}", page + " cli"))
                else:
                    ui.append(ui_round(mc, f"ui{i}", page + " ui"))
    finally:
        mc.close()
        cleanup_bench()
    c, u = statistics.median(cli), statistics.median(ui)
    print(f"rounds: {args.rounds}")
    print(f"milkcrate deploy DIR → exit:      median {c*1000:.0f} ms  (all: {', '.join(f'{x*1000:.0f}' for x in cli)})")
    print(f"upload form POST → deploy done:  median {u*1000:.0f} ms  (all: {', '.join(f'{x*1000:.0f}' for x in ui)})")
    print(f"ratio cli/ui: {c/u:.3f}")


if __name__ == "__main__":
    main()
