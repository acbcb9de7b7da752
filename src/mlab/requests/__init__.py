"""Package and export requests with review (issue 7).

Layers: ``model`` (pure: states, transitions, permissions, input checks), ``store`` (SQLite),
``api`` (routes mounted in the code service), ``notify`` (command / webhook per transition),
``client`` (HTTP client for the CLI), ``checksums`` (streaming sha256, outbox staging),
``transcript`` (test run of an install script), ``publish`` (the Airlock's publisher) and
``packages`` (approved scripts as ordered image-build steps). See docs/requests.md.
"""
