"""The `mlab` command line: one module per command group, registered in :mod:`mlab.cli.main`."""
