import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def random_batch(sizes, dim=3, dtype=torch.float64, scale=1.0):
    pos = torch.rand(sum(sizes), dim, dtype=dtype) * scale
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes, dtype=torch.long))
    return pos, batch


def random_rotation(n=1, dtype=torch.float64, gen=None):
    q = torch.randn(n, 4, dtype=dtype, generator=gen)
    q = q / q.norm(dim=1, keepdim=True)
    w, x, y, z = q.unbind(1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], 1).view(n, 3, 3)


def axis_rotation(axis, angle, dtype=torch.float64):
    """Rodrigues' formula: rotation by ``angle`` (radians) about ``axis``."""
    a = torch.nn.functional.normalize(torch.as_tensor(axis, dtype=dtype), dim=0)
    K = torch.tensor([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]], dtype=dtype)
    angle = torch.tensor(angle, dtype=dtype)
    return torch.eye(3, dtype=dtype) + torch.sin(angle) * K + (1 - torch.cos(angle)) * K @ K


def rotation_angle(Ra, Rb):
    """Angle in degrees between two rotations."""
    c = ((Ra.transpose(-1, -2) @ Rb).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    return torch.rad2deg(torch.arccos(c.clamp(-1, 1)))


def shutdown_process_group():
    """Ends a gloo worker's process group without the teardown deadlock seen in
    CI: if the last reference to the group is dropped while the main thread holds
    the GIL (e.g. when a DDP reducer is freed at function exit), the group's
    destructor joins its worker thread, which may be waiting for the GIL to
    release a finished work item. So: finish every collective, let the worker
    thread drain (sleeping releases the GIL), free the Python-side objects, then
    destroy the group while it is still registered."""
    import gc
    import time

    import torch.distributed as dist

    dist.barrier()
    gc.collect()
    time.sleep(0.2)
    dist.destroy_process_group()
    time.sleep(0.1)
