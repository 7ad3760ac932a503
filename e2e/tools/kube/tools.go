//go:build tools

// Package tools pins the Kubernetes control-plane binaries the integration tests run
// (kube-apiserver, kube-controller-manager), built from their Go modules like envtest does.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
