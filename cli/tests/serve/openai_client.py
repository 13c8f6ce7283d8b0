"""The official `openai` client against a running `ove serve` (run by cli/tests/serve.rs).

Checks, each against what the `ove` CLI printed for the same image:
  * a chat completion with the image (data: URI) reads the text `ove ocr --layout page
    --reader decoder` reads, with usage counts;
  * the same request streamed gives the same text, a finish reason and a usage chunk;
  * errors come back as the client's exceptions: a data URI that is not base64 (400,
    BadRequestError) and a wrong API key (401, AuthenticationError);
  * POST /v1/ocr answers what `ove ocr` prints, and with ?format=json what `ove ocr --json`
    prints (the file name aside).
Exits non-zero with a message on the first mismatch.
"""

import argparse
import base64
import json
import sys

import httpx
import openai


def fail(msg):
    print(f"openai_client: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--max-tokens", type=int, required=True)
    ap.add_argument("--expect-chat", required=True, help="file: ove ocr --layout page output")
    ap.add_argument("--expect-ocr", required=True, help="file: ove ocr output")
    ap.add_argument("--expect-ocr-json", required=True, help="file: ove ocr --json output")
    a = ap.parse_args()

    client = openai.OpenAI(base_url=a.base_url, api_key=a.api_key, max_retries=0, timeout=120)
    models = [m.id for m in client.models.list()]
    if len(models) != 1:
        fail(f"/v1/models lists {models}")
    model = models[0]

    png = open(a.image, "rb").read()
    uri = "data:image/png;base64," + base64.b64encode(png).decode()
    messages = [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": uri}},
        {"type": "text", "text": a.prompt},
    ]}]
    expect_chat = open(a.expect_chat, encoding="utf-8").read()
    if expect_chat.endswith("\n"):
        expect_chat = expect_chat[:-1]  # ove ocr ends each page with a newline

    r = client.chat.completions.create(
        model=model, messages=messages, max_tokens=a.max_tokens, temperature=0)
    text = r.choices[0].message.content
    if text != expect_chat:
        fail(f"chat text {text!r} != ove ocr's {expect_chat!r}")
    u = r.usage
    if not (u.prompt_tokens > 0 and u.completion_tokens > 0
            and u.total_tokens == u.prompt_tokens + u.completion_tokens):
        fail(f"usage {u}")
    if r.choices[0].finish_reason not in ("stop", "length"):
        fail(f"finish_reason {r.choices[0].finish_reason}")
    print(f"chat: {len(text)} chars, usage {u.prompt_tokens}+{u.completion_tokens}, "
          f"finish {r.choices[0].finish_reason}")

    pieces, finish, usage = [], None, None
    stream = client.chat.completions.create(
        model=model, messages=messages, max_tokens=a.max_tokens, temperature=0,
        stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                pieces.append(c.delta.content)
            if c.finish_reason:
                finish = c.finish_reason
    if "".join(pieces) != text:
        fail(f"streamed text {''.join(pieces)!r} != {text!r}")
    if finish != r.choices[0].finish_reason:
        fail(f"streamed finish {finish}")
    if usage is None or usage.completion_tokens != u.completion_tokens:
        fail(f"streamed usage {usage} != {u}")
    print(f"stream: {len(pieces)} pieces, same text and usage")

    try:
        bad = [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,%%%not base64"}},
            {"type": "text", "text": a.prompt}]}]
        client.chat.completions.create(model=model, messages=bad, max_tokens=4)
        fail("a data URI that is not base64 was accepted")
    except openai.BadRequestError as e:
        if e.status_code != 400 or "base64" not in str(e):
            fail(f"bad data URI: {e.status_code} {e}")
        print(f"error: 400 BadRequestError ({e.body.get('message', '')[:60]}...)")
    try:
        openai.OpenAI(base_url=a.base_url, api_key="wrong", max_retries=0).models.list()
        fail("a wrong API key was accepted")
    except openai.AuthenticationError as e:
        if e.status_code != 401:
            fail(f"wrong key: {e.status_code}")
        print("error: 401 AuthenticationError")

    auth = {"Authorization": f"Bearer {a.api_key}", "Content-Type": "image/png"}
    base = a.base_url.rstrip("/")
    t = httpx.post(f"{base}/ocr", content=png, headers=auth, timeout=120)
    expect_ocr = open(a.expect_ocr, encoding="utf-8").read()
    if t.status_code != 200 or t.text != expect_ocr:
        fail(f"/v1/ocr: {t.status_code} {t.text!r} != ove ocr's {expect_ocr!r}")
    m = httpx.post(f"{base}/ocr", files={"file": ("page.png", png, "image/png")},
                   headers={"Authorization": auth["Authorization"]}, timeout=120)
    if m.status_code != 200 or m.text != expect_ocr:
        fail(f"/v1/ocr multipart: {m.status_code} {m.text!r} != ove ocr's {expect_ocr!r}")
    j = httpx.post(f"{base}/ocr?format=json", content=png, headers=auth, timeout=120)
    want = json.load(open(a.expect_ocr_json, encoding="utf-8"))
    got = j.json()
    for page in want + got:
        page.pop("file", None)
    if j.status_code != 200 or got != want:
        fail(f"/v1/ocr?format=json: {j.status_code} {got} != ove ocr --json's {want}")
    lines = sum(len(p["lines"]) for p in got)
    print(f"ocr: text (raw body and multipart) and json ({len(got)} page(s), {lines} lines) as ove ocr prints them")
    print("openai_client: ok")


if __name__ == "__main__":
    main()
