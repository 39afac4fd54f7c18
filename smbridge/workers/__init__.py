"""Several bridge processes on one host, presented as one bridge (docs/operations.md, "Workers").

- :mod:`~smbridge.workers.reuseport`: listening sockets that several processes share
  (``SO_REUSEPORT``), and the supervisor's reservation of their port numbers;
- :mod:`~smbridge.workers.restart`: when a worker that died is started again (pure);
- :mod:`~smbridge.workers.aggregate`: the workers' status, sessions, metrics and
  bandwidth merged into one bridge's (pure);
- :mod:`~smbridge.workers.worker`: what a worker does differently (private admin
  socket, exit with its supervisor);
- :mod:`~smbridge.workers.supervisor`: the twistd service that runs the workers;
- :mod:`~smbridge.workers.admin`: the supervisor's admin API over the workers'.
"""
