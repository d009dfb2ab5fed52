from reflux.cli import run

run()
