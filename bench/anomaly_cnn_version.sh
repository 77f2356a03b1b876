#!/bin/bash
# usage: bench/anomaly_cnn_version.sh VERSION (1, 2 or 3): the anomaly components with a scorer refitted on fr-cnn:VERSION (about 40 s)
# run from the repository root; writes /tmp/anomaly-cnnV.db and /tmp/scorer-cnnV.npz
set -e
DATA=${SURVEY_CLASSIFIER_DATA:-../shared/data}
SC=${SC:-survey-classifier}
V=$1; DB=sqlite:////tmp/anomaly-cnn$V.db; rm -f /tmp/anomaly-cnn$V.db
$SC classify $DATA/mirabest/labels.csv --base-dir $DATA/mirabest/fits --db $DB --quiet \
    --stages measure,som,cnn --param cnn.model=fr-cnn:$V --param cnn.embedding=true
$SC train anomaly --db $DB -o /tmp/scorer-cnn$V.npz --no-register
$SC classify $DATA/mirabest/labels.csv --base-dir $DATA/mirabest/fits --db $DB --quiet \
    --stages measure,som,cnn,anomaly --param cnn.model=fr-cnn:$V --param cnn.embedding=true \
    --param anomaly.scorer=/tmp/scorer-cnn$V.npz
$SC evaluate anomaly --db $DB --rare fr_class=hybrid --rare 'morphology!=standard'
