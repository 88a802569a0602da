//go:build race

package server

// raceEnabled: the race detector makes allocations larger and sync.Pool
// drops a share of what is put back, so memory bounds get more room.
const raceEnabled = true
