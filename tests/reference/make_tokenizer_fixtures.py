#!/usr/bin/env python3
"""Reference fixtures for the tokenizer layer (tests/fixtures/tokenizer/), from HF `tokenizers`.

Ids always come from `tokenizers.Tokenizer.from_file` (encode with add_special_tokens=False), never
from transformers' AutoTokenizer, which mis-tokenizes these files (spec §8.2). Chat texts come from
the Jinja templates rendered the way transformers' apply_chat_template renders them.

Outputs
  corpus.bin / corpus_ids.bin / corpus_index.json
      >= 5 MB of real text from this Debian machine (licences, package docs, gettext catalogues in
      many scripts, C++ and Python sources) plus adversarial documents; ids as little-endian uint32;
      the index gives each document's name and byte/id ranges.
  unicode_classes.json
      code point ranges matched by \\p{L} \\p{M} \\p{N} \\p{P} \\p{S} \\s in the Oniguruma inside
      `tokenizers`, found by running every code point through pre_tokenizers.Split.
  cases.json
      short strings: ids (default and encode_special_tokens=True), pre-tokenized pieces; invalid
      UTF-8 byte strings with the ids of their bytes.decode("utf-8", "replace"); random id lists
      with HF's decoded text.
  chat.json
      conversations with V3 and R1 texts (with and without generation prompt) and their ids.
  long_pieces.json
      12,000-letter single-piece words over small alphabets, from an LCG the C++ test repeats, with
      their ids. They drive the tokenizer's long-piece merge through its heap compaction (checked
      when the fixture was made: every case but "th" and "ea" compacts 1-4 times).

Usage: python3 tests/reference/make_tokenizer_fixtures.py   (needs tokenizers, transformers, jinja2)
       python3 tests/reference/make_tokenizer_fixtures.py long_pieces   (that file only)
The corpus is assembled from files of the machine that runs this script, so re-running elsewhere
changes corpus.bin; the committed fixture is the reference.
"""
import glob
import gettext
import gzip
import json
import os
import random
import struct
import sys

from tokenizers import Regex, Tokenizer, pre_tokenizers

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
TOK_DIR = os.path.join(ROOT, "assets", "tokenizers", "deepseek-v3")
DOC_CAP = 48 * 1024  # bytes per document, so many sources fit in the budget

# DeepSeek-R1 chat template, copied from deepseek-ai/DeepSeek-R1 tokenizer_config.json (the
# revision whose generation prompt forces "<think>\n"; written here from public copies of that
# file, spec §8.8 marks it [3P]). Differences from V3: the </think> split of assistant content and
# the generation prompt.
R1_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='', is_first_sp=true) %}"
    "{%- for message in messages %}{%- if message['role'] == 'system' %}{%- if ns.is_first_sp %}"
    "{% set ns.system_prompt = ns.system_prompt + message['content'] %}{% set ns.is_first_sp = false %}"
    "{%- else %}{% set ns.system_prompt = ns.system_prompt + '\\n\\n' + message['content'] %}{%- endif %}{%- endif %}{%- endfor %}"
    "{{ bos_token }}{{ ns.system_prompt }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}{%- endif %}"
    "{%- if message['role'] == 'assistant' and message['content'] is none %}{%- set ns.is_tool = false -%}"
    "{%- for tool in message['tool_calls'] %}{%- if not ns.is_first %}"
    "{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + '```json' + '\\n' + tool['function']['arguments'] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}"
    "{%- set ns.is_first = true -%}{%- else %}"
    "{{'\\n' + '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + '```json' + '\\n' + tool['function']['arguments'] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}"
    "{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}{%- endfor %}{%- endif %}"
    "{%- if message['role'] == 'assistant' and message['content'] is not none %}{%- if ns.is_tool %}"
    "{{'<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}{%- set ns.is_tool = false -%}"
    "{%- else %}{% set content = message['content'] %}{% if '</think>' in content %}"
    "{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}"
    "{%- if message['role'] == 'tool' %}{%- set ns.is_tool = true -%}{%- if ns.is_output_first %}"
    "{{'<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}"
    "{%- set ns.is_output_first = false %}{%- else %}"
    "{{'\\n<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- endif %}{%- endif %}"
    "{%- endfor -%}{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}{% endif %}"
    "{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\\n'}}{% endif %}"
)


def byte_level_alphabet():
    """GPT-2 bytes_to_unicode: byte -> symbol (spec §8.4)."""
    table, nxt = {}, 0x100
    for b in range(256):
        printable = 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or 0xAE <= b <= 0xFF
        table[b] = chr(b) if printable else chr(nxt)
        nxt += 0 if printable else 1
    return table


SYMBOL_TO_BYTE = {v: k for k, v in byte_level_alphabet().items()}


def byte_level_to_text(piece):
    """HF's ByteLevel pre-tokenizer returns pieces in the byte alphabet; map back to text."""
    return bytes(SYMBOL_TO_BYTE[c] for c in piece).decode("utf-8")


def read_text(path):
    try:
        data = open(path, "rb").read()
        if path.endswith(".gz"):
            data = gzip.decompress(data)
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile):
        return None


def collect(paths, budget, prefix):
    docs, used = [], 0
    for p in paths:
        if used >= budget:
            break
        t = read_text(p)
        if not t or "\x00" in t:
            continue
        t = t[:DOC_CAP]
        docs.append((prefix + os.path.relpath(p, "/"), t))
        used += len(t.encode())
    return docs


def mo_documents(budget):
    """One document per locale: the translated strings of its gettext catalogues."""
    docs, used = [], 0
    by_locale = {}
    for p in sorted(glob.glob("/usr/share/locale/*/LC_MESSAGES/*.mo")):
        by_locale.setdefault(p.split("/")[4], []).append(p)
    # Many scripts first (Han, Kana, Hangul, Cyrillic, Arabic, Hebrew, Indic, Thai, Georgian, ...),
    # then the remaining locales alphabetically until the budget is used.
    first = ["zh_CN", "zh_TW", "ja", "ko", "ru", "uk", "ar", "he", "fa", "ur", "hi", "bn", "ta", "te", "ml", "gu", "pa",
             "th", "lo", "km", "my", "si", "ka", "hy", "el", "am", "vi", "tr", "pl", "sr", "bg", "mn", "ne", "kk"]
    for loc in [x for x in first if x in by_locale] + sorted(x for x in by_locale if x not in first):
        parts = []
        for p in by_locale[loc]:
            try:
                cat = gettext.GNUTranslations(open(p, "rb"))._catalog
            except Exception:
                continue
            parts.extend(v for k, v in sorted(cat.items(), key=lambda kv: str(kv[0])) if k and isinstance(v, str))
            if sum(len(x) for x in parts) > 8000:
                break
        t = "\n".join(parts)[:8000]
        if t:
            docs.append(("locale:" + loc, t))
            used += len(t.encode())
        if used >= budget:
            break
    return docs


def adversarial():
    ws = "".join(chr(c) for c in [9, 10, 11, 12, 13, 32, 0x85, 0xA0, 0x1680] + list(range(0x2000, 0x200B)) + [0x2028, 0x2029, 0x202F, 0x205F, 0x3000, 0x200B, 0xFEFF, 0x180E])
    digits = "0123456789 ٠١٢٣٤٥٦٧٨٩ ۰۱۲۳ ०१२३४५६७८९ ০১২৩ ๐๑๒๓ ①②③ ⅠⅡⅢⅣ ½¾ ²³¹ 𝟎𝟏𝟐 ０１２３４５ 〇一二三 ߀߁"
    emoji = "👨‍👩‍👧‍👦 👍🏽👍🏿 🏳️‍🌈 🇯🇵🇺🇸 🧑🏻‍💻 ❤️‍🔥 1️⃣ #️⃣ 🫠🪿"
    combining = "e\u0301 a\u0300\u0316 Z\u0351\u0358\u0338\u036D͈̝ n\u0303\u0303\u0303 क्षि ﷺ ก้ำ שָׁלוֹם 각 각"
    cjk = "Hello世界, これはテストです。Python3.11とC++17を使う。한국어 텍스트 mixed 中文English混合123abc"
    specials = "<｜begin▁of▁sentence｜>x<｜User｜>hi<｜Assistant｜>ok<｜end▁of▁sentence｜><|EOT|><｜place▁holder▁no▁7｜><think></think><｜tool▁sep｜><｜fim▁hole｜>"
    cases = [ws, digits, emoji, combining, cjk, specials,
             ws * 3 + "x" + ws + "\n" + ws, "a" * 5000, "ab" * 3000 + " " + "🙂" * 500, "1" * 1000 + "x" + "١" * 100,
             " " * 300 + "\n" * 50 + "\r\n" * 50 + "\t" * 30 + "end", "!!!???...;;;''\"\"" * 100,
             "\u0301\u0302abc \u0301 x\u0301\u0302 '\u0301s", "It's #include <a.h>  \n\n  return x;   \n",
             "word" * 2000, "".join(chr(c) for c in range(0x20, 0x800) if not 0xD800 <= c <= 0xDFFF),
             "".join(chr(c) for c in range(0x3000, 0x3100)) + "".join(chr(c) for c in range(0x9F90, 0x9FB0)),
             "<｜User｜" + "<" * 100 + "｜>" + "<｜begin▁of▁sentence" + "<｜fim▁hole｜><｜fim▁hole｜>",
             "x" * 20000 + "\n" + "long line " * 3000]
    return [("adversarial:%d" % i, c) for i, c in enumerate(cases)]


def unicode_classes():
    chars = [chr(c) for c in range(0x110000) if not (0xD800 <= c <= 0xDFFF)]
    s = "".join(chars)
    out = {}
    for name, pat in [("L", r"\p{L}"), ("M", r"\p{M}"), ("N", r"\p{N}"), ("P", r"\p{P}"), ("S", r"\p{S}"), ("space", r"\s")]:
        non = [False] * len(chars)
        for _, (a, b) in pre_tokenizers.Split(Regex(pat), "removed").pre_tokenize_str(s):
            for i in range(a, b):
                non[i] = True
        members = [ord(chars[i]) for i in range(len(chars)) if not non[i]]
        ranges = []
        for c in members:
            if ranges and ranges[-1][1] == c - 1:
                ranges[-1][1] = c
            else:
                ranges.append([c, c])
        out[name] = ranges
    return out


def render(template, messages, add_generation_prompt, bos):
    from transformers.utils.chat_template_utils import render_jinja_template
    rendered, _ = render_jinja_template(conversations=[messages], chat_template=template,
                                        add_generation_prompt=add_generation_prompt, bos_token=bos)
    return rendered[0]


def conversations():
    def call(name, args, type_="function"):
        return {"type": type_, "function": {"name": name, "arguments": args}}
    S = lambda t: {"role": "system", "content": t}
    U = lambda t: {"role": "user", "content": t}
    A = lambda t: {"role": "assistant", "content": t}
    T = lambda t: {"role": "tool", "content": t}
    C = lambda *calls: {"role": "assistant", "content": None, "tool_calls": list(calls)}
    w = call("get_weather", '{"city": "Paris", "unit": "celsius"}')
    t = call("get_time", '{"tz": "Europe/Paris"}')
    return [
        [U("What is 2+2?")],
        [S("You are a helpful assistant."), U("Hello!")],
        [S("S"), U("U1"), A("A1"), U("U2")],
        [S("first"), U("hi"), S("second system, later in the chat"), A("yo"), U("again")],
        [U("Write a poem about the sea."), A("<think>\nThe sea... rhyme?\n</think>\n\nWaves on the shore."), U("Another one")],
        [U("q"), A("<think>a</think>b</think>\n\nfinal answer"), U("next")],
        [U("Weather in Paris?"), C(w), T('{"temp": 21}'), A("It is 21°C in Paris.")],
        [U("Weather and time?"), C(w, t), T('{"temp": 21}'), T('{"time": "10:00"}'), A("21°C, 10:00.")],
        [U("Weather?"), C(w), T('{"temp": 21}')],
        [U("Weather?"), C(w), T('{"temp": 21}'), T("second output")],
        [U("a"), C(w), T("r1"), A("ok"), U("b"), C(t), T("r2"), A("done")],
        [S("Use tools."), U("x"), C(w, t, call("third", "{}")), T("o1"), T("o2"), T("o3")],
        [U("中文问题：今天天气怎么样？"), A("<think>用户问天气。</think>今天晴天，25度。"), U("日本語で答えて")],
        [U("Code:\n```python\nprint('hi')\n```\n"), A("```\nhi\n```"), U("  spaces  \n\n")],
        [U("emoji 👨‍👩‍👧‍👦 and digits 1234567")],
        [U("<｜User｜>injected<｜Assistant｜> markers")],
        [U(""), A(""), U("")],
        [S(""), S(""), U("x")],
        [U("one"), A("two"), U("three"), A("four"), U("five"), A("<think>r</think>six"), U("seven")],
        [U("tool then user"), C(w), T("out"), U("thanks"), A("welcome")],
        [{"role": "developer", "content": "ignored role"}, U("hi")],
        [U("Solve x^2=4"), A("<think>\nx = ±2\n</think>\n\nx = 2 or x = -2")],
        [U("call"), C(call("f", '{"a": [1, 2, {"b": "c"}]}', "function"))],
    ]


def lcg_word(alphabet, length, seed):
    """The word the C++ test builds: s = (s * 1103515245 + 12345) mod 2^31, letter (s >> 16) % k."""
    out, s = [], seed
    for _ in range(length):
        s = (s * 1103515245 + 12345) & 0x7FFFFFFF
        out.append(alphabet[(s >> 16) % len(alphabet)])
    return "".join(out)


def long_pieces(tok):
    cases = []
    for alphabet in ["ab", "abc", "th", "ea", "the", "ing", "ol"]:
        word = lcg_word(alphabet, 12000, 1)
        pieces = tok.pre_tokenizer.pre_tokenize_str(word)
        assert len(pieces) == 1, "not a single piece: %r" % alphabet
        cases.append({"alphabet": alphabet, "length": 12000, "seed": 1, "ids": tok.encode(word, add_special_tokens=False).ids})
    json.dump({"cases": cases}, open(os.path.join(OUT, "long_pieces.json"), "w"), separators=(",", ":"))
    print("long_pieces: %d words" % len(cases), file=sys.stderr)


def main():
    tok = Tokenizer.from_file(os.path.join(TOK_DIR, "tokenizer.json"))
    if sys.argv[1:] == ["long_pieces"]:
        long_pieces(tok)
        return
    cfg = json.load(open(os.path.join(TOK_DIR, "tokenizer_config.json")))
    bos = cfg["bos_token"] if isinstance(cfg["bos_token"], str) else cfg["bos_token"]["content"]
    enc = lambda s: tok.encode(s, add_special_tokens=False).ids
    os.makedirs(OUT, exist_ok=True)

    # ---- corpus ----
    docs = []
    docs += collect(sorted(glob.glob("/usr/share/common-licenses/*")), 400_000, "")
    docs += collect(sorted(glob.glob("/usr/share/doc/*/changelog*.gz")) + sorted(glob.glob("/usr/share/doc/*/README*"))
                    + sorted(glob.glob("/usr/share/doc/*/copyright")), 1_200_000, "")
    docs += mo_documents(1_700_000)
    docs += collect(sorted(glob.glob("/usr/include/c++/12/bits/*.h")), 700_000, "")
    docs += collect(sorted(glob.glob("/usr/lib/python3.11/*.py")), 1_000_000, "")
    docs += collect(sorted(glob.glob("/usr/share/doc/*/*.md")) + sorted(glob.glob("/usr/share/doc/*/NEWS*")), 500_000, "")
    docs += adversarial()
    text_blob, id_blob, index = bytearray(), bytearray(), []
    all_ids = tok.encode_batch([d[1] for d in docs], add_special_tokens=False)
    for (name, t), e in zip(docs, all_ids):
        b = t.encode()
        index.append({"name": name, "text_offset": len(text_blob), "text_len": len(b),
                      "ids_offset": len(id_blob) // 4, "ids_len": len(e.ids)})
        text_blob += b
        id_blob += struct.pack("<%dI" % len(e.ids), *e.ids)
    open(os.path.join(OUT, "corpus.bin"), "wb").write(text_blob)
    open(os.path.join(OUT, "corpus_ids.bin"), "wb").write(id_blob)
    import tokenizers
    json.dump({"tokenizers_version": tokenizers.__version__, "docs": index}, open(os.path.join(OUT, "corpus_index.json"), "w"), ensure_ascii=False, indent=0)
    print("corpus: %d docs, %.2f MB, %d ids" % (len(docs), len(text_blob) / 1e6, len(id_blob) // 4), file=sys.stderr)

    # ---- unicode classes ----
    json.dump(unicode_classes(), open(os.path.join(OUT, "unicode_classes.json"), "w"), separators=(",", ":"))

    # ---- short cases ----
    strings = ["", " ", "Hello world", " hello world ", "Hello 你好 World 世界!", "abc 12345 def", "x  = 1;\n\n  return",
               "it's #include <a.h>  ", "日本語のテキストです。", "\n", "\r\n\r\n", "  \n  ", "a\u00a0b", "\u3000x\u3000",
               "<｜begin▁of▁sentence｜>", "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜>",
               "<|EOT|>x<|EOT|>", "<｜place▁holder▁no▁0｜><｜place▁holder▁no▁799｜>", "<think>\nhmm\n</think>\n\nok",
               "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f", "🙂🙃", "éé", "e\u0301", "\u0301",
               "12345678901", "٣٤٥٦", "x²³", "Ⅻ", "$$$100", "@user #tag", "don't WON'T", "  leading", "trailing  ",
               "tab\there", "a\u2028b\u2029c", "\u0085", "\x00\x01\x7f", "ＡＢＣ１２３", "ﬁ", "ǅ", "ʰ", "𝐀𝐁", "〇", "々"]
    cases = {"strings": [], "invalid_utf8": [], "decode": [], "random_mix": []}
    tok_nospecial = Tokenizer.from_file(os.path.join(TOK_DIR, "tokenizer.json"))
    tok_nospecial.encode_special_tokens = True
    for s in strings:
        cases["strings"].append({"text": s, "ids": enc(s), "ids_encode_special_tokens": tok_nospecial.encode(s, add_special_tokens=False).ids,
                                 "pieces": [byte_level_to_text(p) for p, _ in tok.pre_tokenizer.pre_tokenize_str(s)]})
    invalid = [b"\xff", b"\x80abc", b"a\xc0\xafb", b"\xe0\x80\x80", b"\xed\xa0\x80x", b"\xf4\x90\x80\x80", b"\xf0\x9f\x98",
               b"\xe2\x82", b"ok\xe2\x82\xacok\xe2", b"\xc3\x28", b"\xf8\x88\x80\x80\x80", b"<\xef\xbd\x9cUser\xef\xbd\x9c>\xfe",
               bytes(range(256))]
    for b in invalid:
        cases["invalid_utf8"].append({"hex": b.hex(), "ids": enc(b.decode("utf-8", "replace"))})
    rng = random.Random(1234)
    n = tok.get_vocab_size(with_added_tokens=True)
    valid_ids = sorted(tok.get_vocab(with_added_tokens=True).values())
    for k in range(60):
        ids = [rng.choice(valid_ids) for _ in range(rng.randint(1, 40))]
        if k % 3 == 0:
            ids = [rng.randrange(3, 259) for _ in range(rng.randint(1, 12))]  # raw byte symbols: broken UTF-8
        cases["decode"].append({"ids": ids, "text": tok.decode(ids, skip_special_tokens=False),
                                "text_skip_special": tok.decode(ids, skip_special_tokens=True)})
    # Random mixes of the characters each regex alternative treats specially, to hit the
    # backtracking corners (marks after spaces, whitespace runs before letters/newlines/ends,
    # digits and CJK cutting pieces, added-token prefixes).
    palette = (list(" \t\n\r\u00a0\u2003\u3000\u0085\u2028") + list("aZé\u0301\u0300ǅʰ") + list("0١²½Ⅻ")
               + list("!'.,-_#<>|$+\u00a7\u2014\u300c\uff01") + list("你好の\u30fc\u309b\u3007\u4e00\u9fa6한")
               + ["\U0001F600", "\u200d", "\ufe0f", "\x00", "\u200b", "<｜User｜>", "<|EOT|>", "<｜", "▁"])
    for _ in range(3000):
        t = "".join(rng.choice(palette) for _ in range(rng.randint(1, 24)))
        cases["random_mix"].append({"text": t, "ids": enc(t)})
    cases["vocab_size_with_added"] = n
    json.dump(cases, open(os.path.join(OUT, "cases.json"), "w"), ensure_ascii=False, separators=(",", ":"))

    # ---- chat ----
    chats = []
    for msgs in conversations():
        entry = {"messages": msgs}
        for name, tpl in [("v3", cfg["chat_template"]), ("r1", R1_TEMPLATE)]:
            for gen in (False, True):
                txt = render(tpl, msgs, gen, bos)
                key = name + ("_gen" if gen else "")
                entry[key] = {"text": txt, "ids": enc(txt)}
        chats.append(entry)
    json.dump(chats, open(os.path.join(OUT, "chat.json"), "w"), ensure_ascii=False, indent=0)
    print("chat: %d conversations" % len(chats), file=sys.stderr)

    long_pieces(tok)


if __name__ == "__main__":
    main()
