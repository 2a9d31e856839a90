import os
import tempfile

import pytest
import torch

# unit tests never touch the user's cache: datasets and checkpoints go to a per-session temporary folder
os.environ.setdefault("XAI_ROBUST_CACHE", tempfile.mkdtemp(prefix="xai_robust_test_cache_"))
os.environ.setdefault("XAI_ROBUST_PROGRESS", "0")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
