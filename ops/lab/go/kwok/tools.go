//go:build tools

// The command the lab builds; imported only so that go.mod and go.sum list what it needs.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
