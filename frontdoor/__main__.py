import sys

from bertserve.server._child import follow_parent

follow_parent()

from bertserve.cli import main  # noqa: E402

sys.exit(main(["frontdoor", *sys.argv[1:]]))
