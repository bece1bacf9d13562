#!/usr/bin/env bash
# Validates deploy/k8s offline, exits non-zero if anything is wrong:
#   1. every manifest (and, where kubectl is installed, the kustomize output) against the Kubernetes
#      JSON schemas shipped inside the PyPI package kubernetes-validate, strictly (an unknown field is an
#      error) and for two Kubernetes versions; a kind it has no schema for is an error too (the tool
#      itself only warns);
#   2. crosscheck.py: what no schema sees (selectors, named ports, mounts, the entrypoint's config).
# The validator comes from a venv in target/k8s-venv (made on first use), or from KUBE_VALIDATE, an
# existing kubernetes-validate executable (step 2 then runs with python3, which needs PyYAML).
# KUBE_VERSIONS overrides the Kubernetes versions checked.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
pinned=1.37.0                                   # kubernetes-validate; its newest schemas are 1.37's
# The oldest Kubernetes these manifests target, and the newest.
read -r -a kube_versions <<<"${KUBE_VERSIONS:-1.27.0 1.37.0}"

if [ -n "${KUBE_VALIDATE:-}" ]; then
  if [ ! -f "$KUBE_VALIDATE" ] || [ ! -x "$KUBE_VALIDATE" ]; then
    echo "KUBE_VALIDATE=$KUBE_VALIDATE is not an executable file" >&2
    exit 2
  fi
  validate="$KUBE_VALIDATE"
  python=python3
else
  venv="$repo/target/k8s-venv"
  if [ "$("$venv/bin/kubernetes-validate" --version 2>/dev/null)" != "$pinned" ]; then
    echo "== installing kubernetes-validate==$pinned into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$pinned"
  fi
  validate="$venv/bin/kubernetes-validate"
  python="$venv/bin/python"
fi
echo "== $validate $("$validate" --version), Kubernetes ${kube_versions[*]}"

# Paths relative to the repository in what it prints.
cd "$repo"
dir="${here#"$repo/"}"
manifests=()
for f in "$dir"/*.yaml; do
  [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
done

failed=0
version_args=()
for v in "${kube_versions[@]}"; do version_args+=(-k "$v"); done

# Runs the validator on one file; every line it prints must be a pass (INFO), and there must be one.
schema_check() {
  local file="$1" label="$2" out rc=0
  out="$("$validate" --strict "${version_args[@]}" "$file" 2>&1)" || rc=$?
  local passed bad
  passed="$(grep -c '^INFO .* passed for resource' <<<"$out" || true)"
  bad="$(grep -v '^INFO .* passed for resource' <<<"$out" || true)"
  if [ "$rc" -ne 0 ] || [ -n "$bad" ] || [ "$passed" -eq 0 ]; then
    echo "FAIL $label (exit $rc)"
    [ -n "$bad" ] && sed 's/^/     /' <<<"$bad"
    [ "$passed" -eq 0 ] && [ -z "$bad" ] && echo "     no resource in it"
    failed=1
  else
    # One line per object: its kind/name and the versions it passed for.
    sed -n 's/^INFO .* passed for resource \([^ ]*\) against version \(.*\)$/\1 \2/p' <<<"$out" |
      awk -v f="$label" '{v[$1]=v[$1] (v[$1]?",":"") $2} END {for (r in v) printf "ok   %s: %s (%s)\n", f, r, v[r]}' |
      sort
  fi
}

echo "== schemas"
for f in "${manifests[@]}"; do
  schema_check "$f" "$f"
done

if command -v kubectl >/dev/null; then
  rendered="$(mktemp --suffix=.yaml)"
  trap 'rm -f "$rendered"' EXIT
  if kubectl kustomize "$dir" >"$rendered" 2>"$rendered.err"; then
    schema_check "$rendered" "kubectl kustomize $dir"
  else
    echo "FAIL kubectl kustomize $dir:"; sed 's/^/     /' "$rendered.err"; failed=1
  fi
  rm -f "$rendered.err"
else
  echo "skip kubectl kustomize (no kubectl): kustomization.yaml's resources are still checked below"
fi

echo "== cross-checks"
if "$python" -c 'import yaml, tomllib' 2>/dev/null; then
  "$python" "$dir/crosscheck.py" "$dir/kustomization.yaml" "${manifests[@]}" || failed=1
else
  echo "FAIL cross-checks need Python >= 3.11 with PyYAML: $python has not"; failed=1
fi

if [ "$failed" -ne 0 ]; then
  echo "$dir: INVALID"
  exit 1
fi
echo "$dir: ${#manifests[@]} manifests valid"
