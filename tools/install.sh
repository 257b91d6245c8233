#!/usr/bin/env bash
# wakeguard installer: runs on the target (a Raspberry Pi or any 64-bit Linux).
#
# Shipped inside every bundle made by `wakeguard bundle`; `wakeguard flash` pipes the same
# script over SSH. Needs bash, coreutils, tar and python3 (3.11-3.13, with venv) on the target.
#
#   install.sh facts    [--root ROOT]                  what the target is (key=value lines)
#   install.sh install  [--root ROOT] [--keep N] [--tarball FILE | --dir DIR]
#   install.sh model    [--root ROOT] [--keep N] --tarball MODEL.tar.gz
#   install.sh rollback [--root ROOT]
#   install.sh status   [--root ROOT]
# Common options: --service auto|systemd|direct, --health-timeout SECONDS,
#   --metrics-port PORT (install: default the config's [metrics] port, else 9810;
#   model: keep the current release's port unless given),
#   --proxy URI|off (run the Wyoming wake proxy in front of the wake-word service at URI,
#   tcp://HOST:PORT or unix:///PATH, on this and every later release; off stops it).
# A site config at ROOT/wakeguard.toml, when present, replaces the bundle's on every install.
#
# Layout under ROOT (default /opt/wakeguard):
#   releases/<version>-<time>/  venv/ (or a link to the venv of the release it shares),
#                               model/, wakeguard.toml, wakeguard.service, manifest.json,
#                               release.json
#   current -> releases/<...>   switched atomically (new link under a temporary name, renamed)
#   run/wakeguard.pid, log/service.log   when no systemd is running (direct mode)
#   run/wakeguard-serve.pid, log/serve-service.log   the same for the Wyoming proxy
#   proxy-upstream              the proxy's upstream (flash --proxy), kept across releases
#
# Every release is health-checked (a verdict on the built-in clip by the installed runtime,
# then the service running and its metrics port answering); on any failure the previous
# release is made current again and the reason is printed. Output: ":: " progress lines,
# "!! " warnings and errors, "@key=value" facts for the caller.
set -euo pipefail
umask 022

ROOT=/opt/wakeguard
KEEP=3
SERVICE=auto
HEALTH_TIMEOUT=60
METRICS_PORT=""
PROXY=""
DEFAULT_METRICS_PORT=9810
TARBALL=""
SRC_DIR=""
UNIT_NAME=wakeguard.service
SERVE_UNIT_NAME=wakeguard-serve.service
CANONICAL_ROOT=/opt/wakeguard
PY=""

# Output never stops the work: a dropped SSH connection (SIGHUP, then EPIPE on every write)
# must not leave a release half switched, so the installer carries on and rolls back by itself.
trap '' HUP PIPE
say() { printf ':: %s\n' "$*" 2>/dev/null || true; }
warn() { printf '!! warning: %s\n' "$*" 2>/dev/null || true; }
LAST_ERROR=""
die() {
  LAST_ERROR="$*"
  printf '!! error: %s\n' "$*" 2>/dev/null || true
  exit 1
}
fact() { printf '@%s=%s\n' "$1" "$2" 2>/dev/null || true; }

as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo -n "$@"
  else
    return 126
  fi
}

find_python() {
  # python3 of the wanted minor version ($1, optional), else python3
  local want=${1:-}
  if [ -n "$want" ] && "python$want" -c 'import sys' </dev/null >/dev/null 2>&1; then
    command -v "python$want"
  elif command -v python3 >/dev/null 2>&1; then
    command -v python3
  fi
}

# ---------------------------------------------------------------- facts

cmd_facts() {
  fact arch "$(uname -m)"
  fact kernel "$(uname -s)"
  local os=unknown
  # shellcheck disable=SC1091
  if [ -r /etc/os-release ]; then os=$(. /etc/os-release && printf '%s' "${PRETTY_NAME:-$NAME}"); fi
  fact os "$os"
  PY=$(find_python)
  if [ -n "$PY" ]; then
    fact python "$("$PY" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' </dev/null)"
    fact python_path "$PY"
    fact glibc "$("$PY" -c 'import platform; print(platform.libc_ver()[1] or "unknown")' </dev/null)"
    if "$PY" -c 'import venv, ensurepip' </dev/null >/dev/null 2>&1; then fact venv yes; else fact venv no; fi
    for v in 3.11 3.12 3.13; do
      if "python$v" -c 'import sys' </dev/null >/dev/null 2>&1; then fact python_minor "$v"; fi
    done
  else
    fact python none
  fi
  # free space where ROOT is (or would be created)
  local probe=$ROOT
  while [ ! -e "$probe" ] && [ "$probe" != / ]; do probe=$(dirname "$probe"); done
  fact free_bytes "$(df -Pk "$probe" | awk 'NR==2 {printf "%.0f\n", $4 * 1024}')"
  if [ -w "$probe" ]; then fact root_writable yes; else fact root_writable no; fi
  fact user "$(id -un)"
  fact home "$HOME"
  if [ "$(id -u)" = 0 ]; then
    fact privileged root
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    fact privileged sudo
  else
    fact privileged no
  fi
  if [ -d /run/systemd/system ]; then fact systemd running; else fact systemd absent; fi
  if command -v systemd-analyze >/dev/null 2>&1; then fact systemd_analyze yes; else fact systemd_analyze no; fi
  if command -v tar >/dev/null 2>&1; then fact tar yes; else fact tar no; fi
  # capture devices: arecord -l where alsa-utils is installed, else the kernel's card list
  local cards=0
  if command -v arecord >/dev/null 2>&1; then
    fact audio_source "arecord -l"
    while IFS= read -r line; do
      case $line in card\ *) fact audio "$line"; cards=$((cards + 1)) ;; esac
    done < <(arecord -l 2>/dev/null </dev/null || true)
  elif [ -r /proc/asound/pcm ]; then
    fact audio_source /proc/asound/pcm
    while IFS= read -r line; do
      case $line in *capture*) fact audio "$line"; cards=$((cards + 1)) ;; esac
    done </proc/asound/pcm
  elif [ -r /proc/asound/cards ]; then
    fact audio_source /proc/asound/cards
    while IFS= read -r line; do
      case $line in *\[*\]*) fact audio "$(printf '%s' "$line" | sed 's/^ *//')"; cards=$((cards + 1)) ;; esac
    done </proc/asound/cards
  else
    fact audio_source none
  fi
  fact audio_cards "$cards"
  if ldconfig -p 2>/dev/null | grep 'libportaudio\.so' >/dev/null; then
    fact portaudio yes
  elif compgen -G '/usr/lib/*/libportaudio.so*' >/dev/null || compgen -G '/lib/*/libportaudio.so*' >/dev/null; then
    fact portaudio yes
  else
    fact portaudio no
  fi
  if [ -L "$ROOT/current" ]; then fact current "$(basename "$(readlink "$ROOT/current")")"; fi
}

# ---------------------------------------------------------------- helpers

check_root_path() {
  case $ROOT in
    /*) ;;
    *) die "--root must be an absolute path, got $ROOT" ;;
  esac
  case $ROOT in
    *[!A-Za-z0-9._/+-]*) die "--root may hold only letters, digits and . _ / + -: $ROOT" ;;
  esac
  ROOT=${ROOT%/}
}

prepare_root() {
  check_root_path
  if [ ! -d "$ROOT" ]; then
    if ! mkdir -p "$ROOT" 2>/dev/null; then
      if ! { as_root mkdir -p "$ROOT" && as_root chown "$(id -u):$(id -g)" "$ROOT"; }; then
        die "cannot create $ROOT: not writable by $(id -un), and no root or passwordless sudo"
      fi
    fi
  fi
  [ -w "$ROOT" ] || die "$ROOT is not writable by $(id -un)"
  mkdir -p "$ROOT/releases" "$ROOT/run" "$ROOT/log"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$ROOT/.lock"
    flock -w 60 9 || die "another wakeguard install is running on this target (lock $ROOT/.lock)"
  fi
}

current_name() {
  if [ -L "$ROOT/current" ]; then basename "$(readlink "$ROOT/current")"; fi
}

releases_oldest_first() {
  "$PY" - "$ROOT/releases" <<'PY'
import json, pathlib, sys
d = pathlib.Path(sys.argv[1])
rows = []
for p in (d.iterdir() if d.is_dir() else []):
    f = p / "release.json"
    if p.is_dir() and not p.is_symlink() and not p.name.startswith(".") and f.is_file():
        try:
            rows.append((int(json.loads(f.read_text())["created_ns"]), p.name))
        except (ValueError, KeyError, OSError):
            pass
for _, name in sorted(rows):
    print(name)
PY
}

verify_tree() {
  # $1 folder, $2 wanted kind: checksums of every file against its manifest.json
  "$PY" - "$1" "$2" <<'PY'
import hashlib, json, pathlib, sys
d, kind = pathlib.Path(sys.argv[1]), sys.argv[2]
try:
    m = json.loads((d / "manifest.json").read_text())
except (OSError, ValueError) as exc:
    sys.exit(f"the bundle has no readable manifest.json ({exc})")
if m.get("format") != "wakeguard-ship":
    sys.exit("manifest.json is not a wakeguard bundle manifest")
if m.get("kind") != kind:
    sys.exit(f"this is a {m.get('kind')!r} bundle, expected {kind!r}")
problems = []
for rel, info in sorted(m["files"].items()):
    p = d / rel
    if not p.is_file():
        problems.append(f"{rel}: missing")
        continue
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != info["sha256"]:
        problems.append(f"{rel}: sha256 does not match the manifest")
listed = set(m["files"]) | {"manifest.json"}
for p in sorted(d.rglob("*")):
    rel = p.relative_to(d).as_posix()
    if p.is_file() and rel not in listed:
        problems.append(f"{rel}: not in the manifest")
if problems:
    sys.exit("checksum verification failed: " + "; ".join(problems[:5]))
print(len(m["files"]))
PY
}

manifest_get() {
  # $1 manifest.json, $2 key
  "$PY" -c 'import json, sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], ""))' "$1" "$2" </dev/null
}

new_release_name() {
  local version=$1 stamp name n=2
  version=$(printf '%s' "$version" | tr -c 'A-Za-z0-9._+\n-' '_')
  stamp=$(date -u +%Y%m%dT%H%M%SZ)
  name="$version-$stamp"
  while [ -e "$ROOT/releases/$name" ]; do
    name="$version-$stamp-$n"
    n=$((n + 1))
  done
  printf '%s' "$name"
}

write_release_json() {
  # $1 release dir, $2 kind, $3 venv owner, $4 model version
  "$PY" - "$1" "$2" "$3" "$4" <<'PY'
import json, pathlib, sys, time
rel, kind, owner, model_version = pathlib.Path(sys.argv[1]), *sys.argv[2:]
m = json.loads((rel / "manifest.json").read_text())
info = {
    "name": rel.name,
    "kind": kind,
    "version": m.get("version", ""),
    "model_version": model_version,
    "venv_owner": owner,
    "created_ns": time.time_ns(),
    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
}
(rel / "release.json").write_text(json.dumps(info, indent=2) + "\n")
PY
}

model_version_of() {
  "$PY" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("version", "unknown"))' "$1/model/manifest.json" </dev/null 2>/dev/null || echo unknown
}

render_unit() {
  # The unit and config ship written for /opt/wakeguard. Point them at ROOT, and point
  # ExecStart at this layout: the release's runtime, config and model, and a metrics port
  # (the health check needs it): --metrics-port, else the config's [metrics] port, else 9810.
  local rel=$1 unit=$1/wakeguard.service
  [ -f "$unit" ] || die "the bundle has no wakeguard.service"
  if [ -f "$ROOT/wakeguard.toml" ]; then
    cp "$ROOT/wakeguard.toml" "$rel/wakeguard.toml"
    say "using the site config $ROOT/wakeguard.toml"
  fi
  [ -f "$rel/wakeguard.toml" ] || die "the bundle has no wakeguard.toml"
  sed -i -e "s#$CANONICAL_ROOT#$ROOT#g" "$unit" "$rel/wakeguard.toml"
  grep -q '^ExecStart=' "$unit" || die "wakeguard.service has no ExecStart line"
  local port=$METRICS_PORT
  if [ -z "$port" ]; then
    port=$("$PY" - "$rel/wakeguard.toml" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    port = tomllib.load(f).get("metrics", {}).get("port", 0)
print(int(port or 0))
PY
    ) || die "wakeguard.toml is not valid TOML"
    [ "$port" != 0 ] || port=$DEFAULT_METRICS_PORT
  fi
  case $port in '' | *[!0-9]*) die "metrics port must be a number, got $port" ;; esac
  point_exec_start "$unit" --metrics-port "$port"
  # The Wyoming wake proxy's unit (older bundles lack it) is rendered for this layout too, with
  # no metrics port of its own (the screener has it), but never enabled: it needs the
  # upstream wake service the user runs. To use it: systemctl link it and enable it.
  if [ -f "$rel/$SERVE_UNIT_NAME" ]; then
    sed -i -e "s#$CANONICAL_ROOT#$ROOT#g" "$rel/$SERVE_UNIT_NAME"
    grep -q '^ExecStart=' "$rel/$SERVE_UNIT_NAME" || die "$SERVE_UNIT_NAME has no ExecStart line"
    point_exec_start "$rel/$SERVE_UNIT_NAME"
  fi
}

point_exec_start() {
  # $1 unit; the rest: more options. ExecStart runs the release's runtime with the current
  # release's config and model; its own --config, --model and --metrics-port are dropped.
  local unit=$1 argv new=("$ROOT/current/venv/bin/wakeguard") i=1
  shift
  read -r -a argv <<<"$(exec_start_of "$unit")"
  while [ "$i" -lt "${#argv[@]}" ]; do
    case ${argv[$i]} in
      --config | -c | --model | -m | --metrics-port) i=$((i + 2)) ;;
      --config=* | --model=* | --metrics-port=*) i=$((i + 1)) ;;
      *) new+=("${argv[$i]}"); i=$((i + 1)) ;;
    esac
  done
  new+=(--config "$ROOT/current/wakeguard.toml" --model "$ROOT/current/model" "$@")
  local line="ExecStart=${new[*]}"
  awk -v line="$line" 'BEGIN { done = 0 } /^ExecStart=/ && !done { print line; done = 1; next } { print }' "$unit" >"$unit.tmp"
  mv "$unit.tmp" "$unit"
}

exec_start_of() {
  # the command line of the unit's first ExecStart=, prefixes (-@+!:) removed
  # (awk reads the file itself: no pipe that an early exit could break under pipefail)
  awk '/^ExecStart=/ { sub(/^ExecStart=/, ""); sub(/^[-@+!:]+/, ""); print; exit }' "$1"
}

validate_unit() {
  # systemd-analyze verify where available, on a copy whose paths point into the new release
  local rel=$1
  if ! command -v systemd-analyze >/dev/null 2>&1; then
    say "systemd-analyze not found: unit file not validated"
    return 0
  fi
  local tmp out
  tmp=$(mktemp -d)
  local u units=("$UNIT_NAME")
  [ -f "$rel/$SERVE_UNIT_NAME" ] && units+=("$SERVE_UNIT_NAME")
  for u in "${units[@]}"; do
    sed -e "s#$ROOT/current/#$rel/#g" "$rel/$u" >"$tmp/$u"
    if ! out=$(systemd-analyze verify "$tmp/$u" 2>&1 </dev/null); then
      rm -rf "$tmp"
      printf '%s\n' "$out" | sed 's/^/   /'
      return 1
    fi
  done
  rm -rf "$tmp"
  say "unit file verified with systemd-analyze"
}

metrics_port() {
  # the --metrics-port of the current release's ExecStart, empty when there is none
  local argv i
  read -r -a argv <<<"$(exec_start_of "$ROOT/current/wakeguard.service")"
  for ((i = 0; i < ${#argv[@]}; i++)); do
    if [ "${argv[$i]}" = --metrics-port ]; then
      printf '%s' "${argv[$((i + 1))]:-}"
      return 0
    fi
  done
}

# ---------------------------------------------------------------- service

SERVICE_MODE=""

resolve_service_mode() {
  case $SERVICE in
    systemd) SERVICE_MODE=systemd ;;
    direct) SERVICE_MODE=direct ;;
    auto)
      if [ -d /run/systemd/system ]; then SERVICE_MODE=systemd; else SERVICE_MODE=direct; fi
      ;;
    *) die "--service must be auto, systemd or direct, got $SERVICE" ;;
  esac
  fact service "$SERVICE_MODE"
}

unit_user() { awk '/^User=/ { sub(/^User=/, ""); print; exit }' "$1"; }

stop_direct() {
  # $1 pid file (default: the screening service's)
  local pidfile=${1:-$ROOT/run/wakeguard.pid} pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    local i
    for i in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      warn "service (pid $pid) did not stop within 10 s of SIGTERM: killed"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidfile"
}

start_direct() {
  # $1 unit, $2 pid file, $3 log (default: the screening service's)
  local unit=${1:-$ROOT/current/wakeguard.service} pidfile=${2:-$ROOT/run/wakeguard.pid}
  local logfile=${3:-$ROOT/log/service.log} cmdline argv
  # systemd would make /var/log/wakeguard and /var/lib/wakeguard (LogsDirectory=,
  # StateDirectory=): without it they live under ROOT
  cmdline=$(exec_start_of "$unit" | sed -e "s#/var/log/wakeguard#$ROOT/log#g" -e "s#/var/lib/wakeguard#$ROOT/state#g")
  mkdir -p "$ROOT/state"
  read -r -a argv <<<"$cmdline"
  [ -x "${argv[0]}" ] || die "service command ${argv[0]} is not executable"
  : >>"$logfile"
  printf '\n=== %s start %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(current_name)" >>"$logfile"
  # setsid: its own session and process group, so it outlives this SSH session and can be
  # stopped as a group; with no job control the background child is not a group leader, so
  # setsid and nohup exec in place and $! is the service's pid.
  (cd "$ROOT" && exec setsid nohup "${argv[@]}" >>"$logfile" 2>&1 </dev/null 9>&-) &
  echo $! >"$pidfile"
}

restart_service() {
  if [ "$SERVICE_MODE" = systemd ]; then
    [ -d /run/systemd/system ] || die "systemd is not running on this target (use --service direct)"
    local user
    user=$(unit_user "$ROOT/current/wakeguard.service")
    if [ -n "$user" ] && ! id "$user" >/dev/null 2>&1; then
      say "creating system user $user (in group audio)"
      as_root useradd --system --no-create-home --shell /usr/sbin/nologin --groups audio "$user" </dev/null ||
        die "cannot create service user $user (needs root or passwordless sudo)"
    fi
    as_root install -m 0644 "$ROOT/current/wakeguard.service" "/etc/systemd/system/$UNIT_NAME" ||
      die "cannot install /etc/systemd/system/$UNIT_NAME (needs root or passwordless sudo)"
    as_root systemctl daemon-reload </dev/null || die "systemctl daemon-reload failed"
    as_root systemctl enable --quiet "$UNIT_NAME" </dev/null || die "systemctl enable $UNIT_NAME failed"
    as_root systemctl restart "$UNIT_NAME" </dev/null || true
    say "systemd service $UNIT_NAME restarted"
  else
    stop_direct
    start_direct
    say "no systemd running here: started the service directly (pid $(cat "$ROOT/run/wakeguard.pid"), log $ROOT/log/service.log, as user $(id -un))"
  fi
}

service_alive() {
  # $1 unit name, $2 pid file (default: the screening service's)
  local unit=${1:-$UNIT_NAME} pidfile=${2:-$ROOT/run/wakeguard.pid}
  if [ "$SERVICE_MODE" = systemd ]; then
    as_root systemctl is-active --quiet "$unit" </dev/null
  else
    local pid
    pid=$(cat "$pidfile" 2>/dev/null || true)
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
  fi
}

service_log_tail() {
  # $1 unit name, $2 direct-mode log, $3 lines (default: the screening service's, 15)
  local unit=${1:-$UNIT_NAME} logfile=${2:-$ROOT/log/service.log} n=${3:-15}
  if [ "$SERVICE_MODE" = systemd ]; then
    as_root journalctl -u "$unit" -n "$n" --no-pager </dev/null 2>/dev/null || true
  else
    tail -n "$n" "$logfile" 2>/dev/null || true
  fi
}

# ---------------------------------------------------------------- health

HEALTH_REASON=""

screen_clip() {
  # $1 release dir: the installed runtime scores the built-in clip with the release's model
  local rel=$1 clip out
  clip=$("$rel/venv/bin/python" -c 'from importlib.resources import files; print(files("wakeguard.edge.assets") / "healthcheck.wav")' </dev/null 2>&1) ||
    {
      HEALTH_REASON="the installed runtime cannot be imported: $(printf '%s' "$clip" | tail -n 1)"
      return 1
    }
  if ! out=$("$rel/venv/bin/wakeguard" screen "$clip" --model "$rel/model" --json </dev/null 2>&1); then
    HEALTH_REASON="the installed runtime could not score the health-check clip: $(printf '%s' "$out" | tail -n 3 | tr '\n' ' ')"
    return 1
  fi
  local verdict
  verdict=$(printf '%s\n' "$out" | "$PY" -c '
import json, sys
for line in sys.stdin:
    line = line.strip()
    if line.startswith("{"):
        print(json.loads(line).get("verdict") or "")
        break
' 2>/dev/null || true)
  case $verdict in
    bonafide | spoof)
      say "health clip scored by the installed runtime: $verdict"
      fact health_verdict "$verdict"
      ;;
    *)
      HEALTH_REASON="the installed runtime gave no verdict on the health-check clip: $(printf '%s' "$out" | tail -n 2 | tr '\n' ' ')"
      return 1
      ;;
  esac
}

metrics_answer() {
  "$PY" - "$1" <<'PY' >/dev/null 2>&1
import sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=2) as r:
    body = r.read().decode("utf-8", "replace")
sys.exit(0 if r.status == 200 and "wakeguard_" in body else 1)
PY
}

health_wait() {
  # $1 "screened": the clip was already scored by this release (before the switch)
  HEALTH_REASON=""
  if [ "${1:-}" != screened ]; then screen_clip "$ROOT/current" || return 1; fi
  local port deadline
  port=$(metrics_port) || {
    HEALTH_REASON="cannot read the metrics port from $ROOT/current/wakeguard.toml"
    return 1
  }
  deadline=$((SECONDS + HEALTH_TIMEOUT))
  while :; do
    if ! service_alive; then
      sleep 1
      if ! service_alive; then
        HEALTH_REASON="the service exited; its last log lines: $(service_log_tail | tail -n 6 | tr '\n' ' ')"
        return 1
      fi
    fi
    if [ -z "$port" ]; then
      sleep 2
      if service_alive; then
        say "service running (no metrics port configured: metrics not checked)"
        return 0
      fi
      continue
    fi
    if metrics_answer "$port"; then
      sleep 1
      if service_alive; then
        say "service running; metrics answer on 127.0.0.1:$port"
        fact metrics_port "$port"
        return 0
      fi
      continue
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      HEALTH_REASON="the metrics port $port did not answer within $HEALTH_TIMEOUT s; service log: $(service_log_tail | tail -n 6 | tr '\n' ' ')"
      return 1
    fi
    sleep 0.5
  done
}

# ---------------------------------------------------------------- switching

switch_to() {
  # atomic: a new link under a temporary name, renamed over `current`
  local name=$1
  ln -sfn "releases/$name" "$ROOT/.current.tmp"
  mv -T -f "$ROOT/.current.tmp" "$ROOT/current"
}

prune() {
  local cur names keep=() n total i
  cur=$(current_name)
  mapfile -t names < <(releases_oldest_first)
  total=${#names[@]}
  [ "$total" -gt "$KEEP" ] || return 0
  # newest KEEP stay, and the current one, and any release whose venv a kept one shares
  for ((i = total - KEEP; i < total; i++)); do keep+=("${names[$i]}"); done
  keep+=("$cur")
  local k owner
  for k in "${keep[@]}"; do
    owner=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("venv_owner", ""))' "$ROOT/releases/$k/release.json" </dev/null 2>/dev/null || true)
    [ -n "$owner" ] && keep+=("$owner")
  done
  for n in "${names[@]}"; do
    local kept=no
    for k in "${keep[@]}"; do [ "$n" = "$k" ] && kept=yes; done
    if [ $kept = no ]; then
      rm -rf "${ROOT:?}/releases/$n"
      say "removed old release $n"
    fi
  done
}

ACTIVATING=""
ACTIVATING_PREV=""
ACTIVATING_DISCARD=yes # remove the release being made current if that fails (not on rollback)

on_exit() {
  # an unexpected stop (set -e) after the switch: put the previous release back
  local rc=$?
  [ -n "$ACTIVATING" ] && [ "$rc" -ne 0 ] || return 0
  set +e
  local why=${LAST_ERROR:-the installer stopped unexpectedly (status $rc)}
  if [ -n "$ACTIVATING_PREV" ] && [ -d "$ROOT/releases/$ACTIVATING_PREV" ]; then
    switch_to "$ACTIVATING_PREV"
    (restart_service) >/dev/null 2>&1
    [ "$ACTIVATING_DISCARD" = yes ] && rm -rf "${ROOT:?}/releases/$ACTIVATING"
    printf '@release=%s\n' "$ACTIVATING_PREV"
    printf '!! error: %s (while making %s current): rolled back to %s\n' "$why" "$ACTIVATING" "$ACTIVATING_PREV"
  else
    printf '!! error: %s (while making %s current; there was no previous release)\n' "$why" "$ACTIVATING"
  fi
}
trap on_exit EXIT

PROXY_FILE=proxy-upstream
SERVE_PID=run/wakeguard-serve.pid
SERVE_LOG=log/serve-service.log

set_proxy() {
  # --proxy URI: remember the upstream for this and every later release; --proxy off: forget it
  case $PROXY in
    '') return 0 ;;
    off)
      rm -f "$ROOT/$PROXY_FILE"
      return 0
      ;;
    tcp://*:*) case ${PROXY#tcp://} in *[!A-Za-z0-9.:_-]* | :* | *:) die "--proxy: not a tcp://HOST:PORT URI: $PROXY" ;; esac ;;
    unix:///*) case ${PROXY#unix://} in *[!A-Za-z0-9._/+-]*) die "--proxy: a unix socket path may hold only letters, digits and . _ / + -: $PROXY" ;; esac ;;
    *) die "--proxy must be tcp://HOST:PORT, unix:///PATH or off, got $PROXY" ;;
  esac
  printf '%s\n' "$PROXY" >"$ROOT/$PROXY_FILE.tmp"
  mv -f "$ROOT/$PROXY_FILE.tmp" "$ROOT/$PROXY_FILE"
}

proxy_upstream() { [ -f "$ROOT/$PROXY_FILE" ] && head -n 1 "$ROOT/$PROXY_FILE"; }

proxy_render() {
  # $1 release: its proxy unit forwards to the remembered upstream (when there is one)
  local unit=$1/$SERVE_UNIT_NAME up
  up=$(proxy_upstream) || return 0
  [ -f "$unit" ] || return 0
  if grep -q '^ExecStart=.* --upstream ' "$unit"; then
    sed -i -E "/^ExecStart=/ s#--upstream [^ ]+#--upstream $up#" "$unit"
  else
    sed -i -E "/^ExecStart=/ s#\$# --upstream $up#" "$unit"
  fi
}

proxy_uri() {
  # where the current release's proxy listens: its --uri, else the config's [serve] uri
  "$PY" - "$ROOT/current/wakeguard.toml" "$(exec_start_of "$ROOT/current/$SERVE_UNIT_NAME")" <<'PY'
import shlex, sys, tomllib
argv = shlex.split(sys.argv[2])
uri = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--uri"), None)
if uri is None:
    with open(sys.argv[1], "rb") as f:
        uri = tomllib.load(f).get("serve", {}).get("uri") or "tcp://127.0.0.1:10400"
print(uri)
PY
}

uri_answers() {
  "$PY" - "$1" <<'PY' >/dev/null 2>&1
import socket, sys
from urllib.parse import urlparse
u = urlparse(sys.argv[1])
if u.scheme == "unix":
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(2)
    s.connect(u.path)
else:
    host = u.hostname if u.hostname not in ("0.0.0.0", "::", "") else "127.0.0.1"
    s = socket.create_connection((host, u.port), timeout=2)
s.close()
PY
}

proxy_alive() { service_alive "$SERVE_UNIT_NAME" "$ROOT/$SERVE_PID"; }

proxy_log_tail() { service_log_tail "$SERVE_UNIT_NAME" "$ROOT/$SERVE_LOG" 6; }

proxy_stop() {
  if [ "$SERVICE_MODE" = systemd ]; then
    if as_root systemctl is-enabled --quiet "$SERVE_UNIT_NAME" </dev/null 2>/dev/null; then
      as_root systemctl disable --now --quiet "$SERVE_UNIT_NAME" </dev/null || true
      say "Wyoming wake proxy stopped and disabled"
    fi
  elif [ -f "$ROOT/$SERVE_PID" ]; then
    stop_direct "$ROOT/$SERVE_PID"
    say "Wyoming wake proxy stopped"
  fi
}

proxy_start() {
  # (re)start the proxy on the current release and check that it listens; a proxy that does
  # not come up is reported (@proxy=down), not rolled back: the screener is healthy
  local up=$1 uri deadline
  if [ "$SERVICE_MODE" = systemd ]; then
    as_root install -m 0644 "$ROOT/current/$SERVE_UNIT_NAME" "/etc/systemd/system/$SERVE_UNIT_NAME" ||
      die "cannot install /etc/systemd/system/$SERVE_UNIT_NAME (needs root or passwordless sudo)"
    as_root systemctl daemon-reload </dev/null || die "systemctl daemon-reload failed"
    as_root systemctl enable --quiet "$SERVE_UNIT_NAME" </dev/null || die "systemctl enable $SERVE_UNIT_NAME failed"
    as_root systemctl restart "$SERVE_UNIT_NAME" </dev/null || true
  else
    stop_direct "$ROOT/$SERVE_PID"
    start_direct "$ROOT/current/$SERVE_UNIT_NAME" "$ROOT/$SERVE_PID" "$ROOT/$SERVE_LOG"
  fi
  uri=$(proxy_uri) || uri=""
  deadline=$((SECONDS + HEALTH_TIMEOUT))
  while :; do
    if ! proxy_alive; then
      sleep 1
      if ! proxy_alive; then
        fact proxy down
        warn "the Wyoming wake proxy exited; its last log lines: $(proxy_log_tail | tr '\n' ' ')"
        return 0
      fi
    fi
    if [ -n "$uri" ] && uri_answers "$uri"; then
      fact proxy up
      fact proxy_uri "$uri"
      say "Wyoming wake proxy listening on $uri, forwarding to $up"
      return 0
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      fact proxy down
      warn "the Wyoming wake proxy does not answer on ${uri:-its listen address} within $HEALTH_TIMEOUT s; its last log lines: $(proxy_log_tail | tr '\n' ' ')"
      return 0
    fi
    sleep 0.5
  done
}

serve_unit_follow() {
  # The proxy runs when an upstream was given (flash --proxy) and follows every release.
  # Without one, a unit the user enabled by hand is restarted; otherwise it stays off.
  [ -f "$ROOT/current/$SERVE_UNIT_NAME" ] || return 0
  local up
  if up=$(proxy_upstream); then
    proxy_start "$up"
    return 0
  fi
  if [ "$PROXY" = off ]; then
    proxy_stop
    fact proxy off
    return 0
  fi
  if [ "$SERVICE_MODE" = direct ] && [ -f "$ROOT/$SERVE_PID" ]; then
    proxy_stop # left over from an upstream that is gone
  fi
  if [ "$SERVICE_MODE" = systemd ] && as_root systemctl is-enabled --quiet "$SERVE_UNIT_NAME" </dev/null 2>/dev/null; then
    as_root systemctl daemon-reload </dev/null || true
    if as_root systemctl restart "$SERVE_UNIT_NAME" </dev/null; then
      say "$SERVE_UNIT_NAME restarted on the new release"
    else
      warn "$SERVE_UNIT_NAME did not restart on the new release: journalctl -u $SERVE_UNIT_NAME"
    fi
  else
    fact proxy off
    say "Wyoming wake proxy: $ROOT/current/$SERVE_UNIT_NAME is ready, not enabled (to run it in front of your wake-word service: wakeguard flash --proxy tcp://HOST:PORT)"
  fi
}

activate() {
  # $1 release name (already unpacked, installed, rendered): preflight, switch, restart, check
  local name=$1 rel=$ROOT/releases/$1 prev
  if ! screen_clip "$rel"; then
    rm -rf "$rel"
    die "the new release failed its health check before going live, nothing changed: $HEALTH_REASON"
  fi
  if ! validate_unit "$rel"; then
    rm -rf "$rel"
    die "systemd-analyze verify rejects a unit of the release (above), nothing changed"
  fi
  prev=$(current_name)
  resolve_service_mode
  ACTIVATING=$name
  ACTIVATING_PREV=$prev
  switch_to "$name"
  say "current -> releases/$name"
  restart_service
  if health_wait screened; then
    ACTIVATING=""
    fact release "$name"
    [ -n "$prev" ] && fact previous "$prev"
    prune
    say "release $name is live and healthy"
    serve_unit_follow
    return 0
  fi
  local reason=$HEALTH_REASON
  ACTIVATING=""
  printf '!! health check failed: %s\n' "$reason"
  if [ -n "$prev" ] && [ -d "$ROOT/releases/$prev" ]; then
    switch_to "$prev"
    say "rolled back: current -> releases/$prev"
    restart_service
    if health_wait; then
      say "previous release $prev is running again"
    else
      warn "the previous release $prev is not healthy either: $HEALTH_REASON"
    fi
    fact release "$prev"
  else
    if [ "$SERVICE_MODE" = systemd ]; then as_root systemctl stop "$UNIT_NAME" </dev/null || true; else stop_direct; fi
    rm -f "$ROOT/current"
    say "no previous release to roll back to: service stopped"
  fi
  rm -rf "$rel"
  fact rolled_back "$name"
  if [ -n "$prev" ]; then
    die "release $name failed its health check and was rolled back to $prev: $reason"
  fi
  die "release $name failed its health check and was removed (there was no previous release): $reason"
}

# ---------------------------------------------------------------- commands

unpack() {
  # $1 tarball, $2 destination (created)
  mkdir -p "$2"
  tar -xzf "$1" -C "$2" --strip-components=1 --no-same-owner </dev/null 2>&1 || {
    rm -rf "$2"
    die "cannot unpack $1 (truncated or not a .tar.gz?)"
  }
}

cmd_install() {
  prepare_root
  local tmp=$ROOT/releases/.incoming-$$
  rm -rf "$tmp"
  if [ -n "$TARBALL" ]; then
    [ -f "$TARBALL" ] || die "no bundle at $TARBALL"
    PY=$(find_python)
    [ -n "$PY" ] || die "python3 not found on the target"
    say "unpacking $(basename "$TARBALL")"
    unpack "$TARBALL" "$tmp"
  else
    [ -n "$SRC_DIR" ] || SRC_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    [ -f "$SRC_DIR/manifest.json" ] || die "no bundle: pass --tarball FILE or run install.sh from an unpacked bundle"
    mkdir -p "$tmp"
    cp -a "$SRC_DIR/." "$tmp/"
  fi
  PY=$(find_python "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("python",""))' "$tmp/manifest.json" </dev/null 2>/dev/null || true)")
  [ -n "$PY" ] || die "python3 not found on the target"
  local n
  n=$(verify_tree "$tmp" full 2>&1) || {
    rm -rf "$tmp"
    die "$n"
  }
  say "checksums of $n files verified"
  local version platform pyver arch have_py
  version=$(manifest_get "$tmp/manifest.json" version)
  platform=$(manifest_get "$tmp/manifest.json" platform)
  pyver=$(manifest_get "$tmp/manifest.json" python)
  arch=$(uname -m)
  if [ "$platform" != "linux_$arch" ]; then
    rm -rf "$tmp"
    die "bundle is for $platform, this target is linux_$arch"
  fi
  have_py=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])' </dev/null)
  if [ "$have_py" != "$pyver" ]; then
    rm -rf "$tmp"
    die "bundle is for Python $pyver, the target's $PY is $have_py"
  fi
  local name rel
  name=$(new_release_name "$version")
  rel=$ROOT/releases/$name
  mv "$tmp" "$rel"
  say "creating the release's venv ($PY, Python $have_py)"
  if ! "$PY" -m venv "$rel/venv" </dev/null >"$rel/install.log" 2>&1; then
    local why
    why=$(tail -n 3 "$rel/install.log" | tr '\n' ' ')
    rm -rf "$rel"
    die "cannot create a venv with $PY (is python3-venv installed?): $why"
  fi
  say "installing wakeguard $version and its dependencies from the bundle's wheels (no network)"
  if ! PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 "$rel/venv/bin/python" -m pip install \
    --no-index --find-links "$rel/wheels" "wakeguard[edge]==$version" </dev/null >>"$rel/install.log" 2>&1; then
    local why
    why=$(awk '/^(ERROR|error)/ && n < 3 { printf "%s ", $0; n++ }' "$rel/install.log")
    rm -rf "$rel"
    die "pip could not install from the bundle's wheels: ${why:-see pip output}"
  fi
  rm -rf "$rel/wheels"
  write_release_json "$rel" full "$name" "$(model_version_of "$rel")"
  render_unit "$rel"
  set_proxy
  proxy_render "$rel"
  activate "$name"
}

cmd_model() {
  prepare_root
  PY=$(find_python)
  [ -n "$PY" ] || die "python3 not found on the target"
  local cur
  cur=$(current_name)
  [ -n "$cur" ] || die "no current release under $ROOT: install a full bundle first"
  [ -f "$TARBALL" ] || die "no model bundle at $TARBALL"
  local tmp=$ROOT/releases/.incoming-$$
  rm -rf "$tmp"
  unpack "$TARBALL" "$tmp"
  local n
  n=$(verify_tree "$tmp" model 2>&1) || {
    rm -rf "$tmp"
    die "$n"
  }
  say "checksums of $n files verified"
  local currel=$ROOT/releases/$cur owner version name rel
  owner=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("venv_owner") or sys.argv[2])' "$currel/release.json" "$cur" </dev/null)
  version=$(manifest_get "$currel/manifest.json" version)
  name=$(new_release_name "$version")
  rel=$ROOT/releases/$name
  mkdir -p "$rel"
  cp -a "$currel/wakeguard.toml" "$currel/wakeguard.service" "$currel/manifest.json" "$rel/" 2>/dev/null || true
  [ -f "$currel/$SERVE_UNIT_NAME" ] && cp -a "$currel/$SERVE_UNIT_NAME" "$rel/"
  ln -s "../$owner/venv" "$rel/venv"
  if [ -n "$METRICS_PORT" ]; then
    case $METRICS_PORT in *[!0-9]*) die "metrics port must be a number, got $METRICS_PORT" ;; esac
    sed -i -E "/^ExecStart=/ s/--metrics-port [0-9]+/--metrics-port $METRICS_PORT/" "$rel/wakeguard.service"
  fi
  mv "$tmp/model" "$rel/model"
  cp "$tmp/manifest.json" "$rel/model-update.json"
  rm -rf "$tmp"
  write_release_json "$rel" model "$owner" "$(model_version_of "$rel")"
  say "release $name: runtime of $owner, model $(model_version_of "$rel")"
  set_proxy
  proxy_render "$rel"
  activate "$name"
}

cmd_rollback() {
  prepare_root
  PY=$(find_python)
  [ -n "$PY" ] || die "python3 not found on the target"
  local cur prev="" names n
  cur=$(current_name)
  [ -n "$cur" ] || die "no current release under $ROOT: nothing to roll back"
  mapfile -t names < <(releases_oldest_first)
  for n in "${names[@]}"; do
    [ "$n" = "$cur" ] && break
    prev=$n
  done
  [ -n "$prev" ] || die "no release older than $cur under $ROOT/releases: nothing to roll back to"
  set_proxy
  proxy_render "$ROOT/releases/$prev"
  resolve_service_mode
  ACTIVATING=$prev
  ACTIVATING_PREV=$cur
  ACTIVATING_DISCARD=no
  switch_to "$prev"
  say "rolled back: current -> releases/$prev (was $cur)"
  restart_service
  ACTIVATING=""
  if health_wait; then
    fact release "$prev"
    fact previous "$cur"
    say "release $prev is live and healthy"
    serve_unit_follow
  else
    local reason=$HEALTH_REASON
    switch_to "$cur"
    restart_service
    health_wait || true
    fact release "$cur"
    die "release $prev is not healthy ($reason): switched back to $cur"
  fi
}

cmd_status() {
  check_root_path
  PY=$(find_python)
  [ -n "$PY" ] || die "python3 not found on the target"
  local cur n
  cur=$(current_name)
  fact current "${cur:-}"
  fact proxy_upstream "$(proxy_upstream || true)"
  if [ -d "$ROOT/releases" ]; then
    while IFS= read -r n; do fact releases "$n"; done < <(releases_oldest_first)
  fi
}

main() {
  local cmd=${1:-help}
  shift || true
  while [ $# -gt 0 ]; do
    case $1 in
      --root) ROOT=$2; shift 2 ;;
      --keep) KEEP=$2; shift 2 ;;
      --tarball) TARBALL=$2; shift 2 ;;
      --dir) SRC_DIR=$2; shift 2 ;;
      --service) SERVICE=$2; shift 2 ;;
      --health-timeout) HEALTH_TIMEOUT=$2; shift 2 ;;
      --metrics-port) METRICS_PORT=$2; shift 2 ;;
      --proxy) PROXY=$2; shift 2 ;;
      *) die "unknown option $1 (see the top of install.sh)" ;;
    esac
  done
  case $KEEP in '' | *[!0-9]* | 0) die "--keep must be a positive whole number, got $KEEP" ;; esac
  case $cmd in
    facts) cmd_facts ;;
    install) cmd_install ;;
    model) cmd_model ;;
    rollback) cmd_rollback ;;
    status) cmd_status ;;
    *)
      sed -n '2,16p' "${BASH_SOURCE[0]}" 2>/dev/null || true
      exit 2
      ;;
  esac
}

# Everything above is definitions: bash has read the whole script before main runs, so
# commands run by main never read the rest of the script when it comes on stdin (ssh ... bash -s).
main "$@"
