"""Shared by the benchmarks: start a release milkcrate on a fresh data folder, log in, post
forms and multipart uploads, with the standard library only."""
import http.client, json, os, re, socket, subprocess, tempfile, time, urllib.parse, uuid


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Milkcrate:
    def __init__(self, binary="target/release/milkcrate", env=None, listen_var="MILKCRATE_LISTEN"):
        """`listen_var` names the plain-HTTP listener this object talks to (with SSL_CERT_FILE
        set, MILKCRATE_LISTEN speaks TLS: use MILKCRATE_HTTP_LISTEN then)."""
        self.dir = tempfile.TemporaryDirectory()
        self.port = free_port()
        e = {"PATH": os.environ.get("PATH", ""), "MILKCRATE_DATA_DIR": f"{self.dir.name}/instance",
             listen_var: f"127.0.0.1:{self.port}", "MILKCRATE_INSTANCE": "bench", "TRAEFIK_NETWORK": "milkcrate-bench"}
        e.update(env or {})
        # No inherited stdout/stderr: a server left behind must never hold the caller's pipe open.
        # MILKCRATE_BENCH_LOG=FILE keeps the server's log there, to see why a run failed.
        log = os.environ.get("MILKCRATE_BENCH_LOG")
        err = open(log, "ab") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen([binary, "serve"], env=e, stdout=subprocess.DEVNULL,
                                     stderr=err, stdin=subprocess.DEVNULL)
        self.cookies = {}
        deadline = time.time() + 15
        while True:
            try:
                if self.request("GET", "/health")[0] == 200:
                    break
            except (OSError, http.client.HTTPException):
                pass
            if time.time() > deadline or self.proc.poll() is not None:
                self.close()
                raise SystemExit(f"milkcrate did not answer on {listen_var}=127.0.0.1:{self.port}")
            time.sleep(0.05)

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.dir.cleanup()

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def request(self, method, path, body=None, headers=None, conn=None):
        c = conn or self.conn()
        h = dict(headers or {})
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        for k, v in r.getheaders():
            if k.lower() == "set-cookie":
                name, _, rest = v.partition("=")
                value = rest.split(";")[0]
                if value:
                    self.cookies[name] = value
                else:
                    self.cookies.pop(name, None)
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data

    def token(self, page):
        html = self.request("GET", page)[2].decode()
        return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)

    def login(self, password="admin"):
        body = urllib.parse.urlencode({"csrf_token": self.token("/login"), "password": password})
        status, _, _ = self.request("POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 303, status

    def upload(self, fields, zip_bytes):
        boundary = uuid.uuid4().hex
        parts = [("csrf_token", self.token("/upload"))] + list(fields.items())
        body = b""
        for k, v in parts:
            body += f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="app.zip"\r\nContent-Type: application/zip\r\n\r\n'.encode()
        body += zip_bytes + f"\r\n--{boundary}--\r\n".encode()
        return self.request("POST", "/upload", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})


def docker(*args):
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


def percentile(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def first_answer(ip, deadline, port=8080):
    """The body of the first answer from http://ip:port/ before the deadline (perf_counter)."""
    import urllib.request
    while time.perf_counter() < deadline:
        try:
            with urllib.request.urlopen(f"http://{ip}:{port}/", timeout=1) as r:
                return r.read()
        except OSError:
            time.sleep(0.01)
    raise SystemExit(f"no answer from {ip} (gave up at {time.perf_counter():.1f}, deadline {deadline:.1f})")


def container_ip(filter_args, network, deadline):
    """The address on `network` of the first running container matching `docker ps` filters."""
    while time.perf_counter() < deadline:
        ids = docker("ps", "-q", *filter_args).split()
        if ids:
            ip = docker("inspect", "-f", f"{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}", ids[0]).strip()
            if ip and ip != "<no value>":
                return ip
        time.sleep(0.02)
    raise SystemExit("no container appeared")


def cleanup_bench():
    """Removes what the benchmarks made in the engine (all labelled milkcrate.instance=bench):
    containers, then the networks they were on (the shared `milkcrate-bench` network stays),
    then images and volumes."""
    label = "label=milkcrate.instance=bench"
    for c in docker("ps", "-aq", "--filter", label).split():
        subprocess.run(["docker", "rm", "-f", c], capture_output=True)
    for n in docker("network", "ls", "--format", "{{.Name}}", "--filter", label).split():
        if n != "milkcrate-bench":
            subprocess.run(["docker", "network", "rm", n], capture_output=True)
    for i in docker("images", "-q", "--filter", label).split():
        subprocess.run(["docker", "rmi", "-f", i], capture_output=True)
