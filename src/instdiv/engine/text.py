"""Text to token ids and back, and the tensors training and decoding take.

A `Tokenizer` has a vocabulary with PAD and EOS ids, pads batches into arrays and reports how many tokens
each text takes. Two are here, with PAD = 0 and EOS = 1: characters of a fixed vocabulary (the rewrite task's)
and UTF-8 bytes (free text); a pretrained model brings its own (instdiv/models/hf.py), with its prompt format.

A prompt and its response are tokenized apart and joined, so the response starts at a known token whatever
the tokenizer merges across the boundary, and the loss falls on the response and its EOS alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

PAD_ID, EOS_ID = 0, 1
IGNORE = -100  # targets that take no loss (prompt and padding): cross_entropy's ignore_index


class Tokenizer:
    """What the engine asks of a tokenizer. `prompt_format` wraps every prompt (a pretrained model's template:
    "### Instruction:\n{prompt}\n### Response:\n"); the engine's own tokenizers take prompts as they are."""

    vocab_size: int
    pad_id: int = PAD_ID
    eos_id: int = EOS_ID
    prompt_format: str = "{prompt}"

    def encode_padded(self, texts: list[str], width: int, left: bool = False) -> np.ndarray:
        """Token ids of many texts as one (n, width) int64 array, padded with pad_id on the right (or left)."""
        raise NotImplementedError

    def lengths(self, texts: list[str]) -> np.ndarray:
        """Tokens per text."""
        raise NotImplementedError

    def decode(self, ids) -> str:
        """Text up to the first EOS, padding dropped."""
        raise NotImplementedError

    def prompts(self, texts: list[str]) -> list[str]:
        """Prompts as the model reads them."""
        if self.prompt_format == "{prompt}":
            return texts
        return [self.prompt_format.replace("{prompt}", t) for t in texts]


def _pad(flat: np.ndarray, lengths: np.ndarray, width: int, left: bool, pad_id: int = PAD_ID) -> np.ndarray:
    """Rows of `flat` (concatenated, `lengths` each) in an (n, width) array of `pad_id`."""
    if len(lengths) and lengths.max() > width:
        raise ValueError(f"a text of {lengths.max()} tokens does not fit in {width}")
    out = np.full((len(lengths), width), pad_id, dtype=np.int64)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.cumsum(lengths) - lengths
    cols = np.arange(len(flat)) - np.repeat(starts, lengths)
    if left:
        cols += np.repeat(width - lengths, lengths)
    out[rows, cols] = flat
    return out


def _ids(ids) -> list[int]:
    return ids.tolist() if hasattr(ids, "tolist") else list(ids)


class CharTokenizer(Tokenizer):
    """One token per character of a fixed ASCII vocabulary whose first two characters stand for PAD and EOS."""

    def __init__(self, vocab: str):
        self.vocab = vocab
        self.vocab_size = len(vocab)
        self._lut = np.full(256, -1, dtype=np.int64)
        self._lut[np.frombuffer(vocab.encode("ascii"), dtype=np.uint8)] = np.arange(len(vocab))

    def encode(self, text: str) -> list[int]:
        return self.encode_padded([text], len(text))[0].tolist()

    def encode_padded(self, texts: list[str], width: int, left: bool = False) -> np.ndarray:
        flat = self._lut[np.frombuffer("".join(texts).encode("ascii"), dtype=np.uint8)]
        if (flat < 0).any():
            bad = sorted({c for t in texts for c in t if c not in self.vocab})
            raise ValueError(f"characters outside the vocabulary: {bad}")
        return _pad(flat, self.lengths(texts), width, left)

    def lengths(self, texts: list[str]) -> np.ndarray:
        return np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))

    def decode(self, ids) -> str:
        chars = []
        for i in _ids(ids):
            if i == EOS_ID:
                break
            if i != PAD_ID:
                chars.append(self.vocab[i])
        return "".join(chars)


class ByteTokenizer(Tokenizer):
    """One token per UTF-8 byte after PAD and EOS: any text, 258 tokens."""

    vocab_size = 258

    def encode_padded(self, texts: list[str], width: int, left: bool = False) -> np.ndarray:
        raw = [t.encode("utf-8") for t in texts]
        lengths = np.fromiter(map(len, raw), dtype=np.int64, count=len(raw))
        return _pad(np.frombuffer(b"".join(raw), dtype=np.uint8).astype(np.int64) + 2, lengths, width, left)

    def lengths(self, texts: list[str]) -> np.ndarray:
        return np.fromiter((len(t.encode("utf-8")) for t in texts), dtype=np.int64, count=len(texts))

    def decode(self, ids) -> str:
        """Bytes that are not valid UTF-8 become U+FFFD."""
        out = bytearray()
        for i in _ids(ids):
            if i == EOS_ID:
                break
            if i >= 2:
                out.append(i - 2)
        return out.decode("utf-8", errors="replace")


def token_dtype(vocab_size: int) -> torch.dtype:
    """The narrowest dtype for token ids: 10^6 rows then take megabytes, not a gigabyte."""
    return torch.uint8 if vocab_size <= 256 else torch.int16 if vocab_size <= 32_767 else torch.int32


def training_tensors(tok: Tokenizer, prompts: list[str], responses: list[str],
                     block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs x and targets y of shape (n, block_size): prompt, response, EOS, padding; y is IGNORE except on
    the response and its EOS."""
    prompts = tok.prompts(prompts)
    lp, lr = tok.lengths(prompts), tok.lengths(responses)
    ends = lp + lr  # where EOS goes
    if len(ends) and ends.max() + 1 > block_size + 1:
        raise ValueError(f"a prompt and output of {ends.max()} tokens leave no room for EOS in {block_size + 1}")
    ids = np.full((len(ends), block_size + 1), tok.pad_id, dtype=np.int64)
    for part, start, n in ((prompts, np.zeros_like(lp), lp), (responses, lp, lr)):
        if len(n) and n.max():
            enc = tok.encode_padded(part, int(n.max()))
            rows, cols = np.nonzero(np.arange(enc.shape[1])[None, :] < n[:, None])
            ids[rows, start[rows] + cols] = enc[rows, cols]
    ids[np.arange(len(ids)), ends] = tok.eos_id
    x, y = ids[:, :-1].copy(), ids[:, 1:].copy()
    positions = np.arange(block_size)[None, :]
    y[(positions < lp[:, None] - 1) | (positions >= ends[:, None])] = IGNORE
    target_dtype = torch.int16 if tok.vocab_size <= 32_767 else torch.int32
    return torch.from_numpy(x).to(token_dtype(tok.vocab_size)), torch.from_numpy(y).to(target_dtype)


def prompt_tensors(tok: Tokenizer, prompts: list[str], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompts (so every row ends where generation starts) and their non-padding mask."""
    prompts = tok.prompts(prompts)
    ids = torch.from_numpy(tok.encode_padded(prompts, width, left=True))
    lengths = torch.from_numpy(tok.lengths(prompts))
    return ids, torch.arange(width)[None, :] >= width - lengths[:, None]


@dataclass
class EvalSet:
    """Rows for greedy exact match: left-padded prompts, their mask, the targets (response, EOS, padding)
    and each row's group index (-1: none)."""

    prompts: torch.Tensor  # (n, prompt width)
    mask: torch.Tensor  # (n, prompt width), True on real tokens
    targets: torch.Tensor  # (n, n_out)
    group: torch.Tensor  # (n,) int8

    @classmethod
    def build(cls, tok: Tokenizer, prompts: list[str], targets: list[str], width: int, n_out: int,
              groups: list[str] | None = None, group_names: tuple[str, ...] = ()) -> EvalSet:
        ids, mask = prompt_tensors(tok, prompts, width)
        out = tok.encode_padded(targets, n_out)
        out[np.arange(len(targets)), tok.lengths(targets)] = tok.eos_id
        index = {g: i for i, g in enumerate(group_names)}
        group = torch.tensor([index[g] for g in groups] if groups is not None else [-1] * len(targets),
                             dtype=torch.int8)
        return cls(ids, mask, torch.from_numpy(out), group)

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.prompts, self.mask, self.targets, self.group
