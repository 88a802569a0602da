//go:build race

package tunnel

// raceEnabled: sync.Pool drops a share of what is put back under the race
// detector, so pooled paths allocate there by design.
const raceEnabled = true
