import os

import matplotlib
import pytest

matplotlib.use("Agg")  # tests never need a display
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _seeded():
    import torch

    torch.manual_seed(0)
