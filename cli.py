"""What every script's command line shares: a user's mistake becomes one clear line, and `\\n` typed
in a flag means a newline."""

import argparse
import sys

from i18n import _

# The oldest versions the code is tested with (tools/check_versions.sh); requirements.txt says the same.
MIN_PYTHON = (3, 9)
MIN_TORCH = (2, 1)


class UserError(Exception):
    """A problem the user can fix (bad flag, missing file...). Scripts print it as one line and exit 2."""


def run_main(main):
    """Run a script's main(), turning a UserError into one clear line on stderr and exit status 2."""
    try:
        check_versions()
        main()
    except UserError as e:
        print(_("error: {message}").format(message=e), file=sys.stderr)
        sys.exit(2)


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
