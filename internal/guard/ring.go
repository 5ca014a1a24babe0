package guard

// ring is a map with a fixed capacity: a slice of slots, filled up to cap and
// then reused by a clock hand. Inserting into a full ring takes an emptied
// slot if there is one, else the slot of lowest keep priority among the
// scanLimit slots from the hand on (the first of priority 0 at once), so
// every operation is O(1) whatever an attacker fills it with.
type ring[K comparable, V any] struct {
	cap   int
	slots []slot[K, V]
	index map[K]int32
	hand  int
	free  []int32      // emptied slots, reused before any eviction
	keep  func(*V) int // eviction priority: 0 evict first, higher later
}

type slot[K comparable, V any] struct {
	key  K
	val  V
	live bool
}

const scanLimit = 32

func newRing[K comparable, V any](capacity int, keep func(*V) int) *ring[K, V] {
	return &ring[K, V]{cap: capacity, index: make(map[K]int32), keep: keep}
}

func (r *ring[K, V]) len() int { return len(r.index) }

func (r *ring[K, V]) get(k K) *V {
	if i, ok := r.index[k]; ok {
		return &r.slots[i].val
	}
	return nil
}

// put returns k's value, inserting a zero one (and evicting another) if absent.
func (r *ring[K, V]) put(k K) *V {
	if v := r.get(k); v != nil {
		return v
	}
	var i int
	if n := len(r.free); n > 0 {
		i = int(r.free[n-1])
		r.free = r.free[:n-1]
	} else if len(r.slots) < r.cap {
		r.slots = append(r.slots, slot[K, V]{})
		i = len(r.slots) - 1
	} else {
		i = r.hand
		best := -1
		for n := 0; n < scanLimit && n < r.cap; n++ {
			j := (r.hand + n) % r.cap
			p := 0
			if s := &r.slots[j]; s.live {
				p = r.keep(&s.val)
			}
			if best < 0 || p < best {
				i, best = j, p
			}
			if p == 0 {
				break
			}
		}
		r.hand = (i + 1) % r.cap
		if s := &r.slots[i]; s.live {
			delete(r.index, s.key)
		}
	}
	r.slots[i] = slot[K, V]{key: k, live: true}
	r.index[k] = int32(i)
	return &r.slots[i].val
}

func (r *ring[K, V]) del(k K) {
	if i, ok := r.index[k]; ok {
		delete(r.index, k)
		r.slots[i] = slot[K, V]{}
		r.free = append(r.free, i)
	}
}

// each calls fn for every entry; fn returning true deletes it.
func (r *ring[K, V]) each(fn func(k K, v *V) (remove bool)) {
	for i := range r.slots {
		s := &r.slots[i]
		if s.live && fn(s.key, &s.val) {
			delete(r.index, s.key)
			*s = slot[K, V]{}
			r.free = append(r.free, int32(i))
		}
	}
}
