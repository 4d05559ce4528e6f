"""`magnet view`: a local, read-only web page to look at a run, its evaluations and the loop.

server.py (routes, security), index.py (the paging index over the shards), pages.py and
conversation.py (what each page shows), markup.py (escaping, frame, charts), runinfo.py
(manifest, summary, liveness, graph, reports), config.py (ViewConfig: every option).
"""
