"""The pre-receive policy run inside the service: a loopback endpoint for the bash hook.

Starting Python for each push's pre-receive hook cost the push 27-38 ms (issue 18, the
profile in its closing note). Instead the service listens on ``127.0.0.1`` on a port of
its own, per event loop, and gives each push a random token: ``git receive-pack`` passes
``MLAB_HOOK_PORT`` and ``MLAB_HOOK_TOKEN`` on to the hook (:data:`hook.PRE_RECEIVE`), which
sends::

    <token>\\n<GIT_QUARANTINE_PATH or empty>\\n<N>\\n<N lines: old new ref>\\n

and prints what comes back: ``0`` or ``1`` on the first line (its exit code), then the
messages for git's ``remote:`` lines. The policy itself is the one function
:func:`hook.pre_receive`, run in a thread with the push's environment rebuilt here; the
hook's word counts for nothing but the ref lines and the quarantine directory, which
must be one of the mirror's own ``objects/tmp_objdir-incoming-*`` folders. An unknown token,
a bad request or a request slower than :data:`READ_TIMEOUT` gets ``1``: the push is refused.

Threat model: the port is on loopback of the service's own network namespace (its pod).
A token is 32 random bytes, valid from the push's start until its request ends, and
compared in constant time; without one nothing is evaluated.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import io
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

READ_TIMEOUT = 30.0
"""Seconds a hook may take to send its request."""
MAX_LINES = 100_000
"""Ref updates a request may carry (a push of more is refused by the daily quota anyway)."""
QUARANTINE_PREFIX = "tmp_objdir-incoming-"
"""git's name for a push's quarantine folder under ``objects/`` (git's tmp-objdir.c)."""


@dataclass(frozen=True)
class Push:
    """One push in flight: its mirror and the ``MLAB_*`` environment of its hook."""

    repo_dir: Path
    env: Mapping[str, str]
    report: str


class HookServer:
    """Tokens of the pushes in flight and the loopback endpoint their hooks call.

    One per service; its listener belongs to the event loop that started it and is started
    again on another loop (a test client's).
    """

    def __init__(self) -> None:
        self._pushes: dict[str, Push] = {}
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.port = 0

    async def _listening(self) -> int:
        loop = asyncio.get_running_loop()
        if self._server is None or self._loop is not loop:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self._loop = loop
            self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def register(self, report: str, repo_dir: Path,
                       env: Mapping[str, str]) -> dict[str, str]:
        """Register a push (named by its report file) until :meth:`forget`; returns the two
        variables its hook needs (``MLAB_HOOK_PORT``, ``MLAB_HOOK_TOKEN``) for git's
        environment.

        Args:
            report: the push's report file (``MLAB_PUSH_REPORT``), unique per push.
            repo_dir: the mirror's bare repository.
            env: the ``MLAB_*`` settings and the basic variables (``PATH``, ``HOME``) the
                policy runs with.
        """
        port = await self._listening()
        token = secrets.token_hex(32)
        self._pushes[token] = Push(repo_dir, dict(env), report)
        return {"MLAB_HOOK_PORT": str(port), "MLAB_HOOK_TOKEN": token}

    async def close(self) -> None:
        """Stop listening (the service's shutdown); pushes still running are refused."""
        if self._server is not None and self._loop is asyncio.get_running_loop():
            self._server.close()
            await self._server.wait_closed()
        self._server = None

    def forget(self, report: str) -> None:
        """End the push of ``report``: its token is refused from now on."""
        for token, push in list(self._pushes.items()):
            if push.report == report:
                del self._pushes[token]

    def _find(self, token: str) -> Push | None:
        found = None
        for known, push in list(self._pushes.items()):
            if hmac.compare_digest(known.encode(), token.encode()):
                found = push
        return found

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        code, text = 1, "mlab: refusing push: bad request to the policy check\n"
        try:
            request = await asyncio.wait_for(_read_request(reader), READ_TIMEOUT)
            if request is None:
                pass
            elif (push := self._find(request[0])) is None:
                text = "mlab: refusing push: unknown push token\n"
            else:
                env = hook_env(push, request[1])
                if env is None:
                    text = "mlab: refusing push: not this mirror's quarantine\n"
                else:
                    code, text = await asyncio.to_thread(run_policy, request[2], env)
        except Exception:  # noqa: BLE001 - fail closed, and say where to look
            log.exception("pre-receive policy check failed")
            code, text = 1, "mlab: refusing push: the policy check failed; see the service log\n"
        with contextlib.suppress(OSError):
            writer.write(f"{code}\n{text}".encode())
            await writer.drain()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, str] | None:
    """``(token, quarantine path, git's lines)``, or None when malformed."""
    token = (await reader.readline()).decode().rstrip("\n")
    quarantine = (await reader.readline()).decode().rstrip("\n")
    count = (await reader.readline()).decode().strip()
    if not count.isdigit() or int(count) > MAX_LINES:
        return None
    lines = [(await reader.readline()).decode() for _ in range(int(count))]
    if any(not line.endswith("\n") for line in lines):
        return None
    return token, quarantine, "".join(lines)


def hook_env(push: Push, quarantine: str) -> dict[str, str] | None:
    """The environment git gives a pre-receive hook, rebuilt from what the service knows;
    None when ``quarantine`` is not empty and not a quarantine folder of this mirror.

    Args:
        push: the registered push (its mirror and ``MLAB_*`` settings).
        quarantine: ``GIT_QUARANTINE_PATH`` as the hook saw it ("" for a push without a
            pack, e.g. only deletions).
    """
    env = dict(push.env)
    objects = push.repo_dir / "objects"
    env["GIT_DIR"] = str(push.repo_dir)
    if quarantine:
        path = push.repo_dir / quarantine  # git may give it relative to the mirror
        if (not path.name.startswith(QUARANTINE_PREFIX)
                or os.path.realpath(path.parent) != os.path.realpath(objects)
                or not path.is_dir()):
            return None
        env.update({"GIT_QUARANTINE_PATH": str(path), "GIT_OBJECT_DIRECTORY": str(path),
                    "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(objects)})
    return env


def run_policy(lines: str, env: Mapping[str, str]) -> tuple[int, str]:
    """:func:`hook.pre_receive` on ``lines`` with ``env``: ``(exit code, messages)``."""
    from mlab.codeservice import hook

    out = io.StringIO()
    code = hook.pre_receive(lines, env, out)
    return code, out.getvalue()
