#!/usr/bin/env python3
"""Chat-template goldens rendered with Jinja2 alone, the way transformers' apply_chat_template renders them.

    python3 scripts/make_chat_jinja_goldens.py            # needs only Jinja2 (Debian: python3-jinja2)

Writes tests/data/tokenizer/chat_jinja.jsonl: the curated conversations of make_tokenizer_goldens.py plus
random ones (roles, string / list / absent content, images, videos, tools, dict and string tool-call
arguments, vision ids, generation prompt), each with the text the verbatim template of
tests/data/tokenizer/chat_templates.json renders. The environment is transformers' own
(_compile_jinja_template: ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True) with the
loopcontrols extension, its tojson = json.dumps(ensure_ascii=False) and raise_exception), so this file needs no
transformers install; chat.jsonl (make_tokenizer_goldens.py) checks the same against transformers itself.
"""
import copy
import json
import random
import sys
from pathlib import Path

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import make_tokenizer_goldens as goldens  # noqa: E402  (sits next to this script)

N_RANDOM = 300


def environment():
    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env


def random_conversations(r: random.Random):
    texts = ["", "hi", " spaced ", "多语言 😀", "line\nbreak", "<think>x</think>", "\t", "a\"quote\\", "<|im_end|>"]

    def content():
        k = r.randrange(4)
        if k == 0:
            return r.choice(texts)
        if k == 1:
            return None  # no "content" key at all
        kinds = [{"type": "image"}, {"type": "video"}]
        return [r.choice(kinds) if r.random() < 0.5 else {"type": "text", "text": r.choice(texts)} for _ in range(r.randrange(4))]

    def args():
        v = {"k": r.choice([1, -2, 3.25, 1e-7, 1e22, True, None, "s", [1, {"x": "é"}], {}]), "n": r.randrange(100)}
        return v if r.random() < 0.5 else json.dumps(v)

    tools = [{"type": "function", "function": {"name": f"f{i}", "description": r.choice(texts),
                                               "parameters": {"type": "object", "properties": {"a": {"type": "number", "default": 0.5}}}}}
             for i in range(3)]
    out = []
    for i in range(N_RANDOM):
        kind = r.choice(["qwen2_5_vl", "qwen3_vl"])
        msgs = []
        for _ in range(r.randrange(1, 6)):
            m = {"role": r.choice(["system", "user", "assistant", "tool", "user", "assistant", "developer"])}
            c = content()
            if c is not None:
                m["content"] = c
            if kind == "qwen3_vl" and m["role"] == "assistant" and r.random() < 0.4:
                m["tool_calls"] = [{"type": "function", "function": {"name": "f", "arguments": args()}} if r.random() < 0.7
                                   else {"name": "g", "arguments": args()} for _ in range(r.randrange(1, 3))]
            msgs.append(m)
        conv = dict(name=f"random{i}", messages=msgs, add_generation_prompt=r.random() < 0.7, add_vision_id=r.random() < 0.3)
        if kind == "qwen3_vl" and r.random() < 0.5:
            conv["tools"] = r.sample(tools, r.randrange(1, 3))
        out.append((kind, conv))
    return out


def main() -> int:
    env = environment()
    templates = json.loads((ROOT / "tests/data/tokenizer/chat_templates.json").read_text(encoding="utf-8"))
    convs = [(kind, c) for kind, items in goldens.conversations().items() for c in items]
    convs += random_conversations(random.Random(2026))
    lines = [json.dumps({"format": "qvl chat goldens v1 (Jinja2 only)", "jinja2": jinja2.__version__, "count": len(convs),
                         "templates_sha256": templates["sha256"]})]
    for kind, conv in convs:
        gen = conv.get("add_generation_prompt", True)
        kw = dict(messages=conv["messages"], add_generation_prompt=gen)
        if conv.get("tools"):
            kw["tools"] = conv["tools"]
        if conv.get("add_vision_id"):
            kw["add_vision_id"] = True
        text = env.from_string(templates[kind]).render(**kw)
        rec = {"model": kind, "name": conv["name"], "messages": copy.deepcopy(conv["messages"]), "add_generation_prompt": gen,
               "add_vision_id": bool(conv.get("add_vision_id")), **goldens.compact_tools(conv), "text": text}
        for m in rec["messages"]:
            for tc in m.get("tool_calls") or []:
                f = tc.get("function", tc)
                if not isinstance(f["arguments"], str):
                    f["arguments_json"] = json.dumps(f["arguments"], ensure_ascii=False, separators=(",", ":"))
        lines.append(json.dumps(rec, ensure_ascii=False))
    out = ROOT / "tests/data/tokenizer/chat_jinja.jsonl"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{out}: {len(convs)} conversations, {out.stat().st_size} bytes (Jinja2 {jinja2.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
