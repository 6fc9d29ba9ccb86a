#!/usr/bin/env bash
# What a failed end-to-end run leaves behind: resources, events, descriptions and logs.
#   deploy/dump-diagnostics.sh [namespace]
set -uo pipefail
NAMESPACE=${1:-krakenfeed}

section() { printf '\n===== %s =====\n' "$*"; }

section "resources"
kubectl get nodes -o wide
kubectl get all,configmaps,kf,kafka,kafkanodepools,kafkatopics,clusters.postgresql.cnpg.io -A -o wide
section "KrakenFeeds"
kubectl -n "$NAMESPACE" get kf -o yaml
section "events"
kubectl get events -A --sort-by=.lastTimestamp
section "describe"
kubectl -n "$NAMESPACE" describe kf,kafka,kafkanodepools,clusters.postgresql.cnpg.io,deployments,pods
for namespace in "$NAMESPACE" strimzi cnpg-system; do
    for pod in $(kubectl -n "$namespace" get pods -o name); do
        section "logs $namespace/$pod"
        kubectl -n "$namespace" logs "$pod" --all-containers --prefix --tail=300
        kubectl -n "$namespace" logs "$pod" --all-containers --prefix --previous --tail=100 2>/dev/null
    done
done
exit 0
