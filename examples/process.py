"""The seed's "program1": an arbitrary program that processes one request file.

s3q runs it once per request (`s3q worker --exec "python examples/process.py {path}"`):
exit code 0 = done, anything else = failed (retried, then failed/ with the stderr tail).
What it prints on stdout is kept as the request's result.
"""

import json
import os
import sys
import time


def main(path: str) -> int:
    with open(path, encoding="utf-8") as fh:
        request = json.load(fh)
    time.sleep(0.05)  # pretend to work
    total = sum(request.get("items", []))
    print(json.dumps({"id": request.get("id"), "total": total,
                      "attempt": int(os.environ.get("S3Q_ATTEMPT", "1"))}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
