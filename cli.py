"""What every script's command line shares: a user's mistake becomes one clear line, output that any terminal
can take, and `\\n` typed in a flag means a newline."""

import argparse
import codecs
import os
import sys

from i18n import _

# The oldest versions the code is tested with (tools/check_versions.sh); requirements.txt says the same.
MIN_PYTHON = (3, 9)
MIN_TORCH = (2, 1)


class UserError(Exception):
    """A problem the user can fix (bad flag, missing file...). Scripts print it as one line and exit 2."""


def run_main(main):
    """Run a script's main(), turning a UserError into one clear line on stderr and exit status 2."""
    for stream in (sys.stdout, sys.stderr):
        printable(stream)
    try:
        check_versions()
        main()
    except UserError as e:
        print(_("error: {message}").format(message=e), file=sys.stderr)
        sys.exit(2)


def printable(stream, environ=os.environ):
    """Make `stream` able to take every character the scripts print (Chinese, poems, ✓, a model's emoji).

    On Windows, Python writes to a pipe or a file in the system code page: GBK on a Chinese system, which has no
    ✓ and no emoji, so a print would stop the script with UnicodeEncodeError. Git Bash's terminal (mintty), an
    IDE's output pane and `> out.txt` are all pipes or files there. So:
      - a pipe or a file gets UTF-8, which those terminals and editors read, and which Python 3.15 makes the
        default anyway (PEP 686). Replacing characters would lose them, and Chinese in GBK shows as mojibake in
        Git Bash, which reads UTF-8;
      - a terminal (Windows' own console already takes UTF-8), or an encoding the user chose with
        PYTHONIOENCODING, keeps its encoding, and a character it can't show becomes "?" instead of a crash.
    """
    encoding = getattr(stream, "encoding", None)
    if not encoding or not hasattr(stream, "reconfigure") or codecs.lookup(encoding).name == "utf-8":
        return
    is_terminal = getattr(stream, "isatty", lambda: False)()
    if not is_terminal and "PYTHONIOENCODING" not in environ:
        stream.reconfigure(encoding="utf-8")
    else:
        stream.reconfigure(errors="replace")


def check_versions():
    """A Python or PyTorch older than the floors is one clear line at start-up, not a crash deep in a step."""
    import torch

    if sys.version_info[:2] < MIN_PYTHON:
        raise UserError(_("Python {found} is too old: Mini-GPT needs Python {needed} or newer").format(
            found=".".join(map(str, sys.version_info[:3])), needed=".".join(map(str, MIN_PYTHON))))
    found = torch.__version__.split("+")[0]
    numbers = tuple(int(part) for part in found.split(".")[:2] if part.isdigit())
    if numbers < MIN_TORCH:
        raise UserError(_("PyTorch {found} is too old: Mini-GPT needs torch {needed} or newer; upgrade it with "
                          "python3 -m pip install --upgrade torch").format(found=found,
                                                                            needed=".".join(map(str, MIN_TORCH))))


def unescape(text):
    r"""Let `\n` and `\t` typed on the command line mean a newline and a tab."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each flag's default, except where the default is None: the hyperparameter flags
    default to None ("not given") and say config.py's value in their own help text."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)
