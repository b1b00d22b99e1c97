#!/usr/bin/env python3
"""Drives `deepseek-cli serve` with the official `openai` Python client (PyPI), outside CI.

Starts the server on the demo model (or --model DIR) on a free loopback port, then for several
prompts, through both endpoints, streaming and not, checks that the text the client receives
equals what the batch-1 programs print for the same greedy request:
  /v1/completions       == `deepseek-cli generate --greedy --prompt P --max-new N` (minus the prompt)
  /v1/chat/completions  == `deepseek-cli chat --greedy --max-new N` given the message on stdin
and that usage counts add up. Also a few requests at once (the scheduler batches them) must give
the same texts. Prints one line per check; exits non-zero on the first mismatch.

  pip install openai
  python3 tests/reference/serve_openai_client.py [--cli build/examples/cli/deepseek-cli] [--model DIR]
"""
import argparse
import concurrent.futures
import os
import re
import subprocess
import sys

import openai

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", default=os.path.join(ROOT, "build/examples/cli/deepseek-cli"))
    ap.add_argument("--model", default=os.path.join(ROOT, "examples/models/deepseek-v3-demo"))
    ap.add_argument("--max-new", type=int, default=32)
    a = ap.parse_args()
    common = ["--cache-dtype", "f32"]
    server = subprocess.Popen([a.cli, "serve", "--model", a.model, "--port", "0", "--quiet"] + common,
                              stderr=subprocess.PIPE, text=True)
    try:
        port = None
        for line in server.stderr:
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        if port is None:
            sys.exit("the server did not start")
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
        model = client.models.list().data[0].id
        print(f"server on port {port}, model {model}, openai {openai.__version__}")

        def generate(prompt):
            out = subprocess.run([a.cli, "generate", "--model", a.model, "--prompt", prompt, "--greedy",
                                  "--max-new", str(a.max_new)] + common, capture_output=True, text=True, check=True).stdout
            assert out.startswith(prompt) and out.endswith("\n")
            return out[len(prompt):-1]

        def chat_cli(message):
            out = subprocess.run([a.cli, "chat", "--model", a.model, "--greedy", "--max-new", str(a.max_new)] + common,
                                 input=message + "\n", capture_output=True, text=True, check=True).stdout
            return out[:-1]

        def check(name, got, want):
            ok = got == want
            print(f"{'ok  ' if ok else 'FAIL'} {name}: {got[:60]!r}" + ("" if ok else f" != {want[:60]!r}"))
            if not ok:
                sys.exit(1)

        prompts = ["The Python interpreter", "A list is", "To open a file", "Fortune favours"]
        for p in prompts:
            want = generate(p)
            r = client.completions.create(model=model, prompt=p, max_tokens=a.max_new, temperature=0)
            check(f"completions {p!r}", r.choices[0].text, want)
            assert r.usage.completion_tokens <= a.max_new and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
            s = client.completions.create(model=model, prompt=p, max_tokens=a.max_new, temperature=0, stream=True)
            check(f"completions stream {p!r}", "".join(c.choices[0].text for c in s if c.choices), want)

            want = chat_cli(p)
            msgs = [{"role": "user", "content": p}]
            r = client.chat.completions.create(model=model, messages=msgs, max_tokens=a.max_new, temperature=0)
            check(f"chat {p!r}", r.choices[0].message.content, want)
            s = client.chat.completions.create(model=model, messages=msgs, max_tokens=a.max_new, temperature=0, stream=True,
                                               stream_options={"include_usage": True})
            text, usage = "", None
            for c in s:
                if c.choices and c.choices[0].delta.content:
                    text += c.choices[0].delta.content
                if c.usage:
                    usage = c.usage
            check(f"chat stream {p!r}", text, want)
            assert usage is not None and usage.completion_tokens == r.usage.completion_tokens

        # All at once: the scheduler batches them; each answer is still its own.
        wants = {p: generate(p) for p in prompts}
        with concurrent.futures.ThreadPoolExecutor(len(prompts) * 2) as ex:
            futs = {ex.submit(client.completions.create, model=model, prompt=p, max_tokens=a.max_new, temperature=0): p
                    for p in prompts * 2}
            for f, p in futs.items():
                check(f"concurrent {p!r}", f.result().choices[0].text, wants[p])

        try:
            client.completions.create(model=model, prompt="x", max_tokens=0)
            sys.exit("max_tokens 0 was accepted")
        except openai.BadRequestError as e:
            print(f"ok   max_tokens 0 -> 400: {e.body['message'] if isinstance(e.body, dict) else e}")
        print("all checks passed")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
