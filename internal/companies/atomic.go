package companies

import "sync/atomic"

type atomicSnapshot struct{ p atomic.Pointer[snapshot] }

func (a *atomicSnapshot) Load() *snapshot {
	if s := a.p.Load(); s != nil {
		return s
	}
	return &snapshot{byID: map[string]*Company{}, byDomain: map[string]*Company{}}
}

func (a *atomicSnapshot) Store(s *snapshot) { a.p.Store(s) }
