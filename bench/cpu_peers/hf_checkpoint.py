"""The peers' copy of a fabricated checkpoint: a text-only Qwen3ForCausalLM checkpoint.

    python hf_checkpoint.py OVE_CKPT OUT_DIR

OVE_CKPT is a checkpoint written by exporter/examples/fabricate_4b.rs (LLaVA-OneVision
names, sharded bf16 safetensors with an index). Its decoder tensors already carry the
Qwen3ForCausalLM names (model.embed_tokens.weight, model.layers.*, model.norm.weight and,
untied, lm_head.weight), so OUT_DIR gets exactly those tensors, byte for byte (the vision
tower and merger are left out), in one model.safetensors, plus:

- config.json: Qwen3ForCausalLM with the text_config's sizes and tie_word_embeddings;
- tokenizer.json / tokenizer_config.json: a synthetic byte-level BPE with Qwen2's layout
  (151643 ordinary tokens: the 256 bytes, then merges of byte pairs and triples; the 22
  special tokens at 151643..151664 with <|endoftext|>, <|im_start|>, <|im_end|> where Qwen
  has them; the rest of the 151936 rows unused, as in the released vocabulary). The
  benchmark feeds random ids, so only the size and the special ids matter;
- generation_config.json.

Needs only the standard library (the copy streams the tensors' bytes).
"""

import json
import os
import struct
import sys

QWEN_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>",
]
N_ORDINARY = 151643  # Qwen2/Qwen3: ordinary BPE tokens before the special ones


def byte_alphabet():
    """GPT-2's byte-to-unicode table (the ByteLevel pre-tokenizer's alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def synthetic_tokenizer(n_ordinary):
    alpha = byte_alphabet()
    vocab = {c: i for i, c in enumerate(alpha)}
    merges = []

    def add(a, b):
        tok = a + b
        if tok in vocab or len(vocab) >= n_ordinary:
            return
        vocab[tok] = len(vocab)
        merges.append([a, b])

    for a in alpha:
        for b in alpha:
            add(a, b)
    pairs = [a + b for a in alpha for b in alpha]
    i = 0
    while len(vocab) < n_ordinary:
        p = pairs[i // 256]
        add(p, alpha[i % 256])
        i += 1
    assert len(vocab) == n_ordinary
    added = [
        {"id": n_ordinary + k, "content": s, "single_word": False, "lstrip": False,
         "rstrip": False, "normalized": False, "special": True}
        for k, s in enumerate(QWEN_SPECIALS)
    ]
    split = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+")
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": split}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        ]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                           "use_regex": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                    "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "",
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }


def read_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n)), 8 + n


def main():
    src, out = sys.argv[1], sys.argv[2]
    cfg = json.load(open(os.path.join(src, "config.json")))
    tc = cfg["text_config"]
    index = json.load(open(os.path.join(src, "model.safetensors.index.json")))
    shards = sorted(set(index["weight_map"].values()))
    keep = []  # (name, shard path, header entry, data start)
    for shard in shards:
        path = os.path.join(src, shard)
        header, start = read_header(path)
        for name, e in header.items():
            if name == "__metadata__" or not (name.startswith("model.") or name == "lm_head.weight"):
                continue
            keep.append((name, path, e, start))
    os.makedirs(out, exist_ok=True)
    new_header, off = {}, 0
    for name, _, e, _ in keep:
        n = e["data_offsets"][1] - e["data_offsets"][0]
        new_header[name] = {"dtype": e["dtype"], "shape": e["shape"], "data_offsets": [off, off + n]}
        off += n
    new_header["__metadata__"] = {"format": "pt"}
    h = json.dumps(new_header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for name, path, e, start in keep:
            a, b = e["data_offsets"]
            with open(path, "rb") as s:
                s.seek(start + a)
                left = b - a
                while left:
                    chunk = s.read(min(left, 64 << 20))
                    f.write(chunk)
                    left -= len(chunk)

    vocab = tc["vocab_size"]
    tied = bool(tc.get("tie_word_embeddings", cfg.get("tie_word_embeddings", False)))
    eos, bos = N_ORDINARY + 2, N_ORDINARY  # <|im_end|>, <|endoftext|>
    hf = {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "attention_bias": tc.get("attention_bias", False),
        "attention_dropout": 0.0,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "head_dim": tc["head_dim"],
        "hidden_act": tc.get("hidden_act", "silu"),
        "hidden_size": tc["hidden_size"],
        "initializer_range": 0.02,
        "intermediate_size": tc["intermediate_size"],
        "max_position_embeddings": tc.get("max_position_embeddings", 32768),
        "max_window_layers": tc["num_hidden_layers"],
        "num_attention_heads": tc["num_attention_heads"],
        "num_hidden_layers": tc["num_hidden_layers"],
        "num_key_value_heads": tc["num_key_value_heads"],
        "rms_norm_eps": tc["rms_norm_eps"],
        "rope_scaling": None,
        "rope_theta": tc["rope_theta"],
        "sliding_window": None,
        "use_sliding_window": False,
        "tie_word_embeddings": tied,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "vocab_size": vocab,
    }
    json.dump(hf, open(os.path.join(out, "config.json"), "w"), indent=2)
    json.dump({"bos_token_id": bos, "eos_token_id": eos, "do_sample": False},
              open(os.path.join(out, "generation_config.json"), "w"), indent=2)
    n_ord = min(N_ORDINARY, vocab - len(QWEN_SPECIALS))
    tok = synthetic_tokenizer(n_ord)
    json.dump(tok, open(os.path.join(out, "tokenizer.json"), "w"), ensure_ascii=False)
    json.dump({
        "tokenizer_class": "Qwen2Tokenizer",
        "model_max_length": hf["max_position_embeddings"],
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "add_prefix_space": False,
        "errors": "replace",
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
        "chat_template": "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                         "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                         "{% endif %}",
    }, open(os.path.join(out, "tokenizer_config.json"), "w"), indent=2)
    print(f"{out}: Qwen3ForCausalLM, {len(keep)} tensors, {off / 1e9:.2f} GB bf16, "
          f"tied={tied}, tokenizer {n_ord}+{len(QWEN_SPECIALS)} tokens of {vocab}")


if __name__ == "__main__":
    main()
