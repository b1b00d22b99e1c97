"""Fixture for generate/no_repeat_ngram.hpp: the tokens transformers' NoRepeatNGramLogitsProcessor
bans after random sequences.

Writes tests/fixtures/generate/no_repeat_ngram.json: {"cases": [{"n", "vocab", "seq", "banned"}]},
`banned` the sorted ids whose score the processor set to -inf (scores start at 0). Sequences draw
from small vocabularies so that n-grams repeat; edge cases: n = 1, n > len(seq), n = len(seq) + 1,
the empty sequence, long periodic sequences, n = 20 (DeepSeek-OCR's default) and 35 (its eval mode).
Also writes tests/fixtures/generate/no_repeat_ngram_cli.txt for `deepseek-cli generate --no-repeat-ngram`:
prompt ids, n, and transformers' greedy ids with no_repeat_ngram_size = n on tests/fixtures/models/v3_noqlora_f32
(asserted to differ from plain greedy, every step's top-1/top-2 margin of the processed scores >= 1e-3).
Deterministic (seeded); run: python tests/reference/make_no_repeat_ngram_fixtures.py
"""
import json
import os
import random

import torch
import transformers
from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "generate", "no_repeat_ngram.json")


def banned(n, vocab, seq):
    proc = NoRepeatNGramLogitsProcessor(n)
    ids = torch.tensor([seq], dtype=torch.long).reshape(1, len(seq))
    scores = proc(ids, torch.zeros(1, vocab))
    return sorted(int(i) for i in torch.nonzero(torch.isinf(scores[0])).flatten())


def main():
    rng = random.Random(1234)
    cases = []
    for _ in range(300):
        n = rng.choice([1, 2, 2, 3, 3, 4, 5, 6])
        vocab = rng.choice([2, 3, 4, 6, 10])
        length = rng.randint(0, 40)
        cases.append((n, vocab, [rng.randrange(vocab) for _ in range(length)]))
    for n in (1, 2, 3, 5):  # n > len, n == len + 1, n == len
        for length in (0, n - 1, n, n + 1):
            if length >= 0:
                cases.append((n, 5, [rng.randrange(5) for _ in range(length)]))
    for n in (20, 35):  # OCR's sizes: periodic sequences repeat their n-grams
        for period in (3, 7, 19, 34, 40):
            base = [rng.randrange(1000) for _ in range(period)]
            seq = (base * (200 // period + 2))[:rng.randint(n - 2, 200)]
            cases.append((n, 1000, seq))
    out = [{"n": n, "vocab": v, "seq": s, "banned": banned(n, v, s)} for n, v, s in cases]
    nonempty = sum(1 for c in out if c["banned"])
    assert nonempty > len(out) // 3, "too few cases ban anything"
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump({"transformers": transformers.__version__, "cases": out}, f, separators=(",", ":"))
    print(json.dumps({"cases": len(out), "with_bans": nonempty, "transformers": transformers.__version__}))
    cli_case()


def cli_case():
    from transformers import AutoModelForCausalLM
    model_dir = os.path.join(os.path.dirname(__file__), "..", "fixtures", "models", "v3_noqlora_f32")
    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompt, n, new = [5, 17, 99, 5, 17, 42], 1, 24
    ids = torch.tensor([prompt])
    with torch.no_grad():
        plain = m.generate(ids, max_new_tokens=new, do_sample=False)[0, len(prompt):].tolist()
        out = m.generate(ids, max_new_tokens=new, do_sample=False, no_repeat_ngram_size=n, output_scores=True,
                         return_dict_in_generate=True)
    got = out.sequences[0, len(prompt):].tolist()
    assert got != plain, "the processor must change the greedy output"
    margins = []
    for sc in out.scores:
        top = sc[0].topk(2).values
        margins.append(float(top[0] - top[1]))
    assert min(margins) >= 1e-3, margins
    with open(os.path.join(os.path.dirname(OUT), "no_repeat_ngram_cli.txt"), "w") as f:
        f.write(",".join(map(str, prompt)) + "\n" + str(n) + "\n" + " ".join(map(str, got)) + "\n")
    print(json.dumps({"cli_plain": plain, "cli_no_repeat": got, "min_margin": min(margins)}))


if __name__ == "__main__":
    main()
