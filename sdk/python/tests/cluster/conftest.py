"""Fixtures of the SDK's cluster tests (e2e/tests/python_sdk.rs sets up the cluster side and runs
them): the installed gateway, a namespace with a template and its warm pool, and tokens.

Environment: AIRLOCK_ADDR, AIRLOCK_NAMESPACE, AIRLOCK_TOKEN (a user with every sandbox right in
the namespace), AIRLOCK_SDK_TEMPLATE (a SandboxTemplate with a SandboxPool), AIRLOCK_SDK_IMAGE,
AIRLOCK_SDK_SERVICE_ACCOUNT (the user's ServiceAccount, for kubectl create token),
AIRLOCK_SDK_OTHER_NAMESPACE + AIRLOCK_SDK_OTHER_TOKEN (another user in another namespace),
AIRLOCK_SDK_NO_ACCESS_TOKEN (a token with no rights), AIRLOCK_SDK_OUT (a JSON-lines file the
harness reads: which sandboxes the tests made).
"""

from __future__ import annotations

import json
import os

import pytest

from airlock import Client, Sandbox


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: these tests run from e2e/tests/python_sdk.rs (make e2e)")
    return value


def note(**fields: object) -> None:
    """Tells the harness something only the cluster can check (JSON lines in AIRLOCK_SDK_OUT)."""
    with open(env("AIRLOCK_SDK_OUT"), "a", encoding="utf-8") as f:
        f.write(json.dumps(fields) + "\n")


@pytest.fixture(scope="session")
def template() -> str:
    return env("AIRLOCK_SDK_TEMPLATE")


@pytest.fixture(scope="session")
def image() -> str:
    return env("AIRLOCK_SDK_IMAGE")


@pytest.fixture(scope="session")
def client() -> Client:
    env("AIRLOCK_ADDR")
    env("AIRLOCK_TOKEN")
    with Client() as c:
        yield c


@pytest.fixture(scope="session")
def sbx(client: Client, template: str) -> Sandbox:
    """One sandbox from the template for the tests that only use it."""
    with Sandbox.create(template=template, ttl=900, env={"FROM_CREATE": "yes"}, labels={"suite": "sync"}, client=client) as s:
        note(sync_sandbox=s.name, start_mode=s.info.start_mode)
        yield s
