"""The runner package jobserv-node serves to JobServ's Python worker (jobserv_worker.py).

That worker downloads the rundef's `runner_url` as a wheel, imports
`jobserv_runner.handlers.<trigger_type>` and calls `handler.execute(worker_dir, run_dir, rundef)`.
Every trigger type's module is this handler: it downloads the node's Rust runner (`GET /runner`),
checks it against the sha256 the node wrote into this file, and lets it execute the run exactly as
jobserv-worker would (console with offsets, status, tests, artifacts, masked secrets).
Written for jobserv-node; not JobServ's own runner.
"""
import hashlib
import json
import os
import subprocess
import urllib.parse

import requests

RUNNER_SHA256 = "@RUNNER_SHA256@"


class RebootAndContinue(Exception):
    """Part of the handler interface jobserv_worker.py expects; the Rust runner never asks for a reboot."""

    def __init__(self, cold=False):
        super().__init__("reboot requested")
        self.cold = cold


def _node_base(rundef):
    url = urllib.parse.urlparse(rundef["runner_url"])
    return "%s://%s" % (url.scheme, url.netloc)


def _runner_path(worker_dir):
    """One verified copy per runner version, shared by the worker's runs."""
    return os.path.join(worker_dir, "jobserv-runner-" + RUNNER_SHA256[:16])


def _fetch_runner(base, dest):
    url = base + "/runner"
    r = requests.get(url, stream=True, timeout=60)
    if r.status_code != 200:
        raise RuntimeError("downloading %s: HTTP %d %s" % (url, r.status_code, r.text[:200]))
    digest = hashlib.sha256()
    part = "%s.%d.part" % (dest, os.getpid())
    with open(part, "wb") as f:
        for chunk in r.iter_content(1 << 20):
            digest.update(chunk)
            f.write(chunk)
    if digest.hexdigest() != RUNNER_SHA256:
        os.unlink(part)
        raise RuntimeError(
            "%s has sha256 %s, the node announced %s" % (url, digest.hexdigest(), RUNNER_SHA256)
        )
    os.chmod(part, 0o755)
    os.rename(part, dest)


class RustRunner(object):
    RebootAndContinue = RebootAndContinue

    @classmethod
    def execute(cls, worker_dir, run_dir, rundef):
        # jobserv_worker.py adds its run lock (an open file) to the rundef.
        rundef = {k: v for k, v in rundef.items() if k != "flock"}
        runner = _runner_path(worker_dir)
        if not os.path.exists(runner):
            _fetch_runner(_node_base(rundef), runner)
        path = os.path.join(run_dir, "rundef.json")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the run key
        with os.fdopen(fd, "w") as f:
            json.dump(rundef, f)
        cmd = [
            runner, "execute", path,
            "--workspace", os.path.join(run_dir, "ws"),
            "--data-dir", worker_dir,
            "--name", rundef.get("env", {}).get("H_WORKER") or "legacy",
        ]
        ca = os.environ.get("REQUESTS_CA_BUNDLE")
        if ca:
            cmd += ["--ca-cert", ca]
        rc = subprocess.call(cmd)
        if rc != 0:
            raise RuntimeError("the runner exited with %d before the run's status was reported" % rc)


handler = RustRunner
