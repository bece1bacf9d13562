#!/usr/bin/python3
# Served by jobserv-node at GET /worker to JobServ's Python workers when the cluster has
# legacy_worker_upgrade = true. jobserv_worker.py replaces itself with this file when the check-in's
# "version" differs from its own; from then on every "check" (or "loop") hands the host over to
# jobserv-worker under the same name, key, host tags and concurrency: it waits until no run of the old
# worker holds a run lock, installs the node's jobserv-worker (verified by sha256) next to this file, and
# replaces this process with it. The old loop (systemd's jobserv.service) keeps it running: if
# jobserv-worker ever exits, the next "check" starts it again.
# Written for jobserv-node; not part of JobServ.
import configparser
import fcntl
import hashlib
import os
import sys

import requests

RUNNER_SHA256 = "@RUNNER_SHA256@"

here = os.path.dirname(os.path.abspath(__file__))
config = configparser.ConfigParser()
config.read([os.path.join(here, "settings.conf")])


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _runs_in_progress(count):
    """The old worker's runs hold .run-lock-N (flock) until they end."""
    for n in range(count):
        with open(os.path.join(here, ".run-lock-%d" % n), "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(f, fcntl.LOCK_UN)
            except BlockingIOError:
                return True
    return False


def _install(server_url):
    dest = os.path.join(here, "jobserv-worker")
    if os.path.exists(dest) and _sha256(dest) == RUNNER_SHA256:
        return dest
    url = server_url.rstrip("/") + "/runner"
    r = requests.get(url, stream=True, timeout=60)
    if r.status_code != 200:
        sys.exit("downloading %s: HTTP %d %s" % (url, r.status_code, r.text[:200]))
    part = dest + ".part"
    digest = hashlib.sha256()
    with open(part, "wb") as f:
        for chunk in r.iter_content(1 << 20):
            digest.update(chunk)
            f.write(chunk)
    if digest.hexdigest() != RUNNER_SHA256:
        os.unlink(part)
        sys.exit("%s has sha256 %s, the node announced %s" % (url, digest.hexdigest(), RUNNER_SHA256))
    os.chmod(part, 0o755)
    os.rename(part, dest)
    return dest


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd not in ("check", "loop"):
        sys.exit("this host was handed over to jobserv-worker; %r is not available any more" % cmd)
    js = config["jobserv"]
    key = js.get("host_api_key", "")
    if not key:
        sys.exit("a worker registered with a JWT cannot be handed over: register jobserv-worker by hand")
    concurrency = int(js.get("concurrent_runs", "1"))
    if _runs_in_progress(concurrency):
        print("runs of the old worker are in progress: handing over when they end")
        return
    binary = _install(js["server_url"])
    data = os.path.join(here, "jobserv-worker-data")
    os.makedirs(data, exist_ok=True)
    key_file = os.path.join(data, "worker.key")
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key)
    args = [
        binary, "run",
        "--server", js["server_url"].rstrip("/"),
        "--name", js["hostname"],
        "--concurrency", str(concurrency),
        "--data-dir", data,
    ]
    for tag in js.get("host_tags", "").split(","):
        if tag.strip():
            args += ["--host-tag", tag.strip()]
    if js.get("surges_only", "0") not in ("0", "", "False", "false"):
        args.append("--surges-only")
    ca = os.environ.get("REQUESTS_CA_BUNDLE")
    if ca:
        args += ["--ca-cert", ca]
    print("handing over to", " ".join(args), flush=True)
    os.execv(binary, args)


if __name__ == "__main__":
    main()
