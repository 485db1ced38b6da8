#!/usr/bin/env python3
"""A Python standard-library client against `qvl serve` (run by tests/test_server.c): usage server_client.py PORT.

Reads the SSE stream line by line as OpenAI's SDK does, and checks plain and streamed answers agree."""
import json
import sys
import urllib.error
import urllib.request
import http.client

port = int(sys.argv[1])
base = f"http://127.0.0.1:{port}"
checks = 0


def check(cond, what):
    global checks
    if not cond:
        sys.exit(f"server_client: FAILED: {what}")
    checks += 1


def post(body):
    req = urllib.request.Request(base + "/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status, r.headers, json.load(r)


msgs = [{"role": "user", "content": [{"type": "text", "text": "Hello there"}]}]
status, headers, plain = post({"messages": msgs, "max_tokens": 10, "temperature": 0})
check(status == 200 and plain["object"] == "chat.completion", "plain completion")
check(headers["x-request-id"] == plain["id"], "x-request-id equals id")
answer = plain["choices"][0]["message"]["content"]
u = plain["usage"]
check(u["prompt_tokens"] + u["completion_tokens"] == u["total_tokens"], "usage adds up")

# Streamed: SSE lines as the OpenAI SDK reads them.
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
conn.request("POST", "/v1/chat/completions", json.dumps(
    {"messages": msgs, "max_tokens": 10, "temperature": 0, "stream": True,
     "stream_options": {"include_usage": True}}), {"Content-Type": "application/json"})
r = conn.getresponse()
check(r.status == 200 and r.getheader("content-type") == "text/event-stream", "stream headers")
text, usage, done, finish = "", None, False, None
for raw in r:
    line = raw.decode("utf-8").rstrip("\n")
    if not line:
        continue
    check(line.startswith("data: ") and not done, f"SSE line {line!r}")
    data = line[6:]
    if data == "[DONE]":
        done = True
        continue
    chunk = json.loads(data)
    check(chunk["object"] == "chat.completion.chunk", "chunk object")
    if chunk["choices"]:
        delta = chunk["choices"][0]["delta"]
        text += delta.get("content") or ""
        finish = chunk["choices"][0]["finish_reason"] or finish
    else:
        usage = chunk["usage"]
conn.close()
check(done and finish in ("stop", "length"), "stream ends with a finish_reason and [DONE]")
check(text == answer, f"streamed {text!r} == plain {answer!r}")
check(usage == u, "stream usage equals plain usage")

try:
    post({"messages": "nope"})
    check(False, "a bad request must fail")
except urllib.error.HTTPError as e:
    err = json.load(e)
    check(e.code == 400 and err["error"]["param"] == "messages", "400 names the field")

with urllib.request.urlopen(base + "/v1/models", timeout=10) as r:
    check(json.load(r)["data"][0]["object"] == "model", "models")
with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
    lines = [ln for ln in r.read().decode().splitlines() if ln and not ln.startswith("#")]
    check(all(len(ln.rsplit(" ", 1)) == 2 and float(ln.rsplit(" ", 1)[1]) >= 0 for ln in lines), "metrics samples")
print(f"server_client: {checks} checks passed")
