#!/usr/bin/python3
"""Scale-out under load: calls spread over replicas, a replica's death fails no turn, a new
replica gets calls within its connection-age window, and two agents share one budget.

    tests/faults/replicas.py [--build DIR]

The suite comes from scripts/run.sh (as in faults.py) with two replicas each of
conversation, usage and ai-agent (AICHAT_*_REPLICAS, peers wired by ipv4: address lists)
and servers that close connections after AICHAT_MAX_CONNECTION_AGE=4s. Scenarios:

  split      one agent, steady turns; every conversation and usage replica's
             grpc_server_handled_total grows (the split is reported);
  kill       one conversation replica freezes mid-load (SIGSTOP, so calls are in flight on
             it) and is killed (kill -9): no turn fails before its first delta (its calls
             are retried on the other replica), streams already running end with a
             documented status, the ledger stays exact; restarted, it gets calls again;
  new        a DNS server on loopback plays the headless Service: an extra agent dials
             dns://127.0.0.1:PORT/conversation.aichat.test:PORT; a conversation replica on
             127.0.0.2 joins mid-load (added to DNS once listening) and gets calls within
             its connection-age window (the time is reported);
  budget     the two run.sh agents on one user's budget under 12 concurrent callers:
             overshoot never exceeds what was reserved in flight (faults.budget_scenario).

Prints one JSON summary; exits 1 on any failed check. AICHAT_FAULTS_KEEP=1 keeps the state.
"""
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faults  # noqa: E402
from fake_dns import FakeDns  # noqa: E402
from faults import Failures, Load, check_invariants, drain_outbox, log  # noqa: E402
from free_ports import ephemeral_start, free_ports  # noqa: E402

AGE_S = 4           # AICHAT_MAX_CONNECTION_AGE in this suite
DNS_INTERVAL_S = 2  # the peer channel's minimum time between two DNS look-ups
PEER_SERVICES = ("aichat.conversation.v1.ConversationService", "aichat.usage.v1.UsageService")
# What an agent calls on its peers (the load driver's own setup calls are left out).
AGENT_METHODS = {"GetContext", "AppendMessage", "RetractMessage", "ReserveBudget",
                 "ReleaseBudget", "RecordUsage", "RecordUsageBatch"}
HANDLED = re.compile(r'^grpc_server_handled_total\{([^}]*)\} ([0-9.e+]+)$')


def port_free(host, port):
    s = socket.socket()
    try:
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


class ReplicaSuite(faults.Suite):
    """faults.Suite with two replicas of conversation, usage and ai-agent."""

    def __init__(self, build):
        # The second replicas sit one step above the first; ports drawn too close to the
        # ephemeral range leave no step that fits, so then the suite draws its ports again.
        for _ in range(20):
            super().__init__(build)
            step = self._find_step()
            if step is not None:
                break
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            raise RuntimeError("no free ports for the second replicas")
        self.step = step
        e = self.env
        e.update({"AICHAT_CONVERSATION_REPLICAS": "2", "AICHAT_USAGE_REPLICAS": "2",
                  "AICHAT_AGENT_REPLICAS": "2", "AICHAT_REPLICA_PORT_STEP": str(step),
                  "AICHAT_MAX_CONNECTION_AGE": "%ds" % AGE_S})

    def _find_step(self):
        e = self.env
        self.mbase = int(e["AICHAT_METRICS_PORT_BASE"])
        self.base = {"conversation": (int(e["AICHAT_CONVERSATION_PORT"]), self.mbase + 1),
                     "ai-agent": (int(e["AICHAT_AGENT_PORT"]), self.mbase + 2),
                     "usage": (int(e["AICHAT_USAGE_PORT"]), self.mbase + 3)}
        # A step that puts every second replica's ports on free ones below the ephemeral range.
        taken = {int(v) for k, v in e.items() if k.endswith("_PORT")} | {
            self.mbase + i for i in range(4)}
        high = ephemeral_start()
        for _ in range(1000):
            step = random.randrange(100, 5000)
            second = [p + step for pair in self.base.values() for p in pair]
            if all(p < high and p not in taken and port_free("127.0.0.1", p) for p in second):
                return step
        return None

    def grpc_addr(self, svc, k):
        return "127.0.0.1:%d" % (self.base[svc][0] + (k - 1) * self.step)

    def metrics_port(self, svc, k):
        return self.base[svc][1] + (k - 1) * self.step

    def replica_pid(self, svc, k):
        return self.pid(svc if k == 1 else "%s-%d" % (svc, k))


def handled(port, services=PEER_SERVICES, methods=AGENT_METHODS):
    """Sum of grpc_server_handled_total on one replica for the agent's calls (all codes)."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return 0
    total = 0
    for line in text.splitlines():
        m = HANDLED.match(line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if labels.get("grpc_service") in services and (
                methods is None or labels.get("grpc_method") in methods):
            total += int(float(m.group(2)))
    return total


def split_scenario(suite, failures, summary):
    """Steady turns through agent 1; conversation-2 freezes, dies (kill -9), comes back."""
    reps = [("conversation", 1), ("conversation", 2), ("usage", 1), ("usage", 2)]
    before = {r: handled(suite.metrics_port(*r)) for r in reps}
    seconds, stall = 20, 1.5
    load = Load(suite, "split", seconds, callers=8, users=4, directive="[[fake:delay_ms=40]]")
    time.sleep(seconds * 0.3)
    at_kill = {r: handled(suite.metrics_port(*r)) - before[r] for r in reps}
    # Frozen first, so that calls are surely in flight on it when it dies (a bare kill -9
    # mostly finds none: its calls take milliseconds); then killed.
    pid = suite.signal("conversation-2", signal.SIGSTOP)
    t_stop = time.time() * 1000
    time.sleep(stall)
    os.kill(pid, signal.SIGKILL)
    t_kill = time.time() * 1000
    failures.check(suite.wait_exit(pid, 10), "kill: kill -9 did not stop conversation-2")
    time.sleep(1)
    t_restart = time.time()
    suite.restart_missing()  # run.sh up: starts conversation-2 again on its port
    t_listening = time.time()
    back_after = None
    while load.proc.poll() is None:
        if handled(suite.metrics_port("conversation", 2)) > 0:
            back_after = time.time() - t_listening
            break
        time.sleep(0.05)
    calls = load.finish(failures)
    split = {"%s-%d" % r: n for r, n in at_kill.items()}
    log("split before the kill (agent calls handled per replica): %s" % split)
    for r, n in at_kill.items():
        failures.check(n > 0, "split: %s-%d handled no peer calls" % r)
    for svc in ("conversation", "usage"):
        a, b = at_kill[(svc, 1)], at_kill[(svc, 2)]
        failures.check(min(a, b) >= 0.25 * (a + b), "split: %s is lopsided: %d / %d" % (svc, a, b))
    failed = [c for c in calls if c["code"] != 0]
    # A SendMessage shows no deltas: a failed one counts as failed before its first delta.
    before_delta = [c for c in failed if not c["deltas"]]
    streaming = [c for c in failed if c["deltas"]]
    # Turns open at the kill that had already lasted longer than any turn away from the
    # freeze were waiting on the frozen replica: their calls died with it and were made
    # again on the other one.
    normal = sorted(c["ms"] for c in calls if c["t1"] < t_stop or c["t0"] > t_kill + 1000)
    slowest = normal[-1] if normal else 0
    held = [c for c in calls if c["t0"] < t_kill < c["t1"] and t_kill - c["t0"] > slowest]
    log("conversation-2 frozen %.1f s then kill -9: %d turns (slowest away from the freeze "
        "%d ms), %d held by it at the kill (%d of them OK), %d failed before a delta, %d "
        "failed while streaming %s; restarted (run.sh up took %.1f s), it got calls %s s "
        "after it listened" % (
            stall, len(calls), slowest, len(held), sum(1 for c in held if c["code"] == 0),
            len(before_delta), len(streaming),
            sorted({faults.DOCUMENTED.get(c["code"], c["code"]) for c in streaming}),
            t_listening - t_restart,
            None if back_after is None else round(back_after, 2)))
    failures.check(len(held) > 0, "kill: no turn was waiting on conversation-2 when it died")
    failures.check(not before_delta, "kill: %d turns failed before their first delta: %s" % (
        len(before_delta), [(c["key"], c["code"], c["message"]) for c in before_delta[:3]]))
    failures.check(back_after is not None,
                   "kill: the restarted conversation-2 got no calls before the load ended")
    drain_outbox(suite, failures)
    summary["split"] = {"agent_calls_handled_before_kill": split, "turns": len(calls),
                        "held_by_killed_replica": len(held),
                        "failed_before_delta": len(before_delta),
                        "failed_streaming": len(streaming),
                        "restarted_replica_calls_after_listening_s":
                            None if back_after is None else round(back_after, 2)}
    return calls


def start_conversation(suite, host, port):
    """One more conversation replica listening on host:port; returns its metrics port."""
    (mport,) = free_ports(1)
    env = dict(suite.env)
    env.update({"AICHAT_LISTEN": "%s:%d" % (host, port),
                "AICHAT_METRICS_LISTEN": "127.0.0.1:%d" % mport,
                "DATABASE_URL": "postgresql://postgres@127.0.0.1:%s/aichat_conversation" %
                suite.env["AICHAT_PG_PORT"],
                "AICHAT_JWT_PUBLIC_KEYS": suite.keys["AICHAT_JWT_PUBLIC_KEYS"]})
    logf = open(os.path.join(suite.state, "logs", "conversation-%s.log" % host), "ab")
    p = subprocess.Popen([os.path.join(suite.build, "services/conversation/aichat-conversation")],
                         env=env, stdout=logf, stderr=logf)
    suite.extra.append((p, port))
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return mport
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("conversation on %s:%d did not start" % (host, port))


def new_replica_scenario(suite, failures, summary):
    """A replica that joins the DNS name mid-load gets calls within the connection age."""
    name = "conversation.aichat.test"
    port = int(suite.env["AICHAT_CONVERSATION_PORT"])  # replica 1 listens on 127.0.0.1:port
    if not port_free("127.0.0.2", port):
        failures.check(False, "new: 127.0.0.2:%d is taken" % port)
        return []
    dns = FakeDns({name: ["127.0.0.1"]})
    try:
        agent = suite.start_replica(
            AICHAT_CONVERSATION_ADDR="dns://127.0.0.1:%d/%s:%d" % (dns.port, name, port))
        seconds = 3 * AGE_S + 10
        load = Load(suite, "new-replica", seconds, callers=6, users=3, agents=[agent])
        time.sleep(2)
        mport = start_conversation(suite, "127.0.0.2", port)
        dns.set(name, ["127.0.0.1", "127.0.0.2"])  # ready: the endpoint joins the Service
        t_added, q_added = time.time(), dns.queries()
        took = None
        while time.time() - t_added < seconds - 3:
            if handled(mport) > 0:
                took = time.time() - t_added
                break
            time.sleep(0.1)
        calls = load.finish(failures)
        share = handled(mport)
        log("new replica: got its first call %s s after joining DNS (connection age %d s, "
            "DNS look-ups at most every %d s; %d look-ups meanwhile); %d peer calls by the end; "
            "%d turns, %d failed" % (None if took is None else round(took, 2), AGE_S,
                                     DNS_INTERVAL_S, dns.queries() - q_added, share, len(calls),
                                     sum(1 for c in calls if c["code"] != 0)))
        limit = AGE_S * 1.1 + DNS_INTERVAL_S + 2
        failures.check(took is not None and took <= limit,
                       "new: the new replica got no call within %.1f s (took %s)" % (limit, took))
        failures.check(all(c["code"] == 0 for c in calls),
                       "new: turns failed while a replica joined: %s" %
                       [(c["code"], c["message"]) for c in calls if c["code"] != 0][:3])
        summary["new_replica"] = {"first_call_after_s": None if took is None else round(took, 2),
                                  "connection_age_s": AGE_S, "peer_calls": share,
                                  "turns": len(calls)}
    finally:
        for p, _ in suite.extra:
            p.terminate()
        for p, _ in suite.extra:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        suite.extra = []
        dns.close()
    drain_outbox(suite, failures)
    return calls


def main():
    build = os.path.join(faults.ROOT, "build")
    if "--build" in sys.argv:
        build = sys.argv[sys.argv.index("--build") + 1]
    failures = Failures()
    suite = ReplicaSuite(build)
    summary = {}
    t0 = time.time()
    try:
        suite.up()
        suite.setup_admin()
        all_calls = split_scenario(suite, failures, summary)
        summary["invariants after kill"] = check_invariants(suite, all_calls, failures,
                                                            "kill -9 conversation-2")
        all_calls += new_replica_scenario(suite, failures, summary)
        check_invariants(suite, all_calls, failures, "new replica")
        agents = [suite.grpc_addr("ai-agent", 1), suite.grpc_addr("ai-agent", 2)]
        bcalls, refused, b = faults.budget_scenario(suite, failures, 10, agents=agents)
        all_calls += bcalls
        check_invariants(suite, all_calls, failures, "budget x2 agents", refused_keys=refused)
        summary["budget"] = b
        log("TOTAL: %d turns, %.0f s" % (len(all_calls), time.time() - t0))
    finally:
        suite.down()
    print(json.dumps(summary, indent=1))
    for f in failures.items[:50]:
        log("  -", f[:400])
    n = len(failures.items)
    print("replicas: %d passed, %d failed" % (1 if n == 0 else 0, 1 if n else 0))
    return 1 if n else 0


if __name__ == "__main__":
    sys.exit(main())
