"""``faust -A streamapp.app worker``: the faust convention looks for ``app`` here.

The application itself lives in :mod:`streamapp.worker.app`.
"""

from streamapp.worker.app import app

__all__ = ["app"]
