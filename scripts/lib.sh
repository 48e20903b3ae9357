# Shared by scripts/serve and scripts/test. Source it; do not run it.

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Makes sure a Docker Engine answers. As root, installs Debian's docker.io when there is no
# engine and starts the daemon (systemd when it runs, else dockerd in the background).
ensure_docker() {
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
