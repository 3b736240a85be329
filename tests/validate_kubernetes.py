#!/usr/bin/env python3
"""Validates the Kubernetes manifests offline (no cluster): every document of every YAML file
under deploy/kubernetes/ (or the directory given), one line per object, exit 1 on any failure.

Core kinds go through kubernetes-validate's bundled schemas (strict: unknown fields are errors,
as `kubectl apply` makes them). Custom resources go through the openAPIV3Schema of their CRD in
../shared/schemas/, closed the same way. A kind with no schema here is a failure, so nothing is
skipped silently. Then the cross-checks a schema cannot make: the embedded torchwatch config and
policy files parse, `torchwatch policies check` accepts the policy files, the Deployment mounts
them where the config and its `policies.files` expect them, and each autoscaler's bounds equal
its policy's min_replicas / max_replicas.

Run with the project's .venv: TORCHWATCH=path/to/torchwatch .venv/bin/python
tests/validate_kubernetes.py [DIR]
"""

import fnmatch
import os
import subprocess
import sys
import tempfile
from pathlib import Path, PurePosixPath

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT.parent / "shared" / "schemas"
# The oldest release still commonly run and the newest kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.30", "1.37")
CORE_KINDS = {
    ("v1", "Namespace"),
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
}
CRD_FILES = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_scaledobjects.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.yaml",
    ("monitoring.coreos.com/v1", "PodMonitor"): "monitoring.coreos.com_podmonitors.yaml",
}


def closed(schema):
    """The schema with unknown fields rejected wherever the API server would prune them."""
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: closed(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def crd_validator(api_version, kind):
    crd = yaml.safe_load((SCHEMAS / CRD_FILES[(api_version, kind)]).read_text())
    group, version = api_version.split("/")
    assert crd["spec"]["group"] == group and crd["spec"]["names"]["kind"] == kind
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            # OpenAPI v3.0 schemas are JSON Schema draft 4 in what they use.
            return jsonschema.Draft4Validator(closed(v["schema"]["openAPIV3Schema"]))
    raise LookupError(f"{CRD_FILES[(api_version, kind)]} has no version {version}")


def at(path):
    return ".".join(str(p) for p in path) or "(top level)"


def schema_errors(obj):
    """Errors of one object against its schema; raises LookupError for an unknown kind."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in CORE_KINDS:
        errors = []
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                errors.append(f"Kubernetes {version}: {at(e.path)}: {e.message}")
        return errors, "Kubernetes " + ", ".join(KUBERNETES_VERSIONS) + " (strict)"
    if key in CRD_FILES:
        validator = crd_validator(*key)
        errors = sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.path)))
        return [f"{at(e.path)}: {e.message}" for e in errors], f"CRD {CRD_FILES[key]}"
    raise LookupError(
        f"no schema for apiVersion {key[0]} kind {key[1]}: add one to tests/validate_kubernetes.py"
    )


def cross_checks(objects):
    """(description, error or None) for what spans objects."""
    checks = []

    def check(what, fn):
        try:
            fn()
            checks.append((what, None))
        except Exception as e:  # noqa: BLE001 - every failure is reported, none stops the rest
            message = str(e) if isinstance(e, ValueError) else f"{type(e).__name__} {e}"
            checks.append((what, message))

    by_kind = {}
    for _, obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)
    policies = {}
    policy_files = {}  # "ConfigMap name key" -> text

    def config_maps():
        for cm in by_kind.get("ConfigMap", []):
            for key, text in cm.get("data", {}).items():
                if not key.endswith((".yaml", ".yml")):
                    continue
                where = f"ConfigMap {cm['metadata']['name']} {key}"
                try:
                    doc = yaml.safe_load(text)
                except yaml.YAMLError as e:
                    raise ValueError(f"{where}: {e}") from e
                if not isinstance(doc, dict):
                    raise ValueError(f"{where}: not a mapping")
                for p in doc.get("scale_policies", []):
                    policies[p["name"]] = p
                if "scale_policies" in doc or "cost_policies" in doc:
                    policy_files[where] = text

    check("ConfigMap files parse as YAML", config_maps)

    for dep in by_kind.get("Deployment", []):
        name = dep["metadata"]["name"]

        def mounts(dep=dep):
            pod = dep["spec"]["template"]["spec"]
            cms = {cm["metadata"]["name"]: cm for cm in by_kind.get("ConfigMap", [])}
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            for c in pod["containers"]:
                files = {}  # mounted path -> ConfigMap text
                for m in c.get("volumeMounts", []):
                    source = volumes[m["name"]].get("configMap")
                    if source is None:
                        continue
                    data = cms[source["name"]]["data"]
                    items = source.get("items") or [{"key": k, "path": k} for k in data]
                    for item in items:
                        files[str(PurePosixPath(m["mountPath"]) / item["path"])] = data[item["key"]]
                args = c.get("args", [])
                config_path = args[args.index("--config") + 1]
                if config_path not in files:
                    raise ValueError(f"--config {config_path} is not a mounted ConfigMap file")
                config = yaml.safe_load(files[config_path])
                port = int(config["server"]["listen"].rsplit(":", 1)[1])
                if port not in [p["containerPort"] for p in c.get("ports", [])]:
                    raise ValueError(f"server.listen port {port} is not a containerPort")
                for pattern in config.get("policies", {}).get("files", []):
                    matched = [f for f in files if fnmatch.fnmatch(f, pattern)]
                    if not matched:
                        raise ValueError(f"policies.files {pattern} matches no mounted file")
                    for f in matched:
                        doc = yaml.safe_load(files[f])
                        if not (doc.get("scale_policies") or doc.get("cost_policies")):
                            raise ValueError(f"{f} has no scale_policies or cost_policies")

        check(f"Deployment {name} mounts its config and policy files", mounts)

    def policies_check():
        """torchwatch itself accepts every embedded policy file (given as $TORCHWATCH)."""
        binary = os.environ.get("TORCHWATCH")
        if not binary:
            raise ValueError("set TORCHWATCH to the torchwatch binary to check policy files")
        with tempfile.TemporaryDirectory() as tmp:
            paths = []
            for i, (where, text) in enumerate(sorted(policy_files.items())):
                path = Path(tmp) / f"{i}.yml"
                path.write_text(text)
                paths.append((where, path))
            for where, path in paths:
                done = subprocess.run([binary, "policies", "check", str(path)],
                                      capture_output=True, text=True)
                if done.returncode != 0:
                    raise ValueError(f"{where}: {done.stderr.strip()}")

    check("ConfigMap policy files pass torchwatch policies check", policies_check)

    deployments = {d["metadata"]["name"] for d in by_kind.get("Deployment", [])}

    def bounds(kind, obj, read):
        """read(spec) -> (target, policy name, min, max), or None when no policy is read."""

        def fn():
            found = read(obj["spec"])
            if found is None:
                raise ValueError("reads no torchwatch scale policy")
            target, policy_name, lo, hi = found
            if target not in deployments:
                raise ValueError(f"scaleTargetRef {target} is no Deployment here")
            p = policies.get(policy_name)
            if p is None:
                raise ValueError(f"reads policy {policy_name!r}, which no ConfigMap defines")
            want = (p.get("min_replicas", 1), p["max_replicas"])
            if (lo, hi) != want:
                raise ValueError(f"min/max {lo}/{hi}, policy {policy_name} says {want[0]}/{want[1]}")

        check(f"{kind} {obj['metadata']['name']} bounds equal its policy's", fn)

    def scaled_object(spec):
        for trigger in spec["triggers"]:
            if trigger["type"] == "metrics-api":
                policy_name = trigger["metadata"]["url"].rstrip("/").rsplit("/", 1)[1]
                return (spec["scaleTargetRef"]["name"], policy_name,
                        spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100))
        return None

    def hpa(spec):
        for metric in spec.get("metrics", []):
            selector = metric.get("external", {}).get("metric", {}).get("selector", {})
            policy_name = selector.get("matchLabels", {}).get("policy")
            if policy_name:
                return (spec["scaleTargetRef"]["name"], policy_name,
                        spec.get("minReplicas", 1), spec["maxReplicas"])
        return None

    for obj in by_kind.get("ScaledObject", []):
        bounds("ScaledObject", obj, scaled_object)
    for obj in by_kind.get("HorizontalPodAutoscaler", []):
        bounds("HorizontalPodAutoscaler", obj, hpa)
    return checks


def main():
    directory = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "deploy" / "kubernetes"
    files = sorted(p for p in directory.rglob("*") if p.suffix in (".yaml", ".yml"))
    if not files:
        print(f"FAIL  no YAML files under {directory}")
        return 1
    failures = 0
    objects = []
    for path in files:
        name = path.relative_to(directory)
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as e:
            print(f"FAIL  {name}: not YAML: {e}")
            failures += 1
            continue
        for doc in docs:
            label = f"{doc.get('kind')} {doc.get('metadata', {}).get('name')}"
            try:
                errors, against = schema_errors(doc)
            except LookupError as e:
                print(f"FAIL  {label} ({name}): {e}")
                failures += 1
                continue
            if errors:
                failures += 1
                print(f"FAIL  {label} ({name}, {against}):")
                for error in errors:
                    print(f"        {error}")
            else:
                print(f"ok    {label} ({name}, {against})")
            objects.append((name, doc))
    for what, error in cross_checks(objects):
        if error:
            failures += 1
            print(f"FAIL  {what}: {error}")
        else:
            print(f"ok    {what}")
    if failures:
        print(f"{failures} failed")
        return 1
    print(f"all {len(objects)} objects valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
