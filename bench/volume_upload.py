#!/usr/bin/env python3
"""Volume upload: wall time to put N files (MiB each) into a volume through milkcrate's upload
form over HTTP (spool, check, tar, helper container, archive API), against doing it by hand
with the docker CLI (`docker create` a container mounting the volume, `docker cp` the files in
from local disk, `docker rm`), in the same run, alternating which goes first. Also milkcrate's listing of the volume (the volume page) against `docker run ... find`.

Usage: bench/volume_upload.py [--rounds 5] [--files 4] [--mib 3]   (needs a release build, a
Docker Engine and the busybox base image the tests import: run scripts/test once)
"""
import argparse, os, re, statistics, subprocess, tempfile, time, uuid
from common import Milkcrate, docker

BASE = "milkcrate-test/busybox:2"


def upload(mc, vol_id, files):
    boundary = uuid.uuid4().hex
    page = mc.request("GET", f"/admin/volumes/{vol_id}")[2].decode()
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    body = f'--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n{token}\r\n'.encode()
    for name, data in files:
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
        body += data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    t0 = time.perf_counter()
    status, headers, _ = mc.request("POST", f"/admin/volumes/{vol_id}/upload", body,
                                    {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    elapsed = time.perf_counter() - t0
    assert status == 303, status
    flash = mc.request("GET", headers["location"])[2].decode()
    assert "Uploaded" in flash, flash[:2000]
    return elapsed


def docker_cp(files):
    """What an operator does by hand to fill a volume without a running app: create a
    container that mounts it, `docker cp` the files in, remove the container."""
    vol = f"bench-vol-{uuid.uuid4().hex[:8]}"
    docker("volume", "create", "--label", "milkcrate.instance=bench", vol)
    with tempfile.TemporaryDirectory() as d:
        for name, data in files:
            open(os.path.join(d, name), "wb").write(data)
        t0 = time.perf_counter()
        cid = docker("create", "--label", "milkcrate.instance=bench", "-v", f"{vol}:/v", BASE, "true").strip()
        docker("cp", f"{d}/.", f"{cid}:/v/")
        docker("rm", "-f", cid)
        return time.perf_counter() - t0, vol


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--mib", type=int, default=3)
    args = ap.parse_args()
    total = args.files * args.mib
    mc = Milkcrate(env={"MAX_CONTENT_LENGTH": str((total + 4) << 20)})
    ours, theirs, list_ours, list_theirs = [], [], [], []
    made = []
    try:
        mc.login()
        for r in range(args.rounds):
            files = [(f"f{i}.bin", os.urandom(args.mib << 20)) for i in range(args.files)]
            name = f"bench{r}{uuid.uuid4().hex[:6]}"
            token = re.search(r'name="csrf_token" value="([^"]+)"', mc.request("GET", "/admin/volumes/create")[2].decode()).group(1)
            status, headers, _ = mc.request("POST", "/admin/volumes/create",
                                            f"csrf_token={token}&volume_name={name}&description=",
                                            {"Content-Type": "application/x-www-form-urlencoded"})
            assert status == 303, status
            made.append(f"milkcrate-vol-{name}")
            vol_id = re.search(rf'href="/admin/volumes/(\d+)">{name}<', mc.request("GET", "/admin/volumes")[2].decode()).group(1)
            if r % 2 == 0:
                ours.append(upload(mc, vol_id, files))
                t, vol = docker_cp(files)
            else:
                t, vol = docker_cp(files)
                ours.append(upload(mc, vol_id, files))
            theirs.append(t)
            made.append(vol)
            t0 = time.perf_counter()
            page = mc.request("GET", f"/admin/volumes/{vol_id}")[2].decode()
            list_ours.append(time.perf_counter() - t0)
            assert f"{args.files} files" in page
            t0 = time.perf_counter()
            docker("run", "--rm", "--label", "milkcrate.instance=bench", "-v", f"{vol}:/v:ro", BASE, "ls", "-lR", "/v")
            list_theirs.append(time.perf_counter() - t0)
    finally:
        mc.close()
        for v in made:
            subprocess.run(["docker", "volume", "rm", "-f", v], capture_output=True)
    med = statistics.median
    print(f"{args.files} files x {args.mib} MiB, {args.rounds} rounds (median ms)")
    print(f"upload   milkcrate {med(ours) * 1000:8.0f}   docker create+cp+rm {med(theirs) * 1000:8.0f}   ratio {med(ours) / med(theirs):.2f}x")
    print(f"listing  milkcrate {med(list_ours) * 1000:8.0f}   docker run ls -lR {med(list_theirs) * 1000:8.0f}   ratio {med(list_ours) / med(list_theirs):.2f}x")


if __name__ == "__main__":
    main()
