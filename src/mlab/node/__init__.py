"""A real one-node Kubernetes for MLab (``mlab node up``): upstream components built from
pinned Go modules, Debian's etcd, containerd, runc and CNI plugins, kube-router enforcing
NetworkPolicies, CoreDNS, all run as processes MLab starts and stops itself.

Pure configuration (:mod:`layout`, :mod:`pki`, :mod:`config`, :mod:`addons`) is apart from
side effects (:mod:`build`, :mod:`images`, :mod:`hostnet`, :mod:`supervisor`,
:mod:`lifecycle`). See docs/node.md.
"""
