"""Where the SDK's bearer token comes from.

- :class:`StaticToken`: a token string (``token=`` or ``AIRLOCK_TOKEN``).
- :class:`TokenFile`: a file read again whenever it changes, such as a projected ServiceAccount
  token that the kubelet rotates (``token_file=`` or ``AIRLOCK_TOKEN_FILE``).
- :class:`KubectlToken`: ``kubectl create token SA --audience airlock`` with kubectl's current
  context (or ``context=``), minted again before it expires.

The gateway accepts a Kubernetes token for its audience (``airlock`` by default, Helm value
``gateway.auth.tokenAudiences``) or one of its static tokens.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from typing import Protocol, runtime_checkable

#: The audience the chart's gateway asks for in TokenReviews by default.
DEFAULT_AUDIENCE = "airlock"


@runtime_checkable
class TokenSource(Protocol):
    """Anything with a ``token()`` method returning the bearer token (``None``: send none)."""

    def token(self) -> str | None: ...


class StaticToken:
    def __init__(self, token: str) -> None:
        token = token.strip()
        if not token:
            raise ValueError("token: must not be empty")
        self._token = token

    def token(self) -> str:
        return self._token

    def __repr__(self) -> str:
        return "StaticToken(***)"


class TokenFile:
    """A token read from ``path``, read again when the file's modification time changes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._token = ""
        self.token()  # fail now, naming the file, rather than on the first call

    def token(self) -> str:
        try:
            mtime = os.stat(self.path).st_mtime
        except OSError as e:
            raise ValueError(f"token_file {self.path}: {e.strerror}") from e
        with self._lock:
            if mtime != self._mtime:
                with open(self.path, encoding="utf-8") as f:
                    tok = f.read().strip()
                if not tok:
                    raise ValueError(f"token_file {self.path}: the file is empty")
                self._token, self._mtime = tok, mtime
            return self._token

    def __repr__(self) -> str:
        return f"TokenFile({self.path!r})"


class KubectlToken:
    """A token for ``service_account`` minted by ``kubectl create token`` with the credentials of
    kubectl's current context (or ``context``), renewed when 80% of ``duration`` has passed."""

    def __init__(
        self,
        service_account: str,
        *,
        namespace: str | None = None,
        audience: str = DEFAULT_AUDIENCE,
        duration: int = 3600,
        context: str | None = None,
        kubectl: str = "kubectl",
    ) -> None:
        if not service_account:
            raise ValueError("service_account: must not be empty")
        if duration < 600:
            raise ValueError(f"duration: at least 600 seconds (the API server's minimum), got {duration}")
        self.service_account = service_account
        self.namespace = namespace
        self.audience = audience
        self.duration = duration
        self.context = context
        self.kubectl = shutil.which(kubectl) or kubectl
        self._lock = threading.Lock()
        self._token = ""
        self._renew_at = 0.0

    def argv(self) -> list[str]:
        argv = [self.kubectl, "create", "token", self.service_account, "--audience", self.audience, "--duration", f"{self.duration}s"]
        if self.namespace:
            argv += ["--namespace", self.namespace]
        if self.context:
            argv += ["--context", self.context]
        return argv

    def needs_renewal(self) -> bool:
        return time.monotonic() >= self._renew_at

    def token(self) -> str:
        with self._lock:
            if self.needs_renewal():
                try:
                    run = subprocess.run(self.argv(), capture_output=True, text=True, timeout=30, check=False)
                except (OSError, subprocess.TimeoutExpired) as e:
                    raise RuntimeError(f"kubectl create token {self.service_account}: {e}") from e
                if run.returncode != 0:
                    raise RuntimeError(f"kubectl create token {self.service_account}: {run.stderr.strip() or run.returncode}")
                self._token = run.stdout.strip()
                self._renew_at = time.monotonic() + 0.8 * self.duration
            return self._token

    def __repr__(self) -> str:
        return f"KubectlToken({self.service_account!r}, namespace={self.namespace!r}, audience={self.audience!r})"


def resolve(token: str | TokenSource | None, token_file: str | os.PathLike[str] | None) -> TokenSource | None:
    """``token`` or ``token_file`` as given, else ``AIRLOCK_TOKEN``, else ``AIRLOCK_TOKEN_FILE``."""
    if token is not None and token_file is not None:
        raise ValueError("give at most one of token= and token_file=")
    if isinstance(token, str):
        return StaticToken(token)
    if token is not None:
        if not isinstance(token, TokenSource):
            raise TypeError(f"token: a str or an object with a token() method, got {type(token).__name__}")
        return token
    if token_file is not None:
        return TokenFile(token_file)
    if os.environ.get("AIRLOCK_TOKEN"):
        return StaticToken(os.environ["AIRLOCK_TOKEN"])
    if os.environ.get("AIRLOCK_TOKEN_FILE"):
        return TokenFile(os.environ["AIRLOCK_TOKEN_FILE"])
    return None
