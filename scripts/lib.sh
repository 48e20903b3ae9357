# Shared by scripts/serve and scripts/test. Source it; do not run it.

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Makes sure a Docker Engine answers. As root, installs Debian's docker.io when there is no
# engine and starts the daemon (systemd when it runs, else dockerd in the background).
ensure_docker() {
  ensure_iptables
  if docker info >/dev/null 2>&1; then
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    die "no Docker Engine answers and this is not root: start Docker (sudo systemctl start docker) or run as root."
  fi
  if ! command -v dockerd >/dev/null 2>&1; then
    say "installing Debian's docker.io"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
  fi
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    say "starting docker with systemd"
    systemctl start docker || true
  fi
  if ! docker info >/dev/null 2>&1 && ! pgrep -x dockerd >/dev/null 2>&1; then
    say "starting dockerd in the background (log: /tmp/milkcrate-dockerd.log)"
    setsid nohup dockerd >/tmp/milkcrate-dockerd.log 2>&1 < /dev/null &
  fi
  for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then
      say "Docker Engine $(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})')"
      return 0
    fi
    sleep 1
  done
  tail -n 20 /tmp/milkcrate-dockerd.log >&2 2>/dev/null || true
  die "the Docker Engine did not come up within 60 s"
}

# The host firewall test (tests/api/attacks.rs) runs iptables as root. Debian's docker.io
# depends on it, but an engine installed another way may not have brought it.
ensure_iptables() {
  if [ "$(id -u)" = 0 ] && ! command -v iptables >/dev/null 2>&1 \
    && [ ! -x /usr/sbin/iptables ] && [ ! -x /sbin/iptables ]; then
    say "installing Debian's iptables"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables >/dev/null
  fi
}

# Makes sure cargo is on PATH (rustup's default location included).
ensure_cargo() {
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    PATH="$HOME/.cargo/bin:$PATH"
  fi
  if command -v cargo >/dev/null 2>&1; then
    return 0
  fi
  command -v curl >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq curl ca-certificates build-essential >/dev/null; }
  say "installing the Rust toolchain with rustup"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  PATH="$HOME/.cargo/bin:$PATH"
}

# Debian's static busybox: the tests import it as their base image (no registry is reachable).
ensure_busybox() {
  if dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed'; then
    return 0
  fi
  [ "$(id -u)" = 0 ] || die "/bin/busybox (static) is missing: install busybox-static"
  say "installing Debian's busybox-static"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null
}

# Debian's Chromium and its WebDriver, for the browser tests.
ensure_chromium() {
  if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    return 0
  fi
  [ "$(id -u)" = 0 ] || die "chromium and chromedriver are missing: install Debian's chromium and chromium-driver"
  say "installing Debian's chromium and chromium-driver"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
}

# Debian's docker-registry (the Distribution registry), for the pull and template tests: one
# open registry on 127.0.0.1:5055 and one with basic auth (user milkcrate-test, password
# Registry-Pass-16) on 127.0.0.1:5056. The engine trusts 127.0.0.0/8 registries over plain HTTP.
ensure_registry() {
  if ! command -v docker-registry >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || die "docker-registry is missing: install Debian's docker-registry"
    say "installing Debian's docker-registry"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >/dev/null
  fi
  local dir=/tmp/milkcrate-registry
  mkdir -p "$dir"
  # bcrypt of the test password (the registry accepts only bcrypt in htpasswd files).
  printf '%s\n' 'milkcrate-test:$2b$10$xxBmtxi3oHFL6oCaFyvOquoAwnyLO.lxENqmSxOOmIHEFtQdO9NsW' >"$dir/htpasswd"
  local port auth
  for port in 5055 5056; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      continue
    fi
    auth=""
    if [ "$port" = 5056 ]; then
      auth="auth:
  htpasswd:
    realm: milkcrate-test
    path: $dir/htpasswd"
    fi
    cat >"$dir/config-$port.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/data-$port
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
$auth
YML
    say "starting docker-registry on 127.0.0.1:$port (log: $dir/registry-$port.log)"
    setsid nohup docker-registry serve "$dir/config-$port.yml" >"$dir/registry-$port.log" 2>&1 </dev/null &
  done
  for _ in $(seq 1 30); do
    if (exec 3<>/dev/tcp/127.0.0.1/5055) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/5056) 2>/dev/null; then
      return 0
    fi
    sleep 1
  done
  die "docker-registry did not answer on 127.0.0.1:5055 and :5056 within 30 s (see $dir/registry-*.log)"
}

# A real Debian userland with python3 (mmdebstrap --variant=minbase), imported once as
# milkcrate-test/debian-python:12 for scripts/test-real; the rootfs tar is cached in
# ${XDG_CACHE_HOME:-~/.cache}/milkcrate/.
ensure_debian_python_image() {
  local image=milkcrate-test/debian-python:12
  if docker image inspect "$image" >/dev/null 2>&1; then
    return 0
  fi
  local cache="${XDG_CACHE_HOME:-$HOME/.cache}/milkcrate"
  local tar="$cache/debian-bookworm-minbase-python3.tar"
  if [ ! -s "$tar" ]; then
    if ! command -v mmdebstrap >/dev/null 2>&1; then
      [ "$(id -u)" = 0 ] || die "mmdebstrap is missing: install Debian's mmdebstrap"
      say "installing Debian's mmdebstrap"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null
    fi
    mkdir -p "$cache"
    say "building a Debian bookworm minbase rootfs with python3 (mmdebstrap, once; cached in $cache)"
    mmdebstrap --quiet --variant=minbase --include=python3 --format=tar bookworm "$tar.part"
    mv "$tar.part" "$tar"
  fi
  say "importing $image"
  docker import --change 'LABEL milkcrate-test=true' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' "$tar" "$image" >/dev/null
}

# moto in server mode: the S3-compatible store the off-site backup tests (tests/api/offsite.rs)
# upload to, on 127.0.0.1:${MILKCRATE_TEST_S3_PORT:-39517}. Installed from PyPI when missing.
ensure_moto() {
  local port="${MILKCRATE_TEST_S3_PORT:-39517}"
  PATH="$HOME/.local/bin:$PATH"
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    return 0
  fi
  if ! command -v moto_server >/dev/null 2>&1; then
    if ! command -v pip3 >/dev/null 2>&1; then
      [ "$(id -u)" = 0 ] || die "pip3 is missing: install python3-pip, then pip install 'moto[server]'"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
    fi
    say "installing moto[server] from PyPI"
    pip3 install -q 'moto[server]' 2>/dev/null || pip3 install -q --break-system-packages 'moto[server]'
  fi
  say "starting moto_server on 127.0.0.1:$port (log: /tmp/milkcrate-moto.log)"
  setsid nohup moto_server -H 127.0.0.1 -p "$port" >/tmp/milkcrate-moto.log 2>&1 < /dev/null &
  for _ in $(seq 1 30); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    sleep 1
  done
  tail -n 20 /tmp/milkcrate-moto.log >&2 2>/dev/null || true
  die "moto_server did not come up on 127.0.0.1:$port within 30 s"
}

# Python's aiosmtpd, the SMTP sink the alert tests send email to (started by each test).
ensure_smtp_sink() {
  if python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
    return 0
  fi
  say "installing aiosmtpd (PyPI) for the email alert tests"
  if ! python3 -m pip --version >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || die "python3's pip is missing: install python3-pip, then aiosmtpd"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
  fi
  python3 -m pip install -q aiosmtpd 2>/dev/null \
    || python3 -m pip install -q --break-system-packages aiosmtpd \
    || die "could not install aiosmtpd: run 'python3 -m pip install aiosmtpd'"
}

# Debian's pebble (a test ACME CA) and pebble-challtestsrv (its DNS), for the ACME tests.
ensure_pebble() {
  if command -v pebble >/dev/null 2>&1 && command -v pebble-challtestsrv >/dev/null 2>&1; then
    return 0
  fi
  [ "$(id -u)" = 0 ] || die "pebble is missing: install Debian's pebble package"
  say "installing Debian's pebble"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pebble >/dev/null
}
