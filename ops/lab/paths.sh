# Where the lab lives. Sourced by every lab script; override with BUILDPLANE_LAB_DIR.
# Binaries are kept in a per-user cache so a fresh checkout on the same machine reuses them;
# runtime state (sockets, data) sits beside them. Paths stay short: unix sockets allow ~100 bytes.
BP_LAB_DIR=${BUILDPLANE_LAB_DIR:-$HOME/.cache/buildplane/lab}
BP_LAB_BIN=$BP_LAB_DIR/bin
BP_LAB_RUN=$BP_LAB_DIR/run
export BP_LAB_DIR BP_LAB_BIN BP_LAB_RUN
