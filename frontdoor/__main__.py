import sys

from bertserve.cli import main

sys.exit(main(["frontdoor", *sys.argv[1:]]))
