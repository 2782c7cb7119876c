"""The live fleet dashboard: a web app the controller serves beside its decision loop
(`edgefleet controller --http ADDR:PORT`), pushed live over server-sent events, with operator
actions behind the operator login, telemetry history kept in the registry, and /metrics.

  server.py   Dashboard: uvicorn on its own thread, started with the controller
  app.py      the Starlette app: page, read APIs, the live stream, actions, /metrics
  feed.py     LiveFeed: the controller's observer, turning its work into live updates
  hub.py      Hub: fan-out of updates from the controller's thread to the browsers
  history.py  HistoryRecorder: heartbeats downsampled into the registry, with retention
  auth.py     OperatorCredentials: who may act
  metrics.py  the Prometheus collector
"""
