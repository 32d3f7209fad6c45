#!/usr/bin/python3
"""The aichat fault suite: real binaries, steady chat load, injected faults, invariants.

    tests/faults/faults.py load  [--build DIR]   fault scenarios under load + invariants
    tests/faults/faults.py abuse [--build DIR]   IDOR / hostile input / token attacks /
                                                 slowloris / unread streams + the log scan

Each run starts its own suite with scripts/run.sh (AICHAT_NO_BUILD=1) in a temp state
dir on free ports and tears it down at exit. AICHAT_FAULTS_LONG=1: longer load per
scenario, more callers, and every kill repeated. AICHAT_FAULTS_KEEP=1 keeps the state dir.
Standard library only; psql and curl do the talking.
"""
import collections
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from free_ports import free_ports  # noqa: E402  (ports below the ephemeral range)
LONG = os.environ.get("AICHAT_FAULTS_LONG") == "1"
# AICHAT_FAULTS_ONLY=saving,pg: run only the load scenarios whose names contain one of these.
ONLY = [w for w in os.environ.get("AICHAT_FAULTS_ONLY", "").split(",") if w]


def want(name):
    return not ONLY or any(w in name for w in ONLY)
ADMIN_EMAIL, ADMIN_PASSWORD = "admin@faults.test", "faults-admin-Pa55word"
# Statuses DESIGN.md documents for a chat turn. Anything else is a finding.
DOCUMENTED = {0: "OK", 4: "DEADLINE_EXCEEDED", 8: "RESOURCE_EXHAUSTED", 14: "UNAVAILABLE",
              1: "CANCELLED"}
DBS = {"user": "aichat_user", "conversation": "aichat_conversation", "ai-agent": "aichat_agent",
       "usage": "aichat_usage"}
PG_BIN = "/usr/lib/postgresql/15/bin"


def log(*a):
    print("[faults]", *a, file=sys.stderr, flush=True)


class Failures:
    def __init__(self):
        self.items = []

    def check(self, ok, what):
        if not ok:
            self.items.append(what)
            log("FAIL:", what)
        return ok


class Suite:
    """One aichat suite started through scripts/run.sh, on free ports in a temp dir."""

    def __init__(self, build):
        self.build = build
        self.tmp = tempfile.mkdtemp(prefix="aichat-faults-")
        os.chmod(self.tmp, 0o755)
        self.state = os.path.join(self.tmp, "state")
        # Every port distinct and below the ephemeral range, so that a service restarted
        # after a kill finds its port free (scripts/free_ports.py).
        pg, user, conv, agent, usage, fake, mbase = free_ports(6, 4)
        self.env = dict(os.environ)
        for k in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "SSL_CERT_FILE"):
            self.env.pop(k, None)
        self.env.update({
            "AICHAT_STATE_DIR": self.state, "AICHAT_BUILD_DIR": build, "AICHAT_NO_BUILD": "1",
            "AICHAT_PG_PORT": str(pg), "AICHAT_USER_PORT": str(user),
            "AICHAT_CONVERSATION_PORT": str(conv), "AICHAT_AGENT_PORT": str(agent),
            "AICHAT_USAGE_PORT": str(usage), "AICHAT_FAKE_LLM_PORT": str(fake),
            "AICHAT_METRICS_PORT_BASE": str(mbase),
            "AICHAT_SHUTDOWN_GRACE": "8s", "AICHAT_OUTBOX_INTERVAL": "200ms",
        })
        self.extra = []  # (Popen, port) of extra ai-agent replicas
        self.addr = {s: "127.0.0.1:" + self.env[v] for s, v in (
            ("user", "AICHAT_USER_PORT"), ("conversation", "AICHAT_CONVERSATION_PORT"),
            ("ai-agent", "AICHAT_AGENT_PORT"), ("usage", "AICHAT_USAGE_PORT"))}

    def run_sh(self, *args):
        r = subprocess.run([os.path.join(ROOT, "scripts/run.sh"), *args], env=self.env,
                           capture_output=True, text=True, timeout=180)
        if r.returncode != 0:
            logs = os.path.join(self.state, "logs")
            for name in sorted(os.listdir(logs)) if os.path.isdir(logs) else []:
                with open(os.path.join(logs, name), "rb") as f:
                    log("%s (tail):\n%s" % (name, f.read()[-1500:].decode("utf-8", "replace")))
            raise RuntimeError("run.sh %s failed: %s" % (args, r.stderr[-2000:]))
        return r.stderr

    def up(self):
        self.run_sh("up", "--detach")
        # A second `up` finds fake-llm running and returns before exporting the provider
        # settings, so restarted services must get them from us.
        fake = self.env["AICHAT_FAKE_LLM_PORT"]
        self.env.update({"OPENAI_BASE_URL": "https://127.0.0.1:%s/v1" % fake,
                         "OPENAI_API_KEY": "fake-key",
                         "SSL_CERT_FILE": os.path.join(self.state, "fake-llm-cert.pem")})
        self.keys = {}
        for line in open(os.path.join(self.state, "keys.env")):
            k, _, v = line.strip().partition("=")
            self.keys[k] = v

    def restart_missing(self):
        # run.sh: with OPENAI_API_KEY set it skips the fake (already running) and uses our env.
        self.run_sh("up", "--detach")

    def down(self):
        for p, _ in self.extra:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.extra = []
        try:
            self.run_sh("down")
        except Exception as e:  # noqa: BLE001 - best effort at teardown
            log("down:", e)
        if os.environ.get("AICHAT_FAULTS_KEEP") != "1":
            subprocess.run(["rm", "-rf", os.path.realpath(os.path.join(self.state, "pg"))])
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            log("kept", self.tmp)

    def pid(self, svc):
        with open(os.path.join(self.state, "run", svc + ".pid")) as f:
            return int(f.read().strip())

    def signal(self, svc, sig):
        pid = self.pid(svc)
        os.kill(pid, sig)
        return pid

    def wait_exit(self, pid, seconds):
        deadline = time.time() + seconds
        while time.time() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            # A child of run.sh's subshell is reaped by init; a zombie still answers kill 0.
            try:
                with open("/proc/%d/stat" % pid) as f:
                    if f.read().split(") ")[1].startswith("Z"):
                        return True
            except FileNotFoundError:
                return True
            time.sleep(0.05)
        return False

    def pg_restart(self):
        data = os.path.realpath(os.path.join(self.state, "pg"))
        pglog = os.path.join(os.path.dirname(data), "postgres.log") if os.getuid() == 0 else \
            os.path.join(self.state, "logs", "postgres.log")
        cmd = [PG_BIN + "/pg_ctl", "-D", data, "-m", "fast", "-w", "-t", "60", "-l", pglog,
               "restart"]
        if os.getuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        subprocess.run(cmd, check=True, capture_output=True, timeout=90)

    def pg_outage(self, seconds):
        """PostgreSQL down for `seconds`, then up again (a failover, a long restart)."""
        data = os.path.realpath(os.path.join(self.state, "pg"))
        pglog = os.path.join(os.path.dirname(data), "postgres.log") if os.getuid() == 0 else \
            os.path.join(self.state, "logs", "postgres.log")
        prefix = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        # Start it again exactly as run.sh did (port, listen address...): postmaster.opts.
        with open(os.path.join(data, "postmaster.opts")) as f:
            args = shlex.split(f.read())[1:]
        if "-D" in args:
            i = args.index("-D")
            del args[i:i + 2]
        subprocess.run(prefix + [PG_BIN + "/pg_ctl", "-D", data, "-m", "fast", "-w", "stop"],
                       check=True, capture_output=True, timeout=90)
        time.sleep(seconds)
        subprocess.run(prefix + [PG_BIN + "/pg_ctl", "-D", data, "-w", "-t", "60", "-l", pglog,
                                 "-o", " ".join(shlex.quote(a) for a in args), "start"],
                       check=True, capture_output=True, timeout=90)

    def psql_json(self, svc, sql):
        r = subprocess.run(
            ["psql", "-X", "-At", "-h", "127.0.0.1", "-p", self.env["AICHAT_PG_PORT"], "-U",
             "postgres", "-d", DBS[svc], "-c",
             "SELECT coalesce(json_agg(t), '[]') FROM (%s) t" % sql],
            capture_output=True, text=True, timeout=60, check=True)
        return json.loads(r.stdout)

    def fake_requests(self):
        r = subprocess.run(["curl", "-sk", "--max-time", "30",
                            "https://127.0.0.1:%s/_fake/requests" %
                            self.env["AICHAT_FAKE_LLM_PORT"]],
                           capture_output=True, text=True, check=True)
        return json.loads(r.stdout)["requests"]

    def start_replica(self, **overrides):
        """One more ai-agent; `overrides` replace environment variables (e.g. peer addresses)."""
        port, mport = free_ports(2)
        env = dict(self.env)
        env.update({
            "AICHAT_LISTEN": "127.0.0.1:%d" % port, "AICHAT_METRICS_LISTEN": "127.0.0.1:%d" % mport,
            "DATABASE_URL": "postgresql://postgres@127.0.0.1:%s/aichat_agent" %
            self.env["AICHAT_PG_PORT"],
            "AICHAT_CONVERSATION_ADDR": self.addr["conversation"],
            "AICHAT_USAGE_ADDR": self.addr["usage"], "AICHAT_USER_ADDR": self.addr["user"],
            "AICHAT_HTTP_LISTEN": "",  # the binary's default, 0.0.0.0:8080, may be taken
        })
        env.update(self.keys)
        env.update(overrides)
        logf = open(os.path.join(self.state, "logs", "ai-agent-replica-%d.log" % port), "ab")
        p = subprocess.Popen([os.path.join(self.build, "services/ai-agent/aichat-agent")],
                             env=env, stdout=logf, stderr=logf)
        self.extra.append((p, port))
        wait_port(port, 30)
        return "127.0.0.1:%d" % port

    def setup_admin(self):
        load_bin = os.path.join(self.build, "tests/faults/aichat-fault-load")
        subprocess.run([load_bin, "register", self.addr["user"], ADMIN_EMAIL, ADMIN_PASSWORD],
                       check=True, timeout=60)
        env = dict(self.env, DATABASE_URL="postgresql://postgres@127.0.0.1:%s/aichat_user" %
                   self.env["AICHAT_PG_PORT"])
        subprocess.run([os.path.join(self.build, "services/user/aichat-user"), "set-role",
                        ADMIN_EMAIL, "admin"], env=env, check=True, timeout=60,
                       capture_output=True)


def wait_port(port, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


class Load:
    """aichat-fault-load in the background; its JSON lines are what the client saw."""

    def __init__(self, suite, tag, seconds, callers=8, users=4, agents=None, directive="",
                 extra=(), deadline_s=20, retry_same_key_s=0):
        self.out = os.path.join(suite.tmp, "calls-%s.jsonl" % tag)
        self.ready = os.path.join(suite.tmp, "ready-%s" % tag)
        self.seconds, self.deadline_s = seconds, deadline_s + retry_same_key_s
        if retry_same_key_s:
            extra = (*extra, "--retry_same_key_s=%d" % retry_same_key_s)
        args = [os.path.join(suite.build, "tests/faults/aichat-fault-load"), "load",
                "--user_addr=" + suite.addr["user"],
                "--conv_addr=" + suite.addr["conversation"],
                "--usage_addr=" + suite.addr["usage"],
                "--agents=" + ",".join(agents or [suite.addr["ai-agent"]]),
                "--admin_email=" + ADMIN_EMAIL, "--admin_password=" + ADMIN_PASSWORD,
                "--tag=" + tag, "--callers=%d" % callers, "--users=%d" % users,
                "--duration_s=%d" % seconds, "--deadline_s=%d" % deadline_s,
                "--out=" + self.out, "--ready_file=" + self.ready, *extra]
        if directive:
            args.append("--directive= " + directive)
        self.proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while not os.path.exists(self.ready):
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("load driver did not get ready: " + self.proc.stderr.read())
            time.sleep(0.05)
        self.t0 = time.time()

    def finish(self, failures):
        # Every call has a deadline, so the driver ends by duration + one deadline.
        limit = self.seconds + self.deadline_s + 30
        try:
            self.proc.wait(timeout=max(1, limit - (time.time() - self.t0)))
        except subprocess.TimeoutExpired:
            failures.check(False, "load driver hung past every call's deadline")
            self.proc.kill()
            self.proc.wait()
        self.proc.stderr.close()
        return [json.loads(l) for l in open(self.out)] if os.path.exists(self.out) else []


def drain_outbox(suite, failures, seconds=60):
    deadline = time.time() + seconds
    n = None
    while time.time() < deadline:
        n = suite.psql_json("ai-agent", "SELECT count(*) AS n FROM usage_outbox")[0]["n"]
        if n == 0:
            return True
        time.sleep(0.3)
    return failures.check(False, "outbox did not drain: %s events left" % n)


def cost(p):
    uncached = p["prompt_tokens"] - p["cached_tokens"]
    raw = (uncached * p["input_price_micros_per_mtok"] +
           p["cached_tokens"] * p["cached_input_price_micros_per_mtok"] +
           p["completion_tokens"] * p["output_price_micros_per_mtok"])
    return (raw + 500) // 1000


TURN_RE = re.compile(r"^turn (\S+) ")


def check_invariants(suite, calls, failures, scenario, refused_keys=()):
    """Everything the issue lists, over the whole databases so far."""
    n0 = len(failures.items)
    prompts = suite.psql_json("ai-agent", (
        "SELECT id, user_id, conversation_id, status, idempotency_key, event_id, prompt_tokens, "
        "completion_tokens, cached_tokens, cost_nanos, input_price_micros_per_mtok, "
        "cached_input_price_micros_per_mtok, output_price_micros_per_mtok, response_message_id, "
        "response_text FROM ai_prompts"))
    usage = suite.psql_json("usage", (
        "SELECT event_id, user_id, prompt_id, cost_nanos, prompt_tokens, completion_tokens, "
        "cached_tokens, input_price_micros_per_mtok, cached_input_price_micros_per_mtok, "
        "output_price_micros_per_mtok FROM usage_logs"))
    msgs = suite.psql_json("conversation", (
        "SELECT id, conversation_id, prompt_id, content FROM messages WHERE role = 'assistant'"))
    by_key = collections.defaultdict(list)
    for p in prompts:
        by_key[(p["user_id"], p["idempotency_key"])].append(p)
    by_id = {p["id"]: p for p in prompts}
    by_event = {p["event_id"]: p for p in prompts}
    usage_by_prompt = collections.defaultdict(list)
    for u in usage:
        usage_by_prompt[u["prompt_id"]].append(u)
    msgs_by_prompt = collections.defaultdict(list)
    for m in msgs:
        msgs_by_prompt[m["prompt_id"]].append(m)
    upstream = collections.Counter()
    for r in suite.fake_requests():
        try:
            body = json.loads(r["body"])
            last = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
        except (ValueError, KeyError, IndexError):
            continue
        m = TURN_RE.match(last)
        if m:
            upstream[m.group(1)] += 1

    codes = collections.Counter()
    ok = 0
    for c in calls:
        codes[DOCUMENTED.get(c["code"], "UNDOCUMENTED(%d)" % c["code"])] += 1
        where = "%s: call %s" % (scenario, c["key"])
        failures.check(c["code"] in DOCUMENTED,
                       "%s ended with undocumented status %d %r" % (where, c["code"], c["message"]))
        failures.check(c["ms"] <= c["deadline_ms"] + 3000,
                       "%s took %d ms, past its deadline" % (where, c["ms"]))
        if c["code"] != 0:
            continue
        ok += 1
        if c["stream"]:
            failures.check(c["completed_event"] and c["deltas"] == c["text"],
                           "%s: OK stream without a completed event matching its deltas" % where)
        rows = by_key.get((c["user_id"], c["key"]), [])
        if not failures.check(len(rows) == 1, "%s: %d prompt rows" % (where, len(rows))):
            continue
        p = rows[0]
        failures.check(p["id"] == c["prompt_id"] and p["status"] == "COMPLETED" and
                       p["cost_nanos"] == c["cost_nanos"] and
                       p["prompt_tokens"] == c["prompt_tokens"] and
                       p["completion_tokens"] == c["completion_tokens"],
                       "%s: prompt row %s disagrees with the client" % (where, p))
        ms = msgs_by_prompt.get(p["id"], [])
        failures.check(len(ms) == 1 and ms[0]["id"] == c["response_message_id"] and
                       ms[0]["content"] == c["text"],
                       "%s: %d assistant messages for prompt %d" % (where, len(ms), p["id"]))
        us = usage_by_prompt.get(p["id"], [])
        failures.check(len(us) == 1 and us[0]["event_id"] == p["event_id"] and
                       us[0]["cost_nanos"] == p["cost_nanos"] == cost(p),
                       "%s: usage records %s for prompt cost %d (formula %d)" %
                       (where, us, p["cost_nanos"], cost(p)))
        failures.check(upstream[c["key"]] == 1, "%s: %d provider requests (want exactly 1)" %
                       (where, upstream[c["key"]]))
    for key in refused_keys:
        failures.check(upstream[key] == 0, "%s: refused turn %s reached the provider" %
                       (scenario, key))
    # No usage record without a prompt; every record exact and unique.
    for u in usage:
        p = by_event.get(u["event_id"])
        if failures.check(p is not None, "%s: usage record %s has no prompt" % (scenario, u)):
            failures.check(p["id"] == u["prompt_id"] and p["user_id"] == u["user_id"] and
                           p["cost_nanos"] == u["cost_nanos"] == cost(u) and
                           p["status"] in ("COMPLETED", "FAILED", "CANCELLED"),
                           "%s: usage record %s (prompt %d, %d nanos) disagrees with prompt "
                           "row: status %s, %d nanos" % (scenario, u["event_id"], u["prompt_id"],
                                                         u["cost_nanos"], p["status"],
                                                         p["cost_nanos"]))
    for pid, ms in msgs_by_prompt.items():
        failures.check(pid is None or len(ms) == 1,
                       "%s: prompt %s has %d assistant messages" % (scenario, pid, len(ms)))
    # Ledger = completed + partially charged turns, to the nano.
    charged = [p for p in prompts if p["status"] in ("COMPLETED", "FAILED", "CANCELLED") and
               p["prompt_tokens"] + p["completion_tokens"] > 0]
    ledger = sum(u["cost_nanos"] for u in usage)
    want = sum(p["cost_nanos"] for p in charged)
    failures.check(ledger == want and len(usage) == len(charged),
                   "%s: ledger %d nanos over %d records; charged prompts %d nanos over %d" %
                   (scenario, ledger, len(usage), want, len(charged)))
    statuses = collections.Counter(p["status"] for p in prompts)
    log("%s: %d calls %s; %d OK; prompts %s; ledger %d nanos in %d records; %s" % (
        scenario, len(calls), dict(codes), ok, dict(statuses), ledger, len(usage),
        "invariants hold" if len(failures.items) == n0 else "INVARIANTS BROKEN"))
    return {"calls": len(calls), "ok": ok, "codes": dict(codes), "prompts": dict(statuses)}


def probe(suite, failures, scenario, seconds=2):
    """After a fault: the suite serves again, without anyone restarting it by hand."""
    load = Load(suite, scenario + "-after", seconds, callers=4, users=2, deadline_s=15)
    calls = load.finish(failures)
    bad = [c for c in calls if c["code"] != 0]
    failures.check(calls and not bad, "%s: after recovery %d of %d calls failed: %s" % (
        scenario, len(bad), len(calls), bad[:2]))
    return calls


def kill_scenario(suite, failures, svc, n, seconds, directive):
    tag = "kill-%s-%d" % (svc, n)
    load = Load(suite, tag, seconds, directive=directive)
    time.sleep(seconds * 0.35)
    t_kill = time.time() * 1000  # a call open at the kill started before this, ends after
    pid = suite.signal(svc, signal.SIGKILL)
    failures.check(suite.wait_exit(pid, 10), tag + ": kill -9 did not stop it")
    time.sleep(1.0)
    suite.restart_missing()
    calls = load.finish(failures)
    if svc == "ai-agent":
        cut = [c for c in calls if c["stream"] and c["started_prompt"] and c["code"] != 0 and
               c["t0"] < t_kill <= c["t1"]]
        log("%s: %d streams were cut mid-answer" % (tag, len(cut)))
        failures.check(len(cut) > 0, tag + ": no stream was open when ai-agent was killed")
    calls += probe(suite, failures, tag)
    drain_outbox(suite, failures)
    return calls


def pg_scenario(suite, failures, seconds, n):
    # The round in the tag: idempotency keys are made from it, and a key reused for a
    # new conversation is (rightly) refused.
    tag = "pg-restart-%d" % n
    load = Load(suite, tag, seconds, directive="[[fake:delay_ms=20]]")
    time.sleep(seconds * 0.35)
    suite.pg_restart()
    calls = load.finish(failures)
    calls += probe(suite, failures, tag)
    drain_outbox(suite, failures)
    return calls


def saving_scenario(suite, failures, seconds, fault, n, outage_s=12):
    """Issue 18: conversation (kill -9) or PostgreSQL goes away while answers are being
    saved, for longer than a client waits for a save (10 s). Streams of ~1 s finish all
    the time, so many end inside the outage. Clients retry a failed turn with the same
    key, as they are told to. Afterwards: every turn whose answer was delivered (the
    prompt is COMPLETED: streamed whole and charged) has its assistant message exactly
    once and its last same-key call answered OK with that text; one charge per turn
    (check_invariants)."""
    tag = "saving-%s-%d" % (fault, n)
    load = Load(suite, tag, seconds, directive="[[fake:delay_ms=120]]", deadline_s=15,
                retry_same_key_s=45)
    time.sleep(seconds * 0.4)
    t_fault = time.time() * 1000
    if fault == "conversation":
        pid = suite.signal("conversation", signal.SIGKILL)
        failures.check(suite.wait_exit(pid, 10), tag + ": kill -9 did not stop it")
        time.sleep(outage_s)
        suite.restart_missing()
    else:
        suite.pg_outage(outage_s)
    calls = load.finish(failures)
    # The saves still retrying in the background end, and every prompt of the run
    # settles: finished, with its answer in the conversation.
    deadline = time.time() + 90
    left = -1
    while time.time() < deadline:
        left = suite.psql_json("ai-agent", (
            "SELECT count(*) AS n FROM ai_prompts WHERE idempotency_key LIKE '%s-%%' "
            "AND (answer_pending OR status IN ('PENDING', 'STREAMING'))" % tag))[0]["n"]
        if left == 0:
            break
        time.sleep(0.5)
    failures.check(left == 0, "%s: %d prompts still unsettled after the fault" % (tag, left))
    prompts = suite.psql_json("ai-agent", (
        "SELECT id, idempotency_key, status, response_text, answer_pending FROM ai_prompts "
        "WHERE idempotency_key LIKE '%s-%%'" % tag))
    msgs = suite.psql_json("conversation", (
        "SELECT prompt_id, content FROM messages WHERE role = 'assistant' AND prompt_id = ANY("
        "ARRAY[%s]::bigint[])" % (",".join(str(p["id"]) for p in prompts) or "0")))
    msgs_by_prompt = collections.defaultdict(list)
    for m in msgs:
        msgs_by_prompt[m["prompt_id"]].append(m)
    last, first = {}, {}
    for c in calls:  # the calls of one key are in order: one caller makes them
        first.setdefault(c["key"], c)
        last[c["key"]] = c
    completed = [p for p in prompts if p["status"] == "COMPLETED"]
    once = answered = 0
    for p in completed:
        key = p["idempotency_key"]
        ms = msgs_by_prompt.get(p["id"], [])
        once += len(ms) == 1 and ms[0]["content"] == p["response_text"]
        failures.check(len(ms) == 1 and ms[0]["content"] == p["response_text"],
                       "%s: COMPLETED prompt %d has %d assistant messages" % (tag, p["id"], len(ms)))
        c = last.get(key)
        ok = c is not None and c["code"] == 0 and c["text"] == p["response_text"]
        answered += ok
        failures.check(ok, "%s: the last call with key %s did not get the saved answer: %s" %
                       (tag, key, c and (c["code"], c["message"])))
    for p in prompts:
        failures.check(p["status"] == "COMPLETED" or not msgs_by_prompt.get(p["id"]) or
                       p["status"] in ("FAILED", "CANCELLED"),
                       "%s: prompt %d is %s yet has an answer in the conversation" %
                       (tag, p["id"], p["status"]))
    # Answers streamed whole whose save outlasted the client's wait: told to retry, and
    # the retry got them.
    waited_out = [k for k, c in first.items() if c["code"] == 14 and
                  "same idempotency_key" in c["message"]]
    open_at_fault = [c for c in calls if c["t0"] < t_fault < c["t1"]]
    log("%s: %d calls open when %s went away for %d s; %d turns delivered (COMPLETED), %d "
        "with their message exactly once, %d answered to the last same-key call; %d answers "
        "outlasted the client's wait and came back to a same-key retry" % (
            tag, len(open_at_fault), fault, outage_s, len(completed), once, answered,
            len(waited_out)))
    failures.check(len(open_at_fault) > 0, tag + ": no call was open at the fault (timing)")
    failures.check(len(completed) == once == answered,
                   "%s: delivered %d, message once %d, answered %d differ" % (
                       tag, len(completed), once, answered))
    drain_outbox(suite, failures)
    return calls


def sigterm_scenario(suite, failures):
    # Streams of ~2.4 s; grace 8 s: every stream open at SIGTERM should finish OK.
    load = Load(suite, "sigterm-agent", 4, directive="[[fake:delay_ms=300]]")
    time.sleep(1.5)
    t_term = time.time() * 1000
    pid = suite.signal("ai-agent", signal.SIGTERM)
    failures.check(suite.wait_exit(pid, 8 + 6), "sigterm: ai-agent outlived its grace period")
    suite.restart_missing()
    calls = load.finish(failures)
    open_at_term = [c for c in calls if c["t0"] < t_term - 200 < c["t1"]]
    finished = [c for c in open_at_term if c["code"] == 0]
    log("sigterm: %d calls open at SIGTERM, %d finished OK, others: %s" % (
        len(open_at_term), len(finished),
        collections.Counter(c["code"] for c in open_at_term if c["code"] != 0)))
    failures.check(len(open_at_term) > 0, "sigterm: no stream was open at SIGTERM")
    failures.check(len(finished) == len(open_at_term),
                   "sigterm: %d in-flight calls did not finish within the grace period" %
                   (len(open_at_term) - len(finished)))
    agent_log = open(os.path.join(suite.state, "logs", "ai-agent.log")).read()
    failures.check('"stopped"' in agent_log or "stopped" in agent_log,
                   "sigterm: ai-agent did not log a clean stop")
    calls += probe(suite, failures, "sigterm")
    drain_outbox(suite, failures)
    return calls


def usage_down_scenario(suite, failures, seconds):
    load = Load(suite, "usage-down", seconds)
    time.sleep(1)
    pid = suite.signal("usage", signal.SIGTERM)
    suite.wait_exit(pid, 15)
    t_down = time.time() * 1000
    time.sleep(seconds * 0.6)
    backlog = suite.psql_json("ai-agent", "SELECT count(*) AS n FROM usage_outbox")[0]["n"]
    t_up = time.time() * 1000
    suite.restart_missing()
    calls = load.finish(failures)
    during = [c for c in calls if c["t0"] > t_down and c["t1"] < t_up]
    ok = [c for c in during if c["code"] == 0]
    log("usage-down: %d turns while usage was down, %d OK; outbox backlog %d" % (
        len(during), len(ok), backlog))
    failures.check(during and len(ok) == len(during),
                   "usage-down: chat did not keep working while usage was down")
    failures.check(backlog > 0, "usage-down: no outbox backlog while usage was down")
    drain_outbox(suite, failures)
    return calls


def budget_scenario(suite, failures, k, agents=None):
    """3 ai-agent replicas (or `agents`), one user, a budget for exactly K turns of known cost."""
    agents = agents or [suite.addr["ai-agent"], suite.start_replica(), suite.start_replica()]
    per_turn = (13 * 150000 + 8 * 600000 + 500) // 1000  # gpt-4o-mini, see the fake's rules
    limit = k * per_turn
    load = Load(suite, "budget", 30, callers=12, users=1, agents=agents,
                extra=["--budget_nanos=%d" % limit, "--max_output_tokens=8",
                       "--max_turns=%d" % (k * 4)])
    calls = load.finish(failures)
    drain_outbox(suite, failures)
    uid = calls[0]["user_id"]
    spent = suite.psql_json("usage", "SELECT coalesce(sum(cost_nanos), 0)::bigint AS s FROM "
                            "usage_logs WHERE user_id = %d" % uid)[0]["s"]
    res = suite.psql_json("usage", "SELECT coalesce(max(max_cost_nanos), 0) AS m, "
                          "count(*) FILTER (WHERE state = 'active') AS active FROM reservations "
                          "WHERE user_id = %d AND allowed" % uid)[0]
    ok = [c for c in calls if c["code"] == 0]
    refused = [c for c in calls if c["code"] == 8]
    statuses = suite.psql_json("ai-agent", "SELECT status, count(*) AS n FROM ai_prompts WHERE "
                               "user_id = %d GROUP BY 1" % uid)
    log("budget: %d agents; limit %d nanos = %d turns of %d; %d OK, %d refused; spent %d; "
        "largest reservation %d; active reservations left %d; prompts %s" % (
            len(agents), limit, k, per_turn, len(ok), len(refused), spent, res["m"],
            res["active"], statuses))
    failures.check(spent == sum(c["cost_nanos"] for c in ok),
                   "budget: spent %d != sum of OK turns" % spent)
    # Overshoot is bounded by what 12 concurrent callers can hold reserved.
    failures.check(spent <= limit + 12 * res["m"], "budget: overshoot %d > reservations in "
                   "flight" % (spent - limit))
    # Reservations are worst-case (>= the real cost), so at most K fit, and the last
    # one may not fit beside K-1 settled turns when its worst case exceeds the rest.
    failures.check(k - 1 <= len(ok) <= k, "budget: %d OK turns for a budget of %d" % (len(ok), k))
    failures.check(spent <= limit, "budget: spent %d over the limit %d" % (spent, limit))
    failures.check(len(refused) > 0, "budget: nothing was refused")
    failures.check(res["active"] == 0, "budget: %d reservations still active" % res["active"])
    for c in refused:
        failures.check("budget" in c["message"].lower(), "budget: refusal says %r" % c["message"])
    for p, _ in suite.extra:
        p.terminate()
        p.wait(timeout=20)
    suite.extra = []
    return calls, [c["key"] for c in refused], {"limit": limit, "ok": len(ok), "spent": spent,
                                                "overshoot": spent - limit}


def run_load(build):
    failures = Failures()
    suite = Suite(build)
    t0 = time.time()
    summary = {}
    try:
        suite.up()
        suite.setup_admin()
        secs = 20 if LONG else 5
        rounds = 3 if LONG else 1
        all_calls = []
        calls = Load(suite, "baseline", 3 if not LONG else 15).finish(failures)
        all_calls += calls
        summary["baseline"] = check_invariants(suite, all_calls, failures, "baseline")
        for n in range(rounds):
            for svc, directive in (("ai-agent", "[[fake:delay_ms=40]]"), ("conversation", ""),
                                   ("usage", ""), ("user", "")):
                name = "kill-9 %s #%d" % (svc, n)
                if not want(name):
                    continue
                all_calls += kill_scenario(suite, failures, svc, n, secs, directive)
                summary[name] = check_invariants(suite, all_calls, failures, name)
            name = "pg-restart #%d" % n
            if want(name):
                all_calls += pg_scenario(suite, failures, secs, n)
                summary[name] = check_invariants(suite, all_calls, failures, name)
            for fault in ("conversation", "pg"):
                name = "answers saving through %s outage #%d" % (fault, n)
                if not want(name):
                    continue
                all_calls += saving_scenario(suite, failures, max(secs, 6), fault, n)
                summary[name] = check_invariants(suite, all_calls, failures, name)
        if want("sigterm"):
            all_calls += sigterm_scenario(suite, failures)
            summary["sigterm"] = check_invariants(suite, all_calls, failures, "sigterm ai-agent")
        if want("usage down"):
            all_calls += usage_down_scenario(suite, failures, secs)
            summary["usage-down"] = check_invariants(suite, all_calls, failures, "usage down")
        if want("budget"):
            bcalls, refused, b = budget_scenario(suite, failures, 10)
            all_calls += bcalls
            summary["budget"] = check_invariants(suite, all_calls, failures, "budget x3 replicas",
                                                 refused_keys=refused)
            summary["budget"].update(b)
        stuck = suite.psql_json("ai-agent", "SELECT status, count(*) AS n FROM ai_prompts "
                                "WHERE status IN ('PENDING', 'STREAMING') GROUP BY 1")
        log("prompts left non-terminal by crashes (ai-agent sweeps them to FAILED once they are "
            "older than any turn can live): %s" % stuck)
        log("TOTAL: %d turns driven, %d OK, %.0f s" % (
            len(all_calls), sum(1 for c in all_calls if c["code"] == 0), time.time() - t0))
    finally:
        suite.down()
    print(json.dumps(summary, indent=1))
    if failures.items:
        log("%d invariant failures" % len(failures.items))
        for f in failures.items[:50]:
            log("  -", f[:400])
        return 1
    return 0


JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")


def log_scan(suite, failures, secrets):
    """Zero hits for passwords, tokens, API keys and message bodies in every log."""
    needles = {s for s in secrets if len(s) >= 8}
    needles |= {v for k, v in suite.keys.items() if v}
    needles |= {"fake-key", ADMIN_PASSWORD, "alpha beta gamma delta", "idor body text",
                "are you there", "a's secret plans", "flood 0 words"}
    logs = os.path.join(suite.state, "logs")
    hits, scanned, size = [], 0, 0
    for name in sorted(os.listdir(logs)):
        path = os.path.join(logs, name)
        try:
            text = open(path, "rb").read().decode("utf-8", "replace")
        except OSError:
            continue
        scanned += 1
        size += len(text)
        for n in needles:
            if n in text:
                hits.append("%s: %s..." % (name, n[:12]))
        for m in JWT_RE.finditer(text):
            hits.append("%s: a JWT %s..." % (name, m.group(0)[:16]))
        for m in re.finditer(r"aik_[A-Za-z0-9_-]{8,}", text):
            hits.append("%s: an API key %s..." % (name, m.group(0)[:8]))
        for m in re.finditer(r"pw-[A-Za-z0-9_-]+-secret", text):
            hits.append("%s: a load password" % name)
    log("log scan: %d files, %d bytes, %d needles + JWT/API-key patterns: %d hits" % (
        scanned, size, len(needles), len(hits)))
    failures.check(not hits, "log scan hits: %s" % sorted(set(hits))[:20])
    return len(hits)


def run_abuse(build):
    failures = Failures()
    suite = Suite(build)
    t0 = time.time()
    try:
        suite.up()
        suite.setup_admin()
        secrets_file = os.path.join(suite.tmp, "secrets.txt")
        env = dict(suite.env, FAULTS_USER_ADDR=suite.addr["user"],
                   FAULTS_CONV_ADDR=suite.addr["conversation"],
                   FAULTS_AGENT_ADDR=suite.addr["ai-agent"], FAULTS_USAGE_ADDR=suite.addr["usage"],
                   FAULTS_STATE_DIR=suite.state, FAULTS_SECRETS_OUT=secrets_file,
                   FAULTS_ADMIN_EMAIL=ADMIN_EMAIL, FAULTS_ADMIN_PASSWORD=ADMIN_PASSWORD)
        r = subprocess.run([os.path.join(build, "tests/faults/aichat-abuse-test")], env=env,
                           timeout=600)
        failures.check(r.returncode == 0, "abuse tests failed (see above)")
        # Every service is still up after all that.
        for svc in ("user", "conversation", "ai-agent", "usage"):
            pid = suite.pid(svc)
            failures.check(os.path.exists("/proc/%d" % pid), "%s died during the abuse tests" % svc)
        # A little chat load too, so its bodies and passwords are in the scan.
        Load(suite, "scan", 2, callers=4, users=2).finish(failures)
        drain_outbox(suite, failures)
        secrets = [l.strip() for l in open(secrets_file)] if os.path.exists(secrets_file) else []
        secrets.append("pw-scan-secret")
        log_scan(suite, failures, secrets)
        log("abuse: %.0f s" % (time.time() - t0))
    finally:
        suite.down()
    for f in failures.items:
        log("  -", f[:400])
    return 1 if failures.items else 0


def main():
    build = os.path.join(ROOT, "build")
    args = sys.argv[1:]
    if "--build" in args:
        build = args[args.index("--build") + 1]
    cmd = args[0] if args else "load"
    if cmd == "load":
        return run_load(build)
    if cmd == "abuse":
        return run_abuse(build)
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())

