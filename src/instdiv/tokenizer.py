"""Character tokenizer and the sequence layout `pattern > replacement | input = output $`.

Encrypted rewriting puts the rule's cipher key (a letter: a = shift 0, b = 1, ...) into the instruction:
`pattern > replacement | key | input = output $`.

Every character is one token. The vocabulary is fixed (all 26 letters whatever the alphabet size), so a
model trained on one alphabet can be evaluated on another without remapping.
"""

from __future__ import annotations

import numpy as np
import torch

from instdiv.config import RewriteConfig, as_range
from instdiv.rewrite import ALPHABET

PAD, EOS, ARROW, BAR, EQUALS = "_", "$", ">", "|", "="
VOCAB = PAD + EOS + ARROW + BAR + EQUALS + ALPHABET
PAD_ID, EOS_ID = 0, 1
IGNORE = -100  # targets that take no loss (prompt and padding): cross_entropy's ignore_index

_LUT = np.full(256, -1, dtype=np.int64)
_LUT[np.frombuffer(VOCAB.encode("ascii"), dtype=np.uint8)] = np.arange(len(VOCAB))


def prompt_text(pattern: str, replacement: str, text: str, key: int | None = None) -> str:
    rule = f"{pattern}{ARROW}{replacement}"
    if key is not None:
        rule += f"{BAR}{ALPHABET[key]}"
    return f"{rule}{BAR}{text}{EQUALS}"


def prompts(columns: dict) -> list[str]:
    """The prompts of a table's rows (its `to_pydict()`), with the cipher key where the table has one."""
    keys = columns.get("key") or [None] * len(columns["pattern"])
    return [prompt_text(p, r, t, k) for p, r, t, k in
            zip(columns["pattern"], columns["replacement"], columns["input"], keys)]


def encode(text: str) -> list[int]:
    return encode_padded([text], len(text))[0].tolist()


def decode(ids) -> str:
    """Text up to the first end-of-sequence token, padding dropped."""
    chars = []
    for i in (ids.tolist() if hasattr(ids, "tolist") else ids):
        if i == EOS_ID:
            break
        if i != PAD_ID:
            chars.append(VOCAB[i])
    return "".join(chars)


def encode_padded(texts: list[str], width: int, left: bool = False) -> np.ndarray:
    """Token ids of many texts as one (n, width) array, padded on the right (or left) with PAD_ID."""
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    flat = _LUT[np.frombuffer("".join(texts).encode("ascii"), dtype=np.uint8)]
    if (flat < 0).any():
        bad = sorted({c for t in texts for c in t if c not in VOCAB})
        raise ValueError(f"characters outside the vocabulary: {bad}")
    return _pad(flat, lengths, width, left)


def _pad(flat: np.ndarray, lengths: np.ndarray, width: int, left: bool) -> np.ndarray:
    """Rows of `flat` (concatenated, `lengths` each) in an (n, width) array of PAD_ID."""
    if len(lengths) and lengths.max() > width:
        raise ValueError(f"a text of {lengths.max()} tokens does not fit in {width}")
    out = np.full((len(lengths), width), PAD_ID, dtype=np.int64)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.cumsum(lengths) - lengths
    cols = np.arange(len(flat)) - np.repeat(starts, lengths)
    if left:
        cols += np.repeat(width - lengths, lengths)
    out[rows, cols] = flat
    return out


# Free text (code and general-domain instructions): one token per UTF-8 byte after PAD and EOS, and the
# prompt `instruction \n### Response:\n`.
BYTE_VOCAB_SIZE = 258
RESPONSE = "\n### Response:\n"


def text_prompt(instruction: str) -> str:
    return instruction + RESPONSE


def byte_length(text: str) -> int:
    return len(text.encode("utf-8"))


def encode_bytes(texts: list[str], width: int, left: bool = False) -> np.ndarray:
    raw = [t.encode("utf-8") for t in texts]
    lengths = np.fromiter(map(len, raw), dtype=np.int64, count=len(raw))
    return _pad(np.frombuffer(b"".join(raw), dtype=np.uint8).astype(np.int64) + 2, lengths, width, left)


def decode_bytes(ids) -> str:
    """Text up to the first EOS, padding dropped; bytes that are not valid UTF-8 become U+FFFD."""
    out = bytearray()
    for i in (ids.tolist() if hasattr(ids, "tolist") else ids):
        if i == EOS_ID:
            break
        if i >= 2:
            out.append(i - 2)
    return out.decode("utf-8", errors="replace")


def training_tensors(prompts: list[str], outputs: list[str], block_size: int,
                     encoder=encode_padded) -> tuple[torch.Tensor, ...]:
    """Inputs x and targets y of shape (n, block_size); y is IGNORE except on the output and its EOS."""
    ids = encoder([p + o for p, o in zip(prompts, outputs)], block_size + 1)
    ends = (ids != PAD_ID).sum(1)
    if (ends > block_size).any():
        raise ValueError(f"a prompt and output of {ends.max()} tokens leave no room for EOS in {block_size + 1}")
    ids[np.arange(len(ids)), ends] = EOS_ID
    x, y = ids[:, :-1].copy(), ids[:, 1:].copy()
    # Both vocabularies spend one token per byte (the rewrite one is ASCII), so no second encoding is needed.
    prompt_len = np.fromiter(map(byte_length, prompts), dtype=np.int64, count=len(prompts))
    positions = np.arange(block_size)[None, :]
    y[(positions < prompt_len[:, None] - 1) | (y == PAD_ID)] = IGNORE
    return torch.from_numpy(x), torch.from_numpy(y)


def prompt_tensors(prompts: list[str], width: int, encoder=encode_padded) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompts (so every row ends where generation starts) and their non-padding mask."""
    ids = encoder(prompts, width, left=True)
    ids = torch.from_numpy(ids)
    return ids, ids != PAD_ID


def sequence_lengths(cfg: RewriteConfig) -> tuple[int, int]:
    """(prompt width, block size) for a RewriteConfig: the longest prompt, and prompt + output + EOS - 1."""
    prompt = as_range(cfg.pattern_length)[1] + as_range(cfg.replacement_length)[1] + cfg.input_length + 3
    if cfg.encrypt:
        prompt += 2  # the key letter and its separator
    return prompt, prompt + cfg.max_output_length
