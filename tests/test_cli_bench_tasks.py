"""llmscratch bench tasks: the throughput contest and a demo run, on tiny sizes (no timings asserted)."""

from __future__ import annotations

import pytest
from conftest import tiny

from llmscratch.cli.bench.tasks import bench_task_throughput, demo_run
from llmscratch.data.demos import numbers_dataset

TINY = tiny(n_decoder_layer=1, tokenizer="char", block_size=80)


def test_throughput_against_the_torch_reference(tmp_path):
    pytest.importorskip("torch")
    train_file, _ = numbers_dataset(tmp_path, n_train=1200, n_test=10)
    records = bench_task_throughput("seq2seq", ["numpy", "reference"], str(train_file), rounds=1, steps=2, **TINY)
    by = {r["contestant"]: r for r in records}
    assert set(by) == {"numpy", "reference"}
    assert by["reference"]["vs_reference"] == 1.0 and by["reference"]["kernel"] == "torch.nn autograd"
    assert by["numpy"]["tokens_per_s"] > 0 and by["numpy"]["vs_reference"] > 0


def test_demo_run_scores_the_held_out_file(tmp_path):
    train_file, test_file = numbers_dataset(tmp_path, n_train=1200, n_test=20)
    record = demo_run("seq2seq", "numpy", train_file, test_file, max_iters=2, eval_interval=2, **TINY)
    assert record["steps"] == 2 and 0.0 <= record["exact_match"] <= 1.0 and record["train_s"] > 0
