"""Tokenizer files: rebuilt from GGUF metadata, copied from a directory, or a minimal byte-level BPE."""

from __future__ import annotations

import json
import os
import shutil
import sys
from typing import List, Optional

from . import ExportError

CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# GGUF token types (llama.cpp): 1 normal, 2 unknown, 3 control, 4 user defined, 5 unused, 6 byte
TT_NORMAL, TT_CONTROL, TT_USER = 1, 3, 4


class TokenizerFiles:
    """In-memory tokenizer.json (a tokenizers.Tokenizer) + tokenizer_config.json dict."""

    def __init__(self, tokenizer, config: dict, special_map: dict):
        self.tokenizer = tokenizer
        self.config = config
        self.special_map = special_map

    def token_id(self, tok: Optional[str]) -> Optional[int]:
        if tok is None:
            return None
        if isinstance(tok, dict):
            tok = tok.get("content")
        return self.tokenizer.token_to_id(tok)

    def write(self, out_dir: str):
        self.tokenizer.save(os.path.join(out_dir, "tokenizer.json"))
        with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
            json.dump(self.config, f, indent=2, ensure_ascii=False)
        with open(os.path.join(out_dir, "special_tokens_map.json"), "w") as f:
            json.dump(self.special_map, f, indent=2, ensure_ascii=False)


def _config(tok, specials: List[str], bos, eos, pad, unk, add_bos: bool, template: Optional[str], ctx: int):

    def name(i):
        return None if i is None else tok.id_to_token(i)

    added = {}
    for t in specials:
        i = tok.token_to_id(t)
        added[str(i)] = {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                         "single_word": False, "special": True}
    cfg = {
        "add_bos_token": bool(add_bos),
        "add_eos_token": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": [t for t in specials if t not in {name(bos), name(eos), name(pad), name(unk)}],
        "bos_token": name(bos),
        "eos_token": name(eos),
        "pad_token": name(pad),
        "unk_token": name(unk),
        "clean_up_tokenization_spaces": False,
        "model_max_length": ctx,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    if template:
        cfg["chat_template"] = template
    smap = {k: cfg[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token") if cfg[k] is not None}
    if cfg["additional_special_tokens"]:
        smap["additional_special_tokens"] = cfg["additional_special_tokens"]
    return cfg, smap


def _post_processor(tok, add_bos: bool, bos: Optional[int]):
    from tokenizers import processors
    bl = processors.ByteLevel(trim_offsets=False)
    if add_bos and bos is not None:
        bname = tok.id_to_token(bos)
        tp = processors.TemplateProcessing(single=f"{bname}:0 $A:0", pair=f"{bname}:0 $A:0 {bname}:1 $B:1",
                                           special_tokens=[(bname, bos)])
        return processors.Sequence([bl, tp])
    return bl


def spm_merges(tokens: List[str], scores: List[float], types: List[int]) -> List[tuple]:
    """BPE merges equivalent to a SentencePiece BPE vocabulary: every split of a normal piece into two
    pieces of the vocabulary, the merged piece's score first (transformers' `generate_merges`)."""
    vocab = {t: i for i, t in enumerate(tokens) if types[i] == TT_NORMAL}
    found = []
    for piece, i in vocab.items():
        local = []
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                local.append((vocab[left], vocab[right], left, right))
        local.sort()
        found.extend((-scores[i], len(left), len(right), left, right) for _, _, left, right in local)
    found.sort(key=lambda m: m[:3])  # stable: ties keep the pieces' vocabulary order
    return [(m[3], m[4]) for m in found]


def _spm_from_gguf(src, spec, tokens, types) -> TokenizerFiles:
    """A SentencePiece (GGUF `llama` tokenizer model) vocabulary as a byte-fallback BPE tokenizer.json,
    as transformers converts Gemma's and Llama 2's: spaces become ▁, no pre-tokenizer splits."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors
    scores = src.value("tokenizer.ggml.scores") or [0.0] * len(tokens)
    if len(scores) != len(tokens) or len(types) != len(tokens):
        raise ExportError("GGUF tokenizer.ggml.scores/token_type do not match tokenizer.ggml.tokens")
    unk = src.value("tokenizer.ggml.unknown_token_id")
    vocab = {t: i for i, t in enumerate(tokens)}
    bpe = models.BPE(vocab=vocab, merges=spm_merges(tokens, scores, types), fuse_unk=True, byte_fallback=True,
                     unk_token=None if unk is None else tokens[int(unk)])
    tok = Tokenizer(bpe)
    space = [normalizers.Replace(" ", "\u2581")]
    if src.value("tokenizer.ggml.add_space_prefix", True):  # Llama 2 yes, Gemma no
        space.insert(0, normalizers.Prepend("\u2581"))
    tok.normalizer = normalizers.Sequence(space)
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
                                    + ([decoders.Strip(" ", 1, 0)] if len(space) == 2 else []))
    specials = [t for t, ty in zip(tokens, types) if ty == TT_CONTROL]
    user = [t for t, ty in zip(tokens, types) if ty == TT_USER]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    if user:
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in user])
    add_bos = bool(src.value("tokenizer.ggml.add_bos_token", True))
    if add_bos and spec.bos_token_id is not None:
        bname = tok.id_to_token(spec.bos_token_id)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bname}:0 $A:0", pair=f"{bname}:0 $A:0 {bname}:1 $B:1",
            special_tokens=[(bname, spec.bos_token_id)])
    cfg, smap = _config(tok, specials, spec.bos_token_id, spec.eos_token_ids[0] if spec.eos_token_ids else None,
                        spec.pad_token_id, unk, add_bos, src.value("tokenizer.chat_template"), spec.context_length)
    return TokenizerFiles(tok, cfg, smap)


def from_gguf(src, spec) -> TokenizerFiles:
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    model = src.value("tokenizer.ggml.model")
    if model == "llama":
        tokens = src.value("tokenizer.ggml.tokens") or []
        if not tokens:
            raise ExportError("GGUF has no tokenizer.ggml.tokens")
        return _spm_from_gguf(src, spec, tokens, src.token_types() or [TT_NORMAL] * len(tokens))
    if model != "gpt2":
        raise ExportError(f"GGUF tokenizer model {model!r} is not supported (byte-level BPE 'gpt2' and "
                          "SentencePiece 'llama' are); pass --tokenizer DIR with a tokenizer.json for this model")
    tokens = src.value("tokenizer.ggml.tokens")
    merges = src.value("tokenizer.ggml.merges") or []
    types = src.token_types() or [1] * len(tokens)
    if not tokens:
        raise ExportError("GGUF has no tokenizer.ggml.tokens")
    pre = src.value("tokenizer.ggml.pre") or "default"
    vocab = {t: i for i, t in enumerate(tokens)}
    merges_t = [tuple(m.split(" ", 1)) for m in merges]
    ignore_merges = pre in ("llama-bpe", "llama3")
    try:
        bpe = models.BPE(vocab=vocab, merges=merges_t, fuse_unk=False, byte_fallback=False,
                         ignore_merges=ignore_merges)
    except TypeError:
        bpe = models.BPE(vocab=vocab, merges=merges_t, fuse_unk=False, byte_fallback=False)
    tok = Tokenizer(bpe)
    if pre == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
    elif pre in ("llama-bpe", "llama3", "smaug-bpe"):
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    elif pre == "qwen2":
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    else:
        if pre not in ("default", "gpt2", "gpt-2"):
            print(f"export: warning: GGUF pre-tokenizer {pre!r} unknown, using GPT-2 byte-level rules",
                  file=sys.stderr)
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    specials = [t for t, ty in zip(tokens, types) if ty == TT_CONTROL]
    user = [t for t, ty in zip(tokens, types) if ty == TT_USER]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    if user:
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in user])
    add_bos = bool(src.value("tokenizer.ggml.add_bos_token", False))
    tok.post_processor = _post_processor(tok, add_bos, spec.bos_token_id)
    unk = src.value("tokenizer.ggml.unknown_token_id")
    cfg, smap = _config(tok, specials, spec.bos_token_id, spec.eos_token_ids[0] if spec.eos_token_ids else None,
                        spec.pad_token_id, unk, add_bos, src.value("tokenizer.chat_template"), spec.context_length)
    return TokenizerFiles(tok, cfg, smap)


def minimal(spec) -> TokenizerFiles:
    """256 byte tokens + <|im_start|>, <|im_end|>, <|endoftext|>; no merges; ChatML template."""
    from tokenizers import AddedToken, Tokenizer, decoders, models
    from tokenizers.pre_tokenizers import ByteLevel
    alphabet = _bytes_to_unicode()
    vocab = {alphabet[i]: i for i in range(256)}
    specials = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
    for j, s in enumerate(specials):
        vocab[s] = 256 + j
    if spec.vocab_size < len(vocab):
        raise ExportError(f"vocab_size {spec.vocab_size} is too small for the built-in byte tokenizer (259)")
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False))
    tok.pre_tokenizer = ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    tok.post_processor = _post_processor(tok, False, None)
    spec.bos_token_id = 256
    spec.eos_token_ids = [257]
    spec.pad_token_id = 258
    cfg, smap = _config(tok, specials, 256, 257, 258, None, False, CHATML_TEMPLATE, spec.context_length)
    return TokenizerFiles(tok, cfg, smap)


def _bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def copy_dir_files(src_dir: str, out_dir: str) -> List[str]:
    """Copies the tokenizer files present in src_dir; returns the names copied."""
    copied = []
    for n in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        p = os.path.join(src_dir, n)
        if os.path.isfile(p):
            shutil.copyfile(p, os.path.join(out_dir, n))
            copied.append(n)
    return copied


def ids_from_dir(out_dir: str, spec):
    """Fills missing bos/eos/pad ids of spec from copied tokenizer files."""
    from tokenizers import Tokenizer
    p = os.path.join(out_dir, "tokenizer.json")
    try:
        tok = Tokenizer.from_file(p)
    except Exception as e:
        raise ExportError(f"cannot load tokenizer.json: {e}") from None
    cfg = {}
    cp = os.path.join(out_dir, "tokenizer_config.json")
    if os.path.isfile(cp):
        with open(cp) as f:
            cfg = json.load(f)

    def tid(key):
        t = cfg.get(key)
        if isinstance(t, dict):
            t = t.get("content")
        return tok.token_to_id(t) if t else None

    if spec.bos_token_id is None:
        spec.bos_token_id = tid("bos_token")
    if not spec.eos_token_ids and tid("eos_token") is not None:
        spec.eos_token_ids = [tid("eos_token")]
    if spec.pad_token_id is None:
        spec.pad_token_id = tid("pad_token")
    return tok, cfg
