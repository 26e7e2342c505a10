"""lakeview: a read-only browser view of a lake (``lake serve`` / ``Lake.serve``). An entry point: it imports the
packages (lake, packers) and none of them imports it, except ``Lake.serve``'s lazy hook.

Pages: the versions log and diffs, episodes (SQL filter, sort, pages), one episode (every camera as a video
remuxed from the stored packets, synchronised with plots of each feature), stats, packs, lineage.
"""

from ._app import make_app, public_uri, serve

__all__ = ["make_app", "public_uri", "serve"]
