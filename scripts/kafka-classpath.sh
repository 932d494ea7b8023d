#!/usr/bin/env bash
# Prints the runtime classpath of tests/java/pom.xml (Apache Kafka 4.4 server, tools, clients,
# streams and log4j2, all from Maven Central) on stdout, for `java -cp "$(scripts/kafka-classpath.sh)"`.
# Maven runs once per version of the pom: the result is cached outside the clone, in
# ${KAIROS_CACHE:-$HOME/.cache/kairos}, under a hash of the pom, so editing the pom re-resolves and
# a cached call costs well under a second. The jars themselves stay in Maven's own cache (~/.m2).
# Everything Maven says goes to stderr; stdout carries the classpath only.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
pom="$root/tests/java/pom.xml"
cache="${KAIROS_CACHE:-$HOME/.cache/kairos}"
key="$(sha256sum "$pom" | cut -c1-16)"
out="$cache/kafka-classpath-$key.txt"

# A cached classpath is only good while every jar in it still exists (~/.m2 may have been wiped).
if [[ -s "$out" ]]; then
  ok=1
  IFS=: read -r -a jars <"$out" || true  # the file has no final newline: read says EOF
  for j in "${jars[@]}"; do [[ -f "$j" ]] || { ok=0; break; }; done
  if ((ok)); then cat "$out"; echo; exit 0; fi
fi

mkdir -p "$cache"
# Resolve into a private temp file, then rename: concurrent callers never read a half-written one.
tmp="$(mktemp "$cache/.kafka-classpath.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
# runtime scope: the broker and tools, not JUnit (test scope). -B: no progress bars.
mvn -q -B -f "$pom" dependency:build-classpath \
  -DincludeScope=runtime -Dmdep.outputFile="$tmp" 1>&2
[[ -s "$tmp" ]] || { echo "kafka-classpath: Maven produced an empty classpath" >&2; exit 1; }
mv "$tmp" "$out"
cat "$out"; echo
