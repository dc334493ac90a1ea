package driver

import (
	"fmt"
	"sync"
)

// inFlight is the set of volumes with an operation under way. A second call
// on the same key is refused at once (Aborted) and the sidecar retries;
// calls on different volumes never wait for each other.
type inFlight struct {
	mu   sync.Mutex
	keys map[string]struct{}
}

func newInFlight() *inFlight { return &inFlight{keys: map[string]struct{}{}} }

// acquire marks key busy and returns the release function, or an error
// wrapping ErrInFlight.
func (f *inFlight) acquire(key string) (func(), error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, busy := f.keys[key]; busy {
		return nil, fmt.Errorf("%w: %s", ErrInFlight, key)
	}
	f.keys[key] = struct{}{}
	return func() {
		f.mu.Lock()
		delete(f.keys, key)
		f.mu.Unlock()
	}, nil
}
