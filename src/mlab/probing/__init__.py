"""Side effects of ``mlab verify``: running the probe matrices of :mod:`mlab.verify`.

Real connection attempts from inside containers (``podman exec``: :mod:`podman`,
:mod:`podman_link`) and pods (``kubectl exec``: :mod:`kube`, :mod:`kube_link`), and the
probe program's answer parser (:mod:`answers`, which the program carries as source).
"""
