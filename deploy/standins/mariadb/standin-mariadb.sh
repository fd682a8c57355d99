#!/bin/sh
# Initialise the data dir on first start, then run mariadbd with an init file that (re)applies the database,
# the user and the passwords from the environment on every start (idempotent statements only).
set -eu
datadir=/var/lib/mysql
quote() { printf '%s' "$1" | sed "s/'/''/g"; }
if [ ! -d "$datadir/mysql" ]; then
  mariadb-install-db --datadir="$datadir" --skip-test-db --auth-root-authentication-method=normal >/dev/null
fi
init=/run/mysqld/init.sql
{
  if [ -n "${MARIADB_ROOT_PASSWORD:-}" ]; then
    echo "ALTER USER 'root'@'localhost' IDENTIFIED BY '$(quote "$MARIADB_ROOT_PASSWORD")';"
    echo "CREATE USER IF NOT EXISTS 'root'@'%' IDENTIFIED BY '$(quote "$MARIADB_ROOT_PASSWORD")';"
    echo "ALTER USER 'root'@'%' IDENTIFIED BY '$(quote "$MARIADB_ROOT_PASSWORD")';"
    echo "GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
  fi
  if [ -n "${MARIADB_DATABASE:-}" ]; then
    echo "CREATE DATABASE IF NOT EXISTS \`$MARIADB_DATABASE\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;"
  fi
  if [ -n "${MARIADB_USER:-}" ]; then
    echo "CREATE USER IF NOT EXISTS '$(quote "$MARIADB_USER")'@'%' IDENTIFIED BY '$(quote "${MARIADB_PASSWORD:-}")';"
    echo "ALTER USER '$(quote "$MARIADB_USER")'@'%' IDENTIFIED BY '$(quote "${MARIADB_PASSWORD:-}")';"
    if [ -n "${MARIADB_DATABASE:-}" ]; then
      echo "GRANT ALL ON \`$MARIADB_DATABASE\`.* TO '$(quote "$MARIADB_USER")'@'%';"
    fi
  fi
} >"$init"
chmod 0600 "$init"
exec mariadbd --datadir="$datadir" --bind-address=0.0.0.0 --skip-name-resolve --init-file="$init" "$@"
