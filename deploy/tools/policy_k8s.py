#!/usr/bin/python3
"""Checks rendered aichat manifests for the rules a schema can not express.

    policy_k8s.py RENDERED.yaml

- every pod meets the "restricted" Pod Security Standard: runAsNonRoot, seccomp
  RuntimeDefault, no privilege escalation, all capabilities dropped; plus a read-only root
  filesystem and CPU/memory requests and limits on every container;
- each aichat service (app.kubernetes.io/component=service): native gRPC startup, readiness
  and liveness probes on its gRPC port (or, when the gRPC port speaks TLS, on its plaintext
  health-only port named "health") — except that ai-agent, which also serves the
  OpenAI-compatible HTTP API, has its readiness probe on that listener (GET /readyz on the
  port named http, AICHAT_HTTP_LISTEN's); rolling updates with maxUnavailable 0, and a
  terminationGracePeriodSeconds above preStop sleep + AICHAT_SHUTDOWN_GRACE from its
  ConfigMaps;
- ai-agent has a HorizontalPodAutoscaler and a PodDisruptionBudget; a default-deny
  NetworkPolicy covers the aichat pods; every Secret or ConfigMap a pod names exists, or is
  one the operator creates (aichat-jwt, aichat-openai, and aichat-database in prod).
"""
import re
import sys

import yaml

OPERATOR_SECRETS = {"aichat-jwt", "aichat-openai", "aichat-database", "aichat-user-tls",
                    "aichat-conversation-tls", "aichat-agent-tls", "aichat-usage-tls"}


def seconds(v):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", str(v))
    if not m:
        raise ValueError(f"not a duration: {v}")
    n, unit = int(m.group(1)), m.group(2) or "s"
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def main():
    objs = [o for o in yaml.safe_load_all(open(sys.argv[1])) if o]
    errors = []
    by_kind = {}
    for o in objs:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    configmaps = by_kind.get("ConfigMap", {})
    secrets = set(by_kind.get("Secret", {}))

    def strip_hash(name, pool):
        # kustomize generators append a hash: aichat-postgres-5h2k7 -> aichat-postgres
        return name if name in pool else next((p for p in pool if re.fullmatch(re.escape(p) + r"-[a-z0-9]{10}", name)), name)

    for kind in ("Deployment", "StatefulSet", "Job"):
        for name, o in by_kind.get(kind, {}).items():
            where = f"{kind}/{name}"
            spec = o["spec"]["template"]["spec"]
            psc = spec.get("securityContext", {})
            labels = o["spec"]["template"]["metadata"].get("labels", {})
            if spec.get("automountServiceAccountToken") is not False:
                errors.append(f"{where}: automountServiceAccountToken is not false")
            env_from_cms, grace = [], None
            for c in spec.get("initContainers", []) + spec["containers"]:
                cw = f"{where} container {c['name']}"
                sc = c.get("securityContext", {})
                if not (sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True):
                    errors.append(f"{cw}: runAsNonRoot is not true")
                if (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
                    errors.append(f"{cw}: seccompProfile is not RuntimeDefault")
                if sc.get("allowPrivilegeEscalation") is not False:
                    errors.append(f"{cw}: allowPrivilegeEscalation is not false")
                if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                    errors.append(f"{cw}: capabilities are not drop [ALL]")
                if sc.get("readOnlyRootFilesystem") is not True:
                    errors.append(f"{cw}: root filesystem is not read-only")
                if sc.get("privileged"):
                    errors.append(f"{cw}: privileged")
                res = c.get("resources", {})
                for part in ("requests", "limits"):
                    for r in ("cpu", "memory"):
                        if r not in res.get(part, {}):
                            errors.append(f"{cw}: no {part}.{r}")
                for ef in c.get("envFrom", []):
                    if "configMapRef" in ef:
                        env_from_cms.append(ef["configMapRef"]["name"])
                for e in c.get("env", []):
                    ref = (e.get("valueFrom") or {})
                    if "secretKeyRef" in ref:
                        s = ref["secretKeyRef"]["name"]
                        if s not in secrets and s not in OPERATOR_SECRETS:
                            errors.append(f"{cw}: Secret {s} is neither rendered nor operator-made")
                    if "configMapKeyRef" in ref and ref["configMapKeyRef"]["name"] not in configmaps:
                        errors.append(f"{cw}: ConfigMap {ref['configMapKeyRef']['name']} missing")
                    if e["name"] == "AICHAT_SHUTDOWN_GRACE" and "value" in e:
                        grace = seconds(e["value"])
                for cm in env_from_cms:
                    if cm not in configmaps:
                        errors.append(f"{cw}: ConfigMap {cm} missing")
                    elif grace is None or "AICHAT_SHUTDOWN_GRACE" in configmaps[cm]["data"]:
                        g = configmaps[cm]["data"].get("AICHAT_SHUTDOWN_GRACE")
                        if g is not None:
                            grace = seconds(g)   # later envFrom sources win
                if labels.get("app.kubernetes.io/component") == "service":
                    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
                    # Kubelet's gRPC probes speak plaintext only: with TLS on, the probes use
                    # the health-only listener.
                    probe_port = ports.get("health", ports.get("grpc"))
                    env = {e["name"]: e.get("value") for e in c.get("env", [])}
                    # ai-agent serves the OpenAI-compatible HTTP API too: its readiness asks
                    # that listener (/readyz), on the port AICHAT_HTTP_LISTEN names.
                    http_ready = "http" in ports and env.get("AICHAT_HTTP_LISTEN")
                    if http_ready:
                        if env["AICHAT_HTTP_LISTEN"].rpartition(":")[2] != str(ports["http"]):
                            errors.append(f"{cw}: port http is not AICHAT_HTTP_LISTEN's port")
                        h = c.get("readinessProbe", {}).get("httpGet")
                        if not h or h.get("path") != "/readyz" or h.get("port") not in ("http", ports["http"]):
                            errors.append(f"{cw}: readinessProbe is not an HTTP GET of /readyz on port http")
                        if c.get("readinessProbe", {}).get("grpc"):
                            errors.append(f"{cw}: readinessProbe is both gRPC and HTTP")
                    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                        if probe == "readinessProbe" and http_ready:
                            continue
                        g = c.get(probe, {}).get("grpc")
                        if not g or g.get("port") != probe_port:
                            errors.append(f"{cw}: {probe} is not a gRPC probe on port {probe_port}")
                    if "health" in ports and env.get("AICHAT_HEALTH_LISTEN", "").rpartition(":")[2] != str(ports["health"]):
                        errors.append(f"{cw}: port health is not AICHAT_HEALTH_LISTEN's port")
            if labels.get("app.kubernetes.io/component") == "service":
                strat = o["spec"].get("strategy", {})
                if strat.get("rollingUpdate", {}).get("maxUnavailable") != 0:
                    errors.append(f"{where}: rolling update maxUnavailable is not 0")
                pre = 0
                for c in spec["containers"]:
                    pre = max(pre, c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0))
                need = pre + (grace if grace is not None else 30)
                tgps = spec.get("terminationGracePeriodSeconds", 30)
                if tgps <= need:
                    errors.append(f"{where}: terminationGracePeriodSeconds {tgps} <= preStop {pre} s + shutdown grace {grace} s")
                print(f"{where}: grace {grace} s + preStop {pre} s < terminationGracePeriodSeconds {tgps}")
            for v in spec.get("volumes", []):
                if "configMap" in v and strip_hash(v["configMap"]["name"], configmaps) not in configmaps:
                    errors.append(f"{where}: volume ConfigMap {v['configMap']['name']} missing")
                if "secret" in v and v["secret"]["secretName"] not in secrets | OPERATOR_SECRETS:
                    errors.append(f"{where}: volume Secret {v['secret']['secretName']} is neither rendered nor operator-made")
    hpa = [h for h in by_kind.get("HorizontalPodAutoscaler", {}).values() if h["spec"]["scaleTargetRef"]["name"] == "aichat-agent"]
    if not hpa:
        errors.append("no HorizontalPodAutoscaler for aichat-agent")
    pdb = [p for p in by_kind.get("PodDisruptionBudget", {}).values()
           if p["spec"]["selector"]["matchLabels"].get("app.kubernetes.io/name") == "aichat-agent"]
    if not pdb:
        errors.append("no PodDisruptionBudget for aichat-agent")
    deny = [n for n in by_kind.get("NetworkPolicy", {}).values()
            if set(n["spec"].get("policyTypes", [])) == {"Ingress", "Egress"} and not n["spec"].get("ingress") and not n["spec"].get("egress")]
    if not deny:
        errors.append("no default-deny NetworkPolicy")
    for e in errors:
        print("FAIL", e)
    print(f"{len(objs)} objects, {len(errors)} policy errors")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
