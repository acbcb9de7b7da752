"""What ``mlab verify`` must observe, computed from the topology and the rendered site (pure).

The probe matrices (:mod:`matrix` for a podman site, :mod:`kube_matrix` on a cluster, with
the NetworkPolicy evaluator :mod:`policy_eval`) and the below-policy link probes
(:mod:`link`) bind the checks of :func:`mlab.topology.checks` to concrete sources and
targets. Nothing here runs a process, opens a socket or reads a file: :mod:`mlab.probing`
runs the probes (an import contract in pyproject.toml keeps it so).
"""
