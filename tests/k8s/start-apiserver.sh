#!/usr/bin/env bash
# Starts etcd and kube-apiserver (v1.20.2, from tests/k8s/build.sh) on free loopback ports with
# their state in DIR, waits until the API answers, and writes DIR/kubeconfig, DIR/etcd.pid and
# DIR/apiserver.pid. The caller stops both by PID. Usage: start-apiserver.sh DIR [BIN_DIR]
# It authorizes with RBAC: the admin token in DIR/kubeconfig is in system:masters, and a
# ServiceAccount token gets only what its roles grant (the chart's RBAC is tested that way).
set -euo pipefail
dir=$1
bin=${2:-$("$(dirname "$0")/build.sh")}
mkdir -p "$dir"
cd "$dir"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# A CA, a serving certificate for 127.0.0.1, and the service-account key pair.
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 \
  -subj /CN=kairos-test-ca 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >san.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt \
  -days 2 -extfile san.ext 2>/dev/null
openssl genrsa -out sa.key 2048 2>/dev/null
openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
token=$(openssl rand -hex 16)
echo "$token,admin,admin,\"system:masters\"" >tokens.csv

etcd_client=$(free_port)
etcd_peer=$(free_port)
etcd --name default --data-dir "$dir/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_client" \
  --advertise-client-urls "http://127.0.0.1:$etcd_client" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-cluster "default=http://127.0.0.1:$etcd_peer" >etcd.log 2>&1 &
echo $! >etcd.pid

port=$(free_port)
"$bin/kube-apiserver" --etcd-servers="http://127.0.0.1:$etcd_client" \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$port" \
  --insecure-port=0 --tls-cert-file=server.crt --tls-private-key-file=server.key \
  --client-ca-file=ca.crt --token-auth-file=tokens.csv --authorization-mode=RBAC \
  --service-account-issuer=https://kubernetes.default.svc --service-account-key-file=sa.pub \
  --service-account-signing-key-file=sa.key --service-cluster-ip-range=10.0.0.0/24 \
  --disable-admission-plugins=ServiceAccount --endpoint-reconciler-type=none \
  --cert-dir="$dir/certs" >apiserver.log 2>&1 &
echo $! >apiserver.pid

cat >kubeconfig <<KC
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority: $dir/ca.crt
users:
- name: admin
  user:
    token: $token
contexts:
- name: test
  context: {cluster: test, user: admin, namespace: default}
current-context: test
KC

for _ in $(seq 1 300); do
  if kubectl --kubeconfig kubeconfig get --raw /readyz >/dev/null 2>&1 &&
    kubectl --kubeconfig kubeconfig get namespace default >/dev/null 2>&1; then
    exit 0
  fi
  if ! kill -0 "$(cat apiserver.pid)" 2>/dev/null; then
    echo "kube-apiserver exited; its log:" >&2
    tail -20 apiserver.log >&2
    exit 1
  fi
  sleep 0.2
done
echo "kube-apiserver not ready in 60 s; its log:" >&2
tail -20 apiserver.log >&2
exit 1
