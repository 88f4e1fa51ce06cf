"""The coordinator's dashboard: a web page for operators, served on its ops listener.

:func:`~fedge.dashboard.router.dashboard_router` is the APIRouter (page, packaged assets, JSON
data, promote and rollback); :mod:`fedge.dashboard.views` builds the data from the coordinator's
database. The page is plain HTML, CSS and JavaScript with hand-drawn SVG charts: nothing is
fetched from the internet.
"""

from __future__ import annotations

from fedge.dashboard.router import dashboard_router

__all__ = ["dashboard_router"]
