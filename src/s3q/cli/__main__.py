"""``python -m s3q.cli``: the same as ``s3q``."""

from s3q.cli import main

if __name__ == "__main__":
    main()
