import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lightning_fabric.utilities.data import _set_sampler_epoch

from gru_mm.data.sampler import LengthBucketBatchSampler, ResumableDataLoader
from gru_mm.data.sources.base import DataError


def _epoch(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(sampler)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 300),
    batch_size=st.integers(1, 40),
    shuffle=st.booleans(),
    bucket=st.booleans(),
    seed=st.integers(0, 10),
)
def test_every_sample_exactly_once_per_epoch(n, batch_size, shuffle, bucket, seed):
    lengths = np.random.default_rng(seed).integers(1, 100, n)
    sampler = LengthBucketBatchSampler(
        lengths, batch_size, shuffle=shuffle, seed=seed, bucket=bucket, pool_batches=4
    )
    for epoch in range(2):
        batches = _epoch(sampler, epoch)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(n))
        assert len(batches) == len(sampler)
        assert all(0 < len(b) <= batch_size for b in batches)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(4, 300), batch_size=st.integers(1, 32), replicas=st.integers(2, 4), seed=st.integers(0, 5)
)
def test_ddp_ranks_disjoint_balanced_and_complete(n, batch_size, replicas, seed):
    lengths = np.random.default_rng(seed).integers(1, 100, n)
    per_rank = []
    for rank in range(replicas):
        s = LengthBucketBatchSampler(lengths, batch_size, seed=seed, num_replicas=replicas, rank=rank)
        per_rank.append(_epoch(s, 3))
    # all ranks run the same number of steps (a rank with fewer batches would hang the others)
    assert len({len(b) for b in per_rank}) == 1
    assert len(per_rank[0]) == len(LengthBucketBatchSampler(lengths, batch_size, num_replicas=replicas))
    flat = [i for batches in per_rank for b in batches for i in b]
    assert all(len(b) > 0 for batches in per_rank for b in batches)
    if n >= replicas * len(per_rank[0]):
        assert sorted(flat) == list(range(n))  # disjoint and nothing lost
    else:  # fewer samples than batches: a few batches repeat one sample, nothing is lost
        assert set(flat) == set(range(n))


def test_reshuffled_per_epoch_and_reproducible_with_seed():
    lengths = np.arange(500) % 37 + 1
    a = LengthBucketBatchSampler(lengths, 16, seed=1)
    b = LengthBucketBatchSampler(lengths, 16, seed=1)
    assert _epoch(a, 0) == _epoch(b, 0)
    assert _epoch(a, 0) != _epoch(a, 1)
    assert _epoch(a, 0) != _epoch(LengthBucketBatchSampler(lengths, 16, seed=2), 0)


def test_bucketing_cuts_padding():
    lengths = np.random.default_rng(0).lognormal(3, 1, 2000).astype(int) + 1

    def padding_ratio(bucket):
        batches = list(LengthBucketBatchSampler(lengths, 32, bucket=bucket, seed=0))
        padded = sum(len(b) * lengths[b].max() for b in batches)
        return padded / lengths.sum()

    bucketed, random = padding_ratio(True), padding_ratio(False)
    assert random > 3.0
    assert bucketed - 1 < 0.2 * (random - 1)  # at least 80 % of the padding is gone


@pytest.mark.parametrize("modalities", [2, 3])
def test_bucketing_cuts_padding_in_every_modality_of_independent_lengths(modalities):
    # avdigits-like: video 3-40 frames and audio 13-188 frames, drawn independently (+ a third modality)
    rng = np.random.default_rng(0)
    columns = [rng.integers(3, 41, 3000), rng.integers(13, 189, 3000), rng.integers(1, 400, 3000)]
    lengths = np.stack(columns[:modalities], 1)

    def padding_ratio(bucket):  # padded steps / real steps, summed over modalities (train/padding_ratio)
        batches = list(LengthBucketBatchSampler(lengths, 32, bucket=bucket, seed=0))
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        return sum(len(b) * lengths[b].max(0).sum() for b in batches) / lengths.sum()

    # one total-length key gave 1.55 here with two modalities; random batches 1.85
    assert padding_ratio(False) > 1.7
    assert padding_ratio(True) <= (1.15 if modalities == 2 else 1.3)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="batch_size"):
        LengthBucketBatchSampler([1, 2], 0)
    with pytest.raises(ValueError, match="rank 2"):
        LengthBucketBatchSampler([1, 2, 3], 1, num_replicas=2, rank=2)


def test_lightning_sets_the_epoch_through_the_dataloader():
    from torch.utils.data import DataLoader

    sampler = LengthBucketBatchSampler(list(range(1, 101)), 8, seed=0)
    loader = DataLoader(list(range(100)), batch_sampler=sampler)
    first = list(loader)
    _set_sampler_epoch(loader, 1)  # what Lightning's fit loop calls at each epoch start
    assert sampler.epoch == 1
    assert [b.tolist() for b in list(loader)] != [b.tolist() for b in first]


# --- mid-epoch resume: state_dict / load_state_dict ----------------------------------------------------


def _resumed(sampler_args: dict, state: dict, epoch: int) -> list[list[int]]:
    """What a fresh sampler (a restarted process) yields after loading `state` and Lightning's set_epoch."""
    fresh = LengthBucketBatchSampler(**sampler_args)
    fresh.load_state_dict(state)
    fresh.set_epoch(epoch)
    return list(fresh)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 200), batch_size=st.integers(1, 16), seed=st.integers(0, 5), data=st.data())
def test_a_resumed_epoch_yields_exactly_the_batches_not_yet_seen(n, batch_size, seed, data):
    lengths = np.random.default_rng(seed).integers(1, 100, n)
    args = dict(lengths=lengths, batch_size=batch_size, seed=seed, pool_batches=4)
    sampler = LengthBucketBatchSampler(**args)
    sampler.set_epoch(2)
    stop = data.draw(st.integers(1, len(sampler)))
    it = iter(sampler)
    seen = [next(it) for _ in range(stop)]
    state = sampler.state_dict()
    assert (state["epoch"], state["seed"], state["position"]) == (2, seed, stop)
    if stop < len(sampler):
        rest = _resumed(args, state, 2)
        assert seen + rest == _epoch(LengthBucketBatchSampler(**args), 2)  # same order, none twice or lost
    else:  # a finished epoch: the resumed run goes on with the next one, whole
        assert seen == _epoch(LengthBucketBatchSampler(**args), 2)
        assert _resumed(args, state, 3) == _epoch(LengthBucketBatchSampler(**args), 3)


def test_two_ranks_resume_their_own_slices_and_together_cover_the_epoch_once():
    lengths = np.random.default_rng(0).integers(1, 100, 203)
    states, seen = [], []
    for rank in range(2):
        s = LengthBucketBatchSampler(lengths, 8, seed=3, num_replicas=2, rank=rank)
        s.set_epoch(1)
        it = iter(s)
        seen.append([next(it) for _ in range(5)])
        states.append(s.state_dict())
    assert states[0] == states[1]  # ranks step together: rank 0's saved state serves every rank
    flat = []
    for rank in range(2):  # each restarted rank loads the one saved state (rank 0's)
        args = dict(lengths=lengths, batch_size=8, seed=3, num_replicas=2, rank=rank)
        rest = _resumed(args, states[0], 1)
        assert len(seen[rank]) + len(rest) == len(LengthBucketBatchSampler(**args))
        assert not set(map(tuple, rest)) & set(map(tuple, seen[rank]))
        flat += [i for b in seen[rank] + rest for i in b]
    assert sorted(flat) == list(range(len(lengths)))


def test_crop_draws_belong_to_the_data_order():
    """draws=True pairs each index with u in [0, 1), fixed by (seed, epoch, batch number): the same
    after a resume, for each rank alike, new in a new epoch or with another seed."""
    lengths = np.random.default_rng(1).integers(1, 50, 61)

    def pairs(epoch, seed=4, replicas=1, rank=0, resume_at=None):
        s = LengthBucketBatchSampler(lengths, 8, seed=seed, num_replicas=replicas, rank=rank, draws=True)
        s.set_epoch(epoch)
        if resume_at is not None:
            s.load_state_dict({**s.state_dict(), "position": resume_at})
        return list(s)

    whole = pairs(0)
    assert [[i for i, _ in b] for b in whole] == _epoch(LengthBucketBatchSampler(lengths, 8, seed=4), 0)
    draws = [u for b in whole for _, u in b]
    assert all(0 <= u < 1 for u in draws) and len(set(draws)) == len(draws)
    assert pairs(0, resume_at=3) == whole[3:]
    assert pairs(0, replicas=2, rank=1) == whole[1::2]  # a rank's batches carry the draws of their number
    assert [u for b in pairs(1) for _, u in b] != draws
    assert [u for b in pairs(0, seed=5) for _, u in b] != draws


def test_a_new_epoch_or_a_second_pass_starts_from_the_beginning():
    lengths = np.arange(1, 81)
    sampler = LengthBucketBatchSampler(lengths, 8, seed=0)
    it = iter(sampler)
    first = [next(it) for _ in range(3)]
    sampler.load_state_dict(sampler.state_dict())
    sampler.set_epoch(1)  # a loaded position belongs to its own epoch
    assert len(list(sampler)) == len(sampler)
    assert first == _epoch(sampler, 0)[:3]
    # once used, a loaded position is gone: the next pass over the same epoch is whole again
    sampler.load_state_dict({**sampler.state_dict(), "position": 4})
    assert len(list(sampler)) == len(sampler) - 4
    assert len(list(sampler)) == len(sampler)


@pytest.mark.parametrize(
    "change", [{"batch_size": 16}, {"num_replicas": 2}, {"lengths": np.arange(1, 90)}, {"bucket": False}]
)
def test_resuming_mid_epoch_with_another_order_is_refused_by_name(change):
    args = dict(lengths=np.arange(1, 81), batch_size=8, seed=0)
    sampler = LengthBucketBatchSampler(**args)
    it = iter(sampler)
    next(it)
    other = LengthBucketBatchSampler(**(args | change))
    other.load_state_dict(sampler.state_dict())
    with pytest.raises(DataError, match="cannot resume the data order at batch 1 of epoch 0"):
        list(other)


@pytest.mark.parametrize("workers", [0, 2])
def test_the_loader_saves_what_the_training_loop_received_not_what_workers_read_ahead(workers):
    lengths = np.random.default_rng(1).integers(1, 50, 120)
    dataset = list(range(len(lengths)))

    def loader():
        return ResumableDataLoader(
            dataset, batch_sampler=LengthBucketBatchSampler(lengths, 8, seed=5), num_workers=workers
        )

    whole = [b.tolist() for b in loader()]
    first = loader()
    it = iter(first)
    seen = [next(it).tolist() for _ in range(4)]
    state = first.state_dict()
    assert state["position"] == 4  # workers have read further ahead; 4 is what was used
    del it
    resumed = loader()
    resumed.load_state_dict(state)
    _set_sampler_epoch(resumed, 0)  # what Lightning's fit loop calls before the epoch's batches
    assert seen + [b.tolist() for b in resumed] == whole
