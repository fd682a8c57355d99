"""The MCP server: the product's sessions, executions and files as Model Context Protocol tools.

Chat agents reach tools over MCP. The tools here call the same services as the REST API, with the same
request validation (the API's serializers) and the same visibility rule (a key sees its owner's sessions),
over two transports: stdio (`manage.py mcp`, one API key for the process) and streamable HTTP at `/mcp` on
the web server (an API key on every request). See docs/agents.md.
"""
