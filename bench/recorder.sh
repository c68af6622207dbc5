#!/bin/bash
# The run command of every benchmark: records when a run started, then lasts.
# usage: recorder.sh LOG SECONDS
# Appends "EPOCH-SECONDS RUN-ID" (the run id `trigger run` exports, or "-"
# for the seed's runs) before anything else, so the timestamp is as early as
# a run command can take it. bash's $EPOCHREALTIME costs no extra process.
echo "$EPOCHREALTIME ${TRIGGER_RUN_ID:--}" >> "$1"
[ "$2" = 0 ] || sleep "$2"
