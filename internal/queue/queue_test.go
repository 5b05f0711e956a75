package queue

import (
	"context"
	"testing"
	"time"
)

func TestPolicies(t *testing.T) {
	tests := []struct {
		name     string
		policy   Policy
		push     []int
		want     []int
		dropped  uint64
		released []int
	}{
		{"drop oldest keeps newest", DropOldest, []int{1, 2, 3, 4}, []int{3, 4}, 2, []int{1, 2}},
		{"drop newest keeps first", DropNewest, []int{1, 2, 3, 4}, []int{1, 2}, 2, []int{3, 4}},
		{"fits", DropOldest, []int{1}, []int{1}, 0, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var released []int
			q := New(2, tc.policy, func(v int) { released = append(released, v) })
			for _, v := range tc.push {
				q.Push(context.Background(), v)
			}
			var got []int
			for q.Len() > 0 {
				got = append(got, <-q.C())
			}
			if !equal(got, tc.want) || !equal(released, tc.released) || q.Dropped() != tc.dropped {
				t.Fatalf("got %v released %v dropped %d; want %v %v %d", got, released, q.Dropped(), tc.want, tc.released, tc.dropped)
			}
		})
	}
}

func TestBlockHonoursContext(t *testing.T) {
	released := 0
	q := New(1, Block, func(int) { released++ })
	q.Push(context.Background(), 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if q.Push(ctx, 2) {
		t.Fatal("push into a full blocking queue succeeded")
	}
	if released != 1 || q.Dropped() != 1 {
		t.Fatalf("released %d dropped %d, want 1 1", released, q.Dropped())
	}
	q.Drain()
	if released != 2 || q.Len() != 0 {
		t.Fatalf("drain: released %d len %d", released, q.Len())
	}
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
