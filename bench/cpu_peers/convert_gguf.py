"""llama.cpp's convert_hf_to_gguf.py on the benchmark's synthetic-tokenizer checkpoint.

    python convert_gguf.py LLAMA_SRC HF_DIR [convert_hf_to_gguf.py options...]

Runs LLAMA_SRC/convert_hf_to_gguf.py (with LLAMA_SRC/gguf-py) unchanged but for one thing:
the converter names a BPE tokenizer's pre-tokenizer by hashing how it splits a test string,
and refuses hashes it does not know. hf_checkpoint.py's tokenizer is synthetic (Qwen2's
pre-tokenizer and special tokens, made-up merges), so its hash is new; it is declared
"qwen2", what the real Qwen3 tokenizer hashes to. The benchmark feeds token ids, never
text, so nothing measured depends on it.
"""

import os
import runpy
import sys


def main():
    src, rest = sys.argv[1], sys.argv[2:]
    sys.path.insert(0, src)
    sys.path.insert(1, os.path.join(src, "gguf-py"))
    from conversion.base import TextModel

    TextModel.get_vocab_base_pre = lambda self, tokenizer: "qwen2"
    sys.argv = [os.path.join(src, "convert_hf_to_gguf.py")] + rest
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
