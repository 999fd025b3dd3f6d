"""Redis (Debian's `redis-server`), the Celery broker: a throwaway one, no snapshots, on 127.0.0.1."""

from __future__ import annotations

import os
import shutil

from devtools.cluster.processes import recorded_process, require_free, spawn
from devtools.cluster.settings import ClusterError, ClusterSettings


def start_redis(settings: ClusterSettings) -> None:
    if recorded_process(settings, "redis"):
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise ClusterError("redis-server not found: install the Debian package (`make cluster-deps`, as root)")
    require_free(settings.redis_port, "Redis")
    data = settings.state / "redis"
    data.mkdir(parents=True, exist_ok=True)
    # A throwaway broker: no snapshots, bound to 127.0.0.1, in the foreground so that its PID is ours.
    cmd = [binary, "--port", str(settings.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    spawn(settings, "redis", [*cmd, "--dir", str(data), "--daemonize", "no"], os.environ)


def redis_ready(settings: ClusterSettings) -> bool:
    import redis

    try:
        return bool(redis.Redis(host="127.0.0.1", port=settings.redis_port, socket_timeout=1).ping())
    except redis.RedisError:
        return False
