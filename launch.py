#!/usr/bin/env python
"""uer-ray's one CLI entry: `python launch.py <command> --config jobs/<job>.yaml [--set key=value ...]`."""
import sys

from uer_ray.cli import main

if __name__ == "__main__":
    sys.exit(main())
