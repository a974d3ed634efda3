#!/bin/sh
# pki.sh DIR NODE_NAME NODE_IP API_URL: writes the local cluster's CA, serving and client certificates
# and kubeconfigs with openssl. Idempotent: an existing DIR is kept as it is (nothing is rewritten).
# Everything is made in DIR.new and renamed to DIR at the end, so a run that fails half-way leaves
# no half-made DIR that a later run would take for a finished one.
set -eu
DIR=$1 NODE=$2 NODE_IP=$3 API=$4 SVC_IP=10.96.0.1
case $DIR in /*) ;; *) DIR=$PWD/$DIR ;; esac
[ -f "$DIR/ca.crt" ] && exit 0
rm -rf "$DIR.new"; mkdir -p "$DIR.new"; cd "$DIR.new"
openssl genrsa -out ca.key 2048 2>/dev/null
openssl req -x509 -new -key ca.key -days 3650 -subj "/CN=airlock-local-ca" -out ca.crt \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
# cert NAME CN O EXTKEYUSAGE [SANS]
cert() {
  n=$1 cn=$2 o=$3 eku=$4 san=${5:-}
  openssl genrsa -out "$n.key" 2048 2>/dev/null
  subj="/CN=$cn"; [ -n "$o" ] && subj="/O=$o/CN=$cn"
  openssl req -new -key "$n.key" -subj "$subj" -out "$n.csr"
  { echo "basicConstraints=CA:FALSE"; echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"; [ -n "$san" ] && echo "subjectAltName=$san"; } > "$n.ext"
  openssl x509 -req -in "$n.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile "$n.ext" -out "$n.crt" 2>/dev/null
  rm -f "$n.csr" "$n.ext"
}
cert etcd-server etcd "" serverAuth,clientAuth "DNS:localhost,IP:127.0.0.1"
cert apiserver-etcd-client kube-apiserver-etcd-client "" clientAuth
cert apiserver kube-apiserver "" serverAuth \
  "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,DNS:$NODE,IP:127.0.0.1,IP:$NODE_IP,IP:$SVC_IP"
cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters clientAuth
cert admin kubernetes-admin system:masters clientAuth
cert controller-manager system:kube-controller-manager "" clientAuth
cert scheduler system:kube-scheduler "" clientAuth
cert kube-proxy system:kube-proxy "" clientAuth
cert kubelet-client "system:node:$NODE" system:nodes clientAuth
cert kubelet-serving "system:node:$NODE" system:nodes serverAuth "DNS:$NODE,DNS:localhost,IP:127.0.0.1,IP:$NODE_IP"
cert kube-router kube-router system:masters clientAuth
openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
kcfg() {
  cat > "$1.kubeconfig" <<K
apiVersion: v1
kind: Config
clusters:
- name: airlock-local
  cluster:
    server: $API
    certificate-authority-data: $(base64 -w0 ca.crt)
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "$2.crt")
    client-key-data: $(base64 -w0 "$2.key")
contexts:
- name: airlock-local
  context: {cluster: airlock-local, user: $2}
current-context: airlock-local
K
  chmod 600 "$1.kubeconfig"
}
for x in admin controller-manager scheduler kube-proxy kube-router; do kcfg $x $x; done
kcfg kubelet kubelet-client
chmod 600 ./*.key
cd /; rm -rf "$DIR"; mv "$DIR.new" "$DIR"
