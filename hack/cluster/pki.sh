#!/bin/bash
# Generates the cluster's CA, serving and client certificates and
# kubeconfigs into DIR (kept while younger than 20 days).
#   pki.sh DIR NODE_NAME NODE_IP
set -euo pipefail
dir=$1 node=$2 ip=$3
mkdir -p "$dir"
cd "$dir"
if [ -f admin.kubeconfig ] && [ "$(cat node 2>/dev/null)" = "$node $ip" ] &&
	[ -z "$(find ca.crt -mtime +20)" ]; then
	exit 0
fi
rm -f ./*.crt ./*.key ./*.csr ./*.ext ./*.kubeconfig ./*.srl ./*.pub node
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 -subj "/CN=untorn-local-ca" 2> /dev/null
openssl genrsa -out sa.key 2048 2> /dev/null
openssl rsa -in sa.key -pubout -out sa.pub 2> /dev/null
# cert NAME CN ORG [SANs]: a certificate signed by the CA; with SANs it
# also serves
cert() {
	local name=$1 cn=$2 org=$3 sans=${4:-} subj
	subj="/CN=$cn"
	[ -n "$org" ] && subj="/O=$org/CN=$cn"
	openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "$subj" 2> /dev/null
	{
		echo "basicConstraints=CA:FALSE"
		echo "keyUsage=digitalSignature,keyEncipherment"
		if [ -n "$sans" ]; then
			echo "extendedKeyUsage=serverAuth,clientAuth"
			echo "subjectAltName=$sans"
		else
			echo "extendedKeyUsage=clientAuth"
		fi
	} > "$name.ext"
	openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$name.crt" \
		-days 30 -extfile "$name.ext" 2> /dev/null
	rm -f "$name.csr" "$name.ext"
}
cert apiserver kube-apiserver "" "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:10.96.0.1,IP:$ip"
cert admin untorn-admin system:masters
cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
cert controller-manager system:kube-controller-manager ""
cert scheduler system:kube-scheduler ""
cert kubelet "system:node:$node" system:nodes
cert kube-proxy system:kube-proxy ""
for user in admin controller-manager scheduler kubelet kube-proxy; do
	cat > "$user.kubeconfig" << EOK
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    certificate-authority: $PWD/ca.crt
    server: https://127.0.0.1:6443
users:
- name: $user
  user:
    client-certificate: $PWD/$user.crt
    client-key: $PWD/$user.key
contexts:
- name: local
  context: {cluster: local, user: $user}
current-context: local
EOK
done
echo "$node $ip" > node
