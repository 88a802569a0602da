package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// procRSS returns the resident set size of process pid in bytes
// (/proc/PID/status VmRSS).
func procRSS(pid int) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("gateway RSS: %w", err)
	}
	return parseVmRSS(data)
}

// parseVmRSS reads the VmRSS line ("VmRSS:    12345 kB") of a
// /proc/PID/status file.
func parseVmRSS(status []byte) (uint64, error) {
	for line := range bytes.Lines(status) {
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		f := strings.Fields(string(rest))
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("VmRSS line %q: want a number of kB", bytes.TrimSpace(line))
		}
		kb, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("VmRSS line %q: %w", bytes.TrimSpace(line), err)
		}
		return kb << 10, nil
	}
	return 0, errors.New("no VmRSS line (kernel thread or exited process?)")
}

// procCPUTicks returns the user plus system CPU time of process pid in
// clock ticks (/proc/PID/stat fields 14 and 15).
func procCPUTicks(pid int) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("gateway CPU: %w", err)
	}
	return parseStatTicks(data)
}

// parseStatTicks adds utime and stime from a /proc/PID/stat line. The
// command name (field 2) is in parentheses and may itself hold spaces and
// parentheses, so fields are counted after its last ')'.
func parseStatTicks(stat []byte) (uint64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("stat: no command name")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state): utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields after the command name, want at least 13", len(f))
	}
	var sum uint64
	for _, s := range f[11:13] {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("stat: cpu field %q: %w", s, err)
		}
		sum += n
	}
	return sum, nil
}
