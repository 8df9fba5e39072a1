"""Training with a loss mask (--loss-mask-data, training/loss_mask_data.py): one packed sequence per sample, loss and
gradients from masked-in targets only, and the loss on pair tokens falls."""

import os

import numpy as np
import pytest
import torch

from megatron_ipt.training import config as cfg
from megatron_ipt.training import loop, loss_mask_data, models, parallel
from tests.training.helpers import free_port, run, scalars, tags
from tests.training.tuning_fixtures import make_tuning

SEQ = 128


@pytest.fixture(scope="module")
def tuning(tmp_path_factory):
    return make_tuning(str(tmp_path_factory.mktemp("tuning") / "opticks"), seq_length=SEQ)


def _dataset(prefix, num_samples=None):
    from megatron.core.datasets.gpt_dataset import GPTDatasetConfig
    from megatron.core.datasets.utils import Split

    from megatron_ipt.training.datasets import MockTokenizer

    config = GPTDatasetConfig(
        random_seed=1234,
        sequence_length=SEQ,
        blend=None,
        split="100,0,0",
        tokenizer=MockTokenizer(32000),
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
    )
    low = loss_mask_data.TuningDataset.build_low_level_dataset(prefix, config)
    indices = np.arange(len(low), dtype=np.int32)
    return low, loss_mask_data.TuningDataset(low, prefix, indices, num_samples, Split.train, config)


def test_a_sample_is_one_packed_sequence_never_mixed(tuning):
    low, dataset = _dataset(tuning, num_samples=30)  # 12 sequences: three epochs, each a permutation
    assert len(dataset) == 36
    for epoch in range(3):
        assert sorted(dataset.sample_index[epoch * 12 : (epoch + 1) * 12]) == list(range(12))
    for i in range(len(dataset)):
        sample, document = dataset[i], int(dataset.sample_index[i])
        ids, mask = low.text.get(document), low.mask.get(document)
        n = len(ids) - 1
        assert sample["tokens"][:n].tolist() == ids[:-1].tolist()
        assert sample["labels"][:n].tolist() == ids[1:].tolist()
        assert sample["loss_mask"][:n].tolist() == mask[1:].tolist()
        assert not sample["loss_mask"][n:].any()  # padding: no loss, and no other document's tokens
        assert not sample["tokens"][n:].any()
        assert sample["position_ids"].tolist() == list(range(SEQ))
    assert any(len(low.text.get(d)) < SEQ + 1 for d in range(12))  # some samples are padded


@pytest.fixture()
def tiny_model():
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE="1", RANK="0")
    model = cfg.ModelConfig.load("tiny", seq_length=SEQ, max_position_embeddings=SEQ)
    chunks, _ = models.build(model, cfg.ParallelConfig(), cfg.PrecisionConfig())
    try:
        yield chunks[0]
    finally:
        parallel.destroy()
        for key in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK"):
            os.environ.pop(key, None)


def _loss_and_grads(model, batch):
    model.zero_grad()
    output, loss_func = loop._forward_step(iter([batch]), model)
    loss, _ = loss_func(output)
    loss.backward()
    return loss.detach().clone(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_masked_out_labels_carry_no_loss_or_gradient(tuning, tiny_model):
    low, dataset = _dataset(tuning)
    batch = {k: v.unsqueeze(0) for k, v in dataset[0].items()}
    targets = low.mask.get(int(dataset.sample_index[0]))[1:]  # the file's mask of this sample's targets
    context = int(np.nonzero(targets == 0)[0][5])  # a context target (masked out), inside the document
    pair = int(np.nonzero(targets == 1)[0][0])  # a pair target (masked in)
    base_loss, base_grads = _loss_and_grads(tiny_model, batch)

    def relabelled(position):
        changed = dict(batch, labels=batch["labels"].clone())
        changed["labels"][0, position] = (changed["labels"][0, position] + 1000) % 32000
        return _loss_and_grads(tiny_model, changed)

    loss, grads = relabelled(context)
    assert torch.equal(loss, base_loss)
    assert all(torch.equal(grads[name], base_grads[name]) for name in base_grads)
    loss, grads = relabelled(pair)
    assert not torch.equal(loss, base_loss)
    assert any(not torch.equal(grads[name], base_grads[name]) for name in base_grads)


def test_loss_on_pair_tokens_falls_and_the_log_says_so(tuning, tmp_path):
    tb = str(tmp_path / "tb")
    out = run(
        tuning,
        1,
        "--loss-mask-data",
        "--seq-length",
        str(SEQ),
        "--max-position-embeddings",
        str(SEQ),
        "--train-iters",
        "8",
        "--split",
        "100,0,0",
        "--tensorboard-dir",
        tb,
    )
    assert "lm loss (masked-in tokens):" in out and "loss tokens per iteration:" in out
    loss = scalars(tb, "lm loss")
    assert loss[8] < loss[1] - 0.5, loss
    assert "loss-tokens" in tags(tb)
    # each step's loss tokens are the masked-in targets of its 4 sequences (pairs and </s>), far fewer than 4 x 128
    assert 0 < max(scalars(tb, "loss-tokens").values()) < 4 * SEQ / 2


def test_a_missing_or_mismatched_mask_is_one_line(tuning, tmp_path):
    with pytest.raises(SystemExit, match="must end in _text_document"):
        loss_mask_data.check_prefixes([tuning[: -len("_text_document")]], SEQ)
    with pytest.raises(SystemExit, match="longer than --seq-length 64"):
        loss_mask_data.check_prefixes([tuning], 64)
    lonely = make_tuning(str(tmp_path / "lonely"), n_examples=4, seq_length=SEQ)
    os.remove(lonely.replace("_text_document", "_loss_mask_document") + ".idx")
    with pytest.raises(SystemExit, match="lonely_loss_mask_document.idx does not exist"):
        loss_mask_data.check_prefixes([lonely], SEQ)
    # issue 25: a mask .bin longer than its .idx says (another build's) was read without a word
    padded = make_tuning(str(tmp_path / "padded"), n_examples=4, seq_length=SEQ)
    with open(padded.replace("_text_document", "_loss_mask_document") + ".bin", "ab") as f:
        f.write(b"\1" * 8)
    with pytest.raises(SystemExit, match="padded_loss_mask_document.bin: .* bytes, but .*not one dataset"):
        loss_mask_data.check_prefixes([padded], SEQ)


def test_mistral7b_recipe_flags_parse():
    from tests.training.helpers import training_config
    from tests.training.test_launch_scripts import dry_run

    cfg = training_config(dry_run("tune_synthesizer_mistral7b.sh", ["/work", "/mistral", "/collection"]))
    assert cfg.data.loss_mask_data and cfg.data.data_path == ("/work/data/synthesizer-tune-train_text_document",)
    assert cfg.model.seq_length == 4096 and cfg.precision.bf16 and cfg.parallel.use_distributed_optimizer
    assert cfg.optimizer.global_batch_size * cfg.model.seq_length == 128 * 4096  # 0.5M tokens a step
    assert cfg.checkpoint.load == "/work/mistral-7b-v0.1" and cfg.checkpoint.no_load_optim
