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
