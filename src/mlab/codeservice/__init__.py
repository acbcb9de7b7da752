"""The code service: approved GitHub mirrors over git smart HTTP (issue 5).

Modules: ``names`` (pure validation), ``store`` (SQLite), ``auth`` (RFC 7617 Basic),
``githttp`` (streaming CGI; its child process: ``gitproc``), ``mirror`` (sync rules),
``hook`` (push policy), ``pages``, ``app`` (the ASGI app, ``create_app``), ``client``
(HTTP client for CLI commands).
Importing this package imports nothing else (the git hook imports ``hook`` on every push).
"""
