#!/usr/bin/python3
"""Drives a running aichat suite so every metric the dashboard shows has data.

    drive_suite.py PROTO_ROOT USER_ADDR CONVERSATION_ADDR AGENT_ADDR USAGE_ADDR [TURNS [HTTP_ADDR]]
                   [--admin USER_BIN USER_DATABASE_URL]

Registers a fresh account, fails one login on purpose (an error series), logs in, creates
a conversation and streams TURNS chat turns (default 2) through ai-agent, which calls
conversation, usage and the LLM provider (the fake one in the local suite). With HTTP_ADDR,
also through ai-agent's OpenAI-compatible HTTP API: the models, a chat completion, a
streamed one, and an unknown model (a 4xx series). Python stubs
are generated into a temporary folder with Debian's protoc + grpc_python_plugin; uses
Debian's python3-grpcio (run it with /usr/bin/python3).

With --admin, the account is made admin (`USER_BIN set-role`, on the user database) and
sets up a model whose only deployment refuses connections, with gpt-4o-mini as its
fallback; three turns on it fail over (the deployment and fallback metrics get series, and
the third failure in a row opens the deployment's circuit), and ListModels shows its state.
"""
import importlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

import grpc


def http(addr, token, method, path, body=None):
    req = urllib.request.Request(f"http://{addr}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"authorization": f"Bearer {token}", "content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def stubs(proto_root, out):
    protos = [os.path.join("aichat", s, "v1", f"{s}.proto") for s in ("user", "conversation", "agent", "usage")]
    subprocess.run(["protoc", f"-I{proto_root}", "-I/usr/include", f"--python_out={out}", f"--grpc_python_out={out}",
                    "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin"] + protos, check=True)
    sys.path.insert(0, out)
    mods = {}
    for s in ("user", "conversation", "agent", "usage"):
        mods[s] = (importlib.import_module(f"aichat.{s}.v1.{s}_pb2"), importlib.import_module(f"aichat.{s}.v1.{s}_pb2_grpc"))
    return mods


def closed_port():
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stream_turn(agent, md, req):
    deltas, done = 0, None
    for ev in agent.StreamMessage(req, metadata=md, timeout=60):
        kind = ev.WhichOneof("event")
        if kind == "delta":
            deltas += 1
        elif kind == "completed":
            done = ev.completed
    return deltas, done


def routing(apb, agent, md, conversation_id):
    """A model on one dead deployment with a fallback: its turns fail over."""
    name = "deploy-check-routed"
    model = apb.ModelConfig(
        name=name, provider_model="gpt-4o-mini", input_price_micros_per_mtok=150000,
        cached_input_price_micros_per_mtok=75000, output_price_micros_per_mtok=600000,
        context_window=8000, max_output_tokens=500, enabled=True, fallbacks=["gpt-4o-mini"],
        deployments=[apb.Deployment(name="down", base_url=f"http://127.0.0.1:{closed_port()}/v1")])
    agent.UpsertModel(apb.UpsertModelRequest(model=model), metadata=md, timeout=10)
    for i in range(3):
        req = apb.SendMessageRequest(conversation_id=conversation_id, content=f"Fail over, turn {i + 1}.",
                                     model=name, idempotency_key=uuid.uuid4().hex)
        deltas, done = stream_turn(agent, md, req)
        if done is None or done.model != "gpt-4o-mini":
            sys.exit(f"routed turn {i + 1}: not answered by the fallback: {done}")
        print(f"routed turn {i + 1}: {deltas} deltas from the fallback {done.model}")
    listed = agent.ListModels(apb.ListModelsRequest(), metadata=md, timeout=10)
    for m in listed.models:
        if m.name == name:
            for d in m.deployments:
                print(f"{name}/{d.name}: circuit {d.state.circuit}, "
                      f"{d.state.consecutive_failures} failures in a row")


def main():
    args = sys.argv[1:]
    admin = None
    if "--admin" in args:
        i = args.index("--admin")
        admin = args[i + 1:i + 3]
        del args[i:i + 3]
        if len(admin) != 2:
            sys.exit(__doc__)
    if len(args) < 5:
        sys.exit(__doc__)
    proto_root, user_addr, conv_addr, agent_addr, usage_addr = args[0:5]
    turns = int(args[5]) if len(args) > 5 else 2
    http_addr = args[6] if len(args) > 6 else ""
    with tempfile.TemporaryDirectory() as tmp:
        m = stubs(proto_root, tmp)
        upb, ugrpc = m["user"]
        cpb, cgrpc = m["conversation"]
        apb, agrpc = m["agent"]
        spb, sgrpc = m["usage"]
        user = ugrpc.UserServiceStub(grpc.insecure_channel(user_addr))
        conv = cgrpc.ConversationServiceStub(grpc.insecure_channel(conv_addr))
        agent = agrpc.AiAgentServiceStub(grpc.insecure_channel(agent_addr))
        usage = sgrpc.UsageServiceStub(grpc.insecure_channel(usage_addr))

        email = f"deploy-check-{uuid.uuid4().hex[:10]}@example.com"
        password = "correct horse battery staple"
        user.Register(upb.RegisterRequest(email=email, password=password, display_name="deploy check"), timeout=30)
        try:
            user.Login(upb.LoginRequest(email=email, password="wrong password!"), timeout=30)
            sys.exit("a wrong password logged in")
        except grpc.RpcError as e:
            print(f"wrong password: {e.code().name} (expected)")
        token = user.Login(upb.LoginRequest(email=email, password=password), timeout=30).access_token
        md = [("authorization", f"Bearer {token}")]
        user.GetMe(upb.GetMeRequest(), metadata=md, timeout=10)
        c = conv.CreateConversation(cpb.CreateConversationRequest(title="deploy check"), metadata=md, timeout=10)
        agent.ListModels(apb.ListModelsRequest(), metadata=md, timeout=10)
        for i in range(turns):
            req = apb.SendMessageRequest(conversation_id=c.id, content=f"Say hello, turn {i + 1}.",
                                         idempotency_key=uuid.uuid4().hex)
            deltas, done = stream_turn(agent, md, req)
            if done is None:
                sys.exit(f"turn {i + 1}: the stream ended without a completed event")
            print(f"turn {i + 1}: {deltas} deltas, model {done.model}, cost {done.cost_nanos} nanos, "
                  f"{done.usage.prompt_tokens}+{done.usage.completion_tokens} tokens")
            if i + 1 < turns:
                time.sleep(2)
        if admin is not None:
            user_bin, user_db = admin
            subprocess.run([user_bin, "set-role", email, "admin"], check=True, stdout=subprocess.DEVNULL,
                           env=dict(os.environ, DATABASE_URL=user_db))
            token = user.Login(upb.LoginRequest(email=email, password=password), timeout=30).access_token
            routing(apb, agent, [("authorization", f"Bearer {token}")], c.id)
        conv.ListMessages(cpb.ListMessagesRequest(conversation_id=c.id), metadata=md, timeout=10)
        try:
            usage.GetUsageSummary(spb.GetUsageSummaryRequest(), metadata=md, timeout=10)
        except grpc.RpcError as e:
            print(f"usage summary: {e.code().name}")
        # Twice, a few scrapes apart: a counter's first value is no rate yet.
        for round_ in range(2 if http_addr else 0):
            if round_:
                time.sleep(3)
            status, _ = http(http_addr, token, "GET", "/v1/models")
            assert status == 200, status
            for stream in (False, True):
                status, body = http(http_addr, token, "POST", "/v1/chat/completions",
                                    {"model": "gpt-4o-mini", "stream": stream,
                                     "messages": [{"role": "user", "content": "Say hello over HTTP."}]})
                if status != 200:
                    sys.exit(f"HTTP chat completion (stream={stream}): {status} {body[:200]}")
            status, _ = http(http_addr, token, "GET", "/v1/models/no-such-model")
            print(f"HTTP API: models, two chat completions, an unknown model ({status})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
