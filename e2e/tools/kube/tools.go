//go:build tools

// Package tools pins the Kubernetes binaries the tests run: the control plane
// (kube-apiserver, kube-controller-manager, kube-scheduler), the node (kubelet,
// kube-proxy) and kubectl, all built from one k8s.io/kubernetes module like envtest does.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
