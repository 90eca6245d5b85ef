#!/usr/bin/python3
"""Model directories for the library's tests (tests/api): random-weight gpt2 and bert checkpoints
of small width with the real GPT-2 and BERT vocabularies (tests/data/tokenizers), so that text
goes through the real tokenizers.

    make_api_models.py OUT_DIR      writes OUT_DIR/gpt2 and OUT_DIR/bert
"""
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOK = os.path.join(ROOT, "tests", "data", "tokenizers")
MAKE = os.path.join(ROOT, "tools", "make_hf_checkpoint.py")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    gpt2 = os.path.join(out, "gpt2")
    subprocess.run([sys.executable, MAKE, "gpt2", gpt2, "--layers", "2", "--hidden", "64", "--heads", "4",
                    "--vocab", "50257", "--positions", "128", "--seed", "1"], check=True)
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(TOK, "gpt2", f), gpt2)
    bert = os.path.join(out, "bert")
    subprocess.run([sys.executable, MAKE, "bert", bert, "--layers", "2", "--hidden", "64", "--heads", "4",
                    "--vocab", "30522", "--positions", "128", "--seed", "2"], check=True)
    shutil.copy(os.path.join(TOK, "bert", "vocab.txt"), bert)
    print(f"wrote {gpt2} and {bert}")


if __name__ == "__main__":
    main()
