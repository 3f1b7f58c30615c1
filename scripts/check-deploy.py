#!/usr/bin/env python3
"""Checks deploy/: every manifest parses as YAML with the fields Kubernetes
needs, the TOML in the ConfigMap parses, probes point at paths the servers
serve, and the Secret holds only placeholders. Run by scripts/test.sh."""
import pathlib, re, sys, tomllib
import yaml

root = pathlib.Path(__file__).resolve().parent.parent
deploy = root / "deploy"
problems = []
docs = {}
for f in sorted(deploy.glob("*.yaml")):
    for d in yaml.safe_load_all(f.read_text()):
        if d is None:
            continue
        for key in ("apiVersion", "kind"):
            if key not in d:
                problems.append(f"{f.name}: a document without {key}")
        if d.get("kind") != "Kustomization" and "name" not in d.get("metadata", {}):
            problems.append(f"{f.name}: {d.get('kind')} without metadata.name")
        docs.setdefault(d.get("kind"), []).append((f.name, d))

kust = docs["Kustomization"][0][1]
for r in kust["resources"]:
    if not (deploy / r).exists():
        problems.append(f"kustomization.yaml: missing resource {r}")

cm = docs["ConfigMap"][0][1]["data"]
for name, text in cm.items():
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        problems.append(f"configmap.yaml: {name}: {e}")

served = set()
for src in ["crates/portcullis-iam/src/http/mod.rs", "crates/portcullis-gateway/src/admin.rs"]:
    served |= set(re.findall(r'\.route\("(/[a-z]+z)"', (root / src).read_text()))
deployments = docs.get("Deployment", [])
if len(deployments) != 2:
    problems.append(f"expected the IAM and gateway Deployments, found {len(deployments)}")
for fname, d in deployments:
    spec = d["spec"]["template"]["spec"]
    if not spec.get("securityContext", {}).get("runAsNonRoot"):
        problems.append(f"{fname}: pods must run as non-root")
    for c in spec["containers"]:
        ports = {p["name"] for p in c.get("ports", [])}
        for probe in ("readinessProbe", "livenessProbe"):
            p = c.get(probe)
            if not p:
                problems.append(f"{fname}: {c['name']} has no {probe}")
                continue
            path, port = p["httpGet"]["path"], p["httpGet"]["port"]
            if path not in served:
                problems.append(f"{fname}: {probe} path {path} is not served")
            if port not in ports:
                problems.append(f"{fname}: {probe} port {port} is not a container port")
    if d["spec"]["replicas"] < 2:
        problems.append(f"{fname}: fewer than 2 replicas")
for kind in ("Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "Secret"):
    if kind not in docs:
        problems.append(f"no {kind}")
for _, s in docs.get("Secret", []):
    for k, v in s.get("stringData", {}).items():
        if "REPLACE-ME" not in v:
            problems.append(f"secret.yaml: {k} is not a placeholder")

if problems:
    print("deploy/ check failed:\n  " + "\n  ".join(problems))
    sys.exit(1)
print(f"deploy/: {sum(len(v) for v in docs.values())} manifests OK")
