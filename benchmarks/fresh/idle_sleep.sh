#!/bin/bash
# Idle: nothing but sleep.
exec sleep "${1:-40}"
