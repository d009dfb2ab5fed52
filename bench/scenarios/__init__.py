"""One module per scenario, named in `bench.runner.SCENARIOS`: `NAME` and
`async def run(bench) -> list[Figure]`."""
