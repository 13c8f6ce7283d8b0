"""Prefill and decode speed of an ONNX Runtime GenAI model, measured as `ove bench` measures.

    python genai_bench.py MODEL_DIR --prompt 128 --decode 64 --threads 2

Sets the decoder session's intra_op_num_threads (inter_op 1) in MODEL_DIR/genai_config.json,
loads the model on the CPU provider, warms up on an 8-token prompt and two steps, then times:

- prefill: generator.append_tokens(PROMPT random ids), which runs the decoder over the prompt;
- decode: DECODE more decoder runs, each generate_next_token() after the first (the first
  only picks the token from the prefill's logits); greedy, with min_length = max_length so
  an end-of-sequence token cannot stop it early.

Prints one line of JSON: prefill/decode tokens and ms, tokens/s, load ms, VmHWM in MiB.
"""

import argparse
import json
import os
import time

import numpy as np
import onnxruntime_genai as og


def vmhwm_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    cfg_path = os.path.join(a.model, "genai_config.json")
    cfg = json.load(open(cfg_path))
    so = cfg["model"]["decoder"].setdefault("session_options", {})
    if so.get("intra_op_num_threads") != a.threads or so.get("inter_op_num_threads") != 1:
        so["intra_op_num_threads"] = a.threads
        so["inter_op_num_threads"] = 1
        json.dump(cfg, open(cfg_path, "w"), indent=4)
    vocab = cfg["model"]["vocab_size"]

    t = time.perf_counter()
    config = og.Config(a.model)
    config.clear_providers()
    model = og.Model(config)
    load_ms = (time.perf_counter() - t) * 1e3

    rng = np.random.default_rng(a.seed)
    # Ordinary tokens only (the special ones sit at the top of Qwen's vocabulary).
    hi = min(vocab, 151643)

    def generator(n_prompt, n_new):
        p = og.GeneratorParams(model)
        total = n_prompt + n_new + 1
        p.set_search_options(max_length=total, min_length=total, do_sample=False, batch_size=1)
        return og.Generator(model, p), rng.integers(0, hi, n_prompt, dtype=np.int32)

    g, ids = generator(8, 2)
    g.append_tokens(ids)
    for _ in range(3):
        g.generate_next_token()
    del g

    g, ids = generator(a.prompt, a.decode)
    t0 = time.perf_counter()
    g.append_tokens(ids)
    t1 = time.perf_counter()
    g.generate_next_token()  # the token from the prefill's logits: no decoder run
    t2 = time.perf_counter()
    for _ in range(a.decode):
        g.generate_next_token()
    t3 = time.perf_counter()
    assert len(g.get_sequence(0)) == a.prompt + a.decode + 1, len(g.get_sequence(0))
    prefill_s, decode_s = t1 - t0, t3 - t2
    print(json.dumps({
        "backend": f"onnxruntime-genai {og.__version__}",
        "load_ms": load_ms,
        "prefill_tokens": a.prompt,
        "prefill_ms": prefill_s * 1e3,
        "prefill_tokens_per_s": a.prompt / prefill_s,
        "decode_tokens": a.decode,
        "decode_ms": decode_s * 1e3,
        "decode_tokens_per_s": a.decode / decode_s,
        "peak_rss_mib": vmhwm_mib(),
    }))


if __name__ == "__main__":
    main()
