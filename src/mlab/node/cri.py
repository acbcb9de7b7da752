"""Is containerd's CRI serving? One ``runtime.v1.RuntimeService/Version`` call.

containerd answers ``ctr version`` as soon as its socket is up, but its CRI plugin
initialises after that (it recovers the state of existing containers first). A kubelet
started in that window exits at once with ``validate CRI v1 runtime API ...: server is not
initialized yet`` (seen in CI, session 6). The node waits for this call to succeed before
it starts the kubelet.

The call is made with grpcio's generic stub: an empty ``VersionRequest`` is zero bytes on
the wire (protobuf), and only the status of the answer matters, so no generated code is
needed. Method name: ``k8s.io/cri-api`` ``pkg/apis/runtime/v1/api.proto``.
"""

from __future__ import annotations

from pathlib import Path

from mlab.errors import ToolMissingError

VERSION_METHOD = "/runtime.v1.RuntimeService/Version"


def cri_serving(socket: Path, timeout: float = 2.0) -> bool:
    """True when the CRI on the unix ``socket`` answers a Version call within ``timeout``
    seconds; False on any gRPC error (not started, ``server is not initialized yet``).

    Raises:
        ToolMissingError: grpcio is missing (it is in the ``node`` extra).
    """
    try:
        import grpc  # the node extra; imported here so the rest of MLab never loads it
    except ModuleNotFoundError:
        raise ToolMissingError("node: the Python package grpcio is missing",
                               hint="pip install 'mlab[node]' (bash scripts/setup.sh does)") \
            from None

    with grpc.insecure_channel(f"unix://{socket}") as channel:
        call = channel.unary_unary(VERSION_METHOD, request_serializer=bytes,
                                   response_deserializer=bytes)
        try:
            call(b"", timeout=timeout)
        except grpc.RpcError:
            return False
    return True
