#!/bin/sh
# Example worker: wakes up, does its job, sleeps.
while true; do date > /tmp/last-run; sleep 30; done
