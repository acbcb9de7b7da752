"""Idle HomePods give their machine back: activity policy, podman and Kubernetes cullers."""
