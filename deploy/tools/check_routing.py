#!/usr/bin/python3
"""Checks how calls reach the replicas in rendered aichat manifests.

    check_routing.py RENDERED.yaml [--scale-out] [--tls-secrets SECRETS.yaml]

Always: every peer address a service is given (AICHAT_CONVERSATION_ADDR and
AICHAT_USAGE_ADDR, from its env or its ConfigMaps, later sources winning) names a rendered
Service that selects the peer's pods on a port that reaches its gRPC container port; every
server closes aged connections (AICHAT_MAX_CONNECTION_AGE > 0), and ai-agent's grace for
them (AICHAT_MAX_CONNECTION_AGE_GRACE, default AICHAT_SHUTDOWN_GRACE) covers the longest
answer (AICHAT_LLM_TOTAL_TIMEOUT).

With --scale-out (the prod overlay): each peer address is dns:///<headless Service>:<port>
(clusterIP None, so the name resolves to every pod and round_robin spreads the calls); a
Gateway exists and each of the four services has a GRPCRoute attached to one of its
listeners, matching the service's full gRPC name and sending it to the service's ClusterIP
Service. With --tls-secrets (the output of tls-secrets.sh): when callers speak TLS to their
peers, the peer's certificate names the host they dial, and each BackendTLSPolicy's hostname
is in the certificate of the Service it targets.
"""
import re
import subprocess
import sys

import yaml

SERVICES = {  # Deployment -> full gRPC service name
    "aichat-user": "aichat.user.v1.UserService",
    "aichat-conversation": "aichat.conversation.v1.ConversationService",
    "aichat-agent": "aichat.agent.v1.AiAgentService",
    "aichat-usage": "aichat.usage.v1.UsageService",
}
PEERS = {"AICHAT_CONVERSATION_ADDR": "aichat-conversation", "AICHAT_USAGE_ADDR": "aichat-usage"}
CALLERS = {"aichat-agent": ["AICHAT_CONVERSATION_ADDR", "AICHAT_USAGE_ADDR"],
           "aichat-user": ["AICHAT_USAGE_ADDR"]}


def seconds(v):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", str(v))
    if not m:
        raise ValueError(f"not a duration: {v}")
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2) or "s"]


def sans(pem):
    out = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName"], input=pem,
                         capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"DNS:([^,\s]+)", out))


def main():
    args = sys.argv[1:]
    scale_out = "--scale-out" in args
    secrets_file = args[args.index("--tls-secrets") + 1] if "--tls-secrets" in args else None
    objs = [o for o in yaml.safe_load_all(open(args[0])) if o]
    kinds = {}
    for o in objs:
        kinds.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    cms = kinds.get("ConfigMap", {})
    services = kinds.get("Service", {})
    deployments = {n: d for n, d in kinds.get("Deployment", {}).items() if n in SERVICES}
    errors = []

    def env_of(dep):
        c = dep["spec"]["template"]["spec"]["containers"][0]
        env = {}
        for ef in c.get("envFrom", []):
            env.update(cms.get(ef.get("configMapRef", {}).get("name"), {}).get("data", {}))
        env.update({e["name"]: e["value"] for e in c.get("env", []) if "value" in e})
        return env

    def grpc_port(dep):
        ports = dep["spec"]["template"]["spec"]["containers"][0].get("ports", [])
        return next((p["containerPort"] for p in ports if p.get("name") == "grpc"), None)

    def selects(svc, dep):
        sel = svc["spec"].get("selector") or {}
        labels = dep["spec"]["template"]["metadata"].get("labels", {})
        return bool(sel) and all(labels.get(k) == v for k, v in sel.items())

    def reaches(svc, port, dep):
        """The Service port `port` of `svc` lands on dep's gRPC container port."""
        want = grpc_port(dep)
        for p in svc["spec"].get("ports", []):
            if p["port"] == port:
                t = p.get("targetPort", p["port"])
                return t == "grpc" or t == want
        return False

    if len(deployments) != len(SERVICES):
        errors.append(f"expected Deployments {sorted(SERVICES)}, found {sorted(deployments)}")
    certs = {}
    if secrets_file:
        for s in yaml.safe_load_all(open(secrets_file)):
            if s and s["kind"] == "Secret" and "tls.crt" in s.get("stringData", {}):
                certs[s["metadata"]["name"]] = sans(s["stringData"]["tls.crt"])

    def cert_names(dep):
        for v in dep["spec"]["template"]["spec"].get("volumes", []):
            if "secret" in v and v["secret"]["secretName"] in certs:
                return certs[v["secret"]["secretName"]]
        return None

    # Peers.
    for caller, keys in CALLERS.items():
        if caller not in deployments:
            continue
        env = env_of(deployments[caller])
        for key in keys:
            addr, peer = env.get(key), deployments.get(PEERS[key])
            where = f"{caller} {key}={addr}"
            m = re.fullmatch(r"(dns:///)?([a-z0-9.-]+):(\d+)", addr or "")
            if not m or peer is None:
                errors.append(f"{where}: not NAME:PORT or dns:///NAME:PORT")
                continue
            name = m.group(2).split(".")[0]
            svc = services.get(name)
            if svc is None or not selects(svc, peer) or not reaches(svc, int(m.group(3)), peer):
                errors.append(f"{where}: no Service {name} selecting {PEERS[key]} on that port")
                continue
            headless = svc["spec"].get("clusterIP") == "None"
            if scale_out and not (m.group(1) and headless):
                errors.append(f"{where}: peers must be dialled as dns:///<headless Service> so "
                              "that calls spread over every replica")
            if certs and env.get("AICHAT_PEER_TLS") == "true":
                names = cert_names(peer)
                if names is not None and m.group(2) not in names:
                    errors.append(f"{where}: {PEERS[key]}'s certificate does not name "
                                  f"{m.group(2)} (it has {sorted(names)})")
            print(f"{where}: {'headless' if headless else 'ClusterIP'} Service {name}")

    # Connection age.
    for name, dep in deployments.items():
        env = env_of(dep)
        age = seconds(env.get("AICHAT_MAX_CONNECTION_AGE", "5m"))
        if age <= 0:
            errors.append(f"{name}: AICHAT_MAX_CONNECTION_AGE is 0: clients never rebalance")
        grace = seconds(env.get("AICHAT_MAX_CONNECTION_AGE_GRACE") or
                        env.get("AICHAT_SHUTDOWN_GRACE", "30s"))
        if name == "aichat-agent":
            total = seconds(env.get("AICHAT_LLM_TOTAL_TIMEOUT", "300s"))
            if grace < total:
                errors.append(f"{name}: connection-age grace {grace} s < "
                              f"AICHAT_LLM_TOTAL_TIMEOUT {total} s: aged connections cut streams")
        print(f"{name}: connections closed after {age} s, grace {grace} s")

    # External entry: Gateway and one GRPCRoute per service.
    gateways = kinds.get("Gateway", {})
    routes = kinds.get("GRPCRoute", {})
    if scale_out and not gateways:
        errors.append("no Gateway for external clients")
    for dep_name, full in SERVICES.items():
        found = []
        for rname, r in routes.items():
            for rule in r["spec"].get("rules", []):
                if any(m.get("method", {}).get("service") == full for m in rule.get("matches", [])):
                    found.append((rname, r, rule))
        if not found:
            if scale_out:
                errors.append(f"no GRPCRoute for {full}")
            continue
        for rname, r, rule in found:
            for ref in r["spec"].get("parentRefs", []):
                gw = gateways.get(ref["name"])
                listeners = {lst["name"] for lst in (gw or {}).get("spec", {}).get("listeners", [])}
                if gw is None or ("sectionName" in ref and ref["sectionName"] not in listeners):
                    errors.append(f"GRPCRoute {rname}: parent {ref} is not a rendered listener")
            for b in rule.get("backendRefs", []):
                svc = services.get(b["name"])
                if (svc is None or svc["spec"].get("clusterIP") == "None" or
                        not selects(svc, deployments[dep_name]) or
                        not reaches(svc, b.get("port"), deployments[dep_name])):
                    errors.append(f"GRPCRoute {rname}: backend {b} is not {dep_name}'s "
                                  "ClusterIP Service on its gRPC port")
            print(f"GRPCRoute {rname}: {full} -> {[b['name'] for b in rule.get('backendRefs', [])]}")
    for pname, p in kinds.get("BackendTLSPolicy", {}).items():
        host = p["spec"]["validation"]["hostname"]
        for t in p["spec"]["targetRefs"]:
            svc = services.get(t["name"])
            dep = next((d for d in deployments.values() if svc and selects(svc, d)), None)
            if dep is None:
                errors.append(f"BackendTLSPolicy {pname}: target {t['name']} is no aichat Service")
            elif certs and (cert_names(dep) is not None) and host not in cert_names(dep):
                errors.append(f"BackendTLSPolicy {pname}: {host} is not in the certificate of "
                              f"{t['name']}")
    for e in errors:
        print("FAIL", e)
    print(f"routing: {len(errors)} errors")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
