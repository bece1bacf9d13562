"""Checks between the objects of deploy/k8s that a JSON schema cannot see, run by validate.sh.

A schema checks each object alone; the API server would accept a Service whose named targetPort no
container has (it just gets no endpoints) and a pod whose entrypoint builds a broken peers list. So:
  - kustomization.yaml lists exactly the manifests in the folder;
  - selectors (Services, the PDB, the StatefulSet's own) match the pod template's labels, the governing
    Service exists and is headless, named ports and volume names resolve;
  - the StatefulSet's `sh -c` entrypoint is run, once per pod, with a stand-in `jobserv-node` on PATH,
    and the configuration it would start with (the ConfigMap's node.toml plus the JOBSERV_<KEY>
    overrides, merged as node/src/config.rs does) is checked: ids 1..replicas, peers, advertise_url,
    every file it names is mounted, data_dir is on the persistent volume. With a namespace other than
    the one PEER_DOMAIN names, the entrypoint must refuse to start.

Usage: crosscheck.py KUSTOMIZATION MANIFEST...   (needs PyYAML and Python >= 3.11 for tomllib)
"""
import os
import subprocess
import sys
import tempfile
import tomllib

import yaml

REQUIRED_KEYS = ["id", "data_dir", "listen", "advertise_url", "tls_cert", "tls_key", "ca_cert"]
FILE_KEYS = ["tls_cert", "tls_key", "ca_cert", "cluster_secret_file", "admin_token_file"]

errors = []


def fail(message):
    errors.append(message)


def load(paths):
    docs = []
    for path in paths:
        with open(path) as f:
            docs += [(path, d) for d in yaml.safe_load_all(f) if d]
    return docs


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_kustomization(kustomization, manifests):
    with open(kustomization) as f:
        spec = yaml.safe_load(f) or {}
    listed = set(spec.get("resources", []))
    present = {os.path.basename(m) for m in manifests}
    for name in sorted(present - listed):
        fail(f"{kustomization}: resources does not list {name}")
    for name in sorted(listed - present):
        fail(f"{kustomization}: lists {name}, which is not validated here")
    return spec.get("namespace", "default")


def files_under_mounts(container, volumes):
    """mount path -> the file names the volume provides there (None: any, e.g. a volume claim)."""
    provided = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"])
        if volume is None:
            fail(f"container {container['name']}: volumeMount {mount['name']} names no volume")
            continue
        if "secret" in volume:
            items = volume["secret"].get("items")
            provided[mount["mountPath"]] = {i["path"] for i in items} if items else None
        elif "configMap" in volume:
            provided[mount["mountPath"]] = ("configMap", volume["configMap"]["name"])
        else:
            provided[mount["mountPath"]] = None
    return provided


def shell_command(container):
    """The container's `/bin/sh -c SCRIPT` command, without the image's init (`tini --`) before it."""
    command = container.get("command", []) + container.get("args", [])
    if command[:2] == ["tini", "--"]:
        command = command[2:]
    return command if command[:2] == ["/bin/sh", "-c"] else None


def run_entrypoint(container, hostname, namespace, workdir):
    """Runs the container's `sh -c` script with a stand-in jobserv-node; returns (rc, env, argv, stderr)."""
    stub_dir = os.path.join(workdir, "bin")
    os.makedirs(stub_dir, exist_ok=True)
    out = os.path.join(workdir, "exec.out")
    stub = os.path.join(stub_dir, "jobserv-node")
    with open(stub, "w") as f:
        f.write(f'#!/bin/sh\n{{ printf "%s\\n" "$@"; echo --env--; env; }} > "{out}"\n')
    os.chmod(stub, 0o755)
    env = {"PATH": f"{stub_dir}:/usr/bin:/bin", "HOSTNAME": hostname}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
        elif var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            env[var["name"]] = namespace
        elif var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[var["name"]] = hostname
        else:
            fail(f"container {container['name']}: env {var['name']}: crosscheck.py cannot stand in for it")
    if os.path.exists(out):
        os.remove(out)
    proc = subprocess.run(shell_command(container), env=env,
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0 or not os.path.exists(out):
        return proc.returncode or 1, {}, [], proc.stderr.strip()
    text = open(out).read()
    argv, _, env_text = text.partition("--env--\n")
    run_env = dict(line.split("=", 1) for line in env_text.splitlines() if "=" in line)
    return 0, run_env, argv.splitlines(), proc.stderr.strip()


def env_overrides(table, run_env):
    """node/src/config.rs apply_env_overrides: a TOML value when `v = <raw>` parses, else the string."""
    for var, raw in run_env.items():
        if not var.startswith("JOBSERV_"):
            continue
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        table[var[len("JOBSERV_"):].lower()] = value
    return table


def check_node_config(where, config, ordinal, replicas, provided, claim_mounts):
    for key in REQUIRED_KEYS:
        if key not in config:
            fail(f"{where}: {key} is set neither in node.toml nor by the entrypoint")
    if "cluster_secret" not in config and "cluster_secret_file" not in config:
        fail(f"{where}: neither cluster_secret nor cluster_secret_file is set")
    if config.get("id") != ordinal + 1:
        fail(f"{where}: id is {config.get('id')!r}, expected {ordinal + 1}")
    peers = config.get("peers")
    if not isinstance(peers, list) or not all(
            isinstance(p, dict) and isinstance(p.get("id"), int) and isinstance(p.get("url"), str)
            for p in peers):
        fail(f"{where}: peers is not a list of {{id, url}}: {peers!r}")
    else:
        ids = sorted(p["id"] for p in peers)
        if ids != list(range(1, replicas + 1)):
            fail(f"{where}: peer ids {ids}, expected 1..{replicas}")
        own = [p["url"] for p in peers if p["id"] == config.get("id")]
        if own != [config.get("advertise_url")]:
            fail(f"{where}: advertise_url {config.get('advertise_url')!r} is not its peers entry {own!r}")
    for key in FILE_KEYS:
        path = config.get(key)
        if path is None:
            continue
        directory, name = os.path.split(path)
        files = provided.get(directory, "unmounted")
        if files == "unmounted":
            fail(f"{where}: {key} = {path!r}: nothing is mounted at {directory}")
        elif files is not None and not isinstance(files, tuple) and name not in files:
            fail(f"{where}: {key} = {path!r}: the volume at {directory} has no item {name}")
    if config.get("data_dir") not in claim_mounts:
        fail(f"{where}: data_dir {config.get('data_dir')!r} is not on a volumeClaimTemplate")


def check_statefulset(path, sts, docs, namespace):
    name = sts["metadata"]["name"]
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"].get("labels", {})
    if not matches(spec["selector"].get("matchLabels"), labels):
        fail(f"{path}: statefulset/{name}: selector does not match the pod template's labels")
    services = {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "Service"}
    governing = services.get(spec.get("serviceName"))
    if governing is None or governing["spec"].get("clusterIP") != "None":
        fail(f"{path}: statefulset/{name}: serviceName {spec.get('serviceName')!r} is no headless Service here")
    configmaps = {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "ConfigMap"}
    claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    volumes.update({c: {"persistentVolumeClaim": {}} for c in claims})
    for volume in volumes.values():
        cm = volume.get("configMap", {}).get("name")
        if cm and cm not in configmaps:
            fail(f"{path}: statefulset/{name}: volume {volume['name']} names ConfigMap {cm}, not defined here")
    replicas = spec.get("replicas", 1)
    for container in pod["containers"]:
        port_names = {p.get("name") for p in container.get("ports", [])}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            port = container.get(probe, {}).get("httpGet", {}).get("port")
            if isinstance(port, str) and port not in port_names:
                fail(f"{path}: container {container['name']}: {probe} port {port} is not a container port")
        provided = files_under_mounts(container, volumes)
        claim_mounts = {m["mountPath"] for m in container.get("volumeMounts", []) if m["name"] in claims}
        if shell_command(container) is None:
            continue
        with tempfile.TemporaryDirectory() as work:
            for ordinal in range(replicas):
                where = f"{path}: pod {name}-{ordinal}"
                rc, run_env, argv, stderr = run_entrypoint(container, f"{name}-{ordinal}", namespace, work)
                if rc != 0:
                    fail(f"{where}: the entrypoint exited {rc}: {stderr}")
                    continue
                if "--config" not in argv[:-1]:
                    fail(f"{where}: jobserv-node was started without --config: {argv}")
                    continue
                directory, key = os.path.split(argv[argv.index("--config") + 1])
                source = provided.get(directory)
                if not isinstance(source, tuple) or key not in configmaps[source[1]].get("data", {}):
                    fail(f"{where}: --config {directory}/{key} is not a key of a mounted ConfigMap")
                    continue
                table = tomllib.loads(configmaps[source[1]]["data"][key])
                check_node_config(where, env_overrides(table, run_env), ordinal, replicas, provided,
                                  claim_mounts)
                print(f"ok   {where}: starts as node {run_env.get('JOBSERV_ID')}, {run_env.get('JOBSERV_ADVERTISE_URL')}")
            rc, _, _, _ = run_entrypoint(container, f"{name}-0", namespace + "-elsewhere", work)
            if rc == 0:
                fail(f"{path}: statefulset/{name}: the entrypoint starts in namespace "
                     f"{namespace}-elsewhere, whose pods PEER_DOMAIN does not name")
            else:
                print(f"ok   {path}: statefulset/{name}: refuses to start in another namespace than PEER_DOMAIN's")
    return labels, pod["containers"]


def main():
    try:
        return crosscheck(sys.argv[1], sys.argv[2:])
    except (KeyError, TypeError, ValueError, AttributeError, yaml.YAMLError, tomllib.TOMLDecodeError) as e:
        # Objects the schemas reject (a string where a number goes, a missing field) end here.
        print(f"FAIL cross-checks could not read the manifests: {type(e).__name__}: {e}")
        return 1


def crosscheck(kustomization, manifests):
    namespace = check_kustomization(kustomization, manifests)
    docs = load(manifests)
    templates = [check_statefulset(p, d, docs, namespace) for p, d in docs if d["kind"] == "StatefulSet"]
    for path, doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind == "Service":
            selector = doc["spec"].get("selector")
            pods = [(labels, containers) for labels, containers in templates if matches(selector, labels)]
            if not pods:
                fail(f"{path}: service/{name}: selector {selector} matches no pod template")
            for port in doc["spec"]["ports"]:
                target = port.get("targetPort")
                protocol = port.get("protocol", "TCP")
                if isinstance(target, str) and not any(
                        p.get("name") == target and p.get("protocol", "TCP") == protocol
                        for _, containers in pods for c in containers for p in c.get("ports", [])):
                    fail(f"{path}: service/{name}: targetPort {target}/{protocol} is no container port")
        elif kind == "PodDisruptionBudget":
            selector = doc["spec"].get("selector", {}).get("matchLabels")
            if not any(matches(selector, labels) for labels, _ in templates):
                fail(f"{path}: poddisruptionbudget/{name}: selector matches no pod template")
    for message in errors:
        print(f"FAIL {message}")
    print(f"cross-checks: {len(docs)} objects, {len(errors)} problems")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
