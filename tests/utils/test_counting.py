"""The op / host-read counter on tiny code whose counts are known."""
import torch
import torchvision

from resdet.utils.counting import count_ops


def test_each_kind_of_host_read_is_counted_once():
    x = torch.arange(6.0).reshape(2, 3)
    m = x > 2
    with count_ops() as c:
        x.sum().item()
        bool(m.any())
        int(x.max())
        x[m]                      # boolean mask read
        x[m] = 0.0                # a number written through a mask: PyTorch makes it a masked_fill
        x[m] = torch.ones(3)      # a tensor written through a mask: the mask is read
        x.tolist()
        x.numpy()
        m.nonzero()
        torch.unique(x)
        torch.repeat_interleave(torch.tensor([1, 2]), torch.tensor([2, 3]))                 # reads the total
        torch.repeat_interleave(torch.tensor([1, 2]), torch.tensor([2, 3]), output_size=5)  # told: no read
        torch.bincount(torch.tensor([0, 2]))
    assert dict(c.reads_by_kind) == {"item": 3, "bool_index": 2, "tolist": 1, "numpy": 1, "nonzero": 1,
                                     "unique": 1, "repeat_interleave": 1, "bincount": 1}
    assert c.host_reads == 11
    # every read is located in this file, so a developer can find it
    assert all(any("test_counting.py" in f for f in where) for _, where in c.reads)
    assert "test_counting.py:" in c.summary()


def test_device_side_code_makes_no_reads_and_ops_are_counted_forward_and_backward():
    x = torch.arange(6.0).reshape(2, 3)
    m = x > 2
    with count_ops() as c:
        torch.where(m, x, 0.0)
        x.masked_fill(m, 1.0)
        x.topk(2)
        torch.nonzero_static(m, size=4)
    assert c.host_reads == 0 and c.ops_by_name["aten.nonzero_static"] == 1
    a = torch.randn(3, requires_grad=True)
    with count_ops() as c:
        (a * 2).sum().backward()
    # forward mul + sum; backward: ones_like, expand (a view), mul; the gradient accumulated as a detach
    assert c.aten_ops == 6 and c.ops_by_name["aten.mul"] == 2 and c.kernel_ops == 4
    assert c.host_reads == 0


def test_nms_is_counted_apart_and_patches_are_undone():
    tolist = torch.Tensor.tolist
    with count_ops() as c:
        torchvision.ops.nms(torch.tensor([[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 4.0, 5.0]]), torch.tensor([0.9, 0.8]), 0.5)
    assert c.nms_calls == 1 and c.host_reads == 0
    assert torch.Tensor.tolist is tolist  # no patch left behind
    with count_ops() as outer:
        torch.ones(2).tolist()
        with count_ops() as inner:
            torch.ones(2).sum().item()
    assert inner.host_reads == 1 and outer.host_reads == 2  # nested counters both see the inner read


def test_blocking_host_to_device_copies_are_counted_as_the_code_asks_for_them():
    from resdet.utils.counting import copy_is_blocking

    dev = torch.device("cpu")  # stands for the device the code runs on; on a GPU these are real copies
    batch = torch.arange(8.0)  # made before the block: unknown to the counter until marked
    with count_ops() as c:
        torch.tensor([1.0, 2.0], device=dev)               # built on the host, copied, waited for
        torch.as_tensor([3, 4], device=dev)
        host = torch.tensor([1, 2, 3])                      # stays on the host: no copy
        host.to(dev)                                        # blocking copy
        host[1:].to(dev, non_blocking=True)                 # queued: no wait
        (host * 2).to(dev)                                  # computed from host tensors only: on the host
        torch.zeros(3, device=dev).copy_(host)              # into a device tensor, blocking
        torch.zeros(3, device=dev).copy_(host, non_blocking=True)
        torch.full((3,), 2.0, device=dev)                   # a fill on the device: no copy
        batch.to(dev)                                       # not known as a host tensor
        c.mark_host(batch)
        batch.to(dev)
    assert c.h2d_copies == 6 and c.host_reads == 0 and c.syncs == 6, c.summary()
    assert "h2d_copy" in c.summary() and "test_counting.py" in c.summary()
    # on a GPU the copy itself decides (what the dispatcher sees there)
    assert copy_is_blocking("cpu", "cuda", False) and not copy_is_blocking("cpu", "cuda", True)
    assert not copy_is_blocking("cuda", "cuda", False) and not copy_is_blocking("cpu", "cpu", False)


def test_declared_syncs_are_logged_and_only_undeclared_ones_are_listed():
    from resdet.utils.counting import declared_sync, sync_log

    x = torch.arange(4.0)
    with sync_log() as log, count_ops() as c:
        with declared_sync(x.device, "the losses"):
            x.tolist()
        x.sum().item()  # not declared: a GPU under sync debug mode "error" would stop here
        with declared_sync(x.device, "an NMS call"):
            torchvision.ops.nms(torch.tensor([[0.0, 0.0, 4.0, 4.0]]), torch.tensor([0.9]), 0.5)
    assert log == ["the losses", "an NMS call"]
    assert c.syncs == 3 and c.host_reads == 2 and c.nms_calls == 1
    assert [kind for kind, _ in c.undeclared] == ["item"] and "undeclared item" in c.summary()
