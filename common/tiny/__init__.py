"""Tiny random-weight models for `--model tiny`, the tests and CI: no download, deterministic, cached.

    from common.tiny.llama import tiny_model_path              # text recipes: a Llama that speaks a real chat format
    from common.tiny.seq2seq import tiny_seq2seq_path          # mt0_seq2seq: an mT5
    from common.tiny.vision import tiny_vision_model_path      # llama_vision: an Mllama with its processor

Each module is imported on its own, so a text recipe never loads the vision builder. chat_templates.py holds the
verbatim chat templates they speak; cache.py the cache they share (build_once, cache_key).
"""
