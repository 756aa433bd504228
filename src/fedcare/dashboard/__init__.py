"""fedcare.dashboard: the coordinator's web layer. Today the HTTP API (:mod:`.api`, served by
:mod:`.serve`, authenticated by :mod:`.auth`); the dashboard pages come next (issue 14)."""
