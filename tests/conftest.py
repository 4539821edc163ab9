import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import utils  # noqa: E402  (needs the path above)

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


def run(module, *args):
    """Run a script's main() as its __main__ block does; returns the exit status."""
    argv = list(map(str, args))
    try:
        utils.run_main(lambda: module.main(argv))
    except SystemExit as e:
        return e.code
    return 0


def assert_clean_error(status, err, *phrases):
    """Bad input: non-zero exit, one clear line on stderr, no traceback.

    (A progress bar may have been drawn on stderr before the problem showed up.)
    """
    assert status != 0
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("error: "), err
    assert err.rstrip().endswith(errors[0])
    for phrase in phrases:
        assert phrase in errors[0]
