#!/usr/bin/env bash
# System headers the pinned packages compile against, installed once when missing.
# mysqlclient (apache-airflow-providers-mysql's default driver) has no Linux wheels: it builds
# against MariaDB Connector/C's headers (libmariadb-dev). On Debian as root we install them;
# elsewhere we say exactly what is missing instead of letting pip fail with a traceback.
set -euo pipefail

if pkg-config --exists mariadb 2>/dev/null || pkg-config --exists mysqlclient 2>/dev/null \
    || pkg-config --exists libmariadb 2>/dev/null; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing libmariadb-dev and pkg-config (mysqlclient builds against them)" >&2
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q libmariadb-dev pkg-config >/dev/null
    exit 0
fi
echo "bootstrap: mysqlclient needs MariaDB/MySQL client headers: install libmariadb-dev and pkg-config" \
     "(Debian/Ubuntu), mariadb-connector-c (Homebrew) or mysql-devel (RHEL), then run make again" >&2
exit 1
