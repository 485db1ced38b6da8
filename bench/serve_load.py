#!/usr/bin/env python3
"""Load and robustness run against a running `qvl serve` (standard library only).

  python3 bench/serve_load.py --port P [--clients 16] [--requests 100]

Each client sends a mix: plain and streamed completions (with and without a data: URL image), malformed JSON,
wrong types, bad base64, a corrupt image, an unknown model, and streams it abandons after the first event.
Prints the count per status and the server's RSS before and after (--pid); exits 1 on any 5xx or transport
error. The acceptance run of issue 7 is 64 clients x 1,000 requests on the ASan build with the tiny model."""
import argparse
import base64
import collections
import http.client
import json
import os
import threading

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--clients", type=int, default=16)
ap.add_argument("--requests", type=int, default=100)
ap.add_argument("--pid", type=int, default=0)
ap.add_argument("--image", default=os.path.join(os.path.dirname(__file__), "../tests/data/images/jpeg_20x20.jpg"))
a = ap.parse_args()
img = "data:image/jpeg;base64," + base64.b64encode(open(a.image, "rb").read()).decode()
user = lambda content: {"messages": [{"role": "user", "content": content}], "max_tokens": 4, "temperature": 0}
bodies = [
    json.dumps(user("Hello")),
    json.dumps(dict(user([{"type": "image_url", "image_url": {"url": img}}, {"type": "text", "text": "?"}]))),
    json.dumps(dict(user("Hello"), stream=True, stream_options={"include_usage": True})),
    '{"messages": [',
    json.dumps(dict(user("Hello"), temperature="hot")),
    json.dumps(user([{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@@"}}])),
    json.dumps(user([{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAAAAAA"}}])),
    json.dumps(dict(user("Hello"), model="nope")),
    "abandon",
]
counts, lock, errors = collections.Counter(), threading.Lock(), []


def rss():
    if not a.pid:
        return "?"
    for line in open(f"/proc/{a.pid}/status"):
        if line.startswith("VmRSS"):
            return line.split()[1] + " kB"


def client(k):
    for i in range(a.requests):
        b = bodies[(k + i) % len(bodies)]
        try:
            c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=120)
            if b == "abandon":
                c.request("POST", "/v1/chat/completions", json.dumps(dict(user("Hello"), max_tokens=200, stream=True)))
                r = c.getresponse()
                r.readline()
                c.close()
                status = "abandoned"
            else:
                c.request("POST", "/v1/chat/completions", b, {"Content-Type": "application/json"})
                r = c.getresponse()
                r.read()
                status = r.status
                c.close()
        except Exception as e:  # noqa: BLE001 - any transport failure counts
            status = "error"
            with lock:
                errors.append(repr(e))
        with lock:
            counts[status] += 1


print("server RSS before:", rss())
ts = [threading.Thread(target=client, args=(k,)) for k in range(a.clients)]
[t.start() for t in ts]
[t.join() for t in ts]
print("server RSS after: ", rss())
print(dict(counts))
if errors:
    print("errors:", errors[:5])
bad = sum(v for s, v in counts.items() if s == "error" or (isinstance(s, int) and s >= 500))
print("FAIL" if bad else "OK", f"{sum(counts.values())} requests, {bad} 5xx or transport errors")
raise SystemExit(1 if bad else 0)
