"""Variable-length training on decomposed data (data.packing=decompose): every micro-batch holds the same
number of items whatever its bucket, each optimizer step reads one bucket, the bucket iterator resumes
exactly, and a 2-rank DeepSpeed run trains on it and resumes bit for bit."""
import shutil

import pytest
import torch

from cli_helpers import TINY, prepare_without_ray, records, wordpool

MAX_LEN, MICRO = 32, 4


@pytest.fixture(scope="module")
def decomposed(english_lines_file, tmp_path_factory):
    from schema import DataConfig

    out = tmp_path_factory.mktemp("decomposed")
    prepare_without_ray(DataConfig(inputs=[str(english_lines_file)], output=str(out), doc_split="line",
                                   max_word_bytes=16, words_per_sample=MAX_LEN, val_fraction=0.1, packing="decompose"))
    return out


def _open(decomposed, grad_accum=2, order="random"):
    from data_pipeline.reader import dataset_dirs
    from pretrain.training.length_buckets import encoder_for, open_buckets
    from pretrain.training.loader import sample_encoder

    encode = sample_encoder(str(decomposed), 16)
    return open_buckets(dataset_dirs(decomposed, "train"), encoder_for(encode), MICRO, MAX_LEN, grad_accum, 7, 1,
                        "auto", f"test:{decomposed}:{order}:{grad_accum}")


def test_each_step_reads_one_bucket_with_constant_items(decomposed):
    from pretrain.training.length_buckets import bucket_batches
    from pretrain.training.loader import LoaderPosition

    buckets = _open(decomposed)
    assert len(buckets) >= 3 and [b.length for b in buckets] == sorted(b.length for b in buckets)
    assert all(b.batch_size * b.length == MICRO * MAX_LEN for b in buckets)
    position = LoaderPosition()
    batches = bucket_batches(buckets, position, world=1, grad_accum=2, order="random", seed=7)
    widths = []
    for _ in range(sum(b.steps for b in buckets)):  # one epoch of optimizer steps, two micro-batches each
        first, second = next(batches), next(batches)
        assert first["words"].shape[:2] == second["words"].shape[:2]  # one bucket per optimizer step
        assert first["words"].shape[0] * first["words"].shape[1] == MICRO * MAX_LEN
        widths.append(first["words"].shape[1])
    assert sorted(set(widths)) == [b.length for b in buckets] and widths != sorted(widths)  # shuffled
    steps = sum(b.steps for b in buckets)
    assert (position.epoch, position.batches_in_epoch) == (0, 2 * steps)  # the epoch turns at the next batch
    next(batches)
    assert (position.epoch, position.batches_in_epoch) == (1, 1)


def test_bucket_iterator_resumes_exactly(decomposed):
    from pretrain.training.length_buckets import bucket_batches
    from pretrain.training.loader import LoaderPosition

    def digests(batches, n):
        return [int(next(batches)["words"].sum()) for _ in range(n)]

    total = 2 * sum(b.steps for b in _open(decomposed))
    position = LoaderPosition()
    reference = digests(bucket_batches(_open(decomposed), position, 1, 2, "random", 7), total + 6)
    cut = total - 5  # near the epoch's end: some buckets' share is already spent
    position = LoaderPosition()
    batches = bucket_batches(_open(decomposed), position, 1, 2, "random", 7)
    assert digests(batches, cut) == reference[:cut]
    saved = LoaderPosition(position.epoch, position.samples_in_epoch, position.batches_in_epoch,
                           position.initial_physical_nodes)
    resumed = bucket_batches(_open(decomposed), saved, 1, 2, "random", 7)
    assert digests(resumed, total + 6 - cut) == reference[cut:]  # into the next epoch too


def test_short_to_long_order(decomposed):
    from pretrain.training.length_buckets import epoch_schedule

    buckets = _open(decomposed, grad_accum=1)
    schedule = epoch_schedule([b.steps for b in buckets], [b.length for b in buckets], "short_to_long", 7, 0)
    assert [buckets[i].length for i in schedule] == sorted(buckets[i].length for i in schedule)


def test_training_on_decomposed_data_resumes_bitwise(decomposed, tmp_path):
    run = tmp_path / "run"
    args = ("train.steps=6", "train.checkpoint_every=3", "train.keep_last=3", "train.eval_every=3")
    def train(*resume):
        return wordpool("train", "--nproc", "2", *resume, f"data.output={decomposed}", f"train.run_dir={run}", *TINY,
                        *args)

    proc = train()
    assert proc.returncode == 0, proc.stderr[-4000:]
    first = records(run)
    assert sorted(first) == list(range(1, 7)) and all(torch.isfinite(torch.tensor(r["loss"])) for r in first.values())
    assert records(run, "eval")[6]["val_bpb"] > 0
    ckpts = run / "checkpoints"
    shutil.rmtree(ckpts / "step_00000006")
    (ckpts / "latest").write_text("step_00000003")
    proc = train("--resume", "auto")
    assert proc.returncode == 0, proc.stderr[-4000:]
    again = records(run)
    for step in (4, 5, 6):
        assert again[step]["loss"] == first[step]["loss"] and again[step]["data_digest"] == first[step]["data_digest"]
