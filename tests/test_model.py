"""Tokenizer round trip, KV-cache decoding equal to plain decoding, and a model that can learn."""

from __future__ import annotations

import torch

from instdiv.engine import text
from instdiv.engine.decoding import accuracies, predict
from instdiv.engine.text import IGNORE, ByteTokenizer, EvalSet
from instdiv.models.gpt import GPT, GPTConfig
from instdiv.tasks.rewrite import TASK, generator as rewrite, text as rtext
from instdiv.tasks.rewrite.config import RewriteConfig

from conftest import TINY

tok = rtext.TOKENIZER


def test_tokenizer_round_trip():
    prompt = rtext.prompt_text("abc", "zz", "qabcx") + "qzzx"
    ids = tok.encode(prompt + rtext.EOS)
    assert len(ids) == len(prompt) + 1 and tok.decode(ids) == prompt  # decode stops at EOS
    assert tok.decode(ids[:5] + [text.PAD_ID] * 3) == prompt[:5]
    left = tok.encode_padded(["ab", "abcd"], 6, left=True)
    assert left[0].tolist()[:4] == [text.PAD_ID] * 4 and tok.decode(left[0]) == "ab"
    assert sorted(set(rtext.VOCAB)) == sorted(rtext.VOCAB) and all(c in rtext.VOCAB for c in rewrite.ALPHABET)
    assert tok.lengths(["ab", "abcd"]).tolist() == [2, 4]
    b = ByteTokenizer()  # free text: bytes, so "é" takes two tokens and the response starts after them
    assert b.lengths(["é>"]).tolist() == [3] and b.decode(b.encode_padded(["é>"], 4)[0]) == "é>"


def test_training_targets_cover_output_and_eos_only():
    prompt = rtext.prompt_text("ab", "c", "xaby")
    x, y = text.training_tensors(tok, [prompt], ["xcy"], block_size=14)
    kept = y[0][y[0] != IGNORE].tolist()
    assert tok.decode(kept) == "xcy" and kept[-1] == text.EOS_ID
    assert tok.decode(x[0][: len(prompt)]) == prompt
    b = ByteTokenizer()
    x, y = text.training_tensors(b, ["é?"], ["ü"], block_size=8)  # 3 + 2 bytes: the loss starts after byte 3
    assert b.decode(y[0][y[0] != IGNORE]) == "ü" and (y[0][:2] == IGNORE).all() and y[0][2] != IGNORE


def varied_cfg() -> RewriteConfig:
    return RewriteConfig(**TINY["rewrite"]).replace(pattern_length=[1, 3], replacement_length=[1, 3])


def eval_set(table, cfg) -> EvalSet:
    ex = TASK.examples(table)
    width, block = rtext.sequence_lengths(cfg)
    return EvalSet.build(tok, ex.prompts, ex.targets, width, block - width + 1, ex.groups, TASK.groups)


def test_kv_cache_decoding_equals_plain_decoding():
    cfg = varied_cfg()  # prompts of different lengths, so left padding and masks are exercised
    es = eval_set(rewrite.generate(cfg)["test_unseen"], cfg)
    torch.manual_seed(0)
    _, block = rtext.sequence_lengths(cfg)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=block, n_layer=2, n_head=2, d_model=32)).eval()
    n = es.targets.size(1)
    cached = model.generate(es.prompts, es.mask, n, text.EOS_ID)
    plain = model.generate(es.prompts, es.mask, n, text.EOS_ID, use_cache=False)
    assert torch.equal(cached, plain)
    # and a row decoded alone, without padding, gives the same tokens as in the padded batch
    for i in range(8):
        real = int(es.mask[i].sum())
        alone = model.generate(es.prompts[i:i + 1, -real:], es.mask[i:i + 1, -real:], n, text.EOS_ID)
        assert torch.equal(alone[0], cached[i, : alone.size(1)])


def test_tiny_model_overfits_tiny_set():
    cfg = RewriteConfig(**TINY["rewrite"]).replace(n_instructions=4, total_examples=32)
    table = rewrite.generate(cfg)["train"]
    d = table.to_pydict()
    _, block = rtext.sequence_lengths(cfg)
    x, y = text.training_tensors(tok, rtext.prompts(d), d["output"], block)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=block, n_layer=2, n_head=2, d_model=64))
    opt = model.configure_optimizer(lr=3e-3, weight_decay=0.0)
    for _ in range(300):
        _, loss = model(x.long(), y.long())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    es = eval_set(table, cfg)
    correct = (predict(model, es, tok, 64, "cpu") == es.targets).all(1)
    assert accuracies(correct, es.group, TASK.groups)["accuracy"] == 1.0
