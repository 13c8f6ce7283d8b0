"""Prefill and decode speed of a GGUF model with llama.cpp's llama-bench, as `ove bench` measures.

    python llama_bench.py LLAMA_BIN MODEL.gguf --prompt 128 --decode 64 --threads 2

Two llama-bench runs (each with llama-bench's own warm-up run, then one timed repetition):
- prefill: `-p PROMPT -n 0`: the prompt in one batch from an empty context;
- decode: `-p 0 -n DECODE -d PROMPT`: DECODE single-token decoder calls after a PROMPT-token
  context (as ours and GenAI decode after the prompt; llama-bench ignores end-of-sequence).
Prints one line of JSON like genai_bench.py's.
"""

import argparse
import json
import os
import subprocess


def run(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin")
    ap.add_argument("model")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    exe = os.path.join(a.bin, "llama-bench")
    common = [exe, "-m", a.model, "-t", str(a.threads), "-r", "1", "-o", "json"]
    pp = run(common + ["-p", str(a.prompt), "-n", "0"])[0]
    tg = run(common + ["-p", "0", "-n", str(a.decode), "-d", str(a.prompt)])[0]
    assert pp["n_prompt"] == a.prompt and tg["n_gen"] == a.decode, (pp, tg)
    print(json.dumps({
        "backend": f"llama.cpp {pp.get('build_commit', '?')} ({pp.get('cpu_info', '')})",
        "prefill_tokens": a.prompt,
        "prefill_ms": pp["avg_ns"] / 1e6,
        "prefill_tokens_per_s": pp["avg_ts"],
        "decode_tokens": a.decode,
        "decode_ms": tg["avg_ns"] / 1e6,
        "decode_tokens_per_s": tg["avg_ts"],
        "model_type": pp.get("model_type"),
    }))


if __name__ == "__main__":
    main()
