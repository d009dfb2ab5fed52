"""The front door: the `reflux` command line (`reflux.cli`) and the HTTP API (`reflux.api`).

Nothing below imports this package; it imports the other packages' faces."""
