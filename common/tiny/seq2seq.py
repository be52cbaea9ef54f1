"""`--model tiny` for the seq2seq recipe: a small random-weight mT5 (the architecture of mt0) and its tokenizer.

Built offline in seconds, so recipes/mt0_seq2seq.py and its tests run without the hub on a CPU. Like mt0-large it
is an MT5ForConditionalGeneration with gated-GELU feed-forward layers (wi_0, wi_1, wo) and the T5 special ids:
<pad> 0 (also the decoder start token), </s> 1, <unk> 2. Unlike mt0-large its lm_head is the input embedding:
transformers 5 always ties them when it builds an mT5 from a config (it unties them only on loading a checkpoint
that holds both, as mt0-large's does, with a warning). The tokenizer is a SentencePiece
unigram model (mT5's kind) trained on the bundled data, with byte fallback and identity normalisation, so any
text round-trips exactly (the real mT5 tokenizer applies NFKC and folds white space); it appends </s> to every
text, as T5's does. Deterministic and cached next to the other tiny models (TINY_MODEL_CACHE moves them).
"""
import io
import os
from pathlib import Path

from common.tiny.cache import build_once, cache_key, cache_root
from common.tiny.llama import corpus

BUILDER_VERSION = "1"  # bump when anything below changes what gets built
MODEL_SHAPE = dict(d_model=128, d_kv=32, d_ff=256, num_layers=2, num_decoder_layers=2, num_heads=4,
                   relative_attention_num_buckets=32, relative_attention_max_distance=128, dropout_rate=0.1,
                   feed_forward_proj="gated-gelu")
VOCAB_SIZE = 4000
MAX_LENGTH = 512
PAD, EOS, UNK = "<pad>", "</s>", "<unk>"


def _train_unigram(texts: list[str]) -> bytes:
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, model_type="unigram", vocab_size=VOCAB_SIZE,
        hard_vocab_limit=False, character_coverage=0.9995, byte_fallback=True,
        # Exact round trip, as common/tiny/llama.py: no NFKC, every space kept, no dummy "▁" prefix.
        normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=False,
        allow_whitespace_only_pieces=True, split_digits=True, max_sentence_length=1 << 16,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece=PAD, eos_piece=EOS, unk_piece=UNK,  # T5's ids, no BOS
        num_threads=1, seed_sentencepiece_size=100000, minloglevel=2,
    )
    return model.getvalue()


def _write_tokenizer(directory: Path, sp_model: bytes):
    """A fast tokenizer made from the SentencePiece model's own pieces and scores. (transformers' T5Tokenizer
    cannot take it: it needs a precompiled normaliser map, which identity normalisation does not have.)"""
    from sentencepiece import sentencepiece_model_pb2
    from tokenizers import Tokenizer, decoders, normalizers, processors
    from tokenizers.models import Unigram
    from transformers import PreTrainedTokenizerFast

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(sp_model)
    backend = Tokenizer(Unigram([(p.piece, p.score) for p in proto.pieces], unk_id=2, byte_fallback=True))
    backend.normalizer = normalizers.Replace(" ", "▁")
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    backend.post_processor = processors.TemplateProcessing(  # "text</s>", as T5's tokenizer writes it
        single=["$A", EOS], pair=["$A", EOS, "$B", EOS], special_tokens=[(EOS, 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS, pad_token=PAD, unk_token=UNK,
                                        model_max_length=MAX_LENGTH, clean_up_tokenization_spaces=False)
    (directory / "spiece.model").write_bytes(sp_model)  # the SentencePiece model itself, for converters
    tokenizer.save_pretrained(directory)
    return tokenizer


def tiny_seq2seq_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """Build (once) and return the directory of the tiny mT5 model and its tokenizer."""
    texts = corpus()
    key = cache_key(BUILDER_VERSION, MODEL_SHAPE, VOCAB_SIZE, texts, files=[__file__])  # this file: the builder
    root = cache_root(cache_dir)
    directory = root / f"tiny-mt5-{key}"

    def build(staging: Path):
        import torch
        from transformers import MT5Config, MT5ForConditionalGeneration

        tokenizer = _write_tokenizer(staging, _train_unigram(texts))
        config = MT5Config(vocab_size=len(tokenizer), pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                           torch_dtype="float32", **MODEL_SHAPE)
        torch.manual_seed(0)
        model = MT5ForConditionalGeneration(config)
        with torch.no_grad():  # T5 initialises the embedding (tied to lm_head) with std 1: random logits then have std
            model.shared.weight.mul_(config.d_model ** -0.5)  # sqrt(d_model), the loss starts near 66; scaled, near 9
        model.save_pretrained(staging)

    return build_once(directory, build)
