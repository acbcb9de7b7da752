//go:build tools

// Package tools pins the NetworkPolicy engine of the MLab node (see docs/node.md).
package tools

import (
	_ "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"
)
