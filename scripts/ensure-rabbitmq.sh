#!/usr/bin/env bash
# RabbitMQ for the tests that run on it (tests/test_rabbitmq.py; the machine's node at 127.0.0.1:5672, user
# guest, a vhost per test run): Debian's `rabbitmq-server` package. Installs it when missing and starts the node
# when it is not running, as root; otherwise says what to run, and fails. It never stops or reconfigures a
# node that runs.
set -euo pipefail

running() { rabbitmqctl -q await_startup --timeout 5 >/dev/null 2>&1; }

if ! command -v rabbitmqctl >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "rabbitmq-server is missing; the RabbitMQ tests need Debian's rabbitmq-server package:" >&2
        echo "    sudo apt-get update && sudo apt-get install -y rabbitmq-server" >&2
        exit 1
    fi
    echo "rabbitmq-server is missing: installing Debian's rabbitmq-server package (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends rabbitmq-server >/dev/null
fi

if running; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "RabbitMQ is installed but not running; start it (as root): rabbitmq-server -detached" >&2
    exit 1
fi
echo "RabbitMQ is not running: starting it (rabbitmq-server -detached)" >&2
rabbitmq-server -detached
# The node takes a few seconds to boot: await_startup fails at once until it is registered, then waits.
for _ in $(seq 60); do
    running && exit 0
    sleep 1
done
echo "rabbitmq-server did not start within a minute: see /var/log/rabbitmq/" >&2
exit 1
