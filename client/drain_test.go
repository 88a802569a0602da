package client

import (
	"slices"
	"testing"
	"time"
)

func TestRotateAfter(t *testing.T) {
	s := []string{"a:1", "b:1", "c:1"}
	for _, tc := range []struct {
		skip string
		want []string
	}{
		{"", s}, {"x:1", s}, {"a:1", []string{"b:1", "c:1", "a:1"}}, {"b:1", []string{"c:1", "a:1", "b:1"}}, {"c:1", s},
	} {
		if got := rotateAfter(s, tc.skip); !slices.Equal(got, tc.want) {
			t.Errorf("after %q: %v, want %v", tc.skip, got, tc.want)
		}
	}
	if got := rotateAfter([]string{"a:1"}, "a:1"); !slices.Equal(got, []string{"a:1"}) {
		t.Errorf("one server: %v", got)
	}
	if r := classify(&closeError{reason: "drain"}); r.Code != codeDrain || r.Permanent {
		t.Errorf("drain classified %+v, want transient code drain", r)
	}
}

// TestDrainReconnectsAtOnce: a session closed with reason drain is
// followed by a new connection without the reconnect backoff (an hour
// here), where a plain close waits it out.
func TestDrainReconnectsAtOnce(t *testing.T) {
	noLeaks(t)
	e := startClient(t, envOpt{edit: func(c *Config) { c.Reconnect.MinDelay, c.Reconnect.MaxDelay = time.Hour, time.Hour }})
	s, _ := e.up(testConfig())
	<-e.ready
	if err := s.w.WriteClose("drain"); err != nil {
		t.Fatal(err)
	}
	e.up(testConfig()) // fails the test if no new connection comes within wait
	e.waitLog("moving to the next gateway")
}
