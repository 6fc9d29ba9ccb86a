#!/usr/bin/env bash
# Installs the operators the krakenfeed-stack chart builds on, from their official
# Helm charts, into the current kubectl context (a kind cluster in CI and on laptops):
#   Strimzi        (Kafka, KafkaNodePool, KafkaTopic)  namespace strimzi, watching every namespace
#   CloudNativePG  (Cluster)                           namespace cnpg-system
# Idempotent: `helm upgrade --install` and `--wait`, so a rerun repairs a half install.
set -euo pipefail

STRIMZI_VERSION=${STRIMZI_VERSION:-0.48.0}
CNPG_CHART_VERSION=${CNPG_CHART_VERSION:-0.26.1}
TIMEOUT=${TIMEOUT:-10m}

helm repo add strimzi https://strimzi.io/charts/ --force-update
helm repo add cnpg https://cloudnative-pg.github.io/charts --force-update
helm repo update strimzi cnpg

echo "==> Strimzi ${STRIMZI_VERSION}"
helm upgrade --install strimzi strimzi/strimzi-kafka-operator \
    --version "${STRIMZI_VERSION}" \
    --namespace strimzi --create-namespace \
    --set watchAnyNamespace=true \
    --wait --timeout "${TIMEOUT}"

echo "==> CloudNativePG (chart ${CNPG_CHART_VERSION})"
helm upgrade --install cnpg cnpg/cloudnative-pg \
    --version "${CNPG_CHART_VERSION}" \
    --namespace cnpg-system --create-namespace \
    --wait --timeout "${TIMEOUT}"

kubectl wait --for=condition=Established --timeout=120s \
    crd/kafkas.kafka.strimzi.io crd/kafkanodepools.kafka.strimzi.io \
    crd/kafkatopics.kafka.strimzi.io crd/clusters.postgresql.cnpg.io
echo "==> prerequisites ready"
