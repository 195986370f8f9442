#!/bin/bash
# Background: openssl's benchmark on both CPUs (no AI anywhere).
secs=${1:-40}
exec timeout "$secs" openssl speed -multi 2 -seconds "$secs" sha256 aes-128-cbc >/dev/null 2>&1
