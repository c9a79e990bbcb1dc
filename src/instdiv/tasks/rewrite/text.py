"""The rewrite task's prompt `pattern > replacement | input =` and its character vocabulary.

Encrypted rewriting puts the rule's cipher key (a letter: a = shift 0, b = 1, ...) into the instruction:
`pattern > replacement | key | input =`. Every character is one token. The vocabulary is fixed (all 26
letters whatever the alphabet size), so a model trained on one alphabet can be evaluated on another without
remapping.
"""

from __future__ import annotations

from instdiv.config import as_range
from instdiv.engine.text import CharTokenizer
from instdiv.tasks.rewrite.config import RewriteConfig
from instdiv.tasks.rewrite.generator import ALPHABET

PAD, EOS, ARROW, BAR, EQUALS = "_", "$", ">", "|", "="
VOCAB = PAD + EOS + ARROW + BAR + EQUALS + ALPHABET
TOKENIZER = CharTokenizer(VOCAB)


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


def sequence_lengths(cfg: RewriteConfig) -> tuple[int, int]:
    """(prompt width, block size): the longest prompt, and prompt + output + EOS - 1."""
    prompt = as_range(cfg.pattern_length)[1] + as_range(cfg.replacement_length)[1] + cfg.input_length + 3
    if cfg.encrypt:
        prompt += 2  # the key letter and its separator
    return prompt, prompt + cfg.max_output_length
