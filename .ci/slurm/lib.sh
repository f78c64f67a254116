# Shared by up.sh and down.sh.

# Prints the pid stored in pidfile $1 if it is alive and its command starts with $2
# (comm is truncated to 15 chars; the Debian binaries are *-wlm, so match the prefix).
live_pid() {
    local pidfile=$1 name=$2 pid
    [ -r "$pidfile" ] || return 1
    pid=$(cat "$pidfile" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ -d "/proc/$pid" ] || return 1
    # a killed daemon can linger as a zombie until PID 1 reaps it
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name"* ]] || return 1
    echo "$pid"
}
