"""What every script's command line shares: a user's mistake becomes one clear line, and `\\n` typed
in a flag means a newline."""

import sys

from i18n import _


class UserError(Exception):
    """A problem the user can fix (bad flag, missing file...). Scripts print it as one line and exit 2."""


def run_main(main):
    """Run a script's main(), turning a UserError into one clear line on stderr and exit status 2."""
    try:
        main()
    except UserError as e:
        print(_("error: {message}").format(message=e), file=sys.stderr)
        sys.exit(2)


def unescape(text):
    r"""Let `\n` and `\t` typed on the command line mean a newline and a tab."""
    return text.replace("\\n", "\n").replace("\\t", "\t")
