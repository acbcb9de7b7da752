"""Everything MLab does with podman, in one package.

- :mod:`mlab.podman.runner`: the one way MLab runs podman (runtime flag, containers.conf).

This face imports nothing, so importing a pure module of the package runs no side-effect code.
"""
