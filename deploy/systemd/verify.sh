#!/usr/bin/env bash
# Checks deploy/systemd offline and exits non-zero on any problem. Everything happens in a scratch
# root (a temporary directory), never in this machine's /etc.
#   1. systemd-sysusers applies jobserv-sysusers.conf to the scratch root; every User=, Group= and
#      SupplementaryGroups= of the units must then exist there, and each user's home must be its
#      unit's state directory.
#   2. systemd-analyze verify --root on both units, installed in the scratch root's
#      /etc/systemd/system next to this machine's *.target units, with placeholder executables at
#      their Exec*= paths (verify fails on a missing command, so the paths are checked as well).
#      verify exits 0 after warning about an unknown key or a value it cannot parse: here any
#      diagnostic that names one of our units is a failure.
#   3. systemd-analyze security --offline: each unit's exposure score must stay at or below
#      MAX_EXPOSURE (0-100; systemd prints it divided by 10), so that the hardening cannot silently go.
#   4. node.toml is TOML with the keys the node requires and data_dir = the node unit's state
#      directory; worker.env sets JOBSERV_SERVER (https URLs) and JOBSERV_WORKER_NAME.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
units=(jobserv-node.service jobserv-worker.service)
max_exposure="${MAX_EXPOSURE:-20}"

for tool in systemd-analyze systemd-sysusers; do
  command -v "$tool" >/dev/null || { echo "FAIL $tool is not installed (Debian: apt-get install systemd)"; exit 2; }
done
echo "== $(systemd-analyze --version | head -1)"

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
failed=0
fail() { echo "FAIL $*"; failed=1; }
ok() { echo "ok   $*"; }

# The value of KEY= in a unit (last one wins, as in systemd; empty if unset).
unit_value() { sed -n "s/^$2=//p" "$here/$1" | tail -1; }

echo "== sysusers"
mkdir -p "$root/etc"
if out="$(systemd-sysusers --root="$root" "$here/jobserv-sysusers.conf" 2>&1)"; then
  ok "jobserv-sysusers.conf applies: $(grep -c '^Creating' <<<"$out") users and groups created"
else
  fail "systemd-sysusers jobserv-sysusers.conf:"; sed 's/^/     /' <<<"$out"
fi
for unit in "${units[@]}"; do
  user="$(unit_value "$unit" User)"
  group="$(unit_value "$unit" Group)"
  state="$(unit_value "$unit" StateDirectory)"
  entry="$(grep "^$user:" "$root/etc/passwd" || true)"
  if [ -z "$user" ] || [ -z "$entry" ]; then
    fail "$unit: User=$user is not created by jobserv-sysusers.conf"
  elif [ "$(cut -d: -f6 <<<"$entry")" != "/var/lib/$state" ]; then
    fail "$unit: $user's home $(cut -d: -f6 <<<"$entry") is not its StateDirectory /var/lib/$state"
  else
    ok "$unit: runs as $user, home /var/lib/$state"
  fi
  for g in $group $(unit_value "$unit" SupplementaryGroups); do
    members="$(grep "^$g:" "$root/etc/group" | cut -d: -f4)" || { fail "$unit: group $g is not created"; continue; }
    if [ "$g" != "$group" ] && ! tr ',' '\n' <<<"$members" | grep -qx "$user"; then
      fail "$unit: $user is not a member of its supplementary group $g"
    else
      ok "$unit: group $g"
    fi
  done
done

echo "== verify"
mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd/system"
# The targets the units' default dependencies name (sysinit.target, multi-user.target, ...).
for dir in /usr/lib/systemd/system /lib/systemd/system; do
  [ -d "$dir" ] && cp -a "$dir"/*.target "$root/usr/lib/systemd/system/" 2>/dev/null && break
done
for unit in "${units[@]}"; do
  cp "$here/$unit" "$root/etc/systemd/system/"
  # Exec*= lines: strip systemd's prefixes (@-:+!|), keep the command.
  while read -r cmd; do
    case "$cmd" in
      /*) mkdir -p "$root$(dirname "$cmd")"
          printf '#!/bin/sh\nexit 0\n' >"$root$cmd"; chmod 755 "$root$cmd" ;;
      *) fail "$unit: $cmd: give the command as an absolute path" ;;
    esac
  done < <(sed -n 's/^Exec[A-Za-z]*=[-@:+!|]*\([^ ]*\).*/\1/p' "$here/$unit")
done
rc=0
out="$(systemd-analyze verify --root="$root" --man=no --recursive-errors=no "${units[@]}" 2>&1)" || rc=$?
pattern="$(IFS='|'; echo "${units[*]}")"
ours="$(grep -E "$pattern" <<<"$out" || true)"
others="$(grep -Ev "$pattern" <<<"$out" || true)"
if [ "$rc" -ne 0 ] || [ -n "$ours" ]; then
  fail "systemd-analyze verify (exit $rc):"; sed 's/^/     /' <<<"$out"
else
  ok "systemd-analyze verify ${units[*]}: no diagnostics"
  [ -n "$others" ] && sed 's/^/note (not our units) /' <<<"$others"
fi

shown_max="$(awk -v m="$max_exposure" 'BEGIN { printf "%.1f", m / 10 }')"
echo "== security (exposure at most $shown_max)"
for unit in "${units[@]}"; do
  rc=0
  out="$(systemd-analyze security --offline=true --root="$root" --no-pager --threshold="$max_exposure" "$unit" 2>&1)" || rc=$?
  level="$(grep 'Overall exposure level' <<<"$out" | sed 's/.*: \([0-9.]*\).*/\1/')"
  if [ "$rc" -ne 0 ] || [ -z "$level" ]; then
    fail "$unit: exposure ${level:-unknown} is above $shown_max (or the review failed, exit $rc)"
    grep -v '^✓' <<<"$out" | sed 's/^/     /' | tail -40
  else
    ok "$unit: exposure $level"
  fi
done

echo "== examples"
node_state="/var/lib/$(unit_value jobserv-node.service StateDirectory)"
if command -v python3 >/dev/null && python3 -c 'import tomllib' 2>/dev/null; then
  if out="$(python3 - "$here/node.toml" "$node_state" <<'EOF' 2>&1
import sys, tomllib
path, state = sys.argv[1], sys.argv[2]
with open(path, "rb") as f:
    c = tomllib.load(f)
problems = [f"{k} is missing" for k in
            ("id", "data_dir", "listen", "advertise_url", "tls_cert", "tls_key", "ca_cert") if k not in c]
if "cluster_secret" not in c and "cluster_secret_file" not in c:
    problems.append("neither cluster_secret nor cluster_secret_file is set")
if not isinstance(c.get("id"), int):
    problems.append("id is not an integer")
if c.get("data_dir") != state:
    problems.append(f"data_dir {c.get('data_dir')!r} is not the unit's state directory {state}")
peers = c.get("peers", [])
if not all(isinstance(p, dict) and isinstance(p.get("id"), int) and isinstance(p.get("url"), str)
           for p in peers):
    problems.append("peers is not a list of {id, url}")
elif c.get("advertise_url") not in [p["url"] for p in peers if p["id"] == c.get("id")]:
    problems.append("advertise_url is not this id's entry in peers")
print("; ".join(problems) or f"node {c['id']} of {len(peers)}, {c['advertise_url']}")
sys.exit(1 if problems else 0)
EOF
  )"; then
    ok "node.toml: $out"
  else
    fail "node.toml: $out"
  fi
else
  echo "skip node.toml (needs python3 >= 3.11 for tomllib)"
fi
grep -q -- "--config /etc/jobserv/node.toml" "$here/jobserv-node.service" ||
  fail "jobserv-node.service does not read /etc/jobserv/node.toml, which node.toml documents"

env_value() { sed -n "s/^$1=//p" "$here/worker.env" | tail -1; }
server="$(env_value JOBSERV_SERVER)"
name="$(env_value JOBSERV_WORKER_NAME)"
bad_urls="$(tr ',' '\n' <<<"$server" | grep -v '^https://[^/]*:[0-9]*$' || true)"
if [ -z "$server" ] || [ -z "$name" ]; then
  fail "worker.env: JOBSERV_SERVER and JOBSERV_WORKER_NAME must both be set"
elif [ -n "$bad_urls" ]; then
  fail "worker.env: JOBSERV_SERVER entries that are not https://host:port: $bad_urls"
else
  ok "worker.env: $name -> $server"
fi
grep -q "^EnvironmentFile=/etc/jobserv/worker.env$" "$here/jobserv-worker.service" ||
  fail "jobserv-worker.service does not read /etc/jobserv/worker.env, which worker.env documents"

if [ "$failed" -ne 0 ]; then
  echo "deploy/systemd: INVALID"
  exit 1
fi
echo "deploy/systemd: ${#units[@]} units verified"
