"""The program form of tests/chaos/handlers.py: python exec_handler.py PATH"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.chaos.handlers import act

if __name__ == "__main__":
    with open(sys.argv[1], "rb") as fh:
        act(os.environ["S3Q_REQUEST_NAME"], fh.read())
