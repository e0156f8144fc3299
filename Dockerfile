# chatd: PyChat's line protocol and ASVT-chat's binary protocol on one hub.
FROM python:3.12-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY . .
# With psycopg, so that --database may name a PostgreSQL server (several nodes).
RUN pip install --no-cache-dir '.[postgresql]'

# As root, and outside the source tree: write twisted/plugins/dropin.cache in
# site-packages now, since the unprivileged user below cannot, and twistd
# would otherwise rescan every plugin on each start.
WORKDIR /
RUN python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))" \
 && useradd --create-home --shell /usr/sbin/nologin chatd \
 && mkdir /data && chown chatd:chatd /data

# A new named volume takes the owner of the directory it is mounted on.
VOLUME /data
USER chatd
WORKDIR /home/chatd
EXPOSE 5000 31337 8080
# Exec form: twistd is PID 1 and gets Docker's SIGTERM itself, and stops well
# within the 10 s grace period. -n keeps it in the foreground, logging to
# stdout; an empty --pidfile leaves no stale pid file to block a restart.
CMD ["twistd", "-n", "--pidfile=", "chatd"]
