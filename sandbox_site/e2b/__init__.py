"""The E2B surface: E2B's control API, its in-sandbox services (envd, the code interpreter) and their wire
formats, mapped onto our sessions and executions, so agent code written for the `e2b` and
`e2b-code-interpreter` SDKs runs against this server unchanged.

Mounted at /e2b: `E2B_API_URL` and `E2B_SANDBOX_URL` both point there. The SDK tells its two kinds of
request apart only by path and by the `E2b-Sandbox-Id` / `E2b-Sandbox-Port` headers, which is why one prefix
serves both. docs/agents.md says what is supported.
"""

# The SDK releases the surface is tested against (pyproject.toml pins them; docs/agents.md names them).
TESTED_SDK_VERSIONS = {"e2b": "2.63", "e2b-code-interpreter": "2.11"}
