"""Find each object's words in the prompt with the model's real tokenizer.

The cross-attention keys of a text-to-video model are the encoder's tokens, in order, padding
included (umt5 for Wan pads to 512; T5 for LTX-Video masks its padding). So an object's key
positions are where the token ids of its subject phrase occur in the tokenized prompt. The phrase
is tokenized on its own and matched as a subsequence — the same words give the same pieces in
SentencePiece (umt5, T5) and CLIP BPE when they follow a space or start the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

# Which tokenizer's tokens are the cross-attention keys, per token layout.
ENCODER_KEYS = {"wan21": ("umt5xxl",), "wan22_ti2v": ("umt5xxl",), "ltxv": ("t5xxl",),
                "hunyuan_video": ("llama",)}


class SubjectNotFound(ValueError):
    pass


@dataclass(frozen=True)
class SubjectTokens:
    positions: tuple          # per object: key positions of its subject phrase
    special: tuple            # positions of start/end tokens (not padding)
    length: int               # number of text tokens (cross-attention keys)


def _ids(batches) -> list[int]:
    return [int(t[0]) for batch in batches for t in batch]


def _encoder_key(tokens: dict, layout: str) -> str:
    for key in ENCODER_KEYS.get(layout, ()):
        if key in tokens:
            return key
    if len(tokens) == 1:
        return next(iter(tokens))
    raise ValueError(f"clip: cannot tell which of its text encoders ({', '.join(tokens)}) feeds the model's "
                     f"cross-attention; connect the text encoder made for this model")


def find_subject_tokens(clip, prompt: str, phrases: list[str], ids: list[str], layout: str) -> SubjectTokens:
    tokens = clip.tokenize(prompt)
    key = _encoder_key(tokens, layout)
    prompt_ids = _ids(tokens[key])
    # SD1Tokenizer and its subclasses keep each encoder's tokenizer as ``clip_<key>``.
    tok = getattr(clip.tokenizer, f"clip_{key}", None) or getattr(clip.tokenizer, key, None)
    specials = {getattr(tok, a, None) for a in ("start_token", "end_token")} - {None}
    pad = getattr(tok, "pad_token", None)
    # Whatever the tokenizer adds to an empty text (start/end/padding) is not part of a phrase.
    added = set(_ids(clip.tokenize("")[key])) | specials | ({pad} if pad is not None else set())
    positions = []
    for phrase, oid in zip(phrases, ids):
        want = [t for t in _ids(clip.tokenize(phrase)[key]) if t not in added]
        hits = [i for i in range(len(prompt_ids) - len(want) + 1)
                if want and prompt_ids[i:i + len(want)] == want]
        if not hits:
            raise SubjectNotFound(
                f"regions: the subject phrase {phrase!r} of object {oid!r} is not in the prompt {prompt!r}; "
                "write the phrase into the prompt exactly as in the trajectory (or change the object's prompt)")
        positions.append(tuple(sorted({i + j for i in hits for j in range(len(want))})))
    special = tuple(i for i, t in enumerate(prompt_ids) if t in specials and t != pad)
    return SubjectTokens(tuple(positions), special, len(prompt_ids))
