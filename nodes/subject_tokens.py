"""Find each object's words in the prompt with the model's real tokenizer.

The cross-attention keys of a text-to-video model are the encoder's tokens, in order, padding
included (umt5 for Wan pads to 512; T5 for LTX-Video masks its padding). So an object's key
positions are the tokens its subject phrase became inside the tokenized prompt: the phrase is found
in the prompt text (whole words, any case), and the prompt's prefixes up to its start and its end
are tokenized — the tokens between the two are the phrase's, whatever the tokenizer merges.
"""

from __future__ import annotations

import re
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


def key_window(ids: list[int], layout: str) -> tuple[int, int]:
    """[start, end) of the tokenized prompt that becomes the model's text keys.

    HunyuanVideo wraps the prompt in a llama chat template and its encoder keeps only the user
    turn: from after ``<|start_header_id|>user<|end_header_id|>\n\n`` up to and including
    ``<|eot_id|>`` (comfy/text_encoders/hunyuan_video.py). Everything else keeps all tokens.
    """
    if layout != "hunyuan_video":
        return 0, len(ids)
    start, end = 0, len(ids)
    for i in range(len(ids) - 2):
        if ids[i] == 128006 and ids[i + 1] == 882 and ids[i + 2] == 128007:   # <|start_header_id|>user<|end_header_id|>
            start = i + 3 + (1 if i + 3 < len(ids) and ids[i + 3] == 271 else 0)   # "\n\n"
            end = next((j + 1 for j in range(start, len(ids)) if ids[j] == 128009), len(ids))  # <|eot_id|>
            break
    return start, end


def find_subject_tokens(clip, prompt: str, phrases: list[str], ids: list[str], layout: str) -> SubjectTokens:
    def keys(text: str) -> list[int]:
        ids_ = _ids(clip.tokenize(text)[key])
        start, end = key_window(ids_, layout)
        return ids_[start:end]

    key = _encoder_key(clip.tokenize(prompt), layout)
    prompt_ids = keys(prompt)
    # SD1Tokenizer and its subclasses keep each encoder's tokenizer as ``clip_<key>``.
    tok = getattr(clip.tokenizer, f"clip_{key}", None) or getattr(clip.tokenizer, key, None)
    specials = {getattr(tok, a, None) for a in ("start_token", "end_token")} - {None}
    pad = getattr(tok, "pad_token", None)
    # Whatever the tokenizer adds to an empty text (start/end/padding) is not a word.
    added = set(keys("")) | specials | ({pad} if pad is not None else set())

    def words(text: str) -> list[int]:
        return [t for t in keys(text) if t not in added]

    content_pos = [i for i, t in enumerate(prompt_ids) if t not in added]   # word tokens -> key positions
    content = [prompt_ids[i] for i in content_pos]
    positions = []
    for phrase, oid in zip(phrases, ids):
        found: set[int] = set()
        # Tokens of the prompt's prefixes up to the phrase's start and end bracket its tokens; this
        # survives tokenizers that merge a word with what precedes it (llama's "\n\n" + first word).
        for m in re.finditer(rf"(?<!\w){re.escape(phrase.strip())}(?!\w)", prompt, flags=re.IGNORECASE):
            before, upto = words(prompt[:m.start()]), words(prompt[:m.end()])
            # The phrase starts where the prefix's tokens stop agreeing with the prompt's: a word
            # merged with what precedes it (llama's "\n\n" + first word) counts as before it.
            a = next((i for i, (x, y) in enumerate(zip(before, content)) if x != y), min(len(before), len(content)))
            b = len(upto)
            if a < b and upto[a:b - 1] == content[a:b - 1] and b <= len(content):
                found.update(content_pos[a:b])
        if not found:
            raise SubjectNotFound(
                f"regions: the subject phrase {phrase!r} of object {oid!r} is not in the prompt {prompt!r}; "
                "write the phrase into the prompt exactly as in the trajectory (or change the object's prompt)")
        positions.append(tuple(sorted(found)))
    special = tuple(i for i, t in enumerate(prompt_ids) if t in specials and t != pad)
    return SubjectTokens(tuple(positions), special, len(prompt_ids))
