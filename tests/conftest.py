import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# A little Shakespeare for the end-to-end tests: enough text for a train/val split, quick to train on.
TINY_TEXT = (REPO / "data" / "input.txt").read_text(encoding="utf-8")[:20000]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_text_file(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(TINY_TEXT, encoding="utf-8")
    return path
