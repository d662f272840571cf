import itertools

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from resdet.data.samplers import InfiniteSampler


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_each_epoch_is_a_fresh_permutation():
    size = 13
    stream = take(InfiniteSampler(size, seed=5, rank=0, world_size=1), 4 * size)
    epochs = [stream[i * size:(i + 1) * size] for i in range(4)]
    for e in epochs:
        assert sorted(e) == list(range(size))
    assert len({tuple(e) for e in epochs}) == 4  # a new order every epoch
    # depends on (seed, epoch) only
    assert take(InfiniteSampler(size, seed=5, rank=0, world_size=1), 4 * size) == stream
    assert take(InfiniteSampler(size, seed=6, rank=0, world_size=1), size) != epochs[0]


def test_no_shuffle_is_in_order():
    assert take(InfiniteSampler(4, shuffle=False, rank=0, world_size=1), 10) == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]


@pytest.mark.parametrize("world", [2, 3, 4])
def test_shards_partition_the_global_stream(world):
    size, n = 10, 25  # size not divisible by world: shards run across epoch boundaries
    stream = take(InfiniteSampler(size, seed=1, rank=0, world_size=1), n * world)
    shards = [take(InfiniteSampler(size, seed=1, rank=r, world_size=world), n) for r in range(world)]
    for r in range(world):
        assert shards[r] == stream[r::world]
    # each global batch of world*b positions is covered exactly once by the ranks' batches of b
    b = 5
    for step in range(n // b):
        union = sorted(i for r in range(world) for i in shards[r][step * b:(step + 1) * b])
        assert union == sorted(stream[step * world * b:(step + 1) * world * b])


@pytest.mark.parametrize("world,start", [(1, 7), (2, 12), (2, 26), (3, 9)])
def test_resume_mid_epoch_is_exact(world, start):
    size = 11
    for r in range(world):
        full = take(InfiniteSampler(size, seed=2, rank=r, world_size=world), 40)
        resumed = take(InfiniteSampler(size, seed=2, rank=r, world_size=world, start=start), 40 - start // world)
        assert resumed == full[start // world:]


def test_state_dict_roundtrip_and_checks():
    s = InfiniteSampler(9, seed=4, rank=1, world_size=2)
    it = iter(s)
    seen = [next(it) for _ in range(6)]
    state = s.state_dict()
    assert state["position"] == 12  # 6 indices on each of 2 ranks
    fresh = InfiniteSampler(9, seed=4, rank=1, world_size=2)
    fresh.load_state_dict(state)
    assert take(fresh, 5) == [next(it) for _ in range(5)]
    assert s.state_dict(consumed=4)["position"] == 4
    with pytest.raises(ValueError, match="seed=4 but this sampler has seed=5"):
        InfiniteSampler(9, seed=5, rank=0, world_size=2).load_state_dict(state)
    with pytest.raises(ValueError, match="multiple of world_size=2"):
        InfiniteSampler(9, rank=0, world_size=2, start=3)
    with pytest.raises(ValueError, match="positive dataset size"):
        InfiniteSampler(0)
    assert seen  # silence "unused"


def test_two_ranks_batch_b_see_what_one_process_batch_2b_sees():
    data = TensorDataset(torch.arange(17))
    one = iter(DataLoader(data, batch_size=6, sampler=InfiniteSampler(17, seed=3, rank=0, world_size=1)))
    ranks = [iter(DataLoader(data, batch_size=3, sampler=InfiniteSampler(17, seed=3, rank=r, world_size=2)))
             for r in range(2)]
    for _ in range(8):
        big = sorted(next(one)[0].tolist())
        small = sorted(next(ranks[0])[0].tolist() + next(ranks[1])[0].tolist())
        assert big == small
