"""The toy world's text conditioning: a word-level tokenizer for the toy vocabulary and a tiny,
deterministic "text encoder" producing [B, L, 4096] embeddings (the width of Wan 2.1's umt5, so the
toy DiT is a genuine Wan 2.1 t2v model). TOY WORLD ONLY: it knows a dozen words, nothing else.

Plain torch; nothing here imports ComfyUI (nodes/toy_nodes.py wraps it into a ComfyUI CLIP).

Token layout (one token per word, then an end token, then padding to ``MAX_TOKENS``):

    "a red circle and a blue square" -> a red circle and a blue square <end> <pad> ... (16 ids)

The cross-attention keys of the DiT are exactly these positions, so a phrase's key positions are
where its word ids occur -- what the pack's subject-token lookup needs.

Encoder: embedding[i] = normalised sum of a fixed word vector, the word's *object* vector (the
colour and shape vectors of the "a <colour> <shape>" phrase the word belongs to, phrases being
separated by "and"/",") and a phrase-index vector; <end> gets its own vector, padding is zeros (as
Wan's umt5 context is zero-padded). So, like a real contextual encoder, every word of
"a red circle" carries the whole object's identity, and "red" in the first phrase differs from
"red" in the second. The tables are seeded random normals (``build_tables(seed)``), shipped as
``weights/toy_text_encoder.safetensors``.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from .data import COLORS, SHAPES

WIDTH = 4096  # Wan 2.1's text_dim (umt5-xxl's width)
MAX_TOKENS = 16  # fixed length: positive and negative batch together in ComfyUI
MAX_PHRASES = 4
TABLE_SEED = 20250601
WEIGHTS = Path(__file__).resolve().parent / "weights" / "toy_text_encoder.safetensors"

SPECIAL = ("<pad>", "<end>", "<unk>")
FUNCTION_WORDS = ("a", "an", "the", "and")
VOCAB = SPECIAL + FUNCTION_WORDS + COLORS + SHAPES
WORD_ID = {w: i for i, w in enumerate(VOCAB)}
PAD, END, UNK = WORD_ID["<pad>"], WORD_ID["<end>"], WORD_ID["<unk>"]
AND = WORD_ID["and"]
COLOR_IDS = {WORD_ID[c]: i for i, c in enumerate(COLORS)}
SHAPE_IDS = {WORD_ID[s]: i for i, s in enumerate(SHAPES)}


class ToyWordTokenizer:
    """Lower-cases, splits into words (a comma counts as "and"), maps each word to its id (unknown
    words -> <unk>), appends <end> and pads with <pad> to ``MAX_TOKENS``."""

    start_token = None
    end_token = END
    pad_token = PAD
    max_length = MAX_TOKENS
    vocab = VOCAB

    def words(self, text: str) -> list[str]:
        return re.findall(r"[a-z]+|,", text.lower())

    def ids(self, text: str) -> list[int]:
        out = [AND if w == "," else WORD_ID.get(w, UNK) for w in self.words(text)]
        out = out[:MAX_TOKENS - 1] + [END]
        return out + [PAD] * (MAX_TOKENS - len(out))

    def decode(self, ids) -> str:
        return " ".join(VOCAB[i] for i in ids if i not in (PAD,))


def build_tables(seed: int = TABLE_SEED) -> dict:
    """The encoder's tables, a pure function of the seed (CPU torch.Generator normals)."""
    g = torch.Generator().manual_seed(seed)
    return {
        "word": torch.randn(len(VOCAB), WIDTH, generator=g),
        "color": torch.randn(len(COLORS), WIDTH, generator=g),
        "shape": torch.randn(len(SHAPES), WIDTH, generator=g),
        "phrase": torch.randn(MAX_PHRASES, WIDTH, generator=g),
    }


def load_tables(path: Path = WEIGHTS) -> dict:
    import safetensors.torch

    return {k: v.float() for k, v in safetensors.torch.load_file(str(path)).items()}


def save_tables(path: Path = WEIGHTS, seed: int = TABLE_SEED) -> None:
    import safetensors.torch

    path.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file({k: v.contiguous() for k, v in build_tables(seed).items()}, str(path),
                                metadata={"toyworld": "text_encoder", "seed": str(seed), "vocab": " ".join(VOCAB)})


def phrase_structure(ids: list[int]) -> list[tuple[int, int | None, int | None]]:
    """Per token: (phrase index, colour index or None, shape index or None) of its phrase; -1 as
    phrase index for <end>/<pad>."""
    phrases, cur = [[]], 0
    for i, t in enumerate(ids):
        if t in (END, PAD):
            continue
        if t == AND:
            cur += 1
            phrases.append([])
            continue
        phrases[cur].append(i)
    info = [(-1, None, None)] * len(ids)
    for p, members in enumerate(phrases):
        col = next((COLOR_IDS[ids[i]] for i in members if ids[i] in COLOR_IDS), None)
        shp = next((SHAPE_IDS[ids[i]] for i in members if ids[i] in SHAPE_IDS), None)
        for i in members:
            info[i] = (min(p, MAX_PHRASES - 1), col, shp)
    # "and" belongs to the phrase it starts
    p = 0
    for i, t in enumerate(ids):
        if t == AND:
            p += 1
            info[i] = (min(p, MAX_PHRASES - 1), *info[i + 1][1:]) if i + 1 < len(ids) and info[i + 1][0] >= 0 \
                else (min(p, MAX_PHRASES - 1), None, None)
    return info


class ToyTextEncoder(torch.nn.Module):
    """ids [B, L] -> embeddings [B, L, 4096]. Deterministic, no trainable parameters (the tables
    are buffers)."""

    def __init__(self, tables: dict | None = None):
        super().__init__()
        tables = tables if tables is not None else load_tables()
        for k, v in tables.items():
            self.register_buffer(k, v.float().clone())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(*ids.shape, WIDTH, dtype=self.word.dtype, device=self.word.device)
        for b in range(ids.shape[0]):
            row = ids[b].tolist()
            for i, (p, col, shp) in enumerate(phrase_structure(row)):
                t = row[i]
                if t == PAD:
                    continue
                parts = [self.word[t]]
                if p >= 0:
                    parts.append(self.phrase[p])
                    if col is not None:
                        parts.append(self.color[col])
                    if shp is not None:
                        parts.append(self.shape[shp])
                out[b, i] = torch.stack(parts).sum(0) / len(parts) ** 0.5
        return out

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        tok = ToyWordTokenizer()
        ids = torch.tensor([tok.ids(t) for t in texts], dtype=torch.long, device=self.word.device)
        return self(ids)
