"""A stand-in for the seed's "program1": records every start and end of a run in the file
$S3Q_TEST_LOG (one line per event, appended atomically), sleeps $S3Q_TEST_SLEEP seconds, and
exits with $S3Q_TEST_EXIT (printing "boom" to stderr when non-zero).

usage: python record.py PATH
"""

import os
import sys
import time


def log(event: str) -> None:
    line = f"{event} {os.environ['S3Q_REQUEST_NAME']} {os.getpid()}\n".encode()
    fd = os.open(os.environ["S3Q_TEST_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def main() -> int:
    with open(sys.argv[1], "rb") as fh:
        body = fh.read()
    log("start")
    time.sleep(float(os.environ.get("S3Q_TEST_SLEEP", "0")))
    code = int(os.environ.get("S3Q_TEST_EXIT", "0"))
    if code:
        print(f"boom: cannot handle {len(body)} bytes", file=sys.stderr)
        return code
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
