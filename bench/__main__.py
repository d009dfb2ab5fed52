"""`python -m bench`: the same as `reflux bench`."""

import argparse
import asyncio
import sys

from bench.runner import add_arguments, run_bench

parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
add_arguments(parser)
sys.exit(asyncio.run(run_bench(parser.parse_args())))
