//go:build tools

// Package tools pins the cluster DNS of the MLab node (see docs/node.md).
package tools

import (
	_ "github.com/coredns/coredns"
)
