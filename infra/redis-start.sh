#!/bin/sh
# Runs the given redis-server command (config file and options) with the password from $REDIS_PASSWORD.
#   REDIS_PASSWORD=... sh infra/redis-start.sh redis-server infra/redis.conf [--option value ...]
# The password reaches redis-server on stdin (the trailing "-"), so it is in no file, no process list
# and no `docker inspect` of the command; infra/redis.conf listens on the network and must not run
# without one. docker-compose.yml and infra/k8s/redis.yaml start Redis through this script.
set -eu
password=${REDIS_PASSWORD:-}
if [ -z "$password" ]; then
  echo "REDIS_PASSWORD is not set: Redis listens on the network and refuses to start without a password" >&2
  exit 2
fi
case $password in
  *[!A-Za-z0-9._~-]*)
    # It also goes into redis:// URLs (LABELQ_REDIS_URL) and is read by redis-server's config parser.
    echo "REDIS_PASSWORD may hold only letters, digits and . _ ~ - (make one with: openssl rand -hex 32)" >&2
    exit 2 ;;
esac
if [ ${#password} -lt 16 ]; then
  echo "REDIS_PASSWORD is shorter than 16 characters (make one with: openssl rand -hex 32)" >&2
  exit 2
fi
unset REDIS_PASSWORD
exec "$@" - <<EOF
requirepass $password
EOF
