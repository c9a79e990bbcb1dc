"""Tokenizer round trip, KV-cache decoding equal to plain decoding, and a model that can learn."""

from __future__ import annotations

import dataclasses

import torch

from instdiv import rewrite, tokenizer as tok
from instdiv.config import RewriteConfig
from instdiv.evaluate import EvalSet, accuracies, predict
from instdiv.model import GPT, GPTConfig

from conftest import TINY


def test_tokenizer_round_trip():
    text = tok.prompt_text("abc", "zz", "qabcx") + "qzzx" + tok.EOS
    ids = tok.encode(text)
    assert len(ids) == len(text) and tok.decode(ids) == text[:-1]  # decode stops at EOS
    assert tok.decode(ids[:5] + [tok.PAD_ID] * 3) == text[:5]
    left = tok.encode_padded(["ab", "abcd"], 6, left=True)
    assert left[0].tolist()[:4] == [tok.PAD_ID] * 4 and tok.decode(left[0]) == "ab"
    assert sorted(set(tok.VOCAB)) == sorted(tok.VOCAB) and all(c in tok.VOCAB for c in rewrite.ALPHABET)


def test_training_targets_cover_output_and_eos_only():
    x, y = tok.training_tensors([tok.prompt_text("ab", "c", "xaby")], ["xcy"], block_size=14)
    prompt = tok.prompt_text("ab", "c", "xaby")
    kept = y[0][y[0] != tok.IGNORE].tolist()
    assert tok.decode(kept) == "xcy" and kept[-1] == tok.EOS_ID
    assert tok.decode(x[0][: len(prompt)]) == prompt


def varied_cfg() -> RewriteConfig:
    return dataclasses.replace(RewriteConfig(**TINY["rewrite"]), pattern_length=[1, 3], replacement_length=[1, 3])


def test_kv_cache_decoding_equals_plain_decoding():
    cfg = varied_cfg()  # prompts of different lengths, so left padding and masks are exercised
    es = EvalSet.from_table(rewrite.generate(cfg)["test_unseen"], cfg)
    torch.manual_seed(0)
    _, block = tok.sequence_lengths(cfg)
    model = GPT(GPTConfig(vocab_size=len(tok.VOCAB), block_size=block, n_layer=2, n_head=2, d_model=32)).eval()
    n = es.targets.size(1)
    cached = model.generate(es.prompts, es.mask, n, tok.EOS_ID)
    plain = model.generate(es.prompts, es.mask, n, tok.EOS_ID, use_cache=False)
    assert torch.equal(cached, plain)
    # and a row decoded alone, without padding, gives the same tokens as in the padded batch
    for i in range(8):
        real = int(es.mask[i].sum())
        alone = model.generate(es.prompts[i:i + 1, -real:], es.mask[i:i + 1, -real:], n, tok.EOS_ID)
        assert torch.equal(alone[0], cached[i, : alone.size(1)])


def test_tiny_model_overfits_tiny_set():
    cfg = dataclasses.replace(RewriteConfig(**TINY["rewrite"]), n_instructions=4, total_examples=32)
    table = rewrite.generate(cfg)["train"]
    d = table.to_pydict()
    _, block = tok.sequence_lengths(cfg)
    x, y = tok.training_tensors(tok.prompts(d), d["output"], block)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(tok.VOCAB), block_size=block, n_layer=2, n_head=2, d_model=64))
    opt = model.configure_optimizer(lr=3e-3, weight_decay=0.0)
    for _ in range(300):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    es = EvalSet.from_table(table, cfg)
    correct = (predict(model, es, 64, "cpu") == es.targets).all(1)
    assert accuracies(correct, es.is_noop)["accuracy"] == 1.0
