"""Everything MLab does with podman, in one package.

- :mod:`mlab.podman.runner`: the one way MLab runs podman (runtime flag, containers.conf).
- :mod:`mlab.podman.translate` (pure): rendered Kubernetes objects to the plan podman runs.

This face imports nothing, so importing a pure module of the package runs no side-effect code.
"""
