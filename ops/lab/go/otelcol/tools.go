//go:build tools

// The Collector Builder; imported only so that go.mod and go.sum list what it needs.
package tools

import _ "go.opentelemetry.io/collector/cmd/builder"
