"""ComfyUI-facing: the toy text encoder as a real ``comfy.sd.CLIP`` object (TOY WORLD ONLY).

``make_clip()`` builds ``comfy.sd.CLIP(target)`` from a ``ClipTarget`` whose tokenizer is the toy
word tokenizer and whose "clip" is the toy encoder, so the stock CLIPTextEncode node yields
ordinary CONDITIONING ``[[cond [1, 16, 4096], {"pooled_output": None}]]`` and the pack's subject-token
lookup (nodes/subject_tokens.py) finds phrases: ``clip.tokenize(text)`` gives ``{"toy": [[(id, 1.0),
... 16 pairs]]}`` and ``clip.tokenizer.clip_toy`` carries ``end_token``/``pad_token``. Encoder output
position i is token i, so cross-attention key positions equal token-list positions.

Token weights (``(word:1.3)``) are not supported: the toy vocabulary has no such syntax and
every weight is 1.0.
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import text

KEY = "toy"


class ToyTokenizer:
    """The tokenizer half of the ClipTarget (constructed by comfy.sd.CLIP)."""

    def __init__(self, embedding_directory=None, tokenizer_data={}):
        self.clip_toy = text.ToyWordTokenizer()
        self.clip_name = KEY

    def tokenize_with_weights(self, text_: str, return_word_ids: bool = False, **kwargs):
        ids = self.clip_toy.ids(text_)
        if return_word_ids:
            n_words = sum(1 for i in ids if i not in (text.PAD, text.END))
            pairs = [(t, 1.0, (j + 1) if j < n_words else 0) for j, t in enumerate(ids)]
        else:
            pairs = [(t, 1.0) for t in ids]
        return {KEY: [pairs]}

    def untokenize(self, token_weight_pair):
        return [(p, text.VOCAB[p[0]]) for p in token_weight_pair[KEY][0]] if isinstance(token_weight_pair, dict) \
            else [(p, text.VOCAB[p[0]]) for p in token_weight_pair]

    def state_dict(self):
        return {}


def _tables_path() -> Path:
    return text.WEIGHTS


class ToyClipModel(torch.nn.Module):
    """The encoder half of the ClipTarget: ``encode_token_weights`` -> (cond, pooled=None)."""

    def __init__(self, device="cpu", dtype=None, model_options={}, **kwargs):
        super().__init__()
        self.encoder = text.ToyTextEncoder(text.load_tables(_tables_path()))
        self.dtypes = {torch.float32}

    def reset_clip_options(self):
        pass

    def set_clip_options(self, options):
        pass

    def encode_token_weights(self, token_weight_pairs):
        import comfy.model_management

        chunks = token_weight_pairs[KEY] if isinstance(token_weight_pairs, dict) else token_weight_pairs
        device = self.encoder.word.device
        ids = torch.tensor([[int(t[0]) for t in chunk] for chunk in chunks], dtype=torch.long, device=device)
        out = self.encoder(ids)  # [chunks, L, 4096]
        cond = out.reshape(1, -1, text.WIDTH).to(comfy.model_management.intermediate_device())
        return cond, None

    def load_sd(self, sd):
        return self.encoder.load_state_dict(sd, strict=False)


def make_clip():
    """A ``comfy.sd.CLIP`` wrapping the toy tokenizer and encoder (needs ComfyUI importable)."""
    import comfy.sd
    import comfy.supported_models_base

    target = comfy.supported_models_base.ClipTarget(ToyTokenizer, ToyClipModel)
    return comfy.sd.CLIP(target=target, parameters=0)
