"""Airlock sandboxes as a sandbox backend of the OpenAI Agents SDK (``pip install 'airlock-k8s[agents]'``).

    from agents import Runner, RunConfig
    from agents.sandbox import SandboxAgent, SandboxRunConfig
    from airlock.agents import AirlockSandboxClient, AirlockSandboxClientOptions

    run_config = RunConfig(sandbox=SandboxRunConfig(
        client=AirlockSandboxClient(),                       # AIRLOCK_ADDR / AIRLOCK_TOKEN ...
        options=AirlockSandboxClientOptions(template="python"),
    ))
    await Runner.run(SandboxAgent(name="coder", model=...), "...", run_config=run_config)

Each session is one Airlock sandbox (a warm pool of the template serves it in milliseconds). The
agent's shell and file tools run in it; its workspace is persisted and restored as a tar;
long-running commands and interactive input use Airlock's background processes.
"""

try:
    import agents.sandbox  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "airlock.agents needs the OpenAI Agents SDK: pip install 'airlock-k8s[agents]' (openai-agents>=0.14)"
    ) from e

from ._client import AirlockSandboxClient, AirlockSandboxClientOptions, AirlockSandboxSessionState
from ._session import AirlockSandboxSession

__all__ = [
    "AirlockSandboxClient",
    "AirlockSandboxClientOptions",
    "AirlockSandboxSession",
    "AirlockSandboxSessionState",
]
