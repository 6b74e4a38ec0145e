//go:build tools

// The command the lab builds (one binary: server, repo-server and application-controller by its name).
package tools

import _ "github.com/argoproj/argo-cd/v3/cmd"
