"""The transports under test: one module per transport family, each a server and its clients.

A server module has `serve(args: ServerArgs) -> None`, run in a child process by
`bench._child`; it writes its ready file once listening and serves until SIGTERM. Clients
satisfy `Client` and run in the benchmark process.
"""
