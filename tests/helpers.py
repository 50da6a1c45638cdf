"""Helpers shared by the tests: input builders, rotations, hypothesis settings
and the two-process (gloo) harness. Independent references to check results
against live in reference.py; nothing here computes an expected value.

Tests import these as ``from helpers import ...`` (tests/conftest.py puts this
folder on sys.path)."""
import os
import socket
import tempfile

import torch
from hypothesis import settings


def property_settings(examples, **kwargs):
    """``@settings`` for a property test: ``examples`` examples in the full tier,
    at most the active hypothesis profile's max_examples (the profiles are set in
    conftest.py: "fast", a few examples, by default; "thorough" with ``--full``)."""
    return settings(max_examples=min(examples, settings.default.max_examples), deadline=None, **kwargs)


# ---------------------------------------------------------------- input builders

def graph_index(sizes):
    """The batch vector of packed graphs with ``sizes`` nodes: graph g repeated sizes[g] times."""
    return torch.repeat_interleave(torch.arange(len(sizes)), torch.as_tensor(sizes, dtype=torch.long))


def random_batch(sizes, dim=3, dtype=torch.float64, scale=1.0):
    """Uniform points in [0, scale)^dim for packed graphs of ``sizes`` nodes (global RNG)."""
    return torch.rand(sum(sizes), dim, dtype=dtype) * scale, graph_index(sizes)


def path_edges(n):
    """Both directions of the edges of the path graph 0 - 1 - ... - n-1, [2, 2(n-1)]."""
    src = torch.arange(max(n - 1, 0))
    return torch.stack([torch.cat([src, src + 1]), torch.cat([src + 1, src])])


def chain_batch(sizes, seed, anisotropic=False):
    """A PyG Batch of path graphs with ``pos`` and a positive ``mass`` per node,
    drawn from a generator seeded with ``seed``. Positions are uniform in the
    unit cube, or with ``anisotropic`` Gaussian with distinct principal spreads
    (3, 2, 1: well-defined axes)."""
    from torch_geometric.data import Batch, Data

    gen = torch.Generator().manual_seed(seed)
    spread = torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)
    data = []
    for n in sizes:
        if anisotropic:
            pos = torch.randn(n, 3, generator=gen, dtype=torch.float64) * spread
        else:
            pos = torch.rand(n, 3, generator=gen, dtype=torch.float64)
        mass = torch.rand(n, generator=gen, dtype=torch.float64)
        data.append(Data(pos=pos, edge_index=path_edges(n), mass=mass))
    return Batch.from_data_list(data)


# ---------------------------------------------------------------- rotations

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


# ---------------------------------------------------------------- two processes (gloo)

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def _gloo_worker(rank, world, port, out_dir, fn, args):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    # fn's locals (a DDP wrapper, a metric) are freed when it returns, while the
    # group is still registered; shutdown_process_group then ends the group.
    result = fn(rank, *args)
    shutdown_process_group()
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))


def run_gloo(fn, *args, world=2):
    """Runs ``fn(rank, *args)`` in ``world`` spawned processes joined in one gloo
    process group and returns what each rank returned, in rank order. ``fn``
    must be a module-level function (it is pickled by name)."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_gloo_worker, args=(world, free_port(), out, fn, args), nprocs=world, join=True)
        return [torch.load(os.path.join(out, f"rank{rank}.pt")) for rank in range(world)]
